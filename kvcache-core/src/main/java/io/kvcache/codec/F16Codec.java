package io.kvcache.codec;

import io.kvcache.kernel.AttentionKernels;
import java.util.Arrays;

/**
 * Stores keys and values as IEEE binary16, rounded to nearest even. Values beyond +-65504 cannot be
 * represented and are rejected rather than turned into infinities.
 */
final class F16Codec implements StorageCodec {

  static final F16Codec INSTANCE = new F16Codec();

  /** Largest finite binary16 value. */
  static final float F16_MAX = 65504f;

  private F16Codec() {}

  @Override
  public String name() {
    return "f16";
  }

  @Override
  public HeadStore newStore(int headDim) {
    return new Store(headDim);
  }

  @Override
  public String toString() {
    return name();
  }

  /** One short[] per page, laid out like the f32 page: keys transposed, then values row-major. */
  static final class Store extends HeadStore {
    private short[][] pages = new short[4][];

    Store(int headDim) {
      super(headDim);
    }

    @Override
    public void checkEncodable(float[] key, int kOff, float[] value, int vOff) {
      checkRange("k", key, kOff);
      checkRange("v", value, vOff);
    }

    private void checkRange(String name, float[] a, int off) {
      for (int c = 0; c < headDim; c++) {
        float x = a[off + c];
        if (!(Math.abs(x) <= F16_MAX)) {
          throw new IllegalArgumentException(name + " must be finite and within +-65504 for f16 storage, got "
              + x + " at index " + (off + c));
        }
      }
    }

    @Override
    protected void allocate(int page) {
      if (page == pages.length) {
        pages = Arrays.copyOf(pages, page * 2);
      }
      pages[page] = new short[2 * headDim * PAGE_TOKENS];
    }

    @Override
    protected void release(int page) {
      pages[page] = null;
    }

    @Override
    protected void write(int page, int idx, float[] key, int kOff, float[] value, int vOff) {
      short[] p = pages[page];
      int vBase = valuesOffset() + idx * headDim;
      for (int c = 0; c < headDim; c++) {
        p[c * PAGE_TOKENS + idx] = Float.floatToFloat16(key[kOff + c]);
        p[vBase + c] = Float.floatToFloat16(value[vOff + c]);
      }
    }

    @Override
    protected void move(int fromPage, int fromIdx, int toPage, int toIdx) {
      short[] src = pages[fromPage], dst = pages[toPage];
      for (int c = 0; c < headDim; c++) {
        dst[c * PAGE_TOKENS + toIdx] = src[c * PAGE_TOKENS + fromIdx];
      }
      System.arraycopy(src, valuesOffset() + fromIdx * headDim, dst, valuesOffset() + toIdx * headDim, headDim);
    }

    @Override
    public void readKey(int slot, float[] dst, int off) {
      short[] p = pages[slot / PAGE_TOKENS];
      int idx = slot % PAGE_TOKENS;
      for (int c = 0; c < headDim; c++) {
        dst[off + c] = Float.float16ToFloat(p[c * PAGE_TOKENS + idx]);
      }
    }

    @Override
    public void readValue(int slot, float[] dst, int off) {
      short[] p = pages[slot / PAGE_TOKENS];
      int base = valuesOffset() + (slot % PAGE_TOKENS) * headDim;
      for (int c = 0; c < headDim; c++) {
        dst[off + c] = Float.float16ToFloat(p[base + c]);
      }
    }

    @Override
    public float[] page(int page, float[] buf, AttentionKernels kernels) {
      kernels.f16ToF32(pages[page], 0, buf, 0, 2 * headDim * PAGE_TOKENS);
      return buf;
    }

    @Override
    public long payloadBytes() {
      return (long) pageCount() * PAGE_TOKENS * headDim * 2 * Short.BYTES;
    }
  }
}
