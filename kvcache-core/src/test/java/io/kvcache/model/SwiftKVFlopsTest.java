package io.kvcache.model;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;

import io.kvcache.core.KVCacheStrategy;
import io.kvcache.core.Strategies;
import java.io.IOException;
import java.nio.file.Path;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The decoder's prefill FLOP counter against the counts worked out here from the shapes: every
 * prompt row runs every layer in the plain model; with SingleInputKV from half the depth, rows but
 * the last only project K/V (stored without attention) in the later layers, and AcrossKV
 * layers that share a cache project nothing for them.
 */
class SwiftKVFlopsTest {

  @TempDir
  Path tmp;

  // TinyModels' shape: hidden 64, 4 query heads and 2 KV heads of 16, MLP 96, vocab 300; 4 layers.
  static final int H = 64;
  static final int HEADS = 4;
  static final int HD = 16;
  static final int QW = HEADS * HD;
  static final int KVW = 2 * HD;
  static final int F = 96;
  static final int VOCAB = 300;
  static final int LAYERS = 4;

  /** q, k, v and o projections of {@code rows} rows. */
  static long proj(long rows) {
    return rows * (2L * H * (QW + 2 * KVW) + 2L * QW * H);
  }

  static long mlp(long rows) {
    return rows * 2L * 3 * H * F;
  }

  static long kv(long rows) {
    return rows * 2L * H * 2 * KVW;
  }

  /** Attention of the rows at positions {@code [from, to)}, each reaching every earlier row and itself. */
  static long att(long from, long to) {
    long keys = (to * (to + 1) - from * (from + 1)) / 2;
    return 4L * HD * HEADS * keys;
  }

  static long[] counted(LlamaWeights w, KVCacheStrategy s, int[] prompt) {
    try (LlamaModel.Sequence seq = LlamaModel.of(w).newSequence(s, 7)) {
      seq.prefill(prompt, new float[VOCAB]);
      long[] f = seq.prefillFlops();
      seq.decode(3, new float[VOCAB]);
      assertArrayEquals(f, seq.prefillFlops(), "decode is not counted as prefill");
      return f;
    }
  }

  @Test
  void skipFromHalfTheDepthCutsPrefillFlopsByTheExpectedFraction() throws IOException {
    long seed = TinyModels.seed();
    int n = 40;
    int[] p = FastKVTest.prompt(new SplittableRandom(seed), n);
    long head = 2L * H * VOCAB;
    long fullLayer = proj(n) + mlp(n) + att(0, n);
    long[] full = {fullLayer, fullLayer, fullLayer, fullLayer, head};
    // From layer 2: rows 0..n-2 only project K/V, which the cache stores without attention; the
    // last row runs the layer, attending to all n rows.
    long skipped = kv(n - 1) + proj(1) + mlp(1) + att(n - 1, n);
    long[] skip = {fullLayer, fullLayer, skipped, skipped, head};
    // Groups of 2: layer 3 reads layer 2's cache, so only its last row runs (q and o projections).
    long sharing = 2L * H * QW + 2L * QW * H + mlp(1) + att(n - 1, n);
    long[] across = {fullLayer, fullLayer, skipped, sharing, head};
    try (LlamaWeights w = LlamaWeights.loadGguf(TinyModels.write(tmp.resolve("m.gguf"), seed, LAYERS, DType.F32))) {
      assertArrayEquals(full, counted(w, Strategies.full(), p), "plain");
      long[] s1 = counted(w, Strategies.swiftKV(0.5, 1), p);
      assertArrayEquals(skip, s1, "skip from layer 2");
      assertArrayEquals(across, counted(w, Strategies.swiftKV(0.5, 2), p), "skip from layer 2, pairs share");
      // The same count for any chunking of the prompt.
      try (LlamaModel.Sequence seq = LlamaModel.of(w).newSequence(Strategies.swiftKV(0.5, 1), 40)) {
        seq.prefill(p, new float[VOCAB]);
        assertArrayEquals(skip, seq.prefillFlops(), "one chunk");
      }
    }
  }
}
