package io.kvcache.rocketkv;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.codec.HeadStore;
import io.kvcache.codec.StorageCodec;
import io.kvcache.core.AttentionShape;
import io.kvcache.core.KVCache;
import io.kvcache.core.KVCacheStrategy;
import io.kvcache.core.Strategies;
import io.kvcache.kernel.Kernels;
import io.kvcache.workload.Fidelity;
import io.kvcache.workload.SyntheticWorkload;
import io.kvcache.workload.WorkloadSpec;
import java.util.HashSet;
import java.util.Set;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** RocketKV's hybrid sparse reader: exactness at full budget, the page bound, and what it selects. */
class HybridSparseReaderTest {

  static long seed() {
    return io.kvcache.core.TestData.seed();
  }

  static float[] gaussian(SplittableRandom rnd, int n) {
    return io.kvcache.core.TestData.gaussian(rnd, n, 1.0);
  }

  @Test
  void budgetCoveringEveryTokenEqualsDenseAttention() {
    long seed = seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    AttentionShape shape = new AttentionShape(2, 8, 2, 64);
    int n = 300;
    int qw = shape.queryWidth(), kw = shape.kvWidth();
    float[] q = gaussian(rnd, n * qw), k = gaussian(rnd, n * kw), v = gaussian(rnd, n * kw);
    float[] dense = new float[n * qw], sparse = new float[n * qw];
    KVCacheStrategy sparseStrategy = KVCacheStrategy.builder().reader(HybridSparseReader.of(n, 0.25, 8)).build();
    for (KVCacheStrategy s : new KVCacheStrategy[] {Strategies.full(), sparseStrategy}) {
      float[] out = s == sparseStrategy ? sparse : dense;
      try (KVCache cache = s.newCache(shape)) {
        for (int layer = 0; layer < 2; layer++) {
          cache.prefill(layer, 200, null, q, 0, k, 0, v, 0, out, 0);
        }
        for (int t = 200; t < n; t++) {
          for (int layer = 0; layer < 2; layer++) {
            cache.decode(layer, q, t * qw, k, t * kw, v, t * kw, out, t * qw);
          }
        }
      }
    }
    // Bit for bit: the same kernels add in the same order (the vector exp and lane sums are written so
    // that the JIT tier running them does not change their rounding).
    assertArrayEquals(dense, sparse, "seed " + seed);
  }

  @Test
  void pageSummariesBoundEveryKeyAndFollowEvictions() {
    long seed = seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    int d = 32;
    HeadStore store = StorageCodec.f16().newStore(d);
    for (int t = 0; t < 100; t++) {
      store.append(gaussian(rnd, d), 0, gaussian(rnd, d), 0, t);
    }
    HybridSparseReader.PageSummaries s = new HybridSparseReader.PageSummaries(d);
    s.refresh(store, Kernels.get());
    store.evict(3);
    store.evict(17);
    store.append(gaussian(rnd, d), 0, gaussian(rnd, d), 0, 100); // reuses a freed slot
    s.refresh(store, Kernels.get());
    float[] key = new float[d];
    for (int slot = 0; slot < store.pageCount() * HeadStore.PAGE_TOKENS; slot++) {
      if (store.position(slot) == HeadStore.EMPTY) {
        continue;
      }
      int p = slot / HeadStore.PAGE_TOKENS;
      store.readKey(slot, key, 0);
      for (int c = 0; c < d; c++) {
        assertTrue(s.min(p, c) <= key[c] && key[c] <= s.max(p, c),
            "slot " + slot + " channel " + c + " outside [min, max], seed " + seed);
      }
    }
    int total = 0;
    for (int p = 0; p < store.pageCount(); p++) {
      total += s.live[p];
    }
    assertEquals(store.size(), total, "live counts follow evictions and appends");
  }

  /**
   * With every channel the estimate is an upper bound, so a page whose best key beats every other
   * page's bound must be selected: plant such keys and check.
   */
  @Test
  void pagesWhoseTrueScoreBeatsEveryOtherBoundAreSelected() {
    long seed = seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    int d = 16, group = 2, tokens = 64 * 16;
    HeadStore store = StorageCodec.f32().newStore(d);
    float[] q = gaussian(rnd, group * d);
    Set<Integer> planted = new HashSet<>();
    while (planted.size() < 3) {
      planted.add(rnd.nextInt(tokens - 64));
    }
    for (int t = 0; t < tokens; t++) {
      float[] k = new float[d];
      for (int c = 0; c < d; c++) {
        k[c] = (float) (0.1 * rnd.nextGaussian());
      }
      if (planted.contains(t)) {
        for (int c = 0; c < d; c++) {
          k[c] = 20f * (q[c] + q[d + c]); // aligned with the group's query: a score no bound elsewhere reaches
        }
      }
      store.append(k, 0, gaussian(rnd, d), 0, t);
    }
    HybridSparseReader.PageSummaries s = new HybridSparseReader.PageSummaries(d);
    s.refresh(store, Kernels.get());
    int n = s.select(store, group, q, 0, tokens - 1, d, 48, 0, Kernels.get());
    Set<Integer> pages = new HashSet<>();
    for (int i = 0; i < n; i++) {
      pages.add(s.selected[i]);
    }
    for (int t : planted) {
      assertTrue(pages.contains(t / HeadStore.PAGE_TOKENS), "page of planted token " + t + " selected, seed " + seed);
    }
    assertEquals(3, n, "48 tokens = 3 pages of 16");
  }

  @Test
  void errorAgainstTheFullCacheFallsWithTheBudget() {
    AttentionShape shape = new AttentionShape(1, 8, 2, 64);
    SyntheticWorkload w = new SyntheticWorkload(shape, WorkloadSpec.standard(4096, 8, 3));
    Fidelity.Reference ref = Fidelity.reference(w, 1024);
    double previous = Double.POSITIVE_INFINITY;
    StringBuilder table = new StringBuilder();
    for (int budget : new int[] {256, 512, 1024, 2048}) {
      KVCacheStrategy s = KVCacheStrategy.builder().reader(HybridSparseReader.of(budget, 0.25, 16)).build();
      double e = Fidelity.compare(s, ref).meanError();
      table.append(budget).append(": ").append(e).append('\n');
      assertTrue(e <= previous * 1.05, "error should fall with the budget:\n" + table);
      previous = e;
    }
    assertTrue(previous < 0.05, "at 2048 of 4096 tokens the error is small:\n" + table);
  }

  @Test
  void composesWithAnotherRetentionPolicy() {
    AttentionShape shape = new AttentionShape(1, 8, 2, 32);
    SyntheticWorkload w = new SyntheticWorkload(shape, WorkloadSpec.standard(1500, 6, 4));
    Fidelity.Reference ref = Fidelity.reference(w, 500);
    KVCacheStrategy window = KVCacheStrategy.builder()
        .retention(io.kvcache.retention.RetentionPolicy.sinksAndWindow(4, 600)).build();
    KVCacheStrategy covering = window.toBuilder().reader(HybridSparseReader.of(604, 0.25, 16)).build();
    KVCacheStrategy sparse = window.toBuilder().reader(HybridSparseReader.of(128, 0.25, 16)).build();
    Fidelity.Result dense = Fidelity.compare(window, ref);
    Fidelity.Result same = Fidelity.compare(covering, ref);
    Fidelity.Result fewer = Fidelity.compare(sparse, ref);
    assertEquals(dense.meanError(), same.meanError(), 1e-6, "a budget covering the window reads it all");
    assertEquals(604, fewer.stats().maxRetained(0), "the retention policy still decides what is held");
    // Reading 128 + 16 of the 604 held tokens costs little over reading them all (0.609 against 0.604),
    // and far less than holding only as many (sinks and a window of 140: 1.013).
    Fidelity.Result small = Fidelity.compare(KVCacheStrategy.builder()
        .retention(io.kvcache.retention.RetentionPolicy.sinksAndWindow(4, 140)).build(), ref);
    assertTrue(fewer.meanError() < dense.meanError() + 0.05 && fewer.meanError() < 0.8 * small.meanError(),
        "sparse " + fewer.meanError() + ", all held " + dense.meanError() + ", window of 140 " + small.meanError());
  }

  @Test
  void parametersAreValidated() {
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> HybridSparseReader.of(0, 0.5, 1));
    assertTrue(e.getMessage().contains("tokenBudget") && e.getMessage().contains("0"), e.getMessage());
    e = assertThrows(IllegalArgumentException.class, () -> HybridSparseReader.of(8, 0, 1));
    assertTrue(e.getMessage().contains("channelFraction") && e.getMessage().contains("got 0.0"), e.getMessage());
    e = assertThrows(IllegalArgumentException.class, () -> HybridSparseReader.of(8, 1.5, 1));
    assertTrue(e.getMessage().contains("channelFraction") && e.getMessage().contains("got 1.5"), e.getMessage());
    e = assertThrows(IllegalArgumentException.class, () -> HybridSparseReader.of(8, 0.5, -1));
    assertTrue(e.getMessage().contains("recentTokens") && e.getMessage().contains("got -1"), e.getMessage());
  }
}
