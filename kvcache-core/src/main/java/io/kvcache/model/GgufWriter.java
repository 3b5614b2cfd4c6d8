package io.kvcache.model;

import java.io.BufferedOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Writes GGUF v3 files: typed metadata, then tensors given as floats and encoded on write as F32,
 * F16, BF16 or Q8_0. Holds the tensors on the heap until {@link #write}; meant for tests and
 * conversions of checkpoints that fit in memory.
 */
public final class GgufWriter {

  private static final int ALIGN = 32;

  private record Kv(int type, Object value) {}

  private record T(String name, DType type, int rows, int cols, float[] data) {}

  private final Map<String, Kv> metadata = new LinkedHashMap<>();
  private final List<T> tensors = new ArrayList<>();

  /** An empty file. */
  public GgufWriter() {}

  /**
   * @param key   metadata key
   * @param value a string
   * @return this
   */
  public GgufWriter putString(String key, String value) {
    metadata.put(key, new Kv(8, value));
    return this;
  }

  /**
   * @param key   metadata key
   * @param value stored as uint32
   * @return this
   */
  public GgufWriter putU32(String key, int value) {
    metadata.put(key, new Kv(4, value));
    return this;
  }

  /**
   * @param key   metadata key
   * @param value stored as float32
   * @return this
   */
  public GgufWriter putF32(String key, float value) {
    metadata.put(key, new Kv(6, value));
    return this;
  }

  /**
   * Adds a tensor {@code [rows][cols]} (GGUF dims {@code [cols, rows]}, or {@code [cols]} when
   * {@code rows == 1}).
   *
   * @param name tensor name
   * @param type encoding on write
   * @param rows rows
   * @param cols columns, a multiple of 32 for Q8_0
   * @param data {@code rows * cols} floats, row-major (not copied)
   * @return this
   */
  public GgufWriter addTensor(String name, DType type, int rows, int cols, float[] data) {
    if (type.bytesFor(cols) < 0 || rows < 1 || data.length != (long) rows * cols) {
      throw new IllegalArgumentException("tensor " + name + ": " + type + " [" + rows + "][" + cols
          + "] needs cols a multiple of " + type.blockElements() + " and " + (long) rows * cols + " floats, got "
          + data.length);
    }
    tensors.add(new T(name, type, rows, cols, data));
    return this;
  }

  /**
   * Writes the file.
   *
   * @param file destination, replaced
   * @throws IOException when it cannot be written
   */
  public void write(Path file) throws IOException {
    try (OutputStream os = new BufferedOutputStream(Files.newOutputStream(file), 1 << 16)) {
      Out o = new Out(os);
      o.u32(GgufFile.MAGIC);
      o.u32(3);
      o.u64(tensors.size());
      o.u64(metadata.size() + 1);
      o.str("general.alignment");
      o.u32(4);
      o.u32(ALIGN);
      for (Map.Entry<String, Kv> e : metadata.entrySet()) {
        o.str(e.getKey());
        o.u32(e.getValue().type);
        switch (e.getValue().type) {
          case 8 -> o.str((String) e.getValue().value);
          case 4 -> o.u32((Integer) e.getValue().value);
          case 6 -> o.u32(Float.floatToRawIntBits((Float) e.getValue().value));
          default -> throw new AssertionError();
        }
      }
      long offset = 0;
      for (T t : tensors) {
        o.str(t.name);
        if (t.rows == 1) {
          o.u32(1);
          o.u64(t.cols);
        } else {
          o.u32(2);
          o.u64(t.cols);
          o.u64(t.rows);
        }
        o.u32(switch (t.type) {
          case F32 -> GgufFile.GGML_F32;
          case F16 -> GgufFile.GGML_F16;
          case BF16 -> GgufFile.GGML_BF16;
          case Q8_0 -> GgufFile.GGML_Q8_0;
        });
        o.u64(offset);
        offset = align(offset + t.type.bytesFor(t.cols) * t.rows);
      }
      o.pad();
      for (T t : tensors) {
        encode(t, o);
        o.pad();
      }
    }
  }

  private static long align(long v) {
    return (v + ALIGN - 1) / ALIGN * ALIGN;
  }

  private static void encode(T t, Out o) throws IOException {
    float[] d = t.data;
    switch (t.type) {
      case F32 -> {
        for (float f : d) {
          o.u32(Float.floatToRawIntBits(f));
        }
      }
      case F16 -> {
        for (float f : d) {
          o.u16(Float.floatToFloat16(f));
        }
      }
      case BF16 -> {
        for (float f : d) {
          o.u16((short) (bf16Bits(f)));
        }
      }
      case Q8_0 -> {
        for (int b = 0; b < d.length; b += 32) {
          float amax = 0;
          for (int j = 0; j < 32; j++) {
            amax = Math.max(amax, Math.abs(d[b + j]));
          }
          float scale = amax / 127f;
          float inv = scale == 0 ? 0 : 1f / scale;
          o.u16(Float.floatToFloat16(scale));
          for (int j = 0; j < 32; j++) {
            o.u8(Math.round(d[b + j] * inv));
          }
        }
      }
    }
  }

  /** Round to nearest even, as PyTorch converts float32 to bfloat16. */
  static int bf16Bits(float f) {
    int bits = Float.floatToRawIntBits(f);
    if (Float.isNaN(f)) {
      return (bits >>> 16) | 0x40;
    }
    return (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
  }

  private static final class Out {
    final OutputStream os;
    final ByteBuffer b = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
    long written;

    Out(OutputStream os) {
      this.os = os;
    }

    void u8(int v) throws IOException {
      os.write(v);
      written++;
    }

    void u16(short v) throws IOException {
      b.clear();
      b.putShort(v);
      os.write(b.array(), 0, 2);
      written += 2;
    }

    void u32(int v) throws IOException {
      b.clear();
      b.putInt(v);
      os.write(b.array(), 0, 4);
      written += 4;
    }

    void u64(long v) throws IOException {
      b.clear();
      b.putLong(v);
      os.write(b.array(), 0, 8);
      written += 8;
    }

    void str(String s) throws IOException {
      byte[] bytes = s.getBytes(StandardCharsets.UTF_8);
      u64(bytes.length);
      os.write(bytes);
      written += bytes.length;
    }

    void pad() throws IOException {
      while (written % ALIGN != 0) {
        u8(0);
      }
    }
  }

  /**
   * Converts loaded weights to a {@code llama} GGUF file the way llama.cpp lays it out: q/k rows
   * permuted so that rotated pairs are adjacent channels, the llama3 rule as a
   * {@code rope_freqs.weight} tensor of per-frequency divisors, norms in F32.
   *
   * @param w      the source weights (any layout)
   * @param file   destination
   * @param matrix encoding of the matrices
   * @throws IOException when the file cannot be written
   */
  public static void writeLlama(LlamaWeights w, Path file, DType matrix) throws IOException {
    LlamaConfig c = w.config();
    GgufWriter g = new GgufWriter();
    g.putString("general.architecture", "llama");
    g.putU32("llama.context_length", c.maxPositions());
    g.putU32("llama.embedding_length", c.hidden());
    g.putU32("llama.block_count", c.layers());
    g.putU32("llama.feed_forward_length", c.intermediate());
    g.putU32("llama.attention.head_count", c.heads());
    g.putU32("llama.attention.head_count_kv", c.kvHeads());
    g.putU32("llama.attention.key_length", c.headDim());
    g.putU32("llama.attention.value_length", c.headDim());
    g.putU32("llama.rope.dimension_count", c.headDim());
    g.putU32("llama.vocab_size", c.vocabSize());
    g.putF32("llama.rope.freq_base", (float) c.ropeTheta());
    g.putF32("llama.attention.layer_norm_rms_epsilon", c.rmsEps());
    if (c.bosId() >= 0) {
      g.putU32("tokenizer.ggml.bos_token_id", c.bosId());
    }
    if (c.eosId() >= 0) {
      g.putU32("tokenizer.ggml.eos_token_id", c.eosId());
    }
    boolean permute = !c.ropeInterleaved();
    g.addTensor("token_embd.weight", matrix, c.vocabSize(), c.hidden(), w.embedding.toFloats());
    // The frequencies the weights use, as llama.cpp's divisors of the plain ones, whenever they differ from
    // the plain ones: a config's llama3 rule, or a GGUF's own rope_freqs (whose config carries no rule, so
    // testing the config alone dropped them on a round trip).
    float[] base = new LlamaConfig(c.architecture(), c.vocabSize(), c.hidden(), c.intermediate(), c.layers(),
        c.heads(), c.kvHeads(), c.headDim(), c.rmsEps(), c.ropeTheta(), null, c.ropeInterleaved(),
        c.tieEmbeddings(), c.attentionBias(), c.bosId(), c.eosId(), c.maxPositions()).inverseFrequencies();
    if (!java.util.Arrays.equals(base, w.invFreq)) {
      float[] factors = new float[base.length];
      for (int i = 0; i < base.length; i++) {
        factors[i] = base[i] / w.invFreq[i];
      }
      g.addTensor("rope_freqs.weight", DType.F32, 1, factors.length, factors);
    }
    for (int i = 0; i < c.layers(); i++) {
      LlamaWeights.Layer l = w.layers[i];
      String p = "blk." + i + ".";
      g.addTensor(p + "attn_norm.weight", DType.F32, 1, c.hidden(), l.attnNorm);
      g.addTensor(p + "attn_q.weight", matrix, c.qWidth(), c.hidden(),
          permute ? interleave(l.wq.toFloats(), c.heads(), c.headDim(), c.hidden()) : l.wq.toFloats());
      g.addTensor(p + "attn_k.weight", matrix, c.kvWidth(), c.hidden(),
          permute ? interleave(l.wk.toFloats(), c.kvHeads(), c.headDim(), c.hidden()) : l.wk.toFloats());
      g.addTensor(p + "attn_v.weight", matrix, c.kvWidth(), c.hidden(), l.wv.toFloats());
      if (l.bq != null) {
        g.addTensor(p + "attn_q.bias", DType.F32, 1, c.qWidth(),
            permute ? interleave(l.bq, c.heads(), c.headDim(), 1) : l.bq);
        g.addTensor(p + "attn_k.bias", DType.F32, 1, c.kvWidth(),
            permute ? interleave(l.bk, c.kvHeads(), c.headDim(), 1) : l.bk);
        g.addTensor(p + "attn_v.bias", DType.F32, 1, c.kvWidth(), l.bv);
      }
      g.addTensor(p + "attn_output.weight", matrix, c.hidden(), c.qWidth(), l.wo.toFloats());
      g.addTensor(p + "ffn_norm.weight", DType.F32, 1, c.hidden(), l.mlpNorm);
      g.addTensor(p + "ffn_gate.weight", matrix, c.intermediate(), c.hidden(), l.gate.toFloats());
      g.addTensor(p + "ffn_up.weight", matrix, c.intermediate(), c.hidden(), l.up.toFloats());
      g.addTensor(p + "ffn_down.weight", matrix, c.hidden(), c.intermediate(), l.down.toFloats());
    }
    g.addTensor("output_norm.weight", DType.F32, 1, c.hidden(), w.finalNorm);
    if (!c.tieEmbeddings()) {
      g.addTensor("output.weight", matrix, c.vocabSize(), c.hidden(), w.output.toFloats());
    }
    g.write(file);
  }

  /** Row {@code i} of a head (half-split pairs i, i+d/2) moves to row 2i, row i+d/2 to 2i+1. */
  static float[] interleave(float[] src, int heads, int headDim, int cols) {
    float[] dst = new float[src.length];
    int half = headDim / 2;
    for (int h = 0; h < heads; h++) {
      for (int i = 0; i < half; i++) {
        for (int s = 0; s < 2; s++) {
          int from = h * headDim + s * half + i;
          int to = h * headDim + 2 * i + s;
          System.arraycopy(src, from * cols, dst, to * cols, cols);
        }
      }
    }
    return dst;
  }
}
