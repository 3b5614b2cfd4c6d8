package io.kvcache.model;

import java.io.BufferedOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.TreeMap;

/**
 * Writes one {@code .safetensors} file, the format {@link LlamaWeights#loadHuggingFace} reads: an
 * unsigned little-endian 64-bit header length, a JSON header (padded with spaces to a multiple of 8
 * bytes) giving each tensor's dtype, shape and {@code data_offsets}, then the data, tensors in name
 * order. Elements are given as floats and stored as F32, F16 or BF16 (round to nearest even).
 */
public final class SafetensorsWriter {

  private record Tensor(DType type, int[] shape, float[] data) {}

  private final Map<String, Tensor> tensors = new TreeMap<>();

  /** An empty file. */
  public SafetensorsWriter() {}

  /**
   * Adds a tensor.
   *
   * @param name  tensor name, unique, not {@code __metadata__}
   * @param type  {@link DType#F32}, {@link DType#F16} or {@link DType#BF16}
   * @param shape dimensions, each {@code >= 1}; their product is {@code data.length}
   * @param data  the elements, row-major (kept, not copied)
   * @return this writer
   */
  public SafetensorsWriter add(String name, DType type, int[] shape, float[] data) {
    if (name == null || name.isEmpty() || name.equals("__metadata__") || tensors.containsKey(name)
        || name.indexOf('"') >= 0 || name.indexOf('\\') >= 0) {
      throw new IllegalArgumentException("name must be a new tensor name without quotes or backslashes, got " + name);
    }
    if (type != DType.F32 && type != DType.F16 && type != DType.BF16) {
      throw new IllegalArgumentException("type must be F32, F16 or BF16, got " + type + " for " + name);
    }
    long n = 1;
    for (int d : shape) {
      if (d < 1) {
        throw new IllegalArgumentException("shape of " + name + " must hold dimensions >= 1, got "
            + java.util.Arrays.toString(shape));
      }
      n *= d;
    }
    if (data == null || n != data.length) {
      throw new IllegalArgumentException("data of " + name + " must hold " + n + " floats for shape "
          + java.util.Arrays.toString(shape) + ", got " + (data == null ? "null" : data.length));
    }
    tensors.put(name, new Tensor(type, shape.clone(), data));
    return this;
  }

  /**
   * Writes the file.
   *
   * @param file destination, replaced if present
   * @throws IOException when it cannot be written
   */
  public void write(Path file) throws IOException {
    StringBuilder h = new StringBuilder("{\"__metadata__\":{\"format\":\"pt\"}");
    long off = 0;
    for (Map.Entry<String, Tensor> e : tensors.entrySet()) {
      Tensor t = e.getValue();
      long bytes = (long) t.data.length * (t.type == DType.F32 ? 4 : 2);
      h.append(",\"").append(e.getKey()).append("\":{\"dtype\":\"").append(t.type.name()).append("\",\"shape\":[");
      for (int i = 0; i < t.shape.length; i++) {
        h.append(i > 0 ? "," : "").append(t.shape[i]);
      }
      h.append("],\"data_offsets\":[").append(off).append(',').append(off + bytes).append("]}");
      off += bytes;
    }
    h.append('}');
    // Padded in bytes, not characters: a tensor name outside ASCII takes more than one byte.
    int pad = (8 - h.toString().getBytes(StandardCharsets.UTF_8).length % 8) % 8;
    h.append(" ".repeat(pad));
    byte[] hb = h.toString().getBytes(StandardCharsets.UTF_8);
    try (OutputStream out = new BufferedOutputStream(Files.newOutputStream(file), 1 << 16)) {
      ByteBuffer b = ByteBuffer.allocate(1 << 16).order(ByteOrder.LITTLE_ENDIAN);
      b.putLong(hb.length);
      flush(out, b);
      out.write(hb);
      for (Tensor t : tensors.values()) {
        for (float f : t.data) {
          if (b.remaining() < 4) {
            flush(out, b);
          }
          switch (t.type) {
            case F32 -> b.putFloat(f);
            case F16 -> b.putShort(Float.floatToFloat16(f));
            default -> b.putShort((short) GgufWriter.bf16Bits(f));
          }
        }
      }
      flush(out, b);
    }
  }

  private static void flush(OutputStream out, ByteBuffer b) throws IOException {
    out.write(b.array(), 0, b.position());
    b.clear();
  }
}
