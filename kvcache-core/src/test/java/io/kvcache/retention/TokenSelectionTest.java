package io.kvcache.retention;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import io.kvcache.codec.HeadStore;
import io.kvcache.codec.StorageCodec;
import java.util.Arrays;
import java.util.SplittableRandom;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** TokenSelection against plain definitions, on fresh random inputs (seed in every message). */
class TokenSelectionTest {

  static long seed() {
    String fixed = System.getProperty("kvcache.test.seed");
    return fixed != null ? Long.parseLong(fixed) : System.nanoTime();
  }

  @ParameterizedTest(name = "kernel {0}")
  @ValueSource(ints = {1, 3, 7, 31})
  void poolingEqualsTheClippedWindowDefinition(int kernel) {
    long seed = seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    for (int n : new int[] {1, 2, 5, 40, 333}) {
      float[] in = new float[n + 3];
      for (int i = 0; i < in.length; i++) {
        in[i] = (float) rnd.nextGaussian();
      }
      float[] max = new float[n + 1], avg = new float[n + 1];
      TokenSelection.pool(in, 3, n, kernel, true, max, 1);
      TokenSelection.pool(in, 3, n, kernel, false, avg, 1);
      for (int i = 0; i < n; i++) {
        float m = Float.NEGATIVE_INFINITY;
        double s = 0;
        int c = 0;
        for (int j = Math.max(0, i - kernel / 2); j <= Math.min(n - 1, i + kernel / 2); j++) {
          m = Math.max(m, in[3 + j]);
          s += in[3 + j];
          c++;
        }
        assertEquals(m, max[1 + i], "max n=" + n + " i=" + i + " seed " + seed);
        assertEquals(s / c, avg[1 + i], 1e-5, "avg n=" + n + " i=" + i + " seed " + seed);
      }
    }
  }

  @ParameterizedTest(name = "n {0}")
  @ValueSource(ints = {1, 7, 100, 1000})
  void topKeepsExactlyKOfTheLargestPreferringOlderOnTies(int n) {
    long seed = seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    float[] s = new float[n];
    for (int i = 0; i < n; i++) {
      s[i] = rnd.nextInt(4) == 0 ? 0.5f : (float) rnd.nextGaussian(); // many ties
    }
    long[] scratch = new long[n];
    boolean[] keep = new boolean[n];
    for (int k : new int[] {0, 1, n / 2, n - 1, n, n + 5}) {
      TokenSelection.top(s, 0, n, k, keep, scratch);
      // Definition: rank by (score desc, index asc); keep the first k.
      Integer[] idx = new Integer[n];
      for (int i = 0; i < n; i++) {
        idx[i] = i;
      }
      Arrays.sort(idx, (a, b) -> s[a] != s[b] ? Float.compare(s[b], s[a]) : Integer.compare(a, b));
      boolean[] expected = new boolean[n];
      for (int i = 0; i < Math.min(Math.max(k, 0), n); i++) {
        expected[idx[i]] = true;
      }
      assertArrayEquals(expected, Arrays.copyOf(keep, n), "k=" + k + " seed " + seed);
    }
  }

  @ParameterizedTest(name = "n {0}")
  @ValueSource(ints = {1, 16, 17, 200})
  void liveByPositionListsLiveSlotsInPositionOrderAfterReuse(int n) {
    long seed = seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    HeadStore store = StorageCodec.f32().newStore(4);
    float[] row = new float[4];
    int pos = 0;
    for (int i = 0; i < n; i++) {
      store.append(row, 0, row, 0, pos++);
    }
    // Evict some, then append more: freed slots are reused, so slot order is no longer position order.
    for (int slot = 0; slot < n; slot++) {
      if (rnd.nextBoolean()) {
        store.evict(slot);
      }
    }
    for (int i = 0; i < n / 2; i++) {
      store.append(row, 0, row, 0, pos++);
    }
    int[] order = new int[store.pageCount() * HeadStore.PAGE_TOKENS];
    long[] scratch = new long[order.length];
    int live = TokenSelection.liveByPosition(store, order, scratch);
    assertEquals(store.size(), live, "seed " + seed);
    for (int i = 1; i < live; i++) {
      assertEquals(true, store.position(order[i - 1]) < store.position(order[i]), "order at " + i + " seed " + seed);
    }
  }
}
