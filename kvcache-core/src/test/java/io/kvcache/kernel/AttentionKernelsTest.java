package io.kvcache.kernel;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.SplittableRandom;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The vector kernels against the scalar definitions, primitive by primitive, on fresh random inputs.
 * Tolerance: 1e-5 relative to the largest magnitude involved (the two differ only in summation
 * order and FMA rounding). For the value sums that magnitude is that of their terms, so that a sum
 * that cancels to near zero does not shrink the bound; for scores it is the largest |score| of the
 * page, a maximum over 16 or more dot products, never near zero. The binary16 conversion must match
 * bit for bit.
 */
class AttentionKernelsTest {

  static final AttentionKernels scalar = Kernels.scalar();

  /** The vector kernels, or the calling test skipped (only that test: the scalar-only ones still run). */
  static AttentionKernels vector() {
    Assumptions.assumeTrue(Kernels.vectorAvailable(), "jdk.incubator.vector not available");
    return Kernels.vector();
  }

  static long seed() {
    String fixed = System.getProperty("kvcache.test.seed");
    return fixed != null ? Long.parseLong(fixed) : System.nanoTime();
  }

  static float[] gaussian(SplittableRandom rnd, int n) {
    float[] a = new float[n];
    for (int i = 0; i < n; i++) {
      a[i] = (float) rnd.nextGaussian();
    }
    return a;
  }

  static void assertClose(float[] expected, float[] actual, double tol, long seed) {
    double scaleRef = 1e-30;
    for (float x : expected) {
      scaleRef = Math.max(scaleRef, Math.abs(x));
    }
    assertClose(expected, actual, tol, scaleRef, seed);
  }

  /**
   * Relative to {@code scaleRef}: for a sum, the largest sum of its terms' magnitudes, since float
   * rounding grows with the terms, not with a result that cancels to near zero.
   */
  static void assertClose(float[] expected, float[] actual, double tol, double scaleRef, long seed) {
    for (int i = 0; i < expected.length; i++) {
      double err = Math.abs(expected[i] - actual[i]) / scaleRef;
      int at = i;
      assertTrue(err <= tol, () -> "element " + at + ": " + actual[at] + " vs " + expected[at] + " (seed " + seed + ")");
    }
  }

  static float[] abs(float[] a) {
    float[] b = new float[a.length];
    for (int i = 0; i < a.length; i++) {
      b[i] = Math.abs(a[i]);
    }
    return b;
  }

  static double max(float[] a) {
    double m = 1e-30;
    for (float x : a) {
      m = Math.max(m, x);
    }
    return m;
  }

  /** The largest |o| + sum |w·v| of an accumulate call: the magnitude its rounding grows with. */
  static double accumulateScale(float[] w, int wOff, int stride, int rows, float[] v, int vOff, int p, int d, float[] o, int oOff) {
    float[] out = abs(o);
    scalar.accumulate(abs(w), wOff, stride, rows, abs(v), vOff, p, d, out, oOff);
    return max(out);
  }

  /** As {@link #accumulateScale} for a binary16 page (sign bits cleared). */
  static double accumulateHalfScale(float[] w, int wOff, int stride, int rows, short[] v, int vOff, int p, int d, float[] o, int oOff) {
    short[] av = new short[v.length];
    for (int i = 0; i < v.length; i++) {
      av[i] = (short) (v[i] & 0x7fff);
    }
    float[] out = abs(o);
    scalar.accumulateHalf(abs(w), wOff, stride, rows, av, vOff, p, d, out, oOff);
    return max(out);
  }

  @ParameterizedTest(name = "rows={0}")
  @ValueSource(ints = {1, 3, 4, 5, 8, 13, 64})
  void scoresMatchScalar(int rows) {
    long seed = seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    // 16 is the store's page; three vectors of tokens also run the one-vector kernel (the whole page
    // with 512-bit vectors).
    for (int p : new int[] {16, 3 * VectorAttentionKernels.lanes()}) {
      for (int d : new int[] {1, 7, 40, 64, 100, 128}) {
        float[] q = gaussian(rnd, rows * d + 3);
        float[] kT = gaussian(rnd, d * p + 9);
        int stride = p + 24;
        float[] s1 = new float[rows * stride + 5];
        float[] s2 = new float[rows * stride + 5];
        scalar.scores(q, 3, rows, d, kT, 9, p, s1, 5, stride);
        vector().scores(q, 3, rows, d, kT, 9, p, s2, 5, stride);
        assertClose(s1, s2, 1e-5, seed);
      }
    }
  }

  @ParameterizedTest(name = "rows={0}")
  @ValueSource(ints = {1, 3, 4, 5, 8, 13, 64})
  void accumulateMatchesScalar(int rows) {
    long seed = seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    // Head dims with a narrower last value block (7, 24, 40, 100) and 48: one 2-vector tile and a
    // single block left over for 512-bit vectors.
    for (int d : new int[] {1, 7, 24, 40, 48, 64, 100, 128}) {
      for (int p : new int[] {16, 48}) {
        int stride = 48;
        float[] w = gaussian(rnd, rows * stride + 2);
        float[] v = gaussian(rnd, p * d + 6);
        float[] o1 = gaussian(rnd, rows * d + 1);
        float[] o2 = o1.clone();
        double scale = accumulateScale(w, 2, stride, rows, v, 6, p, d, o1, 1);
        scalar.accumulate(w, 2, stride, rows, v, 6, p, d, o1, 1);
        vector().accumulate(w, 2, stride, rows, v, 6, p, d, o2, 1);
        assertClose(o1, o2, 1e-5, scale, seed);
      }
    }
  }

  /**
   * An unknown {@code kvcache.kernels} value names the property and the value; the choice is made in
   * {@code Kernels}' holder, so {@link Kernels#scalar()} works whatever the property says.
   */
  @Test
  void anUnknownKernelsPropertyIsNamedAndTheScalarKernelsStayAvailable() {
    IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
        () -> Kernels.choose("vectr"));
    assertTrue(e.getMessage().contains(Kernels.PROPERTY) && e.getMessage().contains("'vectr'"), e.getMessage());
    assertEquals("scalar", Kernels.choose(" Scalar ").name());
    assertEquals("scalar", Kernels.scalar().name());
  }

  @Test
  void valueIndexPlacesBlocksOfSixteenChannels() {
    assertEquals(16, AttentionKernels.valueIndex(1, 0, 128, 16), "token 1 follows token 0's 16 channels");
    assertEquals(256, AttentionKernels.valueIndex(0, 16, 128, 16), "channel 16 starts the second block");
    assertEquals(16 * 48 + 5 * 16 + 3, AttentionKernels.valueIndex(5, 19, 128, 48));
    assertEquals(520, AttentionKernels.valueIndex(1, 32, 40, 16), "the narrower last block: 8 wide");
    assertEquals(639, AttentionKernels.valueIndex(15, 39, 40, 16));
    assertEquals(3 * 7 + 6, AttentionKernels.valueIndex(3, 6, 7, 16), "one block: row-major");
  }

  @Test
  void valueIndexCoversThePageOnce() {
    for (int d : new int[] {1, 7, 16, 24, 40, 64, 100, 128}) {
      for (int p : new int[] {1, 16, 48}) {
        boolean[] seen = new boolean[p * d];
        for (int j = 0; j < p; j++) {
          for (int c = 0; c < d; c++) {
            int i = AttentionKernels.valueIndex(j, c, d, p);
            assertTrue(i >= 0 && i < p * d && !seen[i], "d=" + d + " p=" + p + " j=" + j + " c=" + c + " -> " + i);
            seen[i] = true;
            if (c % AttentionKernels.VALUE_BLOCK != 0) {
              assertEquals(AttentionKernels.valueIndex(j, c - 1, d, p) + 1, i, "a block is row-major inside");
            }
          }
        }
      }
    }
  }

  /** The scalar definition against float64 sums over {@link AttentionKernels#valueIndex}. */
  @ParameterizedTest(name = "rows={0}")
  @ValueSource(ints = {1, 4, 5})
  void accumulateReadsColumnBlocks(int rows) {
    long seed = seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    for (int d : new int[] {1, 7, 16, 24, 40, 128}) {
      for (int p : new int[] {16, 48}) {
        float[] w = gaussian(rnd, rows * p);
        float[] v = gaussian(rnd, p * d + 3);
        short[] h = new short[p * d + 3];
        for (int i = 0; i < h.length; i++) {
          h[i] = Float.floatToFloat16(v[i]);
          v[i] = Float.float16ToFloat(h[i]);
        }
        float[] expected = new float[rows * d];
        double magnitude = 1e-30;
        for (int r = 0; r < rows; r++) {
          for (int c = 0; c < d; c++) {
            double sum = 0, abs = 0;
            for (int j = 0; j < p; j++) {
              double term = (double) w[r * p + j] * v[3 + AttentionKernels.valueIndex(j, c, d, p)];
              sum += term;
              abs += Math.abs(term);
            }
            expected[r * d + c] = (float) sum;
            magnitude = Math.max(magnitude, abs);
          }
        }
        for (AttentionKernels k : new AttentionKernels[] {scalar, vector()}) {
          float[] o = new float[rows * d];
          k.accumulate(w, 0, p, rows, v, 3, p, d, o, 0);
          assertClose(expected, o, 1e-5, magnitude, seed);
          float[] oh = new float[rows * d];
          k.accumulateHalf(times(w, AttentionKernels.HALF_FACTOR), 0, p, rows, h, 3, p, d, oh, 0);
          assertClose(expected, oh, 1e-5, magnitude, seed);
        }
      }
    }
  }

  /**
   * The vector softmax sum adds in one fixed order (lane-wise over the vectors, then a fixed tree), so
   * it gives the same bits whether C2 has compiled it or the Vector API's Java fallback runs; checked
   * on every call of a loop long enough for C2 to compile it mid-way when this test runs first.
   */
  @Test
  void expAndSumAddsInOneOrderCompiledOrNot() {
    long seed = seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    int lanes = VectorAttentionKernels.lanes(), n = 16;
    float[] a = new float[n], e = new float[n];
    for (int call = 0; call < 30_000; call++) {
      for (int i = 0; i < n; i++) {
        a[i] = (float) (rnd.nextGaussian() * 4);
      }
      float m = scalar.max(a, 0, n);
      System.arraycopy(a, 0, e, 0, n);
      float total = vector().expAndSum(e, 0, n, m);
      float[] lane = new float[lanes];
      for (int i = 0; i < n; i++) {
        lane[i % lanes] += e[i];
      }
      for (int k = 1; k < lanes; k <<= 1) { // the tree: lane i plus lane i ^ k, k = 1, 2, 4, ...
        float[] next = new float[lanes];
        for (int i = 0; i < lanes; i++) {
          next[i] = lane[i] + lane[i ^ k];
        }
        lane = next;
      }
      float expected = lane[0];
      if (total != expected) {
        assertEquals(expected, total, "call " + call + " (seed " + seed + ")");
      }
    }
  }

  @Test
  void reductionsMatchScalar() {
    long seed = seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    for (int n : new int[] {0, 1, 5, 8, 17, 128, 1000}) {
      float[] a = gaussian(rnd, n + 2);
      if (n > 3) {
        a[3] = Float.NEGATIVE_INFINITY; // masked entries must become exactly 0
      }
      assertEquals(scalar.max(a, 2, n), vector().max(a, 2, n), "max n=" + n + " seed " + seed);
      float m = n == 0 ? 0f : scalar.max(a, 2, n);
      float[] e1 = a.clone();
      float[] e2 = a.clone();
      float s1 = scalar.expAndSum(e1, 2, n, m);
      float s2 = vector().expAndSum(e2, 2, n, m);
      assertEquals(s1, s2, 1e-5 * Math.max(1, s1), "sum n=" + n + " seed " + seed);
      assertClose(e1, e2, 1e-5, seed);
      if (n > 3) {
        assertEquals(0f, e2[3], "exp(-inf - m) must be 0");
      }
      float[] c1 = a.clone();
      float[] c2 = a.clone();
      c1[3 % c1.length] = 1f;
      c2[3 % c2.length] = 1f;
      scalar.scale(c1, 2, n, 0.37f);
      vector().scale(c2, 2, n, 0.37f);
      assertClose(c1, c2, 0, seed);
    }
  }

  @Test
  void pageBoundsMatchScalar() {
    long seed = seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    for (int n : new int[] {0, 1, 7, 8, 100, 2049}) {
      for (int group : new int[] {1, 4, 8}) {
        float[] qc = gaussian(rnd, group);
        float[] lo = gaussian(rnd, n + 3), hi = gaussian(rnd, n + 3);
        float[] e1 = gaussian(rnd, n), e2 = e1.clone();
        scalar.pageBounds(qc, group, lo, hi, 3, n, e1);
        vector().pageBounds(qc, group, lo, hi, 3, n, e2);
        assertClose(e1, e2, 1e-5, seed);
      }
    }
  }

  /** Random finite binary16 bit patterns, uniform over the patterns: subnormals, zeros and 65504 included. */
  static short[] halves(SplittableRandom rnd, int n) {
    short[] h = new short[n];
    for (int i = 0; i < n; i++) {
      int b;
      do {
        b = rnd.nextInt(65536);
      } while ((b & 0x7C00) == 0x7C00);
      h[i] = (short) b;
    }
    return h;
  }

  static float[] widened(short[] h) {
    float[] f = new float[h.length];
    for (int i = 0; i < h.length; i++) {
      f[i] = Float.float16ToFloat(h[i]);
    }
    return f;
  }

  static float[] times(float[] a, float f) {
    float[] r = new float[a.length];
    for (int i = 0; i < a.length; i++) {
      r[i] = a[i] * f;
    }
    return r;
  }

  static void assertSameBits(float[] expected, float[] actual, String what, long seed) {
    for (int i = 0; i < expected.length; i++) {
      int at = i;
      assertEquals(Float.floatToRawIntBits(expected[i]), Float.floatToRawIntBits(actual[i]),
          () -> what + " element " + at + ": " + actual[at] + " vs " + expected[at] + " (seed " + seed + ")");
    }
  }

  /**
   * The half-page kernels of each implementation return exactly the floats of its float kernels over
   * the widened page, with the other operand scaled by 2^112: same products, same order. The pages
   * draw every kind of finite half, subnormals and the largest included.
   */
  @ParameterizedTest(name = "rows={0}")
  @ValueSource(ints = {1, 3, 4, 5, 8, 13, 16})
  void halfPageKernelsEqualFloatKernelsOverTheWidenedPage(int rows) {
    long seed = seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    for (AttentionKernels k : new AttentionKernels[] {scalar, vector()}) {
      // 16 is the store's page; three vectors of tokens also run the one-vector tail of the scores kernel.
      for (int p : new int[] {16, 3 * VectorAttentionKernels.lanes()}) {
        for (int d : new int[] {1, 7, 24, 64, 100, 128}) {
          short[] page = halves(rnd, 2 * d * p + 5);
          float[] wide = widened(page);
          float[] q = gaussian(rnd, rows * d + 3);
          int sStride = p + 24;
          float[] s1 = new float[rows * sStride + 5];
          float[] s2 = new float[rows * sStride + 5];
          k.scores(q, 3, rows, d, wide, 5, p, s1, 5, sStride);
          k.scoresHalf(times(q, AttentionKernels.HALF_FACTOR), 3, rows, d, page, 5, p, s2, 5, sStride);
          assertSameBits(s1, s2, k.name() + " scores p=" + p + " d=" + d, seed);

          int pStride = p + 32;
          float[] w = gaussian(rnd, rows * pStride + 2);
          float[] o1 = gaussian(rnd, rows * d + 1);
          float[] o2 = o1.clone();
          k.accumulate(w, 2, pStride, rows, wide, 5 + d * p, p, d, o1, 1);
          k.accumulateHalf(times(w, AttentionKernels.HALF_FACTOR), 2, pStride, rows, page, 5 + d * p, p, d, o2, 1);
          assertSameBits(o1, o2, k.name() + " accumulate p=" + p + " d=" + d, seed);
        }
      }
    }
  }

  /** Vector half-page kernels against the scalar ones, as for the float kernels. */
  @ParameterizedTest(name = "rows={0}")
  @ValueSource(ints = {1, 4, 5, 13, 64})
  void halfPageKernelsMatchScalar(int rows) {
    long seed = seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    for (int p : new int[] {16, 3 * VectorAttentionKernels.lanes()}) {
      for (int d : new int[] {1, 7, 40, 64, 100, 128}) {
        short[] page = new short[2 * d * p + 9];
        for (int i = 0; i < page.length; i++) {
          page[i] = Float.floatToFloat16((float) rnd.nextGaussian());
        }
        float[] q = times(gaussian(rnd, rows * d + 3), AttentionKernels.HALF_FACTOR);
        int stride = p + 24;
        float[] s1 = new float[rows * stride + 5];
        float[] s2 = new float[rows * stride + 5];
        scalar.scoresHalf(q, 3, rows, d, page, 9, p, s1, 5, stride);
        vector().scoresHalf(q, 3, rows, d, page, 9, p, s2, 5, stride);
        assertClose(s1, s2, 1e-5, seed);

        float[] w = times(gaussian(rnd, rows * stride + 2), AttentionKernels.HALF_FACTOR);
        float[] o1 = gaussian(rnd, rows * d + 1);
        float[] o2 = o1.clone();
        double scale = accumulateHalfScale(w, 2, stride, rows, page, 9 + d * p, p, d, o1, 1);
        scalar.accumulateHalf(w, 2, stride, rows, page, 9 + d * p, p, d, o1, 1);
        vector().accumulateHalf(w, 2, stride, rows, page, 9 + d * p, p, d, o2, 1);
        assertClose(o1, o2, 1e-5, scale, seed);
      }
    }
  }

  /**
   * A run of tokens inside a larger value page (the grouped layout's value page of several store pages)
   * gives the same bits as the same tokens copied out into a value page of their own: the range only
   * moves where the kernels start reading.
   */
  @ParameterizedTest(name = "rows={0}")
  @ValueSource(ints = {1, 4, 5})
  void accumulateHalfOverATokenRangeEqualsThoseTokensAsAPage(int rows) {
    long seed = seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    int[][] ranges = {{128, 0, 128}, {128, 16, 16}, {128, 32, 96}, {128, 112, 16}, {48, 5, 7}, {48, 0, 1}};
    for (AttentionKernels k : new AttentionKernels[] {scalar, vector()}) {
      for (int d : new int[] {1, 7, 40, 64, 100, 128}) {
        for (int[] range : ranges) {
          int pageTokens = range[0], first = range[1], tokens = range[2];
          short[] page = halves(rnd, d * pageTokens + 3);
          short[] own = new short[d * tokens];
          for (int j = 0; j < tokens; j++) {
            for (int c = 0; c < d; c++) {
              own[AttentionKernels.valueIndex(j, c, d, tokens)] =
                  page[3 + AttentionKernels.valueIndex(first + j, c, d, pageTokens)];
            }
          }
          int stride = tokens + 5;
          float[] w = times(gaussian(rnd, rows * stride + 2), AttentionKernels.HALF_FACTOR);
          float[] o1 = gaussian(rnd, rows * d + 1);
          float[] o2 = o1.clone();
          k.accumulateHalf(w, 2, stride, rows, own, 0, tokens, d, o1, 1);
          k.accumulateHalf(w, 2, stride, rows, page, 3, first, tokens, pageTokens, d, o2, 1);
          assertSameBits(o1, o2, k.name() + " d=" + d + " tokens " + first + "+" + tokens + " of " + pageTokens, seed);
        }
      }
    }
  }

  @Test
  void f16ToF32MatchesJdkForEveryFiniteValue() {
    short[] all = new short[65536];
    int n = 0;
    for (int b = 0; b < 65536; b++) {
      if ((b & 0x7C00) != 0x7C00) { // skip Inf and NaN, which codecs never store
        all[n++] = (short) b;
      }
    }
    float[] out = new float[n + 1];
    vector().f16ToF32(all, 0, out, 1, n);
    for (int i = 0; i < n; i++) {
      float expected = Float.float16ToFloat(all[i]);
      int at = i;
      assertEquals(Float.floatToRawIntBits(expected), Float.floatToRawIntBits(out[i + 1]),
          () -> "binary16 0x" + Integer.toHexString(all[at] & 0xFFFF));
    }
    assertEquals(0f, out[0], "nothing written before dstOff");
  }
}
