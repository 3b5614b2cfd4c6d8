package io.kvcache.model;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.ShortBuffer;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * Llama-family weights filled with seeded random numbers, for benchmarks and tests that need a model
 * of a real model's shape but not its knowledge: speed depends on the shape alone.
 *
 * <p>Matrices are f16 in direct (off-heap) buffers, so they count against
 * {@code -XX:MaxDirectMemorySize} (by default the maximum heap size), not the heap: the
 * {@code llama-3.2-1b} shape needs {@link #bytes(LlamaConfig)} = 2.47 GB of it. Elements are drawn
 * from N(0, 0.02²), the initialisation range of Hugging Face's Llama; RMSNorm weights are 1 and
 * biases (where the config has them) 0, as a freshly initialised model has them.
 */
public final class RandomWeights {

  /** Standard deviation of the matrix elements ({@code initializer_range} of Hugging Face's Llama). */
  static final double SD = 0.02;

  private RandomWeights() {}

  /** @return the names {@link #shape(String)} accepts */
  public static List<String> shapeNames() {
    return List.of("llama-3.2-1b", "tiny");
  }

  /**
   * A named model shape.
   *
   * <ul>
   *   <li>{@code llama-3.2-1b}: Llama-3.2-1B's config — 16 layers, hidden 2048, 32 query / 8 KV heads
   *       of 64, MLP 8192, vocab 128256, RoPE theta 500000 with the "llama3" scaling (factor 32,
   *       frequency factors 1 and 4, 8192 original positions), tied embeddings, 131072 positions.</li>
   *   <li>{@code tiny}: 4 layers, hidden 64, 4 query / 2 KV heads of 16, MLP 128, vocab 512, RoPE
   *       theta 10000, tied embeddings; builds in milliseconds, for tests and a quick look.</li>
   * </ul>
   *
   * @param name one of {@link #shapeNames()}, case-insensitive
   * @return the config
   * @throws IllegalArgumentException naming the shape and the accepted names when it is unknown
   */
  public static LlamaConfig shape(String name) {
    String n = name == null ? "" : name.trim().toLowerCase(Locale.ROOT);
    return switch (n) {
      case "llama-3.2-1b" -> new LlamaConfig("llama-3.2-1b", 128256, 2048, 8192, 16, 32, 8, 64, 1e-5f, 500000.0,
          new LlamaConfig.RopeScaling(32, 1, 4, 8192), false, true, false, 128000, 128001, 131072);
      case "tiny" -> new LlamaConfig("tiny", 512, 64, 128, 4, 4, 2, 16, 1e-5f, 10000.0, null, false, true, false, 1, 2,
          4096);
      default -> throw new IllegalArgumentException("shape must be one of " + String.join(", ", shapeNames())
          + ", got '" + name + "'");
    };
  }

  /**
   * Direct-memory bytes that {@link #create} allocates for {@code config}: its f16 matrices (the f32
   * norms and biases, a few KiB, are on the heap).
   *
   * @param config the hyper-parameters
   * @return bytes of the matrices
   */
  public static long bytes(LlamaConfig config) {
    long h = config.hidden();
    long q = config.qWidth();
    long kv = config.kvWidth();
    long f = config.intermediate();
    long matrices = config.vocabSize() * h * (config.tieEmbeddings() ? 1 : 2)
        + config.layers() * (q * h + 2 * kv * h + h * q + 3 * f * h);
    return 2 * matrices;
  }

  /**
   * Builds random weights; the same config and seed give the same weights.
   *
   * @param config the hyper-parameters; every matrix must fit in 2 GiB
   * @param seed   the random seed
   * @return the weights, ready for {@link LlamaModel}
   * @throws IllegalArgumentException naming the tensor when a matrix exceeds 2 GiB
   * @throws IllegalStateException    naming the bytes needed when direct memory runs out
   */
  public static LlamaWeights create(LlamaConfig config, long seed) {
    SplittableRandom r = new SplittableRandom(seed);
    // One Gaussian draw per element would take most of a minute for the 1.2 G elements of the 1B
    // shape; 8 random bits per element through a table of 256 Gaussian draws takes a few seconds and
    // gives the same spread.
    short[] table = new short[256];
    for (int i = 0; i < table.length; i++) {
      table[i] = Float.floatToFloat16((float) (SD * r.nextGaussian()));
    }
    int h = config.hidden();
    Map<String, Weight> t = new HashMap<>();
    try {
      t.put("token_embd.weight", matrix("token_embd.weight", config.vocabSize(), h, r, table));
      if (!config.tieEmbeddings()) {
        t.put("output.weight", matrix("output.weight", config.vocabSize(), h, r, table));
      }
      t.put("output_norm.weight", vector("output_norm.weight", h, 1f));
      for (int l = 0; l < config.layers(); l++) {
        String p = "blk." + l + ".";
        t.put(p + "attn_norm.weight", vector(p + "attn_norm.weight", h, 1f));
        t.put(p + "ffn_norm.weight", vector(p + "ffn_norm.weight", h, 1f));
        t.put(p + "attn_q.weight", matrix(p + "attn_q.weight", config.qWidth(), h, r, table));
        t.put(p + "attn_k.weight", matrix(p + "attn_k.weight", config.kvWidth(), h, r, table));
        t.put(p + "attn_v.weight", matrix(p + "attn_v.weight", config.kvWidth(), h, r, table));
        t.put(p + "attn_output.weight", matrix(p + "attn_output.weight", h, config.qWidth(), r, table));
        t.put(p + "ffn_gate.weight", matrix(p + "ffn_gate.weight", config.intermediate(), h, r, table));
        t.put(p + "ffn_up.weight", matrix(p + "ffn_up.weight", config.intermediate(), h, r, table));
        t.put(p + "ffn_down.weight", matrix(p + "ffn_down.weight", h, config.intermediate(), r, table));
        if (config.attentionBias()) {
          t.put(p + "attn_q.bias", vector(p + "attn_q.bias", config.qWidth(), 0f));
          t.put(p + "attn_k.bias", vector(p + "attn_k.bias", config.kvWidth(), 0f));
          t.put(p + "attn_v.bias", vector(p + "attn_v.bias", config.kvWidth(), 0f));
        }
      }
    } catch (OutOfMemoryError e) {
      throw new IllegalStateException("random weights of shape " + config.architecture() + " need " + bytes(config)
          + " bytes of direct memory; start the JVM with a larger -XX:MaxDirectMemorySize (e.g. "
          + (bytes(config) / (1L << 30) + 2) + "g)", e);
    }
    return LlamaWeights.fromGgufTensors(config, t);
  }

  private static Weight matrix(String name, int rows, int cols, SplittableRandom r, short[] table) {
    long bytes = 2L * rows * cols;
    if (bytes > Integer.MAX_VALUE) {
      throw new IllegalArgumentException("tensor " + name + " [" + rows + "][" + cols + "] needs " + bytes
          + " bytes, expected at most 2 GiB per tensor");
    }
    ByteBuffer b = ByteBuffer.allocateDirect((int) bytes).order(ByteOrder.LITTLE_ENDIAN);
    ShortBuffer s = b.asShortBuffer();
    short[] row = new short[cols];
    long bits = 0;
    for (int i = 0; i < rows; i++) {
      for (int c = 0; c < cols; c++) {
        if ((c & 7) == 0) {
          bits = r.nextLong();
        }
        row[c] = table[(int) (bits >>> ((c & 7) << 3)) & 0xFF];
      }
      s.put(row);
    }
    return new Weight(name, DType.F16, rows, cols, b);
  }

  private static Weight vector(String name, int n, float value) {
    ByteBuffer b = ByteBuffer.allocate(4 * n).order(ByteOrder.LITTLE_ENDIAN);
    for (int i = 0; i < n; i++) {
      b.putFloat(value);
    }
    return new Weight(name, DType.F32, 1, n, b.flip());
  }
}
