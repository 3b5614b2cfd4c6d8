package io.kvcache.gpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.codec.HeadStore;
import io.kvcache.codec.StorageCodec;
import io.kvcache.core.AttentionShape;
import io.kvcache.gpu.cl.ClContext;
import io.kvcache.kernel.Kernels;
import io.kvcache.reader.PagedAttention;
import java.util.Arrays;
import java.util.Random;
import java.util.TreeSet;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** Top-k sparse decode on PoCL: equal to dense when the budget covers the cache, else exact over its pick. */
class TopKDecoderTest {

  static float[] gaussian(Random rnd, int n) {
    float[] x = new float[n];
    for (int i = 0; i < n; i++) {
      x[i] = (float) rnd.nextGaussian();
    }
    return x;
  }

  static float[] dense(DeviceKVCacheTest.Filled f, AttentionShape s, float[] q, int qpos) {
    float[] want = new float[q.length];
    PagedAttention ref = new PagedAttention(Kernels.scalar(), s.headDim());
    int g = s.groupSize(), d = s.headDim();
    for (int h = 0; h < s.kvHeads(); h++) {
      ref.decode(f.stores()[h], g, q, h * g * d, qpos, s.scale(), want, h * g * d);
    }
    return want;
  }

  @ParameterizedTest(name = "{0}: {1}q/{2}kv, d={3}, n={4}")
  @CsvSource({"lwjgl, 4, 2, 64, 1", "lwjgl, 8, 2, 64, 37", "lwjgl, 32, 8, 128, 2999", "lwjgl, 8, 1, 64, 300",
      "jocl, 4, 2, 64, 1", "jocl, 32, 8, 128, 2999"})
  void budgetCoveringTheCacheEqualsDenseAttention(String binding, int hq, int kvh, int d, int n) {
    long seed = Gpu.seed();
    Random rnd = new Random(seed);
    AttentionShape s = new AttentionShape(1, hq, kvh, d);
    try (ClContext cl = Gpu.open(binding); DeviceKVCache dev = new DeviceKVCache(cl, s, n);
        TopKDecoder topk = new TopKDecoder(dev, new TopKDecoder.Config(n + 16, Math.min(8, d), 16))) {
      DeviceKVCacheTest.Filled f = DeviceKVCacheTest.fill(dev, s, 0, n, rnd);
      float[] q = gaussian(rnd, hq * d);
      float[] got = new float[q.length];
      topk.decode(0, q, n - 1, got);
      DeviceKVCacheTest.assertClose(dense(f, s, q, n - 1), got, binding + " top-k (k >= n) seed=" + seed);
    }
  }

  /**
   * With a budget below the cache: the selection is the top pages by the Quest estimate over the top-r
   * channels (recomputed here in double), always holds the recent pages, and the output is exact
   * attention over the selected tokens.
   */
  @ParameterizedTest(name = "{0}")
  @CsvSource({"lwjgl", "jocl"})
  void smallBudgetSelectsTopPagesByEstimateAndAttendsExactlyToThem(String binding) {
    long seed = Gpu.seed();
    Random rnd = new Random(seed);
    int hq = 8, kvh = 2, d = 64, n = 1000, budget = 256, r = 16, recent = 32;
    AttentionShape s = new AttentionShape(1, hq, kvh, d);
    int g = s.groupSize();
    // Appended in two parts so that the incremental summaries (only touched pages) are exercised.
    try (ClContext cl = Gpu.open(binding); DeviceKVCache dev = new DeviceKVCache(cl, s, n);
        TopKDecoder topk = new TopKDecoder(dev, new TopKDecoder.Config(budget, r, recent))) {
      DeviceKVCacheTest.Filled f = DeviceKVCacheTest.fill(dev, s, 0, n, rnd);
      float[] q = gaussian(rnd, hq * d);
      float[] got = new float[q.length];
      topk.decode(0, q, n - 1, got);
      int pages = (n + 15) / 16, k = budget / 16, recentPages = recent / 16;
      float[] want = new float[q.length];
      PagedAttention ref = new PagedAttention(Kernels.scalar(), d);
      float[] key = new float[d];
      for (int h = 0; h < kvh; h++) {
        double[] est = new double[pages];
        double magnitude = 0; // the largest sum of |terms|: the device sums in float, in its own order
        for (int p = 0; p < pages; p++) {
          double abs = 0;
          for (int gg = 0; gg < g; gg++) {
            int qb = (h * g + gg) * d;
            Integer[] ord = new Integer[d];
            for (int c = 0; c < d; c++) {
              ord[c] = c;
            }
            Arrays.sort(ord, (a, b) -> Float.compare(Math.abs(q[qb + b]), Math.abs(q[qb + a])));
            for (int i = 0; i < r; i++) {
              int c = ord[i];
              double lo = Double.POSITIVE_INFINITY, hi = Double.NEGATIVE_INFINITY;
              for (int t = p * 16; t < Math.min(n, p * 16 + 16); t++) {
                f.stores()[h].readKey(t, key, 0);
                lo = Math.min(lo, key[c]);
                hi = Math.max(hi, key[c]);
              }
              double term = Math.max(q[qb + c] * lo, q[qb + c] * hi);
              est[p] += term;
              abs += Math.abs(term);
            }
          }
          magnitude = Math.max(magnitude, abs);
          if (p >= pages - recentPages) {
            est[p] = Double.POSITIVE_INFINITY;
          }
        }
        TreeSet<Integer> selected = new TreeSet<>();
        for (int p : topk.selectedPages(h, k)) {
          selected.add(p);
        }
        // The top k by the estimate, up to float rounding: every selected page scores at least every
        // page left out, within 1e-5 of the estimates' magnitude (the device's float sums may order two
        // pages that tie to within rounding the other way; exact set equality failed on such near-ties).
        double tol = 1e-5 * magnitude;
        assertEquals(k, selected.size(), binding + " kv head " + h + " selects k pages, seed=" + seed);
        double worstIn = Double.POSITIVE_INFINITY, bestOut = Double.NEGATIVE_INFINITY;
        for (int p = 0; p < pages; p++) {
          if (selected.contains(p)) {
            worstIn = Math.min(worstIn, est[p]);
          } else {
            bestOut = Math.max(bestOut, est[p]);
          }
        }
        assertTrue(worstIn >= bestOut - tol, binding + " kv head " + h + " selection: a page scoring " + bestOut
            + " left out for one scoring " + worstIn + ", seed=" + seed);
        assertTrue(selected.contains(pages - 1) && selected.contains(pages - 2), "recent pages kept, seed=" + seed);
        HeadStore sub = StorageCodec.f16().newStore(d);
        float[] v = new float[d];
        for (int p : selected) {
          for (int t = p * 16; t < Math.min(n, p * 16 + 16); t++) {
            f.stores()[h].readKey(t, key, 0);
            f.stores()[h].readValue(t, v, 0);
            sub.append(key, 0, v, 0, t);
          }
        }
        ref.decode(sub, g, q, h * g * d, n - 1, s.scale(), want, h * g * d);
      }
      DeviceKVCacheTest.assertClose(want, got, binding + " top-k exact over selection, seed=" + seed);
    }
  }

  @Test
  void configRejectsOutOfRangeValuesNamingThem() {
    assertTrue(assertThrows(IllegalArgumentException.class, () -> new TopKDecoder.Config(8, 4, 0))
        .getMessage().contains("budgetTokens"));
    assertTrue(assertThrows(IllegalArgumentException.class, () -> new TopKDecoder.Config(64, 0, 0))
        .getMessage().contains("channels"));
    assertTrue(assertThrows(IllegalArgumentException.class, () -> new TopKDecoder.Config(64, 4, 65))
        .getMessage().contains("recentTokens"));
  }
}
