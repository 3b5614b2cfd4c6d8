package io.kvcache.model;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A memory-mapped GGUF v3 file: metadata key/values and tensors (F32, F16, BF16, Q8_0). Layout:
 * magic {@code GGUF}, version, tensor count, metadata count, the metadata, the tensor infos (name,
 * dims innermost first, ggml type, offset), then the data section at the next multiple of
 * {@code general.alignment} (32 by default), every tensor offset relative to it.
 */
public final class GgufFile {

  static final int MAGIC = 0x46554747;
  /** "vers" read as a little-endian int: the start of a Git LFS pointer file ("version https://git-lfs..."). */
  static final int LFS_MAGIC = 0x73726576;
  /** What to say when a weights file is a Git LFS pointer rather than the weights. */
  static final String LFS_MESSAGE = "this is a Git LFS pointer file, not the weights (cloned without git-lfs?); "
      + "run 'git lfs pull' in the model's directory";
  static final int GGML_F32 = 0;
  static final int GGML_F16 = 1;
  static final int GGML_Q8_0 = 8;
  static final int GGML_BF16 = 30;

  /** The header (metadata and tensor infos) must lie in the file's first GiB. */
  private static final long MAX_HEADER = 1L << 30;
  /** Counts above these are treated as corruption, not honoured. */
  private static final long MAX_COUNT = 1L << 24;
  private static final long MAX_STRING = 1L << 26;
  private static final long MAX_ARRAY = 1L << 22;

  private final Path file;
  private final Map<String, Object> metadata;
  private final Map<String, Weight> tensors;

  private GgufFile(Path file, Map<String, Object> metadata, Map<String, Weight> tensors) {
    this.file = file;
    this.metadata = Collections.unmodifiableMap(metadata);
    this.tensors = Collections.unmodifiableMap(tensors);
  }

  /** @return metadata: integers as Long, floats as Double, strings, booleans, arrays as lists */
  public Map<String, Object> metadata() {
    return metadata;
  }

  /** @return tensors by name, as matrices {@code [product of outer dims][innermost dim]} */
  public Map<String, Weight> tensors() {
    return tensors;
  }

  /**
   * Maps and parses a GGUF file.
   *
   * @param file  the file
   * @return the parsed file; each tensor is its own read-only mapping
   * @throws IOException          when it cannot be read
   * @throws ModelFormatException naming the file, key or tensor, offset and expectation
   */
  public static GgufFile read(Path file) throws IOException {
    try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
      ByteBuffer head = ch.map(FileChannel.MapMode.READ_ONLY, 0, Math.min(ch.size(), MAX_HEADER))
          .order(ByteOrder.LITTLE_ENDIAN);
      return new Reader(file, head, ch).parse();
    }
  }

  private static final class Reader {
    final Path file;
    final ByteBuffer seg;
    final FileChannel ch;
    final long fileSize;
    int p;

    Reader(Path file, ByteBuffer seg, FileChannel ch) throws IOException {
      this.file = file;
      this.seg = seg;
      this.ch = ch;
      this.fileSize = ch.size();
    }

    ModelFormatException error(long at, String what) {
      return new ModelFormatException(file + ": offset " + at + ": " + what);
    }

    void need(long n, String what) {
      if (n < 0 || p + n > seg.limit()) {
        throw error(p, "expected " + what + " (" + n + " bytes), but " + (seg.limit() == fileSize
            ? "the file ends at " + fileSize + "; truncated?" : "the header must end within " + MAX_HEADER + " bytes"));
      }
    }

    int u32(String what) {
      need(4, what);
      int v = seg.getInt(p);
      p += 4;
      return v;
    }

    long u64(String what) {
      need(8, what);
      long v = seg.getLong(p);
      p += 8;
      return v;
    }

    String str(String what) {
      long at = p;
      long n = u64("length of " + what);
      if (n < 0 || n > MAX_STRING) {
        throw error(at, "length of " + what + " is " + n + ", expected 0 to " + MAX_STRING);
      }
      need(n, what);
      byte[] b = new byte[(int) n];
      seg.get(p, b);
      p += (int) n;
      return new String(b, StandardCharsets.UTF_8);
    }

    Object value(int type, String key) {
      long at = p;
      switch (type) {
        case 0, 1 -> {
          need(1, key);
          byte b = seg.get(p++);
          return type == 0 ? (long) (b & 0xff) : (long) b;
        }
        case 2, 3 -> {
          need(2, key);
          short s = seg.getShort(p);
          p += 2;
          return type == 2 ? (long) (s & 0xffff) : (long) s;
        }
        case 4 -> {
          return u32(key) & 0xffffffffL;
        }
        case 5 -> {
          return (long) u32(key);
        }
        case 6 -> {
          return (double) Float.intBitsToFloat(u32(key));
        }
        case 7 -> {
          need(1, key);
          byte b = seg.get(p++);
          if (b != 0 && b != 1) {
            throw error(at, "key " + key + ": bool must be 0 or 1, got " + b);
          }
          return b == 1;
        }
        case 8 -> {
          return str("string value of key " + key);
        }
        case 9 -> {
          int et = u32("array element type of key " + key);
          long n = u64("array length of key " + key);
          // Elements are boxed (tens of bytes each): a tokenizer's vocabulary or merges, a few hundred
          // thousand, is the largest array a model carries; four million leaves room without letting a
          // small file ask for gigabytes of heap.
          if (n < 0 || n > MAX_ARRAY) {
            throw error(at, "key " + key + ": array length " + n + " is absurd, expected 0 to " + MAX_ARRAY);
          }
          if (et == 9) {
            throw error(at, "key " + key + ": nested arrays are not supported");
          }
          List<Object> l = new ArrayList<>((int) Math.min(n, 1024));
          for (long i = 0; i < n; i++) {
            l.add(value(et, key + "[" + i + "]"));
          }
          return l;
        }
        case 10 -> {
          long v = u64(key);
          if (v < 0) { // an unsigned value above 2^63 - 1: read as a long it would turn negative
            throw error(at, "key " + key + ": uint64 value " + Long.toUnsignedString(v) + " is out of range");
          }
          return v;
        }
        case 11 -> {
          return u64(key);
        }
        case 12 -> {
          return Double.longBitsToDouble(u64(key));
        }
        default -> throw error(at - 4, "key " + key + ": unknown value type " + type + ", expected 0 to 12");
      }
    }

    GgufFile parse() throws IOException {
      int magic = u32("magic 'GGUF'");
      if (magic != MAGIC) {
        if (magic == LFS_MAGIC) {
          throw error(0, LFS_MESSAGE);
        }
        throw error(0, String.format("expected magic 'GGUF' (0x%08x), got 0x%08x", MAGIC, magic));
      }
      int version = u32("version");
      if (version != 3) {
        throw error(4, "version " + version + " is not supported, expected 3");
      }
      long nt = u64("tensor count");
      long nkv = u64("metadata count");
      if (nt < 0 || nt > MAX_COUNT || nkv < 0 || nkv > MAX_COUNT) {
        throw error(8, "tensor count " + nt + " or metadata count " + nkv + " is absurd, expected 0 to " + MAX_COUNT);
      }
      if (nt > Safetensors.MAX_TENSORS) {
        throw error(8, nt + " tensors; at most " + Safetensors.MAX_TENSORS
            + " are read (each is mapped into memory, and the OS limits a process's mappings)");
      }
      Map<String, Object> md = new LinkedHashMap<>();
      for (long i = 0; i < nkv; i++) {
        long keyAt = p;
        String key = str("metadata key #" + i);
        int type = u32("value type of key " + key);
        if (md.put(key, value(type, key)) != null) {
          throw error(keyAt, "metadata key " + key + " appears twice");
        }
      }
      long align = 32;
      Object a = md.get("general.alignment");
      if (a != null) {
        if (!(a instanceof Long al) || al < 1 || al > 65536 || Long.bitCount(al) != 1) {
          throw error(0, "key general.alignment is " + a + ", expected a power of two up to 65536");
        }
        align = al;
      }
      record Info(String name, long[] dims, int type, long offset, long at) {}
      List<Info> infos = new ArrayList<>();
      for (long i = 0; i < nt; i++) {
        long at = p;
        String name = str("tensor name #" + i);
        int nd = u32("dimension count of tensor " + name);
        if (nd < 1 || nd > 4) {
          throw error(at, "tensor " + name + ": " + nd + " dimensions, expected 1 to 4");
        }
        long[] dims = new long[nd];
        for (int d = 0; d < nd; d++) {
          dims[d] = u64("dimension " + d + " of tensor " + name);
          if (dims[d] < 1 || dims[d] > Integer.MAX_VALUE) {
            throw error(at, "tensor " + name + ": dimension " + d + " is " + dims[d] + ", expected 1 to 2^31-1");
          }
        }
        int type = u32("type of tensor " + name);
        long off = u64("offset of tensor " + name);
        infos.add(new Info(name, dims, type, off, at));
      }
      long dataStart = (p + align - 1) / align * align;
      long dataLen = fileSize - dataStart;
      Map<String, Weight> tensors = new LinkedHashMap<>();
      for (Info in : infos) {
        DType t = switch (in.type) {
          case GGML_F32 -> DType.F32;
          case GGML_F16 -> DType.F16;
          case GGML_BF16 -> DType.BF16;
          case GGML_Q8_0 -> DType.Q8_0;
          default -> throw error(in.at, "tensor " + in.name + ": ggml type " + in.type
              + " is not supported, expected F32 (0), F16 (1), Q8_0 (8) or BF16 (30)");
        };
        long cols = in.dims[0];
        long rows = 1;
        for (int d = 1; d < in.dims.length; d++) {
          rows *= in.dims[d];
          if (rows > Integer.MAX_VALUE) {
            throw error(in.at, "tensor " + in.name + ": more than 2^31-1 rows");
          }
        }
        long rowBytes = t.bytesFor(cols);
        if (rowBytes < 0) {
          throw error(in.at, "tensor " + in.name + ": " + t + " needs the innermost dimension to be a multiple of "
              + t.blockElements() + ", got " + cols);
        }
        // rows and rowBytes are each below 2^31 or so, but their product can pass 2^63 and wrap.
        if (rowBytes > Integer.MAX_VALUE / rows) {
          throw error(in.at, "tensor " + in.name + ": " + rows + " rows of " + rowBytes
              + " bytes; tensors up to 2 GiB are supported");
        }
        long bytes = rowBytes * rows;
        if (in.offset < 0 || in.offset % align != 0 || in.offset > dataLen || bytes > dataLen - in.offset) {
          throw error(dataStart + in.offset, "tensor " + in.name + ": " + bytes + " bytes at data offset " + in.offset
              + " (aligned to " + align + ") must lie inside the " + dataLen + " data bytes; truncated?");
        }
        if (bytes > Integer.MAX_VALUE) {
          throw error(in.at, "tensor " + in.name + ": " + bytes + " bytes; tensors up to 2 GiB are supported");
        }
        if (tensors.containsKey(in.name)) {
          throw error(in.at, "tensor " + in.name + " appears twice");
        }
        ByteBuffer map = ch.map(FileChannel.MapMode.READ_ONLY, dataStart + in.offset, bytes);
        tensors.put(in.name, new Weight(in.name, t, (int) rows, (int) cols, map));
      }
      return new GgufFile(file, md, tensors);
    }
  }

  /**
   * The decoder configuration from {@code llama} architecture metadata.
   *
   * @return the config
   * @throws ModelFormatException naming the file and key when one is missing or out of range
   */
  public LlamaConfig llamaConfig() {
    String arch = String.valueOf(metadata.get("general.architecture"));
    if (!arch.equals("llama")) {
      throw new ModelFormatException(file + ": key general.architecture is '" + arch + "', expected 'llama'");
    }
    // Metadata the decoder would otherwise ignore while running the model wrongly.
    Object scalingType = metadata.get("llama.rope.scaling.type");
    if (scalingType != null && !"none".equals(scalingType)) {
      throw new ModelFormatException(file + ": key llama.rope.scaling.type is '" + scalingType
          + "', expected 'none' (llama3 scaling comes as the rope_freqs tensor; linear and yarn are not supported)");
    }
    if (metadata.get("llama.expert_count") instanceof Long experts && experts > 0) {
      throw new ModelFormatException(file + ": key llama.expert_count is " + experts
          + ": mixture-of-experts models are not supported");
    }
    int hidden = intKey("llama.embedding_length", null);
    int heads = intKey("llama.attention.head_count", null);
    int kvHeads = intKey("llama.attention.head_count_kv", heads);
    // The head size is llama.attention.key_length where the file has it (models whose head size is not
    // hidden / heads), else hidden / heads; the rotary dimensions must cover the whole head.
    int headDim = intKey("llama.attention.key_length", hidden / Math.max(1, heads));
    int valueDim = intKey("llama.attention.value_length", headDim);
    if (valueDim != headDim) {
      throw new ModelFormatException(file + ": key llama.attention.value_length is " + valueDim
          + ", expected the key length " + headDim + " (keys and values of different head sizes are not supported)");
    }
    int rotary = intKey("llama.rope.dimension_count", headDim);
    if (rotary != headDim) {
      throw new ModelFormatException(file + ": key llama.rope.dimension_count is " + rotary + ", expected the head size "
          + headDim + " (rotary embeddings over part of the head are not supported)");
    }
    Weight embd = tensors.get("token_embd.weight");
    if (embd == null) {
      throw new ModelFormatException(file + ": missing tensor token_embd.weight");
    }
    int vocab = intKey("llama.vocab_size", embd.rows());
    boolean bias = tensors.containsKey("blk.0.attn_q.bias");
    try {
      return new LlamaConfig("llama(gguf)", vocab, hidden, intKey("llama.feed_forward_length", null),
          intKey("llama.block_count", null), heads, kvHeads, headDim,
          (float) numKey("llama.attention.layer_norm_rms_epsilon", 1e-5), numKey("llama.rope.freq_base", 10000.0),
          null, true, !tensors.containsKey("output.weight"), bias, intKey("tokenizer.ggml.bos_token_id", -1),
          intKey("tokenizer.ggml.eos_token_id", -1), intKey("llama.context_length", 4096));
    } catch (ModelFormatException e) {
      throw e;
    } catch (IllegalArgumentException e) {
      throw new ModelFormatException(file + ": " + e.getMessage());
    }
  }

  private int intKey(String key, Integer dflt) {
    Object v = metadata.get(key);
    if (v == null) {
      if (dflt == null) {
        throw new ModelFormatException(file + ": missing key " + key + ", expected an integer");
      }
      return dflt;
    }
    if (!(v instanceof Long n) || n < Integer.MIN_VALUE || n > Integer.MAX_VALUE) {
      throw new ModelFormatException(file + ": key " + key + " is " + v + ", expected a 32-bit integer");
    }
    return (int) (long) n;
  }

  private double numKey(String key, double dflt) {
    Object v = metadata.get(key);
    if (v == null) {
      return dflt;
    }
    if (!(v instanceof Double d)) {
      throw new ModelFormatException(file + ": key " + key + " is " + v + ", expected a float");
    }
    return d;
  }
}
