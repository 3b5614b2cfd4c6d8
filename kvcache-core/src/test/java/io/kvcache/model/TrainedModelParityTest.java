package io.kvcache.model;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The project's trained model ({@code models/kvcache-byte-4m}, made by {@code tools/train/train.py})
 * as shipped: f16 safetensors in the Hugging Face layout. Its logits for 64 held-out bytes, computed
 * by transformers' {@code LlamaForCausalLM} in float32 from the exported file, must match our
 * decoder's within 1e-4 of the largest logit, from the safetensors and from our own f16 GGUF of them.
 */
class TrainedModelParityTest {

  static final Path DIR = Path.of("../models/kvcache-byte-4m");

  @TempDir
  Path tmp;

  static float[] expectedLogits() throws IOException {
    byte[] raw = Files.readAllBytes(DIR.resolve("expected_logits.f32"));
    float[] logits = new float[raw.length / 4];
    ByteBuffer.wrap(raw).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(logits);
    return logits;
  }

  static int[] tokens() throws IOException {
    @SuppressWarnings("unchecked")
    Map<String, Object> m = (Map<String, Object>) Json.parse(Files.readString(DIR.resolve("expected.json")), "expected");
    return TransformersParityTest.ints(m.get("tokens"));
  }

  @Test
  void shippedModelMatchesTransformers() throws IOException {
    int[] tokens = tokens();
    float[] want = expectedLogits();
    try (LlamaWeights w = LlamaWeights.loadHuggingFace(DIR)) {
      LlamaConfig c = w.config();
      assertEquals(4, c.layers());
      assertEquals(4, c.heads() / c.kvHeads(), "GQA 4:1");
      assertEquals(tokens.length * c.vocabSize(), want.length);
      assertTrue(c.vocabSize() >= ByteTokenizer.VOCAB, "byte-level vocabulary");
      TransformersParityTest.checkParity(w, new TransformersParityTest.Expected(tokens, want, null, null),
          "kvcache-byte-4m safetensors");
    }
  }

  @Test
  void f16GgufOfTheShippedModelMatchesTransformers() throws IOException {
    int[] tokens = tokens();
    float[] want = expectedLogits();
    Path gguf = tmp.resolve("kvcache-byte-4m.gguf");
    try (LlamaWeights w = LlamaWeights.loadHuggingFace(DIR)) {
      GgufWriter.writeLlama(w, gguf, DType.F16);   // the weights are f16 already: the conversion is exact
    }
    try (LlamaWeights w = LlamaWeights.loadGguf(gguf)) {
      TransformersParityTest.checkParity(w, new TransformersParityTest.Expected(tokens, want, null, null),
          "kvcache-byte-4m gguf");
    }
  }

  /**
   * The SwiftKV checkpoint distilled from it ({@code tools/train/distill_swiftkv.py}, Snowflake's
   * layout): PyTorch's student, every token through every layer, against our decoder loading the
   * checkpoint — whose wiring (K/V of layers 2-3 from the state entering layer 2, one cache per pair)
   * is the same with or without skipping.
   */
  @Test
  void distilledSwiftKVCheckpointMatchesPyTorch() throws IOException {
    Path dir = Path.of("../models/kvcache-byte-4m-swiftkv");
    byte[] raw = Files.readAllBytes(dir.resolve("expected_logits.f32"));
    float[] want = new float[raw.length / 4];
    ByteBuffer.wrap(raw).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(want);
    @SuppressWarnings("unchecked")
    Map<String, Object> m = (Map<String, Object>) Json.parse(Files.readString(dir.resolve("expected.json")), "expected");
    int[] tokens = TransformersParityTest.ints(m.get("tokens"));
    try (LlamaWeights w = LlamaWeights.loadHuggingFace(dir)) {
      assertTrue(w.swiftKV().isPresent(), "a SwiftKV checkpoint");
      TransformersParityTest.checkParity(w, new TransformersParityTest.Expected(tokens, want, null, null),
          "kvcache-byte-4m-swiftkv");
      // And the plain model's logits differ: the distilled projections are really used.
      try (LlamaWeights plain = LlamaWeights.loadHuggingFace(DIR)) {
        float[] a = TransformersParityTest.allLogits(w, MatrixKernels.get(), tokens, 64);
        float[] b = TransformersParityTest.allLogits(plain, MatrixKernels.get(), tokens, 64);
        assertTrue(TransformersParityTest.relError(a, b) > 1e-2, "distilled vs plain logits");
      }
    }
  }
}
