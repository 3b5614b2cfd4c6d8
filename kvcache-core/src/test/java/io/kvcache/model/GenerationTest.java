package io.kvcache.model;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.codec.StorageCodec;
import io.kvcache.core.KVCacheStrategy;
import io.kvcache.core.Strategies;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Decode against prefill, sampling, stopping, the byte tokenizer. */
class GenerationTest {

  static final KVCacheStrategy F32 = Strategies.full(StorageCodec.f32());

  @TempDir
  Path tmp;

  static int[] randomTokens(SplittableRandom r, int n, int vocab) {
    int[] t = new int[n];
    for (int i = 0; i < n; i++) {
      t[i] = r.nextInt(vocab);
    }
    return t;
  }

  @Test
  void decodeStepsReproducePrefillLogits() throws IOException {
    long seed = TinyModels.seed();
    SplittableRandom r = new SplittableRandom(seed);
    try (LlamaWeights w = LlamaWeights.loadGguf(TinyModels.write(tmp.resolve("m.gguf"), seed, 3, DType.F32))) {
      int v = w.config().vocabSize();
      int[] tokens = randomTokens(r, 14, v);
      float[] all = new float[tokens.length * v];
      ExecutorService ex = Executors.newFixedThreadPool(2);
      try {
        LlamaModel model = new LlamaModel(w, MatrixKernels.get(), ex, 3);
        try (LlamaModel.Sequence s = model.newSequence(F32, 4)) {
          s.prefillAllLogits(tokens, all);
        }
        float[] logits = new float[v];
        try (LlamaModel.Sequence s = LlamaModel.of(w).newSequence(F32, 3)) {
          s.prefill(Arrays.copyOf(tokens, 6), logits);
          check(all, 5, logits, v, seed);
          for (int i = 6; i < tokens.length; i++) {
            s.decode(tokens[i], logits);
            check(all, i, logits, v, seed);
          }
          assertEquals(tokens.length, s.position());
        }
      } finally {
        ex.shutdownNow();
      }
    }
  }

  static void check(float[] all, int row, float[] got, int v, long seed) {
    double maxRef = 0;
    double maxDiff = 0;
    for (int i = 0; i < v; i++) {
      maxRef = Math.max(maxRef, Math.abs(all[row * v + i]));
      maxDiff = Math.max(maxDiff, Math.abs(all[row * v + i] - got[i]));
    }
    assertTrue(maxDiff <= 1e-5 * maxRef, "seed=" + seed + " position " + row + ": max diff " + maxDiff
        + " vs max |logit| " + maxRef);
  }

  @Test
  void samplingIsReproducibleBySeedAndTinyTopPIsGreedy() throws IOException {
    long seed = TinyModels.seed();
    SplittableRandom r = new SplittableRandom(seed);
    try (LlamaWeights w = LlamaWeights.loadGguf(TinyModels.write(tmp.resolve("m.gguf"), seed, 2, DType.F16))) {
      Generator g = new Generator(LlamaModel.of(w), Strategies.full());
      int[] prompt = randomTokens(r, 9, w.config().vocabSize());
      int[] a = g.generate(prompt, GenerationConfig.sampled(24, 1.5f, 0.95f, 42), null);
      int[] b = g.generate(prompt, GenerationConfig.sampled(24, 1.5f, 0.95f, 42), null);
      int[] c = g.generate(prompt, GenerationConfig.sampled(24, 1.5f, 0.95f, 43), null);
      assertArrayEquals(a, b, "seed=" + seed + ": same sampling seed, same tokens");
      assertFalse(Arrays.equals(a, c), "seed=" + seed + ": 24 tokens at temperature 1.5 should depend on the seed");
      int[] greedy = g.generate(prompt, GenerationConfig.greedy(12), null);
      int[] nucleus = g.generate(prompt, GenerationConfig.sampled(12, 1f, 1e-6f, 7), null);
      assertArrayEquals(greedy, nucleus, "seed=" + seed + ": top-p near 0 keeps only the most likely token");
    }
  }

  @Test
  void listenerSeesEveryTokenAndCanStop() throws IOException {
    long seed = TinyModels.seed();
    try (LlamaWeights w = LlamaWeights.loadGguf(TinyModels.write(tmp.resolve("m.gguf"), seed, 1, DType.BF16))) {
      Generator g = new Generator(LlamaModel.of(w), Strategies.full());
      List<Integer> seen = new ArrayList<>();
      int[] out = g.generate(new int[] {1, 2, 3}, GenerationConfig.greedy(10), (i, t) -> {
        seen.add(t);
        return i < 3;
      });
      assertEquals(4, out.length, "seed=" + seed);
      assertEquals(List.of(out[0], out[1], out[2], out[3]), seen);
      int[] full = g.generate(new int[] {1, 2, 3}, GenerationConfig.greedy(10), null);
      int[] stopped = g.generate(new int[] {1, 2, 3}, GenerationConfig.greedy(10).withStopToken(full[1]), null);
      assertEquals(full[0] == full[1] ? 1 : 2, stopped.length, "seed=" + seed + ": stops after the stop token");
    }
  }

  @Test
  void invalidInputsAreRejectedWithTheirNames() throws IOException {
    try (LlamaWeights w = LlamaWeights.loadGguf(TinyModels.write(tmp.resolve("m.gguf"), 1, 1, DType.F32))) {
      LlamaModel m = LlamaModel.of(w);
      try (LlamaModel.Sequence s = m.newSequence(F32, 8)) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
            () -> s.prefill(new int[] {1, 300}, null));
        assertTrue(e.getMessage().contains("tokens[1]") && e.getMessage().contains("300"), e.getMessage());
        s.prefill(new int[] {1}, null);
        assertThrows(IllegalStateException.class, () -> s.prefill(new int[] {1}, null));
      }
      IllegalArgumentException bad = assertThrows(IllegalArgumentException.class,
          () -> new GenerationConfig(0, 0, 1, 0, 1, -1));
      assertTrue(bad.getMessage().contains("maxNewTokens") && bad.getMessage().contains("got 0"), bad.getMessage());
      bad = assertThrows(IllegalArgumentException.class, () -> GenerationConfig.sampled(1, 1, 0f, 0));
      assertTrue(bad.getMessage().contains("topP") && bad.getMessage().contains("got 0.0"), bad.getMessage());
    }
  }

  @Test
  void byteTokenizerRoundTripsUtf8() {
    String s = "héllo, wörld \uD83D\uDE00";
    int[] ids = ByteTokenizer.encode(s, true);
    assertEquals(ByteTokenizer.BOS, ids[0]);
    assertEquals(s.getBytes(java.nio.charset.StandardCharsets.UTF_8).length + 1, ids.length);
    int[] withEos = Arrays.copyOf(ids, ids.length + 1);
    withEos[ids.length] = ByteTokenizer.EOS;
    assertEquals(s, ByteTokenizer.decode(withEos));
  }
}
