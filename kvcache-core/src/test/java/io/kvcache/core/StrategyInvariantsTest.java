package io.kvcache.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.codec.HeadStore;
import io.kvcache.codec.StorageCodec;
import io.kvcache.retention.LayerAccess;
import io.kvcache.retention.RetentionPolicy;
import java.util.SplittableRandom;
import java.util.TreeSet;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * StreamingLLM's invariants (what it keeps, and that it equals full attention over what it keeps) and
 * the observation window's weights. The budgeted policies' invariants are in
 * {@link RetentionPoliciesTest}, SKVQ's in {@code SkvqAttentionTest}, RocketKV's, FastKV's and SwiftKV's
 * in their own classes. Runs with whichever kernels the JVM picked; the build runs this class and
 * {@link RetentionPoliciesTest} with the scalar kernels too.
 */
class StrategyInvariantsTest {

  static final AttentionShape SHAPE = new AttentionShape(2, 8, 2, 64);

  @ParameterizedTest(name = "sinks={0} window={1} prompt={2} decode={3}")
  @CsvSource({"4, 64, 500, 40", "0, 16, 100, 20", "4, 1, 50, 5", "16, 128, 129, 300"})
  void streamingLLMHoldsExactlySinksPlusWindowAndEqualsFullAttentionOverThem(int sinks, int window, int prompt,
      int decode) {
    long seed = TestData.seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    int total = prompt + decode;
    int qw = SHAPE.queryWidth(), kw = SHAPE.kvWidth(), d = SHAPE.headDim();
    float[] q = TestData.gaussian(rnd, total * qw, 1);
    float[] k = TestData.gaussian(rnd, total * kw, 1);
    float[] v = TestData.gaussian(rnd, total * kw, 1);
    float[] out = new float[total * qw];
    KVCacheStrategy s = Strategies.streamingLLM(sinks, window).toBuilder().codec(StorageCodec.f32()).build();
    try (KVCache cache = s.newCache(SHAPE)) {
      int chunk = 97;
      for (int t = 0; t < prompt; t += chunk) {
        int c = Math.min(chunk, prompt - t);
        for (int layer = 0; layer < SHAPE.layers(); layer++) {
          cache.prefill(layer, c, null, q, t * qw, k, t * kw, v, t * kw, out, t * qw);
        }
      }
      for (int t = prompt; t < total; t++) {
        for (int layer = 0; layer < SHAPE.layers(); layer++) {
          cache.decode(layer, q, t * qw, k, t * kw, v, t * kw, out, t * qw);
        }
        int expected = Math.min(t + 1, sinks + window);
        CacheStats st = cache.stats();
        for (int layer = 0; layer < SHAPE.layers(); layer++) {
          for (int h = 0; h < SHAPE.kvHeads(); h++) {
            assertEquals(expected, st.retained()[layer][h], "tokens held after decode of position " + t);
          }
        }
        // A decode step attends to exactly the sinks and the window ending at itself.
        TreeSet<Integer> kept = new TreeSet<>();
        for (int p = 0; p <= t; p++) {
          if (p < sinks || p > t - window) {
            kept.add(p);
          }
        }
        int[] keys = kept.stream().mapToInt(Integer::intValue).toArray();
        for (int h = 0; h < SHAPE.queryHeads(); h++) {
          double[] ref = Reference.row(SHAPE, q, t, h, k, v, keys, keys.length);
          double err = Reference.rowError(out, t * qw + h * d, ref);
          int pos = t, head = h;
          assertTrue(err <= 1e-5, () -> "position " + pos + " head " + head + " error " + err + " seed " + seed);
        }
      }
    }
  }

  @Test
  void streamingLLMWithWindowCoveringEverythingEqualsTheFullCache() {
    long seed = TestData.seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    int total = 150;
    int qw = SHAPE.queryWidth(), kw = SHAPE.kvWidth();
    float[] q = TestData.gaussian(rnd, total * qw, 1);
    float[] k = TestData.gaussian(rnd, total * kw, 1);
    float[] v = TestData.gaussian(rnd, total * kw, 1);
    float[] full = new float[total * qw];
    float[] streaming = new float[total * qw];
    for (KVCacheStrategy s : new KVCacheStrategy[] {Strategies.full(), Strategies.streamingLLM(4, total)}) {
      float[] out = s == null ? null : (s.name().startsWith("full") ? full : streaming);
      try (KVCache cache = s.newCache(SHAPE)) {
        cache.prefill(0, 100, null, q, 0, k, 0, v, 0, out, 0);
        for (int t = 100; t < total; t++) {
          cache.decode(0, q, t * qw, k, t * kw, v, t * kw, out, t * qw);
        }
        assertEquals(total, cache.stats().retained()[0][0]);
      }
    }
    // Bit for bit: the same kernels add in the same order (the vector exp and lane sums are written so
    // that the JIT tier running them does not change their rounding).
    assertArrayEquals(full, streaming, "seed " + seed);
  }

  /** A policy that records the observation-window weights, to check what SnapKV-like policies get. */
  static final class WindowProbe implements RetentionPolicy, RetentionPolicy.State {
    final int window;
    float[][] acc;
    int[] windowTokens;

    WindowProbe(int window) {
      this.window = window;
    }

    @Override
    public String name() {
      return "probe";
    }

    @Override
    public int observationWindow() {
      return window;
    }

    @Override
    public State newState(AttentionShape shape) {
      acc = new float[shape.kvHeads()][];
      windowTokens = new int[shape.layers()];
      return this;
    }

    @Override
    public void afterAppend(LayerAccess layer, boolean decode) {}

    @Override
    public void endPrefill(LayerAccess layer) {
      windowTokens[layer.layer()] = layer.windowTokens();
      if (layer.layer() != 0) {
        return;
      }
      for (int h = 0; h < layer.shape().kvHeads(); h++) {
        int slots = layer.store(h).pageCount() * HeadStore.PAGE_TOKENS;
        acc[h] = new float[layer.shape().groupSize() * slots];
        layer.windowWeights(h, acc[h], slots);
      }
    }
  }

  @Test
  void observationWindowWeightsAreTheWindowsSoftmaxRows() {
    long seed = TestData.seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    int n = 90, window = 8;
    int qw = SHAPE.queryWidth(), kw = SHAPE.kvWidth(), g = SHAPE.groupSize();
    float[] q = TestData.gaussian(rnd, n * qw, 1);
    float[] k = TestData.gaussian(rnd, n * kw, 1);
    float[] v = TestData.gaussian(rnd, n * kw, 1);
    float[] out = new float[n * qw];
    WindowProbe probe = new WindowProbe(window);
    KVCacheStrategy s = KVCacheStrategy.builder().codec(StorageCodec.f32()).retention(probe).build();
    try (KVCache cache = s.newCache(SHAPE)) {
      cache.prefill(0, 50, null, q, 0, k, 0, v, 0, out, 0);
      cache.prefill(0, 3, null, q, 50 * qw, k, 50 * kw, v, 50 * kw, out, 50 * qw); // window spans chunks
      cache.prefill(0, 37, null, q, 53 * qw, k, 53 * kw, v, 53 * kw, out, 53 * qw);
      cache.prefill(1, 5, null, q, 0, k, 0, v, 0, out, 0);
      cache.endPrefill();
    }
    assertEquals(window, probe.windowTokens[0]);
    assertEquals(5, probe.windowTokens[1], "a layer with fewer prompt tokens than the window keeps them all");
    int slots = probe.acc[0].length / g;
    for (int h = 0; h < SHAPE.kvHeads(); h++) {
      for (int gi = 0; gi < g; gi++) {
        int head = h * g + gi;
        // Expected: sum over the last 'window' tokens of their softmax row, by slot = position here.
        double[] expected = new double[n];
        for (int t = n - window; t < n; t++) {
          double[] sc = new double[t + 1];
          double max = Double.NEGATIVE_INFINITY, sum = 0;
          for (int j = 0; j <= t; j++) {
            double dot = 0;
            for (int c = 0; c < SHAPE.headDim(); c++) {
              dot += (double) q[t * qw + head * SHAPE.headDim() + c] * k[j * kw + h * SHAPE.headDim() + c];
            }
            sc[j] = dot / Math.sqrt(SHAPE.headDim());
            max = Math.max(max, sc[j]);
          }
          for (int j = 0; j <= t; j++) {
            sum += Math.exp(sc[j] - max);
          }
          for (int j = 0; j <= t; j++) {
            expected[j] += Math.exp(sc[j] - max) / sum;
          }
        }
        double total = 0;
        for (int j = 0; j < n; j++) {
          float got = probe.acc[h][gi * slots + j];
          total += got;
          int jj = j;
          assertEquals(expected[j], got, 1e-5, () -> "slot " + jj + " seed " + seed);
        }
        assertEquals(window, total, 1e-4, "each window row sums to 1");
      }
    }
  }
}
