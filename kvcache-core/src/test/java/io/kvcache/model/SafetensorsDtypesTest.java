package io.kvcache.model;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * F16 and BF16 safetensors (the usual dtypes of released checkpoints), split over two shards, and
 * the Mistral architecture name: written here from the float32 tiny Llama, read back element for
 * element, and run against transformers' float32 logits.
 */
class SafetensorsDtypesTest {

  static final Path TINY = Path.of("src/test/resources/tiny-llama");

  @TempDir
  Path tmp;

  /** Writes {@code names} of {@code src} to one safetensors file in {@code dtype}. */
  static void writeShard(Path file, Map<String, Weight> src, Iterable<String> names, String dtype) throws IOException {
    StringBuilder h = new StringBuilder("{\"__metadata__\":{\"format\":\"pt\"}");
    long off = 0;
    for (String n : names) {
      Weight w = src.get(n);
      long bytes = (long) w.rows() * w.cols() * 2;
      String shape = w.rows() == 1 ? "[" + w.cols() + "]" : "[" + w.rows() + "," + w.cols() + "]";
      h.append(",\"").append(n).append("\":{\"dtype\":\"").append(dtype).append("\",\"shape\":").append(shape)
          .append(",\"data_offsets\":[").append(off).append(',').append(off + bytes).append("]}");
      off += bytes;
    }
    h.append('}');
    while ((h.length() + 8) % 8 != 0) {
      h.append(' ');
    }
    byte[] hb = h.toString().getBytes(StandardCharsets.UTF_8);
    ByteBuffer b = ByteBuffer.allocate((int) (8 + hb.length + off)).order(ByteOrder.LITTLE_ENDIAN);
    b.putLong(hb.length).put(hb);
    for (String n : names) {
      Weight w = src.get(n);
      for (int r = 0; r < w.rows(); r++) {
        for (int c = 0; c < w.cols(); c++) {
          float f = w.get(r, c);
          b.putShort(dtype.equals("F16") ? Float.floatToFloat16(f) : (short) GgufWriter.bf16Bits(f));
        }
      }
    }
    Files.write(file, b.array());
  }

  @ParameterizedTest
  @ValueSource(strings = {"F16", "BF16"})
  void halfPrecisionShardsLoadExactlyAndStayCloseToTransformers(String dtype) throws IOException {
    Map<String, Weight> src = new HashMap<>();
    Safetensors.read(TINY.resolve("model.safetensors"), src, new HashMap<>());
    Path d = Files.createDirectories(tmp.resolve("ckpt"));
    Files.writeString(d.resolve("config.json"), Files.readString(TINY.resolve("config.json"))
        .replace("LlamaForCausalLM", "MistralForCausalLM"));
    java.util.List<String> names = new java.util.ArrayList<>(src.keySet());
    java.util.Collections.sort(names);
    int half = names.size() / 2;
    writeShard(d.resolve("model-00001-of-00002.safetensors"), src, names.subList(0, half), dtype);
    writeShard(d.resolve("model-00002-of-00002.safetensors"), src, names.subList(half, names.size()), dtype);

    TransformersParityTest.Expected e = TransformersParityTest.expected("tiny-llama");
    try (LlamaWeights w = LlamaWeights.loadHuggingFace(d)) {
      assertEquals("MistralForCausalLM", w.config().architecture());
      Weight q = w.layers[1].wq;
      Weight orig = src.get("model.layers.1.self_attn.q_proj.weight");
      assertEquals(DType.valueOf(dtype), q.type());
      for (int r = 0; r < q.rows(); r++) {
        for (int c = 0; c < q.cols(); c++) {
          float f = orig.get(r, c);
          float want = dtype.equals("F16") ? Float.float16ToFloat(Float.floatToFloat16(f))
              : Float.intBitsToFloat(GgufWriter.bf16Bits(f) << 16);
          assertEquals(want, q.get(r, c), "element [" + r + "][" + c + "]");
        }
      }
      double err = TransformersParityTest.relError(
          TransformersParityTest.allLogits(w, MatrixKernels.get(), e.tokens(), 16), e.logits());
      // Rounding the weights to 8 (bf16) or 11 (f16) significant bits moves the logits a little.
      assertTrue(err > 0 && err < 0.05, dtype + ": relative error " + err);
    }
  }
}
