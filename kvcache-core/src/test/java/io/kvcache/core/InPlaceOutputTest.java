package io.kvcache.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.Arrays;
import java.util.SplittableRandom;
import java.util.TreeSet;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * An engine may attend in place, writing the output over the query ({@code out == q}), or over a
 * buffer that overlaps it. The query-scored policies read the queries again after the attention (the
 * observation window, H2O's weights), so for every strategy a cache whose outputs overwrite its queries
 * must give the same bits, and hold the same tokens, as a twin with separate buffers; so must the
 * read-only calls of a layer that shares the cache (AcrossKV). Fresh seed per run
 * ({@code -Dkvcache.test.seed} replays one).
 */
class InPlaceOutputTest {

  private static final AttentionShape SHAPE = new AttentionShape(2, 4, 2, 16);

  @ParameterizedTest(name = "{0}")
  @MethodSource("io.kvcache.core.RefusedCallsTest#strategies")
  void anOutputWrittenOverTheQueriesChangesNothing(String label, KVCacheStrategy strategy) {
    long seed = TestData.seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    String at = label + ", seed " + seed;
    int qw = SHAPE.queryWidth(), kw = SHAPE.kvWidth(), d = SHAPE.headDim();
    try (KVCache separate = strategy.newCache(SHAPE); KVCache inPlace = strategy.newCache(SHAPE)) {
      int chunks = 1 + rnd.nextInt(3);
      int stored = 0; // counted here: stats() would take SKVQ's deferred step in one twin only
      for (int chunk = 0; chunk < chunks; chunk++) {
        int n = 1 + rnd.nextInt(60);
        stored += n;
        for (int layer = 0; layer < SHAPE.layers(); layer++) {
          float[] q = TestData.gaussian(rnd, n * qw, 1), k = TestData.gaussian(rnd, n * kw, 1);
          float[] v = TestData.gaussian(rnd, n * kw, 1);
          float[] want = new float[n * qw];
          separate.prefill(layer, n, q, k, v, want);
          float[] got = attendInPlace(inPlace, rnd.nextInt(3), layer, n, q, k, v, d);
          assertArrayEquals(want, got, "prefill chunk " + chunk + " layer " + layer + ", " + at);
        }
        // A sharing layer's read-only attention over what layer 0 holds, at some of its positions.
        TreeSet<Integer> picked = new TreeSet<>();
        for (int i = 0; i < 4; i++) {
          picked.add(rnd.nextInt(stored));
        }
        int[] positions = picked.stream().mapToInt(Integer::intValue).toArray();
        int m = positions.length;
        float[] q = TestData.gaussian(rnd, m * qw, 1);
        float[] want = new float[m * qw];
        separate.attendPrefill(0, m, positions, q, 0, want, 0);
        float[] got = attendOnlyInPlace(inPlace, rnd.nextInt(3), m, positions, q, d);
        assertArrayEquals(want, got, "attendPrefill after chunk " + chunk + ", " + at);
      }
      for (int step = 0; step < 60; step++) {
        for (int layer = 0; layer < SHAPE.layers(); layer++) {
          float[] q = TestData.gaussian(rnd, qw, 1), k = TestData.gaussian(rnd, kw, 1);
          float[] v = TestData.gaussian(rnd, kw, 1);
          float[] want = new float[qw];
          separate.decode(layer, q, k, v, want);
          float[] got = attendInPlace(inPlace, rnd.nextInt(3), layer, 0, q, k, v, d);
          assertArrayEquals(want, got, "decode step " + step + " layer " + layer + ", " + at);
        }
        float[] q = TestData.gaussian(rnd, qw, 1);
        float[] want = new float[qw];
        separate.attendDecode(0, q, 0, want, 0);
        float[] got = attendOnlyInPlace(inPlace, rnd.nextInt(3), 0, null, q, d);
        assertArrayEquals(want, got, "attendDecode step " + step + ", " + at);
      }
      assertEquals(separate.stats(), inPlace.stats(), "what the caches hold, " + at);
    }
  }

  /** A call that takes one buffer for its queries and its output, at these offsets. */
  interface InPlaceCall {
    void run(float[] buf, int qOff, int outOff);
  }

  /**
   * Runs {@code call} with its output overwriting its queries {@code q} ({@code n} tokens; 0 for one
   * decode row): the very array ({@code how} 0), the same rows in a larger buffer, or a buffer where the
   * output begins one head after the queries ({@code how} 2, so that each head's output lands on the
   * next head's query). Returns the output.
   */
  private static float[] inPlace(int how, int n, float[] q, int d, InPlaceCall call) {
    int rows = Math.max(n, 1) * SHAPE.queryWidth();
    int qOff = how == 0 ? 0 : 5;
    int outOff = how == 2 ? qOff + d : qOff;
    float[] buf = how == 0 ? q.clone() : new float[qOff + rows + d + 3];
    System.arraycopy(q, 0, buf, qOff, rows);
    call.run(buf, qOff, outOff);
    return Arrays.copyOfRange(buf, outOff, outOff + rows);
  }

  /** A prefill chunk of {@code n} tokens, or a decode step for {@code n} 0, in place. */
  private static float[] attendInPlace(KVCache cache, int how, int layer, int n, float[] q, float[] k, float[] v,
      int d) {
    return inPlace(how, n, q, d, (buf, qOff, outOff) -> {
      if (n == 0) {
        cache.decode(layer, buf, qOff, k, 0, v, 0, buf, outOff);
      } else {
        cache.prefill(layer, n, null, buf, qOff, k, 0, v, 0, buf, outOff);
      }
    });
  }

  /** The read-only calls on layer 0 in place: attendPrefill at {@code positions}, or attendDecode for n 0. */
  private static float[] attendOnlyInPlace(KVCache cache, int how, int n, int[] positions, float[] q, int d) {
    return inPlace(how, n, q, d, (buf, qOff, outOff) -> {
      if (n == 0) {
        cache.attendDecode(0, buf, qOff, buf, outOff);
      } else {
        cache.attendPrefill(0, n, positions, buf, qOff, buf, outOff);
      }
    });
  }
}
