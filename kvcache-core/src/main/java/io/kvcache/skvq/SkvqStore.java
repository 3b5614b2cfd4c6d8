package io.kvcache.skvq;

import io.kvcache.codec.HeadStore;
import io.kvcache.kernel.AttentionKernels;
import java.util.Arrays;

/**
 * One layer and KV head under SKVQ. Every page has up to two parts: a full-precision part (f16, laid out
 * like an f16 page) for its window, sink and not-yet-quantized slots, and a quantized part
 * ({@link Layout.QPage}) for its quantized slots; a 16-bit mask per page says which slots are
 * quantized. Usually a page has one part; both appear only where sinks share a page with quantized
 * tokens, or where a retention policy's eviction and compaction put recent tokens into an old page.
 *
 * <p><b>The window rule.</b> After each attention over the store ({@link #attentionDone}), with
 * {@code maxPos} the newest position held: a page whose every live slot has a position
 * {@code <= maxPos - window} has left the window, and its full-precision slots with position
 * {@code >= sinks} are quantized. So the newest {@code window} positions are always full precision, and at
 * most {@code window + 15} are (the rest of the oldest window page); a prefill chunk attends to its own
 * tokens in full precision and is quantized after its attention. The first quantization calibrates the
 * store (permutation and clipping) on every full-precision non-sink token then held, unless the codec
 * carries a calibration set.
 */
final class SkvqStore extends HeadStore implements HeadStore.FusedPages, SkvqPages {

  private static final int P = PAGE_TOKENS;
  /** Most pages {@link #runAccumulate} takes as one run (decode asks for up to 8). */
  private static final int RUN_MAX = 8;

  private final SkvqConfig cfg;
  private final Layout lay;
  private final float[] calibKeys;
  private final float[] calibValues;
  private final int calibTokens;

  private short[][] full = new short[4][];
  private Layout.QPage[] qp = new Layout.QPage[4];
  private short[] qmask = new short[4];

  private int[] kPerm;
  private int[] vPerm;
  private boolean vIdentity = true;
  private float kAlpha = 1f;
  private float vAlpha = 1f;
  private boolean calibrated;

  // Scratch, sized on first use; nothing is allocated per token.
  private final float[] x;
  private final float[] xp;
  private final int[] codes;
  private final float[] ks;
  private final float[] kz;
  private final float[] vs;
  private final float[] vz;
  private final float[] fbuf;
  /** The calling thread's query-tile scratch, set by {@link #prepareQueries}. */
  private TileScratch t;
  private float[] qNat;
  private int qNatOff;
  private int qRows;
  private final float[] runVs = new float[RUN_MAX * P];
  private final float[] runVz = new float[RUN_MAX * P];
  private AttentionKernels lastKernels;
  private FusedKernels lastFused;

  /**
   * What a query tile needs between {@link #prepareQueries} and the page calls that follow it: queries
   * in permuted order and their group sums, score and weight tiles, accumulators, unpacked value codes.
   * Sized by the tile's rows (up to 64 prompt tokens times the GQA group), it was 171,648 bytes per
   * store at GQA 4 and head dim 128 when each store kept its own, and a cache has a store per layer and
   * KV head; one per thread serves every store, since a thread attends to one store at a time and the
   * page calls follow their store's {@code prepareQueries} on the same thread (HeadStore's contract).
   */
  private static final class TileScratch {
    float[] qPerm = new float[0];
    float[] qSum = new float[0];
    float[] split = new float[0];
    float[] tmpS = new float[0];
    float[] oPerm = new float[0];
    float[] tmpAcc = new float[0];
    short[] vCodes = new short[0];
    // A run's value codes and weights (runAccumulate).
    short[] runCodes = new short[0];
    float[] runTmp = new float[0];
  }

  private static final ThreadLocal<TileScratch> TILE = ThreadLocal.withInitial(TileScratch::new);

  SkvqStore(int headDim, SkvqConfig cfg, float[] calibKeys, float[] calibValues, int calibTokens) {
    super(headDim);
    this.cfg = cfg;
    this.lay = new Layout(headDim, cfg);
    this.calibKeys = calibKeys;
    this.calibValues = calibValues;
    this.calibTokens = calibTokens;
    this.x = new float[headDim];
    this.xp = new float[headDim];
    this.codes = new int[headDim];
    this.ks = new float[lay.kGroups * P];
    this.kz = new float[lay.kGroups * P];
    this.vs = new float[lay.vGroups * P];
    this.vz = new float[lay.vGroups * P];
    this.fbuf = new float[2 * headDim * P];
    this.kPerm = identity(headDim);
    this.vPerm = identity(headDim);
  }

  Layout layout() {
    return lay;
  }

  /** @return whether the slot's token is stored quantized */
  boolean quantized(int slot) {
    return (qmask[slot / P] & (1 << (slot % P))) != 0;
  }

  @Override
  public int[] keyPermutation() {
    return kPerm.clone();
  }

  @Override
  public int[] valuePermutation() {
    return vPerm.clone();
  }

  @Override
  public SkvqConfig config() {
    return cfg;
  }

  @Override
  public boolean calibrated() {
    return calibrated;
  }

  @Override
  public int quantizedSlots(int page) {
    checkPage(page);
    return qmask[page] & 0xFFFF;
  }

  @Override
  public void readQuantizedPage(int page, int[] keyCodes, int[] valueCodes, float[] keyScale, float[] keyZero,
      float[] valueScale, float[] valueZero) {
    checkPage(page);
    int d = headDim;
    int kg = lay.kGroups * P, vg = P * lay.vGroups;
    if (keyCodes.length < d * P || valueCodes.length < d * P || keyScale.length < kg || keyZero.length < kg
        || valueScale.length < vg || valueZero.length < vg) {
      throw new IllegalArgumentException("readQuantizedPage needs keyCodes and valueCodes of " + d * P
          + " ints, keyScale/keyZero of " + kg + " and valueScale/valueZero of " + vg + " floats; got "
          + keyCodes.length + ", " + valueCodes.length + ", " + keyScale.length + "/" + keyZero.length + ", "
          + valueScale.length + "/" + valueZero.length);
    }
    java.util.Arrays.fill(keyCodes, 0, d * P, 0);
    java.util.Arrays.fill(valueCodes, 0, d * P, 0);
    java.util.Arrays.fill(keyScale, 0, kg, 0f);
    java.util.Arrays.fill(keyZero, 0, kg, 0f);
    java.util.Arrays.fill(valueScale, 0, vg, 0f);
    java.util.Arrays.fill(valueZero, 0, vg, 0f);
    int mask = qmask[page];
    Layout.QPage q = qp[page];
    for (int j = 0; j < P; j++) {
      if ((mask & (1 << j)) == 0) {
        continue;
      }
      for (int c = 0; c < d; c++) {
        keyCodes[c * P + j] = lay.kCode(q, c, j);
        valueCodes[j * d + c] = lay.vCode(q, j, c);
      }
      for (int g = 0; g < lay.kGroups; g++) {
        keyScale[g * P + j] = h(q.ks[g * P + j]);
        keyZero[g * P + j] = h(q.kz[g * P + j]);
      }
      for (int g = 0; g < lay.vGroups; g++) {
        valueScale[j * lay.vGroups + g] = h(q.vs[j * lay.vGroups + g]);
        valueZero[j * lay.vGroups + g] = h(q.vz[j * lay.vGroups + g]);
      }
    }
  }

  private void checkPage(int page) {
    if (page < 0 || page >= pageCount()) {
      throw new IllegalArgumentException("page must be in [0, " + pageCount() + "), got " + page);
    }
  }

  float keyClip() {
    return kAlpha;
  }

  float valueClip() {
    return vAlpha;
  }

  @Override
  public void checkEncodable(float[] k, int kOff, float[] v, int vOff) {
    check("k", k, kOff);
    check("v", v, vOff);
  }

  private void check(String name, float[] a, int off) {
    for (int c = 0; c < headDim; c++) {
      float f = a[off + c];
      if (!(Math.abs(f) <= Quant.MAX_ABS)) {
        throw new IllegalArgumentException(name + " must be finite and within +-" + Quant.MAX_ABS
            + " for SKVQ storage (f16 scales and zero points), got " + f + " at index " + (off + c));
      }
    }
  }

  @Override
  protected void allocate(int page) {
    if (page == full.length) {
      full = Arrays.copyOf(full, page * 2);
      qp = Arrays.copyOf(qp, page * 2);
      qmask = Arrays.copyOf(qmask, page * 2);
    }
    full[page] = new short[2 * headDim * P];
    qp[page] = null;
    qmask[page] = 0;
  }

  @Override
  protected void release(int page) {
    full[page] = null;
    qp[page] = null;
    qmask[page] = 0;
  }

  /** After a compaction released pages: their entries go, keeping room for twice the pages held at most. */
  @Override
  protected void compacted() {
    int cap = Math.max(4, pageCount());
    if (full.length > 2 * cap) {
      full = Arrays.copyOf(full, cap);
      qp = Arrays.copyOf(qp, cap);
      qmask = Arrays.copyOf(qmask, cap);
    }
  }

  @Override
  protected void write(int page, int idx, float[] k, int kOff, float[] v, int vOff) {
    short[] f = fullPart(page);
    for (int c = 0; c < headDim; c++) {
      f[c * P + idx] = Float.floatToFloat16(k[kOff + c]);
      f[valueAt(idx, c)] = Float.floatToFloat16(v[vOff + c]);
    }
    qmask[page] &= (short) ~(1 << idx);
    if (qmask[page] == 0) {
      qp[page] = null; // no quantized slot left: the block is not held (nor counted) for nothing
    }
  }

  @Override
  protected void move(int fromPage, int fromIdx, int toPage, int toIdx) {
    if ((qmask[fromPage] & (1 << fromIdx)) != 0) {
      if (qp[toPage] == null) {
        qp[toPage] = lay.newPage();
      }
      lay.copyToken(qp[fromPage], fromIdx, qp[toPage], toIdx);
      qmask[toPage] |= (short) (1 << toIdx);
    } else {
      short[] src = full[fromPage], dst = fullPart(toPage);
      for (int c = 0; c < headDim; c++) {
        dst[c * P + toIdx] = src[c * P + fromIdx];
      }
      for (int b = 0; b < headDim; b += AttentionKernels.VALUE_BLOCK) {
        System.arraycopy(src, valueRunStart(fromIdx, b), dst, valueRunStart(toIdx, b), valueRunLength(b));
      }
      qmask[toPage] &= (short) ~(1 << toIdx);
    }
    qmask[fromPage] &= (short) ~(1 << fromIdx);
  }

  private short[] fullPart(int page) {
    if (full[page] == null) {
      full[page] = new short[2 * headDim * P];
    }
    return full[page];
  }

  @Override
  public void readKey(int slot, float[] dst, int off) {
    int page = slot / P, j = slot % P;
    if (quantized(slot)) {
      Layout.QPage q = qp[page];
      for (int i = 0; i < headDim; i++) {
        int g = i / lay.kGroup;
        dst[off + kPerm[i]] = h(q.kz[g * P + j]) + h(q.ks[g * P + j]) * lay.kCode(q, i, j);
      }
    } else {
      short[] f = full[page];
      for (int c = 0; c < headDim; c++) {
        dst[off + c] = h(f[c * P + j]);
      }
    }
  }

  @Override
  public void readValue(int slot, float[] dst, int off) {
    int page = slot / P, j = slot % P;
    if (quantized(slot)) {
      Layout.QPage q = qp[page];
      int G = lay.vGroups;
      for (int i = 0; i < headDim; i++) {
        int g = i / lay.vGroup;
        dst[off + vPerm[i]] = h(q.vz[j * G + g]) + h(q.vs[j * G + g]) * lay.vCode(q, j, i);
      }
    } else {
      short[] f = full[page];
      for (int c = 0; c < headDim; c++) {
        dst[off + c] = h(f[valueAt(j, c)]);
      }
    }
  }

  /** Decodes a page whole (dequantizing its quantized slots): for readers other than attention. */
  @Override
  public float[] page(int page, float[] buf, AttentionKernels kernels) {
    if (full[page] != null) {
      kernels.f16ToF32(full[page], 0, buf, 0, 2 * headDim * P);
    } else {
      Arrays.fill(buf, 0, 2 * headDim * P, 0f);
    }
    int mask = qmask[page] & 0xFFFF;
    for (int j = 0; j < P; j++) {
      if ((mask & (1 << j)) != 0) {
        readKey(page * P + j, x, 0);
        for (int c = 0; c < headDim; c++) {
          buf[c * P + j] = x[c];
        }
        readValue(page * P + j, x, 0);
        for (int c = 0; c < headDim; c++) {
          buf[valueAt(j, c)] = x[c];
        }
      }
    }
    return buf;
  }

  @Override
  public long payloadBytes() {
    long bytes = 0;
    for (int p = 0; p < pageCount(); p++) {
      if (full[p] != null) {
        bytes += 2L * headDim * P * Short.BYTES;
      }
      if (qp[p] != null) {
        bytes += lay.pageBytes();
      }
    }
    return bytes;
  }

  /** Positions (as every store), the 16-bit quantized-slot mask per page, and once calibrated the two permutations and clipping ratios. */
  @Override
  public long metadataBytes() {
    long bytes = super.metadataBytes() + (long) pageCount() * Short.BYTES;
    if (calibrated) {
      bytes += 2L * headDim * Integer.BYTES + 2L * Float.BYTES;
    }
    return bytes;
  }

  // ---- fused attention -------------------------------------------------------------------------

  @Override
  public boolean fusedPage(int page) {
    return qmask[page] != 0;
  }

  @Override
  public void prepareQueries(float[] q, int qOff, int rows, AttentionKernels kernels) {
    qNat = q;
    qNatOff = qOff;
    qRows = rows;
    TileScratch t = TILE.get();
    this.t = t;
    // Grown, never shrunk, per array: stores of other shapes share the thread's scratch.
    if (t.qPerm.length < rows * headDim) {
      t.qPerm = new float[rows * headDim];
    }
    if (t.qSum.length < rows * lay.kGroups) {
      t.qSum = new float[rows * lay.kGroups];
    }
    if (t.split.length < 2 * rows * P) {
      t.split = new float[2 * rows * P];
      t.tmpS = new float[rows * P];
    }
    if (t.tmpAcc.length < rows * (P + 1) * lay.vGroups) {
      t.tmpAcc = new float[rows * (P + 1) * lay.vGroups];
    }
    if (t.vCodes.length < lay.vCodeScratch) {
      t.vCodes = new short[lay.vCodeScratch];
    }
    if (lay.vb.ternary() && lay.vGroups == 1) {
      if (t.runCodes.length < (RUN_MAX - 1) * P * headDim + lay.vCodeScratch) {
        t.runCodes = new short[(RUN_MAX - 1) * P * headDim + lay.vCodeScratch];
      }
      if (t.runTmp.length < rows * (RUN_MAX * P + 1)) {
        t.runTmp = new float[rows * (RUN_MAX * P + 1)];
      }
    }
    if (!vIdentity && t.oPerm.length < rows * headDim) {
      // Only a real value permutation needs outputs in permuted order (none with groups spanning the head).
      t.oPerm = new float[rows * headDim];
    }
    float[] qPerm = t.qPerm, qSum = t.qSum;
    for (int r = 0; r < rows; r++) {
      int src = qOff + r * headDim;
      for (int i = 0; i < headDim; i++) {
        qPerm[r * headDim + i] = q[src + kPerm[i]];
      }
      for (int g = 0; g < lay.kGroups; g++) {
        float sum = 0f;
        for (int i = g * lay.kGroup, e = Math.min(headDim, i + lay.kGroup); i < e; i++) {
          sum += qPerm[r * headDim + i];
        }
        qSum[r * lay.kGroups + g] = sum;
      }
    }
  }

  /**
   * Consecutive pages whose every slot is quantized: decode takes them in one softmax step (the pages
   * themselves are still read one by one, {@link HeadStore.FusedPages}' defaults). A page with
   * full-precision slots (the window's edge) ends a run.
   */
  @Override
  public int runPages(int page, int limit) {
    int n = 0;
    while (n < limit && (qmask[page + n] & 0xFFFF) == 0xFFFF) {
      n++;
    }
    return Math.max(1, n);
  }

  /**
   * A run of fully quantized pages ({@link #runPages}) whose values the vector kernels add with one register
   * tile per channel block for the whole run (ternary values in one group, natural value order);
   * otherwise page by page.
   */
  @Override
  public void runAccumulate(int page, int pages, float[] p, int pOff, int pStride, int rows, float[] o, int oOff,
      AttentionKernels kernels) {
    TileScratch t = this.t;
    if (pages > 1 && pages <= RUN_MAX && vIdentity && t.runTmp.length >= rows * (pages * P + 1)
        && t.runCodes.length >= (pages - 1) * P * headDim + lay.vCodeScratch) {
      for (int i = 0; i < pages; i++) {
        Layout.QPage q = qp[page + i];
        for (int j = 0; j < P; j++) {
          runVs[i * P + j] = h(q.vs[j]);
          runVz[i * P + j] = h(q.vz[j]);
        }
      }
      if (fused(kernels).accumulateRun(lay, qp, page, pages, p, pOff, pStride, rows, runVs, runVz, o, oOff, t.runTmp,
          t.runCodes)) {
        return;
      }
    }
    HeadStore.FusedPages.super.runAccumulate(page, pages, p, pOff, pStride, rows, o, oOff, kernels);
  }

  @Override
  public void pageScores(int page, int rows, float[] s, int sOff, int sStride, AttentionKernels kernels) {
    if (rows > qRows) {
      throw new IllegalStateException("rows must be <= the " + qRows + " prepared query rows, got " + rows);
    }
    Layout.QPage q = qp[page];
    for (int i = 0; i < lay.kGroups * P; i++) {
      ks[i] = h(q.ks[i]);
      kz[i] = h(q.kz[i]);
    }
    TileScratch t = this.t;
    float[] tmpS = t.tmpS;
    fused(kernels).scores(lay, q, t.qPerm, t.qSum, rows, ks, kz, s, sOff, sStride);
    int mask = qmask[page] & 0xFFFF;
    if (full[page] != null && mask != 0xFFFF) {
      // A mixed page: the full-precision slots score on the float path.
      kernels.f16ToF32(full[page], 0, fbuf, 0, 2 * headDim * P);
      kernels.scores(qNat, qNatOff, rows, headDim, fbuf, 0, P, tmpS, 0, P);
      for (int r = 0; r < rows; r++) {
        for (int j = 0; j < P; j++) {
          if ((mask & (1 << j)) == 0) {
            s[sOff + r * sStride + j] = tmpS[r * P + j];
          }
        }
      }
    }
  }

  @Override
  public void pageAccumulate(int page, float[] p, int pOff, int pStride, int rows, float[] o, int oOff,
      AttentionKernels kernels) {
    Layout.QPage q = qp[page];
    for (int i = 0; i < lay.vGroups * P; i++) {
      vs[i] = h(q.vs[i]);
      vz[i] = h(q.vz[i]);
    }
    int mask = qmask[page] & 0xFFFF;
    boolean mixed = full[page] != null && mask != 0xFFFF;
    TileScratch t = this.t;
    float[] split = t.split, tmpAcc = t.tmpAcc, oPerm = t.oPerm;
    short[] vCodes = t.vCodes;
    float[] w = p;
    int wOff = pOff, wStride = pStride;
    if (mixed) {
      // Quantized slots' weights in the first half of 'split', full-precision slots' in the second.
      for (int r = 0; r < rows; r++) {
        for (int j = 0; j < P; j++) {
          float pj = p[pOff + r * pStride + j];
          boolean isQ = (mask & (1 << j)) != 0;
          split[r * P + j] = isQ ? pj : 0f;
          split[(rows + r) * P + j] = isQ ? 0f : pj;
        }
      }
      w = split;
      wOff = 0;
      wStride = P;
    }
    FusedKernels fk = fused(kernels);
    if (vIdentity) {
      fk.accumulate(lay, q, w, wOff, wStride, rows, vs, vz, o, oOff, tmpAcc, vCodes);
    } else {
      Arrays.fill(oPerm, 0, rows * headDim, 0f);
      fk.accumulate(lay, q, w, wOff, wStride, rows, vs, vz, oPerm, 0, tmpAcc, vCodes);
      for (int r = 0; r < rows; r++) {
        for (int i = 0; i < headDim; i++) {
          o[oOff + r * headDim + vPerm[i]] += oPerm[r * headDim + i];
        }
      }
    }
    if (mixed) {
      kernels.f16ToF32(full[page], 0, fbuf, 0, 2 * headDim * P);
      kernels.accumulate(split, rows * P, P, rows, fbuf, valuesOffset(), P, headDim, o, oOff);
    }
  }

  private FusedKernels fused(AttentionKernels kernels) {
    if (kernels != lastKernels) {
      lastFused = SkvqCodec.fused(kernels, lay);
      lastKernels = kernels;
    }
    return lastFused;
  }

  // ---- the window ------------------------------------------------------------------------------

  @Override
  public void attentionDone() {
    int pages = pageCount();
    long maxPos = -1;
    for (int p = 0; p < pages; p++) {
      if (full[p] != null) {
        for (int j = 0; j < P; j++) {
          int pos = position(p * P + j);
          if (pos != EMPTY) {
            maxPos = Math.max(maxPos, pos);
          }
        }
      }
    }
    long windowStart = maxPos - cfg.window() + 1;
    for (int p = 0; p < pages; p++) {
      if (full[p] == null || maxPos < 0) {
        dropEvictedCodes(p); // nothing to quantize here, but evictions may have emptied its codes
        continue;
      }
      int pageMax = -1;
      boolean pending = false;
      for (int j = 0; j < P; j++) {
        int pos = position(p * P + j);
        if (pos != EMPTY) {
          pageMax = Math.max(pageMax, pos);
          pending |= pos >= cfg.sinks() && (qmask[p] & (1 << j)) == 0;
        }
      }
      if (pageMax >= 0 && pageMax < windowStart && pending) {
        if (!calibrated) {
          calibrate();
        }
        for (int j = 0; j < P; j++) {
          int pos = position(p * P + j);
          if (pos != EMPTY && pos >= cfg.sinks() && (qmask[p] & (1 << j)) == 0) {
            quantizeSlot(p, j);
          }
        }
      }
      boolean anyFull = false;
      for (int j = 0; j < P; j++) {
        anyFull |= position(p * P + j) != EMPTY && (qmask[p] & (1 << j)) == 0;
      }
      dropEvictedCodes(p);
      if (!anyFull && qmask[p] != 0) {
        full[p] = null; // every live slot is quantized: the f16 part goes
      }
    }
  }

  /** Clears the quantized bits of evicted slots, and with the last of them releases the page's codes. */
  private void dropEvictedCodes(int p) {
    if (pageMaxPosition(p) != EMPTY) {
      return; // no empty slot, so no evicted one: the common case costs one read
    }
    short live = 0;
    for (int j = 0; j < P; j++) {
      if (position(p * P + j) != EMPTY) {
        live |= (short) (qmask[p] & (1 << j));
      }
    }
    qmask[p] = live;
    if (live == 0) {
      qp[p] = null;
    }
  }

  private void quantizeSlot(int page, int j) {
    Layout.QPage q = qp[page];
    if (q == null) {
      q = qp[page] = lay.newPage();
    }
    short[] f = full[page];
    for (int c = 0; c < headDim; c++) {
      x[c] = h(f[c * P + j]);
    }
    for (int i = 0; i < headDim; i++) {
      xp[i] = x[kPerm[i]];
    }
    for (int g = 0; g < lay.kGroups; g++) {
      int from = g * lay.kGroup, n = Math.min(lay.kGroup, headDim - from);
      int packed = Quant.quantize(xp, from, n, lay.kb.levels, kAlpha, codes);
      q.ks[g * P + j] = (short) (packed >>> 16);
      q.kz[g * P + j] = (short) packed;
      for (int i = from; i < from + n; i++) {
        lay.setKCode(q, i, j, codes[i]);
      }
    }
    for (int i = 0; i < headDim; i++) {
      xp[i] = h(f[valueAt(j, vPerm[i])]);
    }
    for (int g = 0; g < lay.vGroups; g++) {
      int from = g * lay.vGroup, n = Math.min(lay.vGroup, headDim - from);
      int packed = Quant.quantize(xp, from, n, lay.vb.levels, vAlpha, codes);
      q.vs[j * lay.vGroups + g] = (short) (packed >>> 16);
      q.vz[j * lay.vGroups + g] = (short) packed;
      for (int i = from; i < from + n; i++) {
        lay.setVCode(q, j, i, codes[i]);
      }
    }
    qmask[page] |= (short) (1 << j);
    contentChanged(page); // the slot's key is now its codes: summaries of the page (RocketKV's bounds) are stale
  }

  private void calibrate() {
    float[] keys, values;
    int n;
    if (calibKeys != null) {
      n = Math.min(calibTokens, Quant.MAX_CALIBRATION_ROWS);
      keys = new float[n * headDim];
      values = new float[n * headDim];
      for (int r = 0; r < n; r++) {
        int src = (int) ((long) r * calibTokens / n);
        System.arraycopy(calibKeys, src * headDim, keys, r * headDim, headDim);
        System.arraycopy(calibValues, src * headDim, values, r * headDim, headDim);
      }
    } else {
      int total = 0;
      for (int p = 0; p < pageCount(); p++) {
        for (int j = 0; j < P && full[p] != null; j++) {
          if (calibrationSlot(p, j)) {
            total++;
          }
        }
      }
      n = Math.min(total, Quant.MAX_CALIBRATION_ROWS);
      keys = new float[n * headDim];
      values = new float[n * headDim];
      int seen = 0, r = 0;
      for (int p = 0; p < pageCount() && r < n; p++) {
        for (int j = 0; j < P && full[p] != null && r < n; j++) {
          if (!calibrationSlot(p, j)) {
            continue;
          }
          // Evenly spread: take token 'seen' when it reaches the next of n equally spaced marks.
          if ((long) seen * n / total == r) {
            short[] f = full[p];
            for (int c = 0; c < headDim; c++) {
              keys[r * headDim + c] = h(f[c * P + j]);
              values[r * headDim + c] = h(f[valueAt(j, c)]);
            }
            r++;
          }
          seen++;
        }
      }
      n = r;
    }
    Quant.Choice k = Quant.calibrate(keys, n, headDim, lay.kGroup, lay.kb.levels, cfg.reorder(), cfg.clip());
    Quant.Choice v = Quant.calibrate(values, n, headDim, lay.vGroup, lay.vb.levels, cfg.reorder(), cfg.clip());
    kPerm = k.perm();
    kAlpha = k.alpha();
    vPerm = v.perm();
    vAlpha = v.alpha();
    vIdentity = Arrays.equals(vPerm, identity(headDim));
    calibrated = true;
  }

  private boolean calibrationSlot(int p, int j) {
    int pos = position(p * P + j);
    return pos != EMPTY && pos >= cfg.sinks() && (qmask[p] & (1 << j)) == 0;
  }

  private static int[] identity(int d) {
    int[] a = new int[d];
    for (int i = 0; i < d; i++) {
      a[i] = i;
    }
    return a;
  }

  private static float h(short s) {
    return Float.float16ToFloat(s);
  }
}
