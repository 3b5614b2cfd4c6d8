package io.kvcache.codec;

import io.kvcache.kernel.AttentionKernels;

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
   * Pages in {@link PageBlocks}' grouped layout: in groups of up to {@link PageBlocks#GROUP_PAGES}
   * pages, each page's keys transposed (as in the f32 page), one after another, then the group's values
   * as one value page of all its tokens in column blocks. Decode takes a group's fully visible pages as
   * one run ({@link #runPages}): it scores them page by page, takes one softmax step, and adds their
   * values with one register tile per column block, reading the group front to back. {@link #page}
   * widens a page into the f32 page's layout.
   *
   * <p>Decode reads the halves in place ({@link HeadStore.FusedPages}): the kernels widen them in
   * registers instead of writing a float copy of each page and reading it back. They read a half as its
   * value times 2^-112 ({@link AttentionKernels#HALF_FACTOR}), so the queries and weights are multiplied
   * by 2^112 here; the products are the same floats as over the widened page (whole results agree to
   * rounding: a run takes one softmax step where the widened path takes one per page). A
   * tile whose scaled queries reach 2^16 in magnitude (where the factor would overflow), or of more
   * rows than the kernels read in place faster ({@link AttentionKernels#halfPageMaxRows}: a decode
   * group of up to 4 heads with 256-bit vectors, none with 512-bit ones), takes the float copy. The
   * system property {@value #IN_PLACE_PROPERTY}{@code =false} makes every tile take it (same products,
   * results to rounding; for comparing the two in benchmarks).
   */
  static final class Store extends HeadStore implements HeadStore.FusedPages {

    /** The system property that turns reading in place off: {@code kvcache.attention.f16InPlace=false}. */
    static final String IN_PLACE_PROPERTY = "kvcache.attention.f16InPlace";

    private static final boolean IN_PLACE = !"false".equalsIgnoreCase(System.getProperty(IN_PLACE_PROPERTY, "true"));

    private final PageBlocks<short[]> pages;
    // Scratch of the in-place kernels, sized on first use to the tile (a decode group: 2 KiB at 4 heads of
    // 128), so a cache of many stores that never decodes holds none.
    private float[] qScaled = new float[0];
    private float[] pScaled = new float[0];
    private boolean fused;

    Store(int headDim) {
      super(headDim);
      pages = new PageBlocks<>(short[]::new, headDim, Short.BYTES, PageBlocks.GROUP_PAGES);
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
      short[] p = pages.array(page);
      int o = pages.base(page);
      for (int c = 0; c < headDim; c++) {
        p[o + c * PAGE_TOKENS + idx] = Float.floatToFloat16(key[kOff + c]);
      }
      for (int b = 0; b < headDim; b += AttentionKernels.VALUE_BLOCK) {
        int run = pages.valueRun(page, idx, b), n = valueRunLength(b);
        for (int c = 0; c < n; c++) {
          p[run + c] = Float.floatToFloat16(value[vOff + b + c]);
        }
      }
    }

    @Override
    protected void move(int fromPage, int fromIdx, int toPage, int toIdx) {
      short[] src = pages.array(fromPage), dst = pages.array(toPage);
      int so = pages.base(fromPage), d0 = pages.base(toPage);
      for (int c = 0; c < headDim; c++) {
        dst[d0 + c * PAGE_TOKENS + toIdx] = src[so + c * PAGE_TOKENS + fromIdx];
      }
      for (int b = 0; b < headDim; b += AttentionKernels.VALUE_BLOCK) {
        System.arraycopy(src, pages.valueRun(fromPage, fromIdx, b), dst, pages.valueRun(toPage, toIdx, b),
            valueRunLength(b));
      }
    }

    @Override
    public void readKey(int slot, float[] dst, int off) {
      short[] p = pages.array(slot / PAGE_TOKENS);
      int o = pages.base(slot / PAGE_TOKENS) + slot % PAGE_TOKENS;
      for (int c = 0; c < headDim; c++) {
        dst[off + c] = Float.float16ToFloat(p[o + c * PAGE_TOKENS]);
      }
    }

    @Override
    public void readValue(int slot, float[] dst, int off) {
      short[] p = pages.array(slot / PAGE_TOKENS);
      int idx = slot % PAGE_TOKENS;
      for (int b = 0; b < headDim; b += AttentionKernels.VALUE_BLOCK) {
        int run = pages.valueRun(slot / PAGE_TOKENS, idx, b), n = valueRunLength(b);
        for (int c = 0; c < n; c++) {
          dst[off + b + c] = Float.float16ToFloat(p[run + c]);
        }
      }
    }

    @Override
    public float[] page(int page, float[] buf, AttentionKernels kernels) {
      short[] p = pages.array(page);
      kernels.f16ToF32(p, pages.base(page), buf, 0, headDim * PAGE_TOKENS);
      for (int b = 0; b < headDim; b += AttentionKernels.VALUE_BLOCK) {
        kernels.f16ToF32(p, pages.valueRun(page, 0, b), buf, valueRunStart(0, b), PAGE_TOKENS * valueRunLength(b));
      }
      return buf;
    }

    @Override
    public void prepareQueries(float[] q, int qOff, int rows, AttentionKernels kernels) {
      fused = false;
      if (!IN_PLACE || rows > kernels.halfPageMaxRows()) {
        return;
      }
      int n = rows * headDim;
      float big = 0f;
      for (int i = 0; i < n; i++) {
        big = Math.max(big, Math.abs(q[qOff + i]));
      }
      if (!(big < 0x1p16f)) { // also NaN
        return;
      }
      if (qScaled.length < n) {
        qScaled = new float[n];
        pScaled = new float[rows * PageBlocks.GROUP_PAGES * PAGE_TOKENS];
      }
      for (int i = 0; i < n; i++) {
        qScaled[i] = q[qOff + i] * AttentionKernels.HALF_FACTOR;
      }
      fused = true;
    }

    @Override
    public boolean fusedPage(int page) {
      return fused;
    }

    @Override
    public void pageScores(int page, int rows, float[] s, int sOff, int sStride, AttentionKernels kernels) {
      kernels.scoresHalf(qScaled, 0, rows, headDim, pages.array(page), pages.base(page), PAGE_TOKENS, s, sOff,
          sStride);
    }

    @Override
    public void pageAccumulate(int page, float[] p, int pOff, int pStride, int rows, float[] o, int oOff,
        AttentionKernels kernels) {
      runAccumulate(page, 1, p, pOff, pStride, rows, o, oOff, kernels);
    }

    /** The pages from {@code page} on that share its group ({@link PageBlocks}' grouped layout). */
    @Override
    public int runPages(int page, int limit) {
      return Math.min(limit, pages.groupSize(page) - pages.groupIndex(page));
    }

    @Override
    public void runAccumulate(int page, int n, float[] p, int pOff, int pStride, int rows, float[] o, int oOff,
        AttentionKernels kernels) {
      int tokens = n * PAGE_TOKENS; // n <= GROUP_PAGES and rows <= the prepared rows: pScaled holds them
      for (int r = 0; r < rows; r++) {
        for (int j = 0; j < tokens; j++) {
          pScaled[r * tokens + j] = p[pOff + r * pStride + j] * AttentionKernels.HALF_FACTOR;
        }
      }
      kernels.accumulateHalf(pScaled, 0, tokens, rows, pages.array(page), pages.valueBase(page),
          pages.groupIndex(page) * PAGE_TOKENS, tokens, pages.groupSize(page) * PAGE_TOKENS, headDim, o, oOff);
    }

    @Override
    public long payloadBytes() {
      // The current block's pages not allocated yet are held too.
      return (long) (pageCount() + pages.pending(pageCount())) * PAGE_TOKENS * headDim * 2 * Short.BYTES;
    }
  }
}
