package io.kvcache.model;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.codec.StorageCodec;
import io.kvcache.core.CacheStats;
import io.kvcache.core.KVCacheStrategy;
import io.kvcache.core.Strategies;
import io.kvcache.fastkv.TokenSelectivePropagation;
import java.io.IOException;
import java.nio.file.Path;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** FastKV on a tiny random model: neutral settings are the full decoder; budgets hold in every layer. */
class FastKVTest {

  @TempDir
  Path tmp;

  record Run(float[] logits, float[] next, CacheStats stats) {}

  static Run run(LlamaWeights w, KVCacheStrategy s, int[] prompt) {
    return run(w, s, prompt, 7, false, null);
  }

  static double relDiff(float[] a, float[] b) {
    double m = 0, s = 1e-30;
    for (int i = 0; i < a.length; i++) {
      m = Math.max(m, Math.abs(a[i] - b[i]));
      s = Math.max(s, Math.abs(a[i]));
    }
    return m / s;
  }

  static int[] prompt(SplittableRandom r, int n) {
    int[] p = new int[n];
    for (int i = 0; i < n; i++) {
      p[i] = r.nextInt(256);
    }
    return p;
  }

  @Test
  void tspLengthAndBudgetCoveringThePromptEqualTheFullDecoder() throws IOException {
    long seed = TinyModels.seed();
    try (LlamaWeights w = LlamaWeights.loadGguf(TinyModels.write(tmp.resolve("m.gguf"), seed, 4, DType.F32))) {
      int[] p = prompt(new SplittableRandom(seed), 31);
      KVCacheStrategy full = Strategies.full(StorageCodec.f32());
      KVCacheStrategy fast = Strategies.fastKV(TokenSelectivePropagation.ofLength(0.25, 31, 8, 7), 31, 8, 7)
          .toBuilder().codec(StorageCodec.f32()).build();
      Run a = run(w, full, p);
      Run b = run(w, fast, p);
      assertTrue(relDiff(a.logits, b.logits) <= 1e-5, "prefill logits, seed=" + seed);
      assertTrue(relDiff(a.next, b.next) <= 1e-5, "decode logits, seed=" + seed);
    }
  }

  @Test
  void kvBudgetHoldsInEveryLayerAndLaterLayersSeeOnlyTheTravellingRows() throws IOException {
    long seed = TinyModels.seed();
    try (LlamaWeights w = LlamaWeights.loadGguf(TinyModels.write(tmp.resolve("m.gguf"), seed, 4, DType.F32))) {
      int[] p = prompt(new SplittableRandom(seed), 40);
      // Half of the 4 layers see every row (TSP at layer 1), 20 rows travel on; every layer keeps 12 tokens
      // per KV head.
      KVCacheStrategy fast = Strategies.fastKV(TokenSelectivePropagation.ofLength(0.5, 20, 8, 7), 12, 8, 7);
      Run r = run(w, fast, p);
      for (int l = 0; l < 4; l++) {
        assertEquals(l <= 1 ? 41 : 21, r.stats.tokensSeen()[l], "rows that reached layer " + l + ", seed=" + seed);
        for (int h = 0; h < 2; h++) {
          assertEquals(13, r.stats.retained()[l][h], "12 kept + the decode token, layer " + l + " seed=" + seed);
        }
      }
      for (float x : r.next) {
        assertTrue(Float.isFinite(x), "seed=" + seed);
      }
    }
  }

  /**
   * A prompt longer than token-selective propagation takes (2^21 tokens) is refused before any layer
   * runs: refused after the first layers had filled the cache, it left the sequence half-prefilled.
   */
  @Test
  void aPromptTooLongForTheSelectionIsRefusedBeforeAnyLayerRuns() throws IOException {
    long seed = TinyModels.seed();
    try (LlamaWeights w = LlamaWeights.loadGguf(TinyModels.write(tmp.resolve("m.gguf"), seed, 4, DType.F32))) {
      LlamaModel model = LlamaModel.of(w);
      KVCacheStrategy fast = Strategies.fastKV(TokenSelectivePropagation.ofLength(0.5, 20, 8, 7), 12, 8, 7);
      try (LlamaModel.Sequence seq = model.newSequence(fast, 256)) {
        int[] tooLong = new int[(1 << 21) + 1];
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
            () -> seq.prefill(tooLong, new float[model.config().vocabSize()]));
        assertTrue(e.getMessage().contains("2^21") && e.getMessage().contains(String.valueOf(tooLong.length)),
            e.getMessage());
        for (long seen : seq.cache().stats().tokensSeen()) {
          assertEquals(0, seen, "nothing was stored, seed=" + seed);
        }
      }
    }
  }

  /** The token the runs of these tests decode after the prompt: the same for every strategy compared. */
  static int decodeToken(int[] prompt) {
    return prompt.length == 0 ? 0 : prompt[prompt.length / 2];
  }

  static Run run(LlamaWeights w, KVCacheStrategy s, int[] prompt, int chunk, boolean wholeLayer, long[] flops) {
    return run(LlamaModel.of(w), s, prompt, chunk, wholeLayer, flops);
  }

  static Run run(LlamaModel model, KVCacheStrategy s, int[] prompt, int chunk, boolean wholeLayer, long[] flops) {
    float[] logits = new float[model.config().vocabSize()];
    float[] next = new float[model.config().vocabSize()];
    try (LlamaModel.Sequence seq = model.newSequence(s, chunk)) {
      seq.wholeSelectionLayer = wholeLayer;
      seq.prefill(prompt, logits);
      if (flops != null) {
        System.arraycopy(seq.prefillFlops(), 0, flops, 0, flops.length);
      }
      assertEquals(prompt.length, seq.position(), "the next position follows the prompt");
      // A token fixed by the prompt, not the argmax: two runs whose logits differ by rounding could
      // take different tokens on a near-tie, and their decode logits would then differ by far more.
      seq.decode(decodeToken(prompt), next);
      return new Run(logits, next, seq.cache().stats());
    }
  }

  @Test
  void selectionLayerRunsOnlyTheTravellingRowsAndGivesTheWholeLayersOutputs() throws IOException {
    // The paper's implementation runs the selection layer whole for every row and drops the rows that
    // stay behind afterwards; the decoder runs their keys and values only. Same selection, same cache,
    // same logits — over chunk sizes that split the runs of travelling rows and the window, with and
    // without the KV compression.
    long seed = TinyModels.seed();
    SplittableRandom r = new SplittableRandom(seed);
    try (LlamaWeights w = LlamaWeights.loadGguf(TinyModels.write(tmp.resolve("m.gguf"), seed, 4, DType.F32))) {
      for (int n : new int[] {9, 40, 57}) {
        int[] p = prompt(r, n);
        for (int chunk : new int[] {1, 3, 7, 64}) {
          for (int keep : new int[] {8, 13, 20}) {
            for (int budget : new int[] {12, 64}) {
              KVCacheStrategy s = Strategies.fastKV(TokenSelectivePropagation.ofLength(0.5, keep, 8, 3), budget, 8, 7)
                  .toBuilder().codec(StorageCodec.f32()).build();
              String what = "seed=" + seed + " n=" + n + " chunk=" + chunk + " keep=" + keep + " budget=" + budget;
              Run whole = run(w, s, p, chunk, true, null);
              Run rows = run(w, s, p, chunk, false, null);
              assertTrue(relDiff(whole.logits, rows.logits) <= 1e-5, "prefill logits, " + what);
              assertTrue(relDiff(whole.next, rows.next) <= 1e-5, "decode logits, " + what);
              for (int l = 0; l < 4; l++) {
                assertEquals(whole.stats.tokensSeen()[l], rows.stats.tokensSeen()[l], "layer " + l + ", " + what);
                assertArrayEquals(whole.stats.retained()[l], rows.stats.retained()[l], "layer " + l + ", " + what);
              }
            }
          }
        }
      }
    }
  }

  @Test
  void strategiesWhoseCacheCouldTellRunTheWholeSelectionLayer() throws IOException {
    // A SnapKV window longer than the selection window reads queries of rows that do not travel;
    // StreamingLLM and H2O act as the prompt arrives; SKVQ quantizes by call. Each must give exactly the
    // whole layer's logits and FLOPs; the FastKV preset's own pairing (SnapKV window = selection window,
    // f16) takes the shortcut.
    long seed = TinyModels.seed();
    TokenSelectivePropagation tsp = TokenSelectivePropagation.ofLength(0.5, 12, 8, 3);
    try (LlamaWeights w = LlamaWeights.loadGguf(TinyModels.write(tmp.resolve("m.gguf"), seed, 4, DType.F32))) {
      int[] p = prompt(new SplittableRandom(seed), 57);
      KVCacheStrategy[] whole = {
          Strategies.fastKV(tsp, 24, 16, 7),
          KVCacheStrategy.builder().schedule(tsp).retention(io.kvcache.retention.RetentionPolicy.sinksAndWindow(2, 20))
              .build(),
          KVCacheStrategy.builder().schedule(tsp).retention(new io.kvcache.retention.H2O(10, 10)).build(),
          Strategies.fastKV(tsp, 64, 8, 7).toBuilder().codec(io.kvcache.skvq.SkvqCodec.of(
              io.kvcache.skvq.SkvqConfig.paperDefault().withGroups(8, 8).withWindow(16, 2))).build()};
      for (KVCacheStrategy s : whole) {
        long[] a = new long[5];
        long[] b = new long[5];
        Run ref = run(w, s, p, 7, true, a);
        Run got = run(w, s, p, 7, false, b);
        assertArrayEquals(ref.logits, got.logits, s.name() + ", seed=" + seed);
        assertArrayEquals(ref.next, got.next, s.name() + ", seed=" + seed);
        assertArrayEquals(a, b, "FLOPs of " + s.name() + ", seed=" + seed);
      }
      long[] a = new long[5];
      long[] b = new long[5];
      KVCacheStrategy preset = Strategies.fastKV(tsp, 24, 8, 7);
      run(w, preset, p, 7, true, a);
      run(w, preset, p, 7, false, b);
      assertTrue(b[1] < a[1], "the preset's pairing runs the selection layer for the travelling rows, seed=" + seed);
    }
  }

  @Test
  void selectionOnTheMatrixThreadsEqualsOneThread() throws IOException {
    long seed = TinyModels.seed();
    try (LlamaWeights w = LlamaWeights.loadGguf(TinyModels.write(tmp.resolve("m.gguf"), seed, 4, DType.F32))) {
      int[] p = prompt(new SplittableRandom(seed), 61);
      KVCacheStrategy s = Strategies.fastKV(TokenSelectivePropagation.ofLength(0.5, 16, 8, 3), 20, 8, 7);
      Run one = run(w, s, p, 9, false, null);
      java.util.concurrent.ExecutorService ex = java.util.concurrent.Executors.newFixedThreadPool(3);
      try {
        Run many = run(new LlamaModel(w, MatrixKernels.get(), ex, 4), s, p, 9, false, null);
        assertArrayEquals(one.logits, many.logits, "prefill, seed=" + seed);
        assertArrayEquals(one.next, many.next, "decode, seed=" + seed);
      } finally {
        ex.shutdownNow();
      }
    }
  }

  @Test
  void selectionLayerCountsKeysAndValuesForEveryRowAndTheRestForTheTravellingRows() throws IOException {
    long seed = TinyModels.seed();
    try (LlamaWeights w = LlamaWeights.loadGguf(TinyModels.write(tmp.resolve("m.gguf"), seed, 4, DType.F32))) {
      LlamaConfig c = w.config();
      int n = 40;
      int[] p = prompt(new SplittableRandom(seed), n);
      // Only the 8-row window travels (a TSP length below the window), so the travelling positions are
      // known: 32..39. Selection at layer 1 of 4.
      KVCacheStrategy s = Strategies.fastKV(TokenSelectivePropagation.ofLength(0.5, 1, 8, 7), 64, 8, 7)
          .toBuilder().codec(StorageCodec.f32()).build();
      long[] whole = new long[5];
      long[] rows = new long[5];
      run(w, s, p, 7, true, whole);
      run(w, s, p, 7, false, rows);
      long h = c.hidden(), qw = c.qWidth(), kvw = c.kvWidth(), f = c.intermediate();
      long keys = 0;
      for (int pos = n - 8; pos < n; pos++) {
        keys += pos + 1;
      }
      long expected = 2 * n * h * kvw * 2      // K and V of every row
          + 2 * (8 + 8) * h * qw                // the window's queries, for the selection and again to attend
          + 4L * c.headDim() * c.heads() * keys // the travelling rows' attention, each up to its own position
          + 2 * 8 * qw * h                      // their output projection
          + 3 * 2 * 8 * h * f;                  // their MLP
      assertEquals(expected, rows[1], "selection layer, seed=" + seed);
      long allKeys = (long) n * (n + 1) / 2;
      assertEquals(2 * n * h * (qw + 2 * kvw + qw) + 4L * c.headDim() * c.heads() * allKeys + 3 * 2 * n * h * f,
          whole[1], "the whole selection layer, seed=" + seed);
      assertEquals(whole[0], rows[0], "layer 0 sees every row either way, seed=" + seed);
      assertEquals(whole[2], rows[2], "layer 2 sees the travelling rows either way, seed=" + seed);
      assertEquals(whole[3], rows[3], "seed=" + seed);
      assertEquals(whole[4], rows[4], "output head, seed=" + seed);
    }
  }

  @Test
  void scheduleFollowsDepthAndRate() {
    TokenSelectivePropagation paper = TokenSelectivePropagation.ofRate(0.5, 0.2, 8, 7);
    assertEquals(15, paper.selectionLayer(32), "layer 15 of Llama-3.1-8B's 32 (the authors' tsp_idx)");
    assertEquals(17, paper.selectionLayer(36), "layer 17 of Ministral-8B's 36 (the authors' tsp_idx)");
    assertEquals(19, paper.selectionLayer(40), "layer 19 of Mistral-Nemo's 40 (the authors' tsp_idx)");
    assertEquals(7, paper.selectionLayer(16), "layers 0-7, half of a 16-layer model, see every row");
    assertEquals(0, TokenSelectivePropagation.ofRate(0.01, 0.2, 8, 7).selectionLayer(16), "at least layer 0");
    assertEquals(15, TokenSelectivePropagation.ofRate(1.0, 0.2, 8, 7).selectionLayer(16), "every layer");
    assertEquals(1638, paper.rowsKept(8192));
    assertEquals(8, paper.rowsKept(10), "never fewer rows than the window");
    assertEquals(8, paper.selectionWindow());
    assertEquals(7, paper.selectionPool());
    assertEquals(2048, TokenSelectivePropagation.ofLength(0.5, 2048, 8, 7).rowsKept(8192));
    assertEquals(100, TokenSelectivePropagation.ofLength(0.5, 2048, 8, 7).rowsKept(100));
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
        () -> TokenSelectivePropagation.ofRate(0.5, 1.5, 8, 7));
    assertTrue(e.getMessage().contains("tspRate") && e.getMessage().contains("1.5"), e.getMessage());
    e = assertThrows(IllegalArgumentException.class, () -> TokenSelectivePropagation.ofLength(0.0, 10, 8, 7));
    assertTrue(e.getMessage().contains("fullShare") && e.getMessage().contains("got 0.0"), e.getMessage());
    e = assertThrows(IllegalArgumentException.class, () -> TokenSelectivePropagation.ofLength(1.01, 10, 8, 7));
    assertTrue(e.getMessage().contains("fullShare") && e.getMessage().contains("got 1.01"), e.getMessage());
    e = assertThrows(IllegalArgumentException.class, () -> TokenSelectivePropagation.ofLength(0.5, 10, 8, 6));
    assertTrue(e.getMessage().contains("pool must be an odd kernel size") && e.getMessage().contains("got 6"),
        e.getMessage());
  }
  /**
   * The rows that travel past the selection layer keep their prompt positions there (their RoPE and the
   * causal mask use them): the later layers hold the same rows, the window's rows among them at the
   * prompt's last positions, not renumbered 0 to m - 1. Both selection-layer paths.
   */
  @Test
  void travellingRowsKeepTheirPromptPositionsInTheLaterLayers() throws Exception {
    long seed = TinyModels.seed();
    try (LlamaWeights w = LlamaWeights.loadGguf(TinyModels.write(tmp.resolve("m.gguf"), seed, 4, DType.F32))) {
      int n = 40, travel = 20, window = 8;
      int[] p = prompt(new SplittableRandom(seed), n);
      // Keep-all retention: what a layer holds is exactly the rows that reached it.
      KVCacheStrategy s = KVCacheStrategy.builder().codec(StorageCodec.f32())
          .schedule(TokenSelectivePropagation.ofLength(0.5, travel, window, 7)).build();
      for (boolean wholeLayer : new boolean[] {false, true}) {
        try (LlamaModel.Sequence seq = LlamaModel.of(w).newSequence(s, 7)) {
          seq.wholeSelectionLayer = wholeLayer;
          seq.prefill(p, new float[w.config().vocabSize()]);
          java.lang.reflect.Field f = seq.cache().getClass().getDeclaredField("stores");
          f.setAccessible(true);
          io.kvcache.codec.HeadStore[][] stores = (io.kvcache.codec.HeadStore[][]) f.get(seq.cache());
          java.util.TreeSet<Integer> travelled = null;
          for (int l = 0; l < 4; l++) {
            for (io.kvcache.codec.HeadStore st : stores[l]) {
              java.util.TreeSet<Integer> held = new java.util.TreeSet<>();
              for (int slot = 0; slot < st.pageCount() * io.kvcache.codec.HeadStore.PAGE_TOKENS; slot++) {
                if (st.position(slot) != io.kvcache.codec.HeadStore.EMPTY) {
                  held.add(st.position(slot));
                }
              }
              String at = "layer " + l + ", whole selection layer " + wholeLayer + ", seed=" + seed;
              if (l <= 1) {
                assertEquals(n, held.size(), at);
                assertEquals(n - 1, held.last(), at);
                continue;
              }
              assertEquals(travel, held.size(), at);
              for (int t = n - window; t < n; t++) {
                assertTrue(held.contains(t), "window row " + t + " travels at its position, " + at + ": " + held);
              }
              if (travelled == null) {
                travelled = held;
              }
              assertEquals(travelled, held, "every later layer and KV head holds the same rows, " + at);
            }
          }
        }
      }
    }
  }
  /**
   * The selection keeps the rows the window attends to most, not the least: eight rows whose keys point
   * along the window's queries (every head) are chosen, with the window, over rows of small random keys.
   */
  @Test
  void theSelectionKeepsTheRowsTheWindowAttendsToMost() throws IOException {
    long seed = TinyModels.seed();
    try (LlamaWeights w = LlamaWeights.loadGguf(TinyModels.write(tmp.resolve("m.gguf"), seed, 2, DType.F32))) {
      LlamaModel model = LlamaModel.of(w);
      LlamaConfig c = model.config();
      int n = 64, window = 8, keep = 16, hd = c.headDim(), kvw = c.kvWidth(), qw = c.qWidth();
      SplittableRandom r = new SplittableRandom(seed);
      float[] u = new float[hd];
      double norm = 0;
      for (int i = 0; i < hd; i++) {
        u[i] = (float) r.nextGaussian();
        norm += u[i] * u[i];
      }
      for (int i = 0; i < hd; i++) {
        u[i] *= (float) (2 * Math.sqrt(hd / norm)); // |u|^2 = 4 hd: a needle's logit is 4 sqrt(hd)
      }
      java.util.TreeSet<Integer> needles = new java.util.TreeSet<>();
      while (needles.size() < 8) {
        needles.add(r.nextInt(n - window));
      }
      float[] keys = new float[n * kvw];
      for (int j = 0; j < n; j++) {
        for (int e = 0; e < kvw; e++) {
          keys[j * kvw + e] = needles.contains(j) ? u[e % hd] : (float) (0.1 * r.nextGaussian());
        }
      }
      float[] winQ = new float[window * qw];
      for (int e = 0; e < winQ.length; e++) {
        winQ[e] = u[e % hd];
      }
      try (LlamaModel.Sequence seq = model.newSequence(Strategies.full(), 8)) {
        int[] rows = seq.selectRows(keys, winQ, n, window, keep, 1);
        java.util.TreeSet<Integer> expected = new java.util.TreeSet<>(needles);
        for (int t = n - window; t < n; t++) {
          expected.add(t);
        }
        assertEquals(expected.toString(), java.util.Arrays.toString(rows), "seed=" + seed);
      }
    }
  }
}
