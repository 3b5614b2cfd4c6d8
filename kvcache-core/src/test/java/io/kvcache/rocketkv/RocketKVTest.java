package io.kvcache.rocketkv;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.core.AttentionShape;
import io.kvcache.core.CacheStats;
import io.kvcache.core.KVCache;
import io.kvcache.core.KVCacheStrategy;
import io.kvcache.core.Strategies;
import io.kvcache.workload.Fidelity;
import io.kvcache.workload.SyntheticWorkload;
import io.kvcache.workload.WorkloadSpec;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** RocketKV end to end: the stage split, SnapKV++'s kernel rule, budgets, memory and fidelity. */
class RocketKVTest {

  static long seed() {
    return io.kvcache.core.TestData.seed();
  }

  @Test
  void poolingKernelGrowsWithThePromptAndStaysOdd() {
    assertEquals(7, SnapKVPlusPlus.poolFor(100));
    assertEquals(7, SnapKVPlusPlus.poolFor(4095));
    assertEquals(17, SnapKVPlusPlus.poolFor(8192));
    assertEquals(33, SnapKVPlusPlus.poolFor(16384));
    assertEquals(63, SnapKVPlusPlus.poolFor(32768));
    assertEquals(63, SnapKVPlusPlus.poolFor(1 << 20));
    for (int t = 1; t < 100_000; t += 997) {
      assertEquals(1, SnapKVPlusPlus.poolFor(t) % 2, "odd at " + t);
    }
  }

  @Test
  void stageOneKeepsTheSquareRootShare() {
    SnapKVPlusPlus p = SnapKVPlusPlus.forTokenBudget(2048, 32);
    assertEquals(8192, p.budgetFor(32768), "c = 16: each stage takes 4x");
    assertEquals(2048, p.budgetFor(2048), "no compression when the prompt fits the budget");
    assertEquals(1000, p.budgetFor(1000), "never more than the prompt");
    assertEquals(500, SnapKVPlusPlus.of(500, 32).budgetFor(32768), "a fixed budget");
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> SnapKVPlusPlus.of(10, 32));
    assertTrue(e.getMessage().contains("budget") && e.getMessage().contains("10"), e.getMessage());
  }

  @Test
  void tokenBudgetCoveringThePromptEqualsTheFullCache() {
    long seed = seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    AttentionShape shape = new AttentionShape(2, 8, 2, 32);
    int n = 200, prompt = 150;
    int qw = shape.queryWidth(), kw = shape.kvWidth();
    float[] q = new float[n * qw], k = new float[n * kw], v = new float[n * kw];
    for (float[] a : new float[][] {q, k, v}) {
      for (int i = 0; i < a.length; i++) {
        a[i] = (float) rnd.nextGaussian();
      }
    }
    float[] full = new float[n * qw], rocket = new float[n * qw];
    for (KVCacheStrategy s : new KVCacheStrategy[] {Strategies.full(), Strategies.rocketKV(n)}) {
      float[] out = s.name().startsWith("full") ? full : rocket;
      try (KVCache cache = s.newCache(shape)) {
        for (int layer = 0; layer < 2; layer++) {
          cache.prefill(layer, prompt, null, q, 0, k, 0, v, 0, out, 0);
        }
        for (int t = prompt; t < n; t++) {
          for (int layer = 0; layer < 2; layer++) {
            cache.decode(layer, q, t * qw, k, t * kw, v, t * kw, out, t * qw);
          }
        }
        assertEquals(n, cache.stats().retained()[1][1]);
      }
    }
    // Same code path and inputs: bit for bit (see KVCacheApiTest).
    assertArrayEquals(full, rocket, "seed " + seed);
  }

  /** The memory bar, at its size: 32K prompt, token budget 2048 (one narrow head keeps it fast). */
  @Test
  void stageOneHoldsAQuarterOfTheDenseBytesAt32KWithBudget2048() {
    AttentionShape shape = new AttentionShape(1, 2, 1, 16);
    int prompt = 32768;
    SyntheticWorkload w = new SyntheticWorkload(shape, WorkloadSpec.standard(prompt, 1, 7));
    SyntheticWorkload.Layer l = w.layer(0);
    try (KVCache cache = Strategies.rocketKV(2048).newCache(shape)) {
      float[] out = new float[4096 * shape.queryWidth()];
      for (int t = 0; t < prompt; t += 4096) {
        cache.prefill(0, 4096, null, l.q(), t * shape.queryWidth(), l.k(), t * shape.kvWidth(), l.v(),
            t * shape.kvWidth(), out, 0);
      }
      cache.endPrefill();
      CacheStats s = cache.stats();
      assertEquals(8192, s.retained()[0][0], "sqrt(32768 * 2048) tokens after stage 1");
      long dense = (long) prompt * shape.headDim() * 2 * 2;
      assertEquals(dense / 4, s.payloadBytes(), "K/V payload exactly a quarter of the dense f16 cache");
      assertEquals(dense / 4 + 8192L * 4, s.bytesHeld(), "plus one int position per slot");
    }
  }

  @Test
  void errorFallsWithTheTokenBudgetOnTheSyntheticWorkload() {
    AttentionShape shape = new AttentionShape(1, 8, 2, 32);
    SyntheticWorkload w = new SyntheticWorkload(shape, WorkloadSpec.standard(4096, 8, 11));
    Fidelity.Reference ref = Fidelity.reference(w, 1024);
    StringBuilder table = new StringBuilder();
    double previous = Double.POSITIVE_INFINITY;
    for (int budget : new int[] {256, 512, 1024, 2048}) {
      Fidelity.Result r = Fidelity.compare(Strategies.rocketKV(budget), ref);
      table.append(budget).append(": error ").append(r.meanError()).append(", retained ")
          .append(r.stats().maxRetained(0)).append('\n');
      assertTrue(r.meanError() <= previous * 1.05, "error should fall with the budget:\n" + table);
      previous = r.meanError();
      assertTrue(r.stats().maxRetained(0) <= Math.round(Math.sqrt(4096.0 * budget)) + 8,
          "stage 1 keeps sqrt(T*k) (+ decode tokens):\n" + table);
    }
    assertTrue(previous < 0.05, "at budget 2048 of 4096 the error is small:\n" + table);
  }

  @Test
  void readerComposesWithSkvqStorage() {
    AttentionShape shape = new AttentionShape(1, 8, 2, 64);
    SyntheticWorkload w = new SyntheticWorkload(shape, WorkloadSpec.standard(1200, 6, 9));
    Fidelity.Reference ref = Fidelity.reference(w, 400);
    io.kvcache.codec.StorageCodec skvq = io.kvcache.skvq.SkvqCodec.of(io.kvcache.skvq.SkvqConfig.of(4, 4));
    KVCacheStrategy dense = Strategies.full(skvq);
    KVCacheStrategy covering = dense.toBuilder().reader(HybridSparseReader.of(2000, 0.25, 16)).build();
    KVCacheStrategy sparse = Strategies.rocketKV(256).toBuilder().codec(skvq).build();
    Fidelity.Result d = Fidelity.compare(dense, ref);
    Fidelity.Result c = Fidelity.compare(covering, ref);
    Fidelity.Result s = Fidelity.compare(sparse, ref);
    assertEquals(d.meanError(), c.meanError(), 1e-6, "a budget covering every token reads the quantized cache densely");
    assertEquals(Math.round(Math.sqrt(1200.0 * 256)), s.stats().maxRetained(0) - 6, "stage 1 over SKVQ storage");
    assertTrue(s.stats().bitsPerValue() < 16, "the kept tokens stay quantized: " + s.stats().bitsPerValue());
    // Sparse reading over codes chooses what to read: well below a cache that holds as many tokens as it
    // reads (sinks and window, 4 + 268 = 256 + 16 recent), over the same SKVQ storage (0.136 against 0.502).
    Fidelity.Result win = Fidelity.compare(Strategies.streamingLLM(4, 268).toBuilder().codec(skvq).build(), ref);
    assertTrue(s.meanError() < 0.5 * win.meanError(), "sparse over codes " + s.meanError() + ", window " + win.meanError());
  }

  /**
   * Stage 1's prompt length T (of sqrt(T * k) and of the kernel rule) is the prompt's tokens, not one past
   * its last position: the same prompt given late positions keeps as many tokens as from position 0.
   */
  @Test
  void stageOneCountsThePromptsTokensNotItsPositions() {
    AttentionShape shape = new AttentionShape(1, 2, 1, 16);
    int prompt = 1024, offset = 3072;
    long seed = io.kvcache.core.TestData.seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    float[] q = io.kvcache.core.TestData.gaussian(rnd, prompt * shape.queryWidth(), 1);
    float[] k = io.kvcache.core.TestData.gaussian(rnd, prompt * shape.kvWidth(), 1);
    float[] v = io.kvcache.core.TestData.gaussian(rnd, prompt * shape.kvWidth(), 1);
    float[] out = new float[prompt * shape.queryWidth()];
    int[] late = new int[prompt];
    for (int t = 0; t < prompt; t++) {
      late[t] = offset + 3 * t; // late, and with gaps
    }
    int[] kept = new int[2];
    for (int run = 0; run < 2; run++) {
      try (KVCache cache = Strategies.rocketKV(64).newCache(shape)) {
        cache.prefill(0, prompt, run == 0 ? null : late, q, 0, k, 0, v, 0, out, 0);
        cache.endPrefill();
        kept[run] = cache.stats().retained()[0][0];
      }
    }
    assertEquals(256, kept[0], "sqrt(1024 * 64) from position 0, seed " + seed);
    assertEquals(kept[0], kept[1], "the same 1024-token prompt at positions " + offset + ", +3 each, seed " + seed);
  }
}
