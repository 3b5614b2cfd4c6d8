package io.kvcache.model;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.ShortBuffer;

/**
 * A read-only weight tensor viewed as a row-major matrix {@code [rows][cols]} (a vector is one row),
 * over a byte buffer that is usually a mapped region of a file (at most 2 GiB a tensor). Rows are
 * contiguous; {@code cols} is a multiple of 32 for Q8_0.
 */
public final class Weight {

  private final String name;
  private final DType type;
  private final int rows;
  private final int cols;
  private final ByteBuffer data;
  final FloatBuffer floats;
  final ShortBuffer shorts;
  private final int rowBytes;

  /**
   * @param name tensor name, for messages
   * @param type element type
   * @param rows rows, {@code >= 1}
   * @param cols columns, {@code >= 1}, a multiple of the type's block size
   * @param data the tensor's bytes from position 0 to the limit, exactly {@code rows * rowBytes}; the
   *             view is read little-endian and not copied
   * @throws IllegalArgumentException naming the tensor when the sizes do not agree
   */
  public Weight(String name, DType type, int rows, int cols, ByteBuffer data) {
    this.name = name;
    this.type = type;
    if (rows < 1 || cols < 1) {
      throw new IllegalArgumentException("tensor " + name + ": rows and cols must be >= 1, got " + rows + "x" + cols);
    }
    long rb = type.bytesFor(cols);
    if (rb < 0) {
      throw new IllegalArgumentException("tensor " + name + ": " + type + " needs a column count that is a multiple of "
          + type.blockElements() + ", got " + cols);
    }
    if (data.remaining() != rb * rows) {
      throw new IllegalArgumentException("tensor " + name + ": expected " + rb * rows + " bytes for " + type + " ["
          + rows + "][" + cols + "], got " + data.remaining());
    }
    this.rows = rows;
    this.cols = cols;
    this.data = data.slice().order(ByteOrder.LITTLE_ENDIAN);
    this.floats = type == DType.F32 ? this.data.asFloatBuffer() : null;
    this.shorts = type == DType.F16 || type == DType.BF16 ? this.data.asShortBuffer() : null;
    this.rowBytes = (int) rb;
  }

  /** @return the tensor's name */
  public String name() {
    return name;
  }

  /** @return the element type */
  public DType type() {
    return type;
  }

  /** @return rows */
  public int rows() {
    return rows;
  }

  /** @return columns */
  public int cols() {
    return cols;
  }

  /** @return a read-only little-endian view of the tensor's bytes */
  public ByteBuffer data() {
    return data.asReadOnlyBuffer().order(ByteOrder.LITTLE_ENDIAN);
  }

  /** @return bytes of the tensor */
  public long byteSize() {
    return (long) rowBytes * rows;
  }

  ByteBuffer raw() {
    return data;
  }

  /**
   * For f16 weights: 0 not yet known, 1 no infinity or NaN among them, 2 some. Written once by the
   * vector kernels under this weight's lock; a stale 0 read elsewhere only sends the reader to the lock.
   */
  int finiteHalves;

  /**
   * The bytes as a {@code MemorySegment} (typed Object: Java 21 cannot name it), made on first use.
   * Racy on purpose: threads that miss each other's write build equal views, safely published through
   * the segment's final fields.
   */
  private Object segment;

  Object segment() {
    Object s = segment;
    if (s == null) { // a benign race: every thread builds an equal view
      s = SegmentLoads.segment(data);
      segment = s;
    }
    return s;
  }

  /** @return bytes per row */
  public int rowBytes() {
    return rowBytes;
  }

  /**
   * One element, decoded to float: the scalar definition every kernel is tested against.
   *
   * @param r row
   * @param c column
   * @return the value
   */
  public float get(int r, int c) {
    int base = r * rowBytes;
    return switch (type) {
      case F32 -> data.getFloat(base + 4 * c);
      case F16 -> Float.float16ToFloat(data.getShort(base + 2 * c));
      case BF16 -> Float.intBitsToFloat((data.getShort(base + 2 * c) & 0xffff) << 16);
      case Q8_0 -> {
        int block = base + (c >>> 5) * 34;
        float d = Float.float16ToFloat(data.getShort(block));
        yield d * data.get(block + 2 + (c & 31));
      }
    };
  }

  /**
   * Decodes a whole row with {@link #get}.
   *
   * @param r   row
   * @param dst destination
   * @param off offset in {@code dst}
   */
  public void row(int r, float[] dst, int off) {
    for (int c = 0; c < cols; c++) {
      dst[off + c] = get(r, c);
    }
  }

  /** @return all elements as floats, row-major (for small tensors: norms, biases) */
  public float[] toFloats() {
    float[] out = new float[Math.multiplyExact(rows, cols)];
    for (int r = 0; r < rows; r++) {
      row(r, out, r * cols);
    }
    return out;
  }

  @Override
  public String toString() {
    return name + " " + type + " [" + rows + "][" + cols + "]";
  }
}
