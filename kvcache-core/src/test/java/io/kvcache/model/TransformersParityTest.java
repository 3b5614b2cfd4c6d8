package io.kvcache.model;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.codec.StorageCodec;
import io.kvcache.core.KVCacheStrategy;
import io.kvcache.core.Strategies;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Logits of our decoder against Hugging Face transformers 5.17 (float32, CPU) for tiny random
 * checkpoints made by {@code tools/parity/make_tiny.py}: a Llama with the llama3 RoPE rule and a
 * separate head, and a Qwen2 with attention biases and a tied head. Error measure: the largest
 * absolute difference over all logits divided by the largest expected magnitude, at most 1e-4.
 */
class TransformersParityTest {

  static final Path RES = Path.of("src/test/resources");
  static final double TOL = 1e-4;
  static final KVCacheStrategy F32 = Strategies.full(StorageCodec.f32());

  @TempDir
  Path tmp;

  record Expected(int[] tokens, float[] logits, int[] prompt, int[] greedy) {}

  static Expected expected(String name) throws IOException {
    Path d = RES.resolve(name);
    @SuppressWarnings("unchecked")
    Map<String, Object> m = (Map<String, Object>) Json.parse(Files.readString(d.resolve("expected.json")), "expected");
    byte[] raw = Files.readAllBytes(d.resolve("expected_logits.f32"));
    float[] logits = new float[raw.length / 4];
    ByteBuffer.wrap(raw).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(logits);
    return new Expected(ints(m.get("tokens")), logits, ints(m.get("greedy_prompt")), ints(m.get("greedy_next")));
  }

  static int[] ints(Object o) {
    List<?> l = (List<?>) o;
    int[] a = new int[l.size()];
    for (int i = 0; i < a.length; i++) {
      a[i] = (int) (long) (Long) l.get(i);
    }
    return a;
  }

  static double relError(float[] got, float[] want) {
    double maxDiff = 0;
    double maxRef = 0;
    for (int i = 0; i < want.length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(got[i] - want[i]));
      maxRef = Math.max(maxRef, Math.abs(want[i]));
    }
    return maxDiff / maxRef;
  }

  static float[] allLogits(LlamaWeights w, MatrixKernels k, int[] tokens, int chunk) {
    LlamaModel model = new LlamaModel(w, k, null, 1);
    float[] out = new float[tokens.length * w.config().vocabSize()];
    try (LlamaModel.Sequence s = model.newSequence(F32, chunk)) {
      s.prefillAllLogits(tokens, out);
    }
    return out;
  }

  static void checkParity(LlamaWeights w, Expected e, String what) {
    for (MatrixKernels k : kernels()) {
      for (int chunk : new int[] {64, 5}) {
        double err = relError(allLogits(w, k, e.tokens, chunk), e.logits);
        System.out.printf("parity %s kernels=%s chunk=%d relative error %.3g%n", what, k.name(), chunk, err);
        assertTrue(err <= TOL, what + " kernels=" + k.name() + " chunk=" + chunk + ": relative error " + err
            + " > " + TOL);
      }
    }
  }

  static List<MatrixKernels> kernels() {
    return MatrixKernels.vectorAvailable() ? List.of(MatrixKernels.scalar(), MatrixKernels.vector())
        : List.of(MatrixKernels.scalar());
  }

  @ParameterizedTest
  @ValueSource(strings = {"tiny-llama", "tiny-qwen2"})
  void safetensorsLogitsMatchTransformers(String name) throws IOException {
    Expected e = expected(name);
    try (LlamaWeights w = LlamaWeights.loadHuggingFace(RES.resolve(name))) {
      assertEquals(e.logits.length, e.tokens.length * w.config().vocabSize());
      checkParity(w, e, name + " safetensors");
    }
  }

  @ParameterizedTest
  @ValueSource(strings = {"tiny-llama", "tiny-qwen2"})
  void ggufConversionLogitsMatchTransformers(String name) throws IOException {
    Expected e = expected(name);
    Path gguf = tmp.resolve(name + ".gguf");
    try (LlamaWeights w = LlamaWeights.loadHuggingFace(RES.resolve(name))) {
      GgufWriter.writeLlama(w, gguf, DType.F32);
    }
    try (LlamaWeights w = LlamaWeights.loadGguf(gguf)) {
      assertTrue(w.config().ropeInterleaved(), "a llama GGUF uses interleaved rotary pairs");
      checkParity(w, e, name + " gguf");
    }
  }

  @ParameterizedTest
  @ValueSource(strings = {"tiny-llama", "tiny-qwen2"})
  void greedyContinuationMatchesTransformers(String name) throws IOException {
    Expected e = expected(name);
    try (LlamaWeights w = LlamaWeights.loadHuggingFace(RES.resolve(name))) {
      int[] got = new Generator(LlamaModel.of(w), F32).generate(e.prompt, GenerationConfig.greedy(e.greedy.length),
          null);
      assertArrayEquals(e.greedy, got, name + ": greedy tokens");
    }
  }

  @ParameterizedTest
  @ValueSource(strings = {"F16", "BF16", "Q8_0"})
  void quantizedGgufStaysCloseToTransformers(String type) throws IOException {
    Expected e = expected("tiny-llama");
    Path gguf = tmp.resolve("q.gguf");
    try (LlamaWeights w = LlamaWeights.loadHuggingFace(RES.resolve("tiny-llama"))) {
      GgufWriter.writeLlama(w, gguf, DType.valueOf(type));
    }
    // Rounding the weights (8 to 11 mantissa bits) moves logits by well under 5% of their range.
    double tol = 0.05;
    try (LlamaWeights w = LlamaWeights.loadGguf(gguf)) {
      double err = relError(allLogits(w, MatrixKernels.get(), e.tokens, 16), e.logits);
      assertTrue(err <= tol && err > 0, type + ": relative error " + err + ", expected in (0, " + tol + "]");
    }
  }
}
