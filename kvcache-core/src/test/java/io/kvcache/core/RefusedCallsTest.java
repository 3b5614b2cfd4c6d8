package io.kvcache.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import io.kvcache.codec.StorageCodec;
import java.util.SplittableRandom;
import java.util.stream.Stream;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * {@link KVCache}'s promise that a refused call "leaves the cache as it was", for every strategy: one
 * cache gets a random refused call (a wrong length, a layer out of range, NaN or infinity in a key or
 * value, a null array, a bad offset, a position that goes back) before each of its valid calls, a twin
 * gets the valid calls only, and every output of the two, and their statistics, must be the same bits.
 * Prompts come in chunks of random length, then decode steps; fresh seed per run
 * ({@code -Dkvcache.test.seed} replays one).
 */
class RefusedCallsTest {

  private static final AttentionShape SHAPE = new AttentionShape(2, 4, 2, 16);

  static Stream<Arguments> strategies() {
    return Stream.of(
        Arguments.of("full f16", Strategies.full()),
        Arguments.of("full f32", Strategies.full(StorageCodec.f32())),
        Arguments.of("streamingLLM", Strategies.streamingLLM(4, 24)),
        Arguments.of("snapKV", Strategies.snapKV(40, 8, 3)),
        Arguments.of("h2o", Strategies.h2o(16, 16)),
        Arguments.of("kvCrush", Strategies.kvCrush(48)),
        Arguments.of("rocketKV", Strategies.rocketKV(32)),
        Arguments.of("skvq", Strategies.skvq(2, 1.5, 16)),
        Arguments.of("fastKV", Strategies.fastKV(24)));
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("strategies")
  void aRefusedCallLeavesTheCacheAsItWas(String label, KVCacheStrategy strategy) {
    long seed = TestData.seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    String at = label + ", seed " + seed;
    int qw = SHAPE.queryWidth(), kw = SHAPE.kvWidth();
    int refusals = 0;
    try (KVCache fuzzed = strategy.newCache(SHAPE); KVCache twin = strategy.newCache(SHAPE)) {
      int chunks = 1 + rnd.nextInt(3);
      for (int chunk = 0; chunk < chunks; chunk++) {
        int n = 1 + rnd.nextInt(60);
        for (int layer = 0; layer < SHAPE.layers(); layer++) {
          float[] q = TestData.gaussian(rnd, n * qw, 1), k = TestData.gaussian(rnd, n * kw, 1);
          float[] v = TestData.gaussian(rnd, n * kw, 1);
          refusals += refuse(fuzzed, rnd, layer, n, q, k, v, false, at);
          float[] o1 = new float[n * qw], o2 = new float[n * qw];
          fuzzed.prefill(layer, n, q, k, v, o1);
          twin.prefill(layer, n, q, k, v, o2);
          assertArrayEquals(o2, o1, "prefill chunk " + chunk + " layer " + layer + ", " + at);
        }
      }
      fuzzed.endPrefill();
      twin.endPrefill();
      for (int step = 0; step < 40; step++) {
        for (int layer = 0; layer < SHAPE.layers(); layer++) {
          float[] q = TestData.gaussian(rnd, qw, 1), k = TestData.gaussian(rnd, kw, 1);
          float[] v = TestData.gaussian(rnd, kw, 1);
          refusals += refuse(fuzzed, rnd, layer, 1, q, k, v, true, at);
          float[] o1 = new float[qw], o2 = new float[qw];
          fuzzed.decode(layer, q, k, v, o1);
          twin.decode(layer, q, k, v, o2);
          assertArrayEquals(o2, o1, "decode step " + step + " layer " + layer + ", " + at);
        }
      }
      assertEquals(twin.stats(), fuzzed.stats(), "statistics, " + at);
    }
    assertTrue(refusals > 20, "only " + refusals + " refused calls were made, " + at);
  }

  /**
   * With probability one half, makes one call that must be refused, built from the valid call's arrays;
   * returns 1 if it made one. Every refused call must name what it refused in its message.
   */
  private static int refuse(KVCache cache, SplittableRandom rnd, int layer, int n, float[] q, float[] k, float[] v,
      boolean decode, String at) {
    if (rnd.nextBoolean()) {
      return 0;
    }
    int qw = SHAPE.queryWidth(), kw = SHAPE.kvWidth();
    float[] out = new float[n * qw];
    int kind = rnd.nextInt(9);
    String what = "kind " + kind;
    try {
      switch (kind) {
        case 0 -> call(cache, decode, rnd.nextBoolean() ? SHAPE.layers() : -1, n, q, k, v, out);
        case 1 -> call(cache, decode, layer, n, java.util.Arrays.copyOf(q, q.length - 1 - rnd.nextInt(qw)), k, v, out);
        case 2 -> call(cache, decode, layer, n, q, java.util.Arrays.copyOf(k, k.length - 1), v, out);
        case 3 -> {
          float[] bad = k.clone();
          bad[rnd.nextInt(bad.length)] = rnd.nextBoolean() ? Float.NaN : Float.NEGATIVE_INFINITY;
          call(cache, decode, layer, n, q, bad, v, out);
        }
        case 4 -> {
          float[] bad = v.clone();
          bad[rnd.nextInt(bad.length)] = rnd.nextBoolean() ? Float.NaN : Float.POSITIVE_INFINITY;
          call(cache, decode, layer, n, q, k, bad, out);
        }
        case 5 -> call(cache, decode, layer, n, q, k, v, new float[out.length - 1]);
        case 6 -> {
          int none = rnd.nextInt(4);
          call(cache, decode, layer, n, none == 0 ? null : q, none == 1 ? null : k, none == 2 ? null : v,
              none == 3 ? null : out);
        }
        case 7 -> {
          if (decode) {
            cache.decode(layer, q, 0, k, kw, v, 0, out, 0); // an offset past the array
          } else {
            cache.prefill(layer, n, null, q, 0, k, -1, v, 0, out, 0);
          }
        }
        default -> {
          // Positions that do not increase (the last two equal), or a negative one.
          int[] pos = new int[n];
          for (int t = 0; t < n; t++) {
            pos[t] = 1_000_000 + t;
          }
          if (n > 1) {
            pos[n - 1] = pos[n - 2];
          } else {
            pos[0] = -1;
          }
          if (decode) {
            cache.decode(layer, q, 1, k, 0, v, 0, out, 0); // decode takes the next position: a query offset instead
          } else {
            cache.prefill(layer, n, pos, q, 0, k, 0, v, 0, out, 0);
          }
        }
      }
    } catch (IllegalArgumentException | IllegalStateException | NullPointerException e) {
      if (e instanceof NullPointerException && e.getMessage() == null) {
        fail("a null argument must be named, got a bare NullPointerException, " + what + ", " + at, e);
      }
      assertTrue(e.getMessage() != null && !e.getMessage().isBlank(), "a refusal says why, " + what + ", " + at);
      return 1;
    }
    fail("accepted a call it must refuse (" + what + ", layer " + layer + ", " + n + " tokens, "
        + (decode ? "decode" : "prefill") + "), " + at);
    return 0;
  }

  private static void call(KVCache cache, boolean decode, int layer, int n, float[] q, float[] k, float[] v,
      float[] out) {
    if (decode) {
      cache.decode(layer, q, k, v, out);
    } else {
      cache.prefill(layer, n, q, k, v, out);
    }
  }
}
