package io.kvcache.kernel;

/**
 * The hot operations of paged attention, over primitive arrays with explicit offsets.
 *
 * <p>Two implementations exist: {@link ScalarAttentionKernels}, the definition, and
 * {@code VectorAttentionKernels}, which uses the JDK Vector API. {@link Kernels#get()} picks one at
 * class-initialisation time. Tests hold the two to each other and to a float64 reference.
 *
 * <p>Layouts, fixed by the paged store: a key page is transposed, {@code kT[c * pageTokens + j]} for
 * channel {@code c} and token {@code j}, so that one vector holds one channel of consecutive tokens and
 * scoring needs no horizontal reduction; a value page is stored in column blocks of
 * {@value #VALUE_BLOCK} channels, each block row-major over the page's tokens (see {@link #valueIndex}),
 * so that the accumulation, which runs over the tokens for a block of channels at a time, reads the page
 * front to back. Query and output rows are packed, {@code q[r * d + c]}.
 */
public interface AttentionKernels {

  /**
   * Channels per column block of a value page. With a plain row-major page, adding a 16-channel slice
   * of 16 tokens touches 16 cache lines 256 bytes apart (f16, head dim 128); the blocked page turns that
   * into one sequential 512-byte run. On a Zen 3 core an f16 decode page from L2 measured 1.09-1.18x
   * faster, f32 decode and 8K prefill faster through JMH, f16 decode from memory within the noise
   * (docs/benchmarks.md). The vector kernels need their lane count to divide it (4, 8 or 16).
   */
  int VALUE_BLOCK = 16;

  /**
   * Where a value page keeps token {@code j}'s channel {@code c}, relative to the page's first value:
   * channels {@code [b, b + w)} with {@code b = c - c % VALUE_BLOCK} and
   * {@code w = min(VALUE_BLOCK, d - b)} form one block of {@code w * pageTokens} elements at
   * {@code b * pageTokens}, token-major inside: {@code b * pageTokens + j * w + (c - b)}. When {@code d}
   * is at most {@value #VALUE_BLOCK} this is the row-major {@code j * d + c}.
   *
   * @param j          token within the page
   * @param c          channel
   * @param d          head dimension
   * @param pageTokens tokens per page
   * @return the element's offset from the start of the value page
   */
  static int valueIndex(int j, int c, int d, int pageTokens) {
    int b = c - c % VALUE_BLOCK;
    int w = Math.min(VALUE_BLOCK, d - b);
    return b * pageTokens + j * w + (c - b);
  }

  /** A short name for logs and benchmark tables: {@code "scalar"} or {@code "vector-256"} and so on. */
  String name();

  /**
   * Scores of {@code rows} query rows against one key page:
   * {@code s[sOff + r * sStride + j] = sum_c q[qOff + r * d + c] * kT[kOff + c * pageTokens + j]}.
   *
   * @param q          query rows, packed, already multiplied by the attention scale
   * @param qOff       offset of row 0 in {@code q}
   * @param rows       number of query rows
   * @param d          head dimension
   * @param kT         the key page, transposed, {@code d * pageTokens} floats from {@code kOff}
   * @param kOff       offset of the key page
   * @param pageTokens tokens per page
   * @param s          output scores
   * @param sOff       offset of row 0's first score
   * @param sStride    distance between consecutive rows in {@code s}
   */
  void scores(float[] q, int qOff, int rows, int d, float[] kT, int kOff, int pageTokens, float[] s, int sOff,
      int sStride);

  /**
   * Adds the probability-weighted values of one page to output rows:
   * {@code o[oOff + r * d + c] += sum_j p[pOff + r * pStride + j] * v[vOff + valueIndex(j, c, d, pageTokens)]}.
   *
   * @param p          probabilities (unnormalised weights)
   * @param pOff       offset of row 0's first weight
   * @param pStride    distance between consecutive rows in {@code p}
   * @param rows       number of rows
   * @param v          the value page in column blocks ({@link #valueIndex}), {@code pageTokens * d} floats
   *                   from {@code vOff}
   * @param vOff       offset of the value page
   * @param pageTokens tokens per page
   * @param d          head dimension
   * @param o          output accumulators, packed rows
   * @param oOff       offset of row 0 in {@code o}
   */
  void accumulate(float[] p, int pOff, int pStride, int rows, float[] v, int vOff, int pageTokens, int d, float[] o,
      int oOff);

  /**
   * The factor between a binary16 value and the float the half-page kernels read it as: they see a
   * half {@code h} as {@code value(h) * 2^-112}, which a vector kernel gets from {@code h}'s bits in
   * two integer operations, so the caller multiplies the other operand (queries, probabilities) by
   * this factor. Both scalings are exact (powers of two, no overflow while that operand is below
   * 2^16 in magnitude), so every product equals the f32 product of the operand and the half.
   */
  float HALF_FACTOR = 0x1p112f;

  /**
   * {@link #scores} over a key page held as binary16 bit patterns, each read as its value times
   * 2^-112 (see {@link #HALF_FACTOR}): pass queries multiplied by {@link #HALF_FACTOR} to get the
   * scores {@link #scores} computes over the widened page. Halves must be finite.
   *
   * @param q          query rows, packed, multiplied by the attention scale and {@link #HALF_FACTOR}
   * @param qOff       offset of row 0 in {@code q}
   * @param rows       number of query rows
   * @param d          head dimension
   * @param kT         the key page, transposed, {@code d * pageTokens} halves from {@code kOff}
   * @param kOff       offset of the key page
   * @param pageTokens tokens per page
   * @param s          output scores
   * @param sOff       offset of row 0's first score
   * @param sStride    distance between consecutive rows in {@code s}
   */
  void scoresHalf(float[] q, int qOff, int rows, int d, short[] kT, int kOff, int pageTokens, float[] s, int sOff,
      int sStride);

  /**
   * {@link #accumulate} over a value page held as binary16 bit patterns, each read as its value
   * times 2^-112 (see {@link #HALF_FACTOR}): pass weights multiplied by {@link #HALF_FACTOR}.
   * Halves must be finite.
   *
   * @param p          weights, multiplied by {@link #HALF_FACTOR}
   * @param pOff       offset of row 0's first weight
   * @param pStride    distance between consecutive rows in {@code p}
   * @param rows       number of rows
   * @param v          the value page in column blocks ({@link #valueIndex}), {@code pageTokens * d} halves
   *                   from {@code vOff}
   * @param vOff       offset of the value page
   * @param pageTokens tokens per page
   * @param d          head dimension
   * @param o          output accumulators, packed rows
   * @param oOff       offset of row 0 in {@code o}
   */
  default void accumulateHalf(float[] p, int pOff, int pStride, int rows, short[] v, int vOff, int pageTokens, int d,
      float[] o, int oOff) {
    accumulateHalf(p, pOff, pStride, rows, v, vOff, 0, pageTokens, pageTokens, d, o, oOff);
  }

  /**
   * {@link #accumulateHalf} over tokens {@code first .. first + tokens - 1} of a value page of
   * {@code pageTokens} tokens: {@code o[oOff + r * d + c] += sum_{j < tokens} p[pOff + r * pStride + j] *
   * v[vOff + valueIndex(first + j, c, d, pageTokens)]} (halves read as in {@link #accumulateHalf}). A
   * store that keeps several pages' values as one value page ({@code io.kvcache.codec.PageBlocks}'
   * grouped layout) reads one page of it, or a run of consecutive pages, with one call.
   *
   * @param p          weights, multiplied by {@link #HALF_FACTOR}; token {@code first + j}'s at index {@code j}
   * @param pOff       offset of row 0's first weight
   * @param pStride    distance between consecutive rows in {@code p}
   * @param rows       number of rows
   * @param v          the value page in column blocks ({@link #valueIndex}), {@code pageTokens * d} halves
   *                   from {@code vOff}
   * @param vOff       offset of the value page
   * @param first      the first token to add, {@code >= 0}
   * @param tokens     how many tokens to add, {@code first + tokens <= pageTokens}
   * @param pageTokens tokens of the value page (its layout)
   * @param d          head dimension
   * @param o          output accumulators, packed rows
   * @param oOff       offset of row 0 in {@code o}
   */
  void accumulateHalf(float[] p, int pOff, int pStride, int rows, short[] v, int vOff, int first, int tokens,
      int pageTokens, int d, float[] o, int oOff);

  /**
   * The most query rows of a tile for which this implementation reads binary16 pages in place
   * ({@link #scoresHalf}, {@link #accumulateHalf}) rather than widening each page into floats first;
   * 0 when widening first is never slower. Storage codecs ask it once per tile. The answer is about
   * speed only: both ways give the same floats.
   *
   * @return a row count, {@code >= 0}
   */
  int halfPageMaxRows();

  /**
   * Largest of {@code n} floats from {@code off}; {@code -Infinity} when {@code n == 0}.
   *
   * @param a   the array
   * @param off first element
   * @param n   element count
   * @return the maximum
   */
  float max(float[] a, int off, int n);

  /**
   * Replaces {@code a[i]} by {@code exp(a[i] - m)} for {@code n} elements from {@code off} and
   * returns their sum. {@code -Infinity} entries become 0. {@code m} must be finite and at least every
   * element (the softmax's maximum): the vector kernel's e^x is built for {@code x <= 0}, and values
   * under the smallest normal float (x below about -87.3) may come back as 0.
   *
   * @param a   the array, overwritten
   * @param off first element
   * @param n   element count
   * @param m   the subtracted maximum
   * @return the sum of the new values
   */
  float expAndSum(float[] a, int off, int n, float m);

  /**
   * Multiplies {@code n} floats from {@code off} by {@code f}.
   *
   * @param a   the array, overwritten
   * @param off first element
   * @param n   element count
   * @param f   the factor
   */
  void scale(float[] a, int off, int n, float f);

  /**
   * Adds, for {@code n} pages, the upper bound that one key channel contributes to the group's
   * scores: {@code est[i] += sum_g max(qc[g] * min[off + i], qc[g] * max[off + i])}, where
   * {@code min} and {@code max} hold the channel's per-page key extremes (Quest's page summaries).
   *
   * @param qc    the channel's query value for each of the group's heads
   * @param group heads in the group
   * @param min   per-page minimum of the channel
   * @param max   per-page maximum of the channel
   * @param off   offset of page 0 in {@code min} and {@code max}
   * @param n     pages
   * @param est   the estimates, {@code n} floats from index 0, accumulated into
   */
  void pageBounds(float[] qc, int group, float[] min, float[] max, int off, int n, float[] est);

  /**
   * Widens {@code n} IEEE-754 binary16 values to float.
   *
   * @param src    binary16 bit patterns
   * @param srcOff first source element
   * @param dst    destination
   * @param dstOff first destination element
   * @param n      element count
   */
  void f16ToF32(short[] src, int srcOff, float[] dst, int dstOff, int n);
}
