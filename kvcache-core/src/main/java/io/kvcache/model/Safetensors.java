package io.kvcache.model;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.List;
import java.util.Map;

/**
 * Reads a {@code .safetensors} file: an unsigned little-endian 64-bit header length {@code N}, a JSON
 * header of {@code N} bytes mapping tensor names to dtype, shape and {@code data_offsets} relative
 * to the byte after the header, then the data. The header is read; each tensor is its own
 * read-only mapping.
 */
final class Safetensors {

  /** A header larger than this is treated as corrupt rather than read. */
  static final long MAX_HEADER = 100L << 20;
  /**
   * Most tensors one file may hold. Each is its own memory mapping, and the OS allows a process about
   * 65,000 (Linux's default): past that the JVM itself fails. A Llama checkpoint has about a thousand.
   */
  static final int MAX_TENSORS = 16384;

  private Safetensors() {}

  static void read(Path file, Map<String, Weight> out, Map<String, String> fileOf) throws IOException {
    try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
      read(file, ch, out, fileOf);
    }
  }

  private static byte[] readFully(FileChannel ch, long at, int n, Path file, String what) throws IOException {
    ByteBuffer b = ByteBuffer.allocate(n);
    while (b.hasRemaining()) {
      if (ch.read(b, at + b.position()) < 0) {
        throw new ModelFormatException(file + ": offset " + (at + b.position()) + ": expected " + what + " ("
            + n + " bytes from offset " + at + "), the file ends there");
      }
    }
    return b.array();
  }

  private static void read(Path file, FileChannel ch, Map<String, Weight> out, Map<String, String> fileOf)
      throws IOException {
    long size = ch.size();
    if (size < 8) {
      throw new ModelFormatException(file + ": offset 0: expected an 8-byte header length, the file has " + size
          + " bytes");
    }
    byte[] head = readFully(ch, 0, 8, file, "header length");
    if (new String(head, StandardCharsets.US_ASCII).equals("version ")) {
      throw new ModelFormatException(file + ": offset 0: " + GgufFile.LFS_MESSAGE);
    }
    long n = ByteBuffer.wrap(head).order(ByteOrder.LITTLE_ENDIAN).getLong();
    if (n < 2 || n > MAX_HEADER || n > size - 8) {
      throw new ModelFormatException(file + ": offset 0: header length " + n + " is absurd; expected 2 to "
          + Math.min(MAX_HEADER, size - 8) + " (file size " + size + ")");
    }
    byte[] hb = readFully(ch, 8, (int) n, file, "JSON header");
    Object parsed;
    try {
      parsed = Json.parse(new String(hb, StandardCharsets.UTF_8).stripTrailing(), file + " header");
    } catch (IllegalArgumentException e) {
      throw new ModelFormatException(e.getMessage() + " (header starts at file offset 8)");
    }
    if (!(parsed instanceof Map<?, ?> header)) {
      throw new ModelFormatException(file + ": offset 8: expected a JSON object as header");
    }
    long dataStart = 8 + n;
    long dataLen = size - dataStart;
    int tensors = header.size() - (header.containsKey("__metadata__") ? 1 : 0);
    if (tensors > MAX_TENSORS) {
      throw new ModelFormatException(file + ": offset 8: " + tensors + " tensors; at most " + MAX_TENSORS
          + " are read (each is mapped into memory, and the OS limits a process's mappings)");
    }
    for (Map.Entry<?, ?> e : header.entrySet()) {
      String name = (String) e.getKey();
      if (name.equals("__metadata__")) {
        continue;
      }
      String where = file + ": tensor " + name;
      if (!(e.getValue() instanceof Map<?, ?> t)) {
        throw new ModelFormatException(where + ": expected an object with dtype, shape, data_offsets");
      }
      Object dt = t.get("dtype");
      DType type;
      if ("F32".equals(dt)) {
        type = DType.F32;
      } else if ("F16".equals(dt)) {
        type = DType.F16;
      } else if ("BF16".equals(dt)) {
        type = DType.BF16;
      } else {
        throw new ModelFormatException(where + ": dtype " + dt + " is not supported, expected F32, F16 or BF16");
      }
      if (!(t.get("shape") instanceof List<?> shape) || !(t.get("data_offsets") instanceof List<?> offs)
          || offs.size() != 2 || !(offs.get(0) instanceof Long b) || !(offs.get(1) instanceof Long end)) {
        throw new ModelFormatException(where + ": expected shape [..] and data_offsets [begin, end] of integers");
      }
      long elements = 1;
      long[] dims = new long[shape.size()];
      for (int i = 0; i < dims.length; i++) {
        if (!(shape.get(i) instanceof Long d) || d < 0 || d > Integer.MAX_VALUE) {
          throw new ModelFormatException(where + ": shape " + shape + " must hold integers in [0, 2^31)");
        }
        dims[i] = d;
        if (d != 0 && elements > (1L << 40) / d) {
          throw new ModelFormatException(where + ": shape " + shape + " is absurd (more than 2^40 elements)");
        }
        elements *= d;
      }
      long bytes = elements * (type == DType.F32 ? 4 : 2);
      if (b < 0 || end < b || end > dataLen || end - b != bytes) {
        throw new ModelFormatException(where + ": data_offsets [" + b + ", " + end + "] (file offsets "
            + (dataStart + b) + " to " + (dataStart + end) + ") must span " + bytes + " bytes for " + dt + " " + shape
            + " inside the " + dataLen + " data bytes; the file may be truncated");
      }
      if (elements == 0) {
        continue;
      }
      long cols = dims.length == 0 ? 1 : dims[dims.length - 1];
      long rows = elements / cols;
      if (rows > Integer.MAX_VALUE) {
        throw new ModelFormatException(where + ": shape " + shape + " has more than 2^31 rows");
      }
      if (bytes > Integer.MAX_VALUE) {
        throw new ModelFormatException(where + ": " + bytes + " bytes; tensors up to 2 GiB are supported");
      }
      if (out.containsKey(name)) {
        // Two files of one directory with the same tensor (a whole-model file beside its shards, a stray
        // re-save): which one wins would depend on the file order.
        throw new ModelFormatException(where + " is also in " + fileOf.get(name));
      }
      ByteBuffer map = ch.map(FileChannel.MapMode.READ_ONLY, dataStart + b, bytes);
      out.put(name, new Weight(name, type, (int) rows, (int) cols, map));
      fileOf.put(name, file.toString());
    }
  }
}
