package io.kvcache.codec;

import io.kvcache.kernel.AttentionKernels;
import java.util.Arrays;

/** Stores keys and values as 32-bit floats: exact; the kernels read the pages in place. */
final class F32Codec implements StorageCodec {

  static final F32Codec INSTANCE = new F32Codec();

  private F32Codec() {}

  @Override
  public String name() {
    return "f32";
  }

  @Override
  public boolean splitInvariant() {
    return true;
  }

  @Override
  public HeadStore newStore(int headDim) {
    return new Store(headDim);
  }

  @Override
  public String toString() {
    return name();
  }

  /** One float[] per page: keys transposed, then values in column blocks ({@link AttentionKernels#valueIndex}). */
  private static final class Store extends HeadStore {
    private float[][] pages = new float[4][];

    Store(int headDim) {
      super(headDim);
    }

    @Override
    protected void allocate(int page) {
      if (page == pages.length) {
        pages = Arrays.copyOf(pages, page * 2);
      }
      pages[page] = new float[2 * headDim * PAGE_TOKENS];
    }

    @Override
    protected void release(int page) {
      pages[page] = null;
    }

    @Override
    protected void write(int page, int idx, float[] key, int kOff, float[] value, int vOff) {
      float[] p = pages[page];
      for (int c = 0; c < headDim; c++) {
        p[c * PAGE_TOKENS + idx] = key[kOff + c];
      }
      for (int b = 0; b < headDim; b += AttentionKernels.VALUE_BLOCK) {
        System.arraycopy(value, vOff + b, p, valueRunStart(idx, b), valueRunLength(b));
      }
    }

    @Override
    protected void move(int fromPage, int fromIdx, int toPage, int toIdx) {
      float[] src = pages[fromPage], dst = pages[toPage];
      for (int c = 0; c < headDim; c++) {
        dst[c * PAGE_TOKENS + toIdx] = src[c * PAGE_TOKENS + fromIdx];
      }
      for (int b = 0; b < headDim; b += AttentionKernels.VALUE_BLOCK) {
        System.arraycopy(src, valueRunStart(fromIdx, b), dst, valueRunStart(toIdx, b), valueRunLength(b));
      }
    }

    @Override
    public void readKey(int slot, float[] dst, int off) {
      float[] p = pages[slot / PAGE_TOKENS];
      int idx = slot % PAGE_TOKENS;
      for (int c = 0; c < headDim; c++) {
        dst[off + c] = p[c * PAGE_TOKENS + idx];
      }
    }

    @Override
    public void readValue(int slot, float[] dst, int off) {
      float[] p = pages[slot / PAGE_TOKENS];
      int idx = slot % PAGE_TOKENS;
      for (int b = 0; b < headDim; b += AttentionKernels.VALUE_BLOCK) {
        System.arraycopy(p, valueRunStart(idx, b), dst, off + b, valueRunLength(b));
      }
    }

    @Override
    public float[] page(int page, float[] buf, AttentionKernels kernels) {
      return pages[page];
    }

    @Override
    public long payloadBytes() {
      return (long) pageCount() * PAGE_TOKENS * headDim * 2 * Float.BYTES;
    }
  }
}
