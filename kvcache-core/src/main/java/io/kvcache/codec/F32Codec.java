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
  public HeadStore newStore(int headDim) {
    return new Store(headDim);
  }

  @Override
  public String toString() {
    return name();
  }

  private static final class Store extends HeadStore {
    private float[][] k = new float[4][];
    private float[][] v = new float[4][];

    Store(int headDim) {
      super(headDim);
    }

    @Override
    protected void allocate(int page) {
      if (page == k.length) {
        k = Arrays.copyOf(k, page * 2);
        v = Arrays.copyOf(v, page * 2);
      }
      k[page] = new float[headDim * PAGE_TOKENS];
      v[page] = new float[headDim * PAGE_TOKENS];
    }

    @Override
    protected void release(int page) {
      k[page] = null;
      v[page] = null;
    }

    @Override
    protected void write(int page, int idx, float[] key, int kOff, float[] value, int vOff) {
      float[] kp = k[page];
      for (int c = 0; c < headDim; c++) {
        kp[c * PAGE_TOKENS + idx] = key[kOff + c];
      }
      System.arraycopy(value, vOff, v[page], idx * headDim, headDim);
    }

    @Override
    protected void move(int fromPage, int fromIdx, int toPage, int toIdx) {
      float[] ks = k[fromPage], kd = k[toPage];
      for (int c = 0; c < headDim; c++) {
        kd[c * PAGE_TOKENS + toIdx] = ks[c * PAGE_TOKENS + fromIdx];
      }
      System.arraycopy(v[fromPage], fromIdx * headDim, v[toPage], toIdx * headDim, headDim);
    }

    @Override
    public void readKey(int slot, float[] dst, int off) {
      float[] kp = k[slot / PAGE_TOKENS];
      int idx = slot % PAGE_TOKENS;
      for (int c = 0; c < headDim; c++) {
        dst[off + c] = kp[c * PAGE_TOKENS + idx];
      }
    }

    @Override
    public void readValue(int slot, float[] dst, int off) {
      System.arraycopy(v[slot / PAGE_TOKENS], (slot % PAGE_TOKENS) * headDim, dst, off, headDim);
    }

    @Override
    public float[] keys(int page, float[] buf, AttentionKernels kernels) {
      return k[page];
    }

    @Override
    public float[] values(int page, float[] buf, AttentionKernels kernels) {
      return v[page];
    }

    @Override
    public long payloadBytes() {
      return (long) pageCount() * PAGE_TOKENS * headDim * 2 * Float.BYTES;
    }
  }
}
