package io.kvcache.model;

/**
 * Weight element types the decoder reads: 32-bit float, IEEE half, bfloat16 and GGML's Q8_0 (blocks
 * of 32 signed bytes sharing one f16 scale, 34 bytes a block).
 */
public enum DType {
  /** IEEE 754 binary32, little-endian. */
  F32(1, 4),
  /** IEEE 754 binary16, little-endian. */
  F16(1, 2),
  /** bfloat16: the upper half of a binary32, little-endian. */
  BF16(1, 2),
  /** GGML Q8_0: per 32 values, an f16 scale then 32 int8. */
  Q8_0(32, 34);

  private final int blockElements;
  private final int blockBytes;

  DType(int blockElements, int blockBytes) {
    this.blockElements = blockElements;
    this.blockBytes = blockBytes;
  }

  /** @return elements in one block (1 for the float types, 32 for Q8_0) */
  public int blockElements() {
    return blockElements;
  }

  /** @return bytes in one block */
  public int blockBytes() {
    return blockBytes;
  }

  /**
   * Bytes that {@code elements} values take; {@code -1} when {@code elements} is not a whole number
   * of blocks.
   *
   * @param elements element count, {@code >= 0}
   * @return the byte size, or -1
   */
  public long bytesFor(long elements) {
    if (elements % blockElements != 0) {
      return -1;
    }
    return Math.multiplyExact(elements / blockElements, (long) blockBytes);
  }
}
