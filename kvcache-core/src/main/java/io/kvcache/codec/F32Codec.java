package io.kvcache.codec;

import io.kvcache.kernel.AttentionKernels;

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

  /**
   * Keys transposed, then values in column blocks ({@link AttentionKernels#valueIndex}), per page; the
   * pages of a reservation in shared blocks ({@link PageBlocks}).
   */
  private static final class Store extends HeadStore {
    private final PageBlocks<float[]> pages;

    Store(int headDim) {
      super(headDim);
      pages = new PageBlocks<>(float[]::new, 2 * headDim * PAGE_TOKENS, Float.BYTES);
    }

    @Override
    protected void reservePages(int first, int count) {
      pages.reserve(first, count);
    }

    @Override
    protected void allocate(int page) {
      pages.allocate(page);
    }

    @Override
    protected void release(int page) {
      pages.release(page);
    }

    @Override
    protected void compacted() {
      pages.compacted(pageCount());
    }

    @Override
    protected void write(int page, int idx, float[] key, int kOff, float[] value, int vOff) {
      float[] p = pages.array(page);
      int o = pages.base(page);
      for (int c = 0; c < headDim; c++) {
        p[o + c * PAGE_TOKENS + idx] = key[kOff + c];
      }
      for (int b = 0; b < headDim; b += AttentionKernels.VALUE_BLOCK) {
        System.arraycopy(value, vOff + b, p, o + valueRunStart(idx, b), valueRunLength(b));
      }
    }

    @Override
    protected void move(int fromPage, int fromIdx, int toPage, int toIdx) {
      float[] src = pages.array(fromPage), dst = pages.array(toPage);
      int so = pages.base(fromPage), d0 = pages.base(toPage);
      for (int c = 0; c < headDim; c++) {
        dst[d0 + c * PAGE_TOKENS + toIdx] = src[so + c * PAGE_TOKENS + fromIdx];
      }
      for (int b = 0; b < headDim; b += AttentionKernels.VALUE_BLOCK) {
        System.arraycopy(src, so + valueRunStart(fromIdx, b), dst, d0 + valueRunStart(toIdx, b),
            valueRunLength(b));
      }
    }

    @Override
    public void readKey(int slot, float[] dst, int off) {
      float[] p = pages.array(slot / PAGE_TOKENS);
      int o = pages.base(slot / PAGE_TOKENS) + slot % PAGE_TOKENS;
      for (int c = 0; c < headDim; c++) {
        dst[off + c] = p[o + c * PAGE_TOKENS];
      }
    }

    @Override
    public void readValue(int slot, float[] dst, int off) {
      float[] p = pages.array(slot / PAGE_TOKENS);
      int o = pages.base(slot / PAGE_TOKENS);
      int idx = slot % PAGE_TOKENS;
      for (int b = 0; b < headDim; b += AttentionKernels.VALUE_BLOCK) {
        System.arraycopy(p, o + valueRunStart(idx, b), dst, off + b, valueRunLength(b));
      }
    }

    @Override
    public float[] page(int page, float[] buf, AttentionKernels kernels) {
      return pages.array(page);
    }

    @Override
    public int pageOffset(int page) {
      return pages.base(page);
    }

    @Override
    public long payloadBytes() {
      return (long) (pageCount() + pages.pending(pageCount())) * PAGE_TOKENS * headDim * 2 * Float.BYTES;
    }
  }
}
