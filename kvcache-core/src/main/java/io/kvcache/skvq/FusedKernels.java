package io.kvcache.skvq;

/**
 * Decode attention over one quantized page, straight from its codes: the scalar reference
 * ({@link ScalarFusedKernels}, which dequantizes each value plainly) and the Vector API version
 * ({@code VectorFusedKernels}, which dequantizes in registers), held to each other by tests.
 *
 * <p>Query rows arrive in the store's key channel order (permuted), already scaled; outputs leave in the
 * store's value channel order. Scales and zero points arrive widened to floats, keys
 * {@code [group * 16 + j]}, values {@code [j * groups + group]}.
 */
abstract class FusedKernels {

  /**
   * {@code s[sOff + r * sStride + j] = sum_c q[r * d + c] * (kz + ks * code(c, j))} over the page's 16 slots.
   *
   * @param qSum per row and key group, the sum of the row's (permuted) query over the group's channels
   */
  abstract void scores(Layout lay, Layout.QPage p, float[] q, float[] qSum, int rows, float[] ks, float[] kz,
      float[] s, int sOff, int sStride);

  /**
   * {@code o[oOff + r * d + c] += sum_j w[wOff + r * wStride + j] * (vz + vs * code(j, c))}.
   *
   * @param tmp   scratch of at least {@code rows * (16 + 1) * valueGroups} floats
   * @param codes scratch of at least {@link Layout#vCodeScratch} shorts, where a kernel may unpack the
   *              page's value codes (small integers, not floats) once for all of its rows
   */
  abstract void accumulate(Layout lay, Layout.QPage p, float[] w, int wOff, int wStride, int rows, float[] vs,
      float[] vz, float[] o, int oOff, float[] tmp, short[] codes);

  /**
   * {@link #accumulate} over {@code n} consecutive fully quantized pages as one run of {@code n * 16}
   * tokens, where a kernel can: one register tile per channel block for the whole run, so the outputs
   * are read and written once per run rather than once per page (results to rounding). Weights
   * {@code w[wOff + r * wStride + t]} and one scale and zero point per token {@code vs[t]}, {@code vz[t]}
   * (one value group) for the run's tokens {@code t}.
   *
   * @param codes scratch of at least {@code (n - 1) * 16 * d + }{@link Layout#vCodeScratch} shorts
   * @param tmp   scratch of at least {@code rows * (n * 16 + 1)} floats
   * @return false where these kernels do not take the run (the caller then goes page by page): only the
   *     vector kernels do, for ternary values in one group and rows in blocks of 4
   */
  boolean accumulateRun(Layout lay, Layout.QPage[] pages, int first, int n, float[] w, int wOff, int wStride,
      int rows, float[] vs, float[] vz, float[] o, int oOff, float[] tmp, short[] codes) {
    return false;
  }

  /** @return a short name for logs */
  abstract String name();
}
