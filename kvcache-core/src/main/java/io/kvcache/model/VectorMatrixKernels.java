package io.kvcache.model;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * Vector API kernels: weight rows are decoded four at a time into float scratch by bulk copies and
 * loops C2 turns into packed conversions, then each activation row is loaded once per four weight
 * rows and two tokens at a time (eight fused multiply-add accumulators), or one token against four
 * rows for decode. Decode over f16 and bf16 weights has its own path, {@link #matvecHalves}.
 */
final class VectorMatrixKernels implements MatrixKernels {

  private static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;

  @Override
  public String name() {
    return "vector(" + S.length() + " lanes)";
  }

  @Override
  public void matmul(Weight w, float[] x, int xOff, int xStride, int n, float[] y, int yOff, int yStride, int r0,
      int r1, Scratch scratch) {
    scratch.check(w);
    if (n == 1 && (w.type() == DType.F16 || w.type() == DType.BF16)) {
      matvecHalves(w, x, xOff, y, yOff, r0, r1, scratch);
      return;
    }
    int cols = w.cols();
    float[] rows = scratch.rows;
    int r = r0;
    for (; r + 4 <= r1; r += 4) {
      for (int i = 0; i < 4; i++) {
        decode(w, r + i, rows, i * cols, scratch);
      }
      int t = 0;
      for (; t + 2 <= n; t += 2) {
        dot4x2(rows, cols, x, xOff + t * xStride, xStride, y, yOff + t * yStride + r, yStride);
      }
      if (t < n) {
        dot4(rows, cols, x, xOff + t * xStride, y, yOff + t * yStride + r);
      }
    }
    for (; r < r1; r++) {
      decode(w, r, rows, 0, scratch);
      for (int t = 0; t < n; t++) {
        y[yOff + t * yStride + r] = dot(rows, 0, x, xOff + t * xStride, cols);
      }
    }
  }

  /**
   * Decode's matrix-vector product over 16-bit weights. Each weight is read once, so the memory
   * stream bounds it and every pass over the copied rows must be cheap: each of four rows is copied
   * out of the buffer in one bulk copy and widened by one plain loop that C2 turns into packed
   * conversions while the copy is still in L1, then the four rows are multiplied with eight
   * accumulators (two per row), enough independent chains to cover the fused multiply-add latency.
   * Long simple loops matter: the same work cut into column chunks of 256 ran at half the speed, the
   * overhead of short trip counts dominating.
   */
  private static void matvecHalves(Weight w, float[] x, int xOff, float[] y, int yOff, int r0, int r1,
      Scratch scratch) {
    int cols = w.cols();
    boolean bf16 = w.type() == DType.BF16;
    short[] h = scratch.halves;
    float[] f = scratch.rows;
    int len = S.length();
    int bound = cols - cols % (2 * len);
    int r = r0;
    for (; r + 4 <= r1; r += 4) {
      for (int i = 0; i < 4; i++) {
        w.shorts.get((r + i) * cols, h, 0, cols);
        widen(h, f, i * cols, cols, bf16);
      }
      FloatVector a0 = FloatVector.zero(S);
      FloatVector a1 = FloatVector.zero(S);
      FloatVector a2 = FloatVector.zero(S);
      FloatVector a3 = FloatVector.zero(S);
      FloatVector b0 = FloatVector.zero(S);
      FloatVector b1 = FloatVector.zero(S);
      FloatVector b2 = FloatVector.zero(S);
      FloatVector b3 = FloatVector.zero(S);
      for (int c = 0; c < bound; c += 2 * len) {
        FloatVector xv = FloatVector.fromArray(S, x, xOff + c);
        FloatVector xw = FloatVector.fromArray(S, x, xOff + c + len);
        a0 = FloatVector.fromArray(S, f, c).fma(xv, a0);
        a1 = FloatVector.fromArray(S, f, cols + c).fma(xv, a1);
        a2 = FloatVector.fromArray(S, f, 2 * cols + c).fma(xv, a2);
        a3 = FloatVector.fromArray(S, f, 3 * cols + c).fma(xv, a3);
        b0 = FloatVector.fromArray(S, f, c + len).fma(xw, b0);
        b1 = FloatVector.fromArray(S, f, cols + c + len).fma(xw, b1);
        b2 = FloatVector.fromArray(S, f, 2 * cols + c + len).fma(xw, b2);
        b3 = FloatVector.fromArray(S, f, 3 * cols + c + len).fma(xw, b3);
      }
      float s0 = a0.add(b0).reduceLanes(VectorOperators.ADD);
      float s1 = a1.add(b1).reduceLanes(VectorOperators.ADD);
      float s2 = a2.add(b2).reduceLanes(VectorOperators.ADD);
      float s3 = a3.add(b3).reduceLanes(VectorOperators.ADD);
      for (int c = bound; c < cols; c++) {
        float xc = x[xOff + c];
        s0 += f[c] * xc;
        s1 += f[cols + c] * xc;
        s2 += f[2 * cols + c] * xc;
        s3 += f[3 * cols + c] * xc;
      }
      y[yOff + r] = s0;
      y[yOff + r + 1] = s1;
      y[yOff + r + 2] = s2;
      y[yOff + r + 3] = s3;
    }
    for (; r < r1; r++) {
      w.shorts.get(r * cols, h, 0, cols);
      widen(h, f, 0, cols, bf16);
      y[yOff + r] = dot(f, 0, x, xOff, cols);
    }
  }

  /** Plain loops, which C2 turns into packed conversions (vcvtph2ps for f16) on x86. */
  private static void widen(short[] h, float[] f, int fOff, int n, boolean bf16) {
    if (bf16) {
      for (int c = 0; c < n; c++) {
        f[fOff + c] = Float.intBitsToFloat(h[c] << 16);
      }
    } else {
      for (int c = 0; c < n; c++) {
        f[fOff + c] = Float.float16ToFloat(h[c]);
      }
    }
  }

  private static void dot4(float[] rows, int cols, float[] x, int xb, float[] y, int yb) {
    FloatVector a0 = FloatVector.zero(S);
    FloatVector a1 = FloatVector.zero(S);
    FloatVector a2 = FloatVector.zero(S);
    FloatVector a3 = FloatVector.zero(S);
    int bound = S.loopBound(cols);
    int c = 0;
    for (; c < bound; c += S.length()) {
      FloatVector xv = FloatVector.fromArray(S, x, xb + c);
      a0 = FloatVector.fromArray(S, rows, c).fma(xv, a0);
      a1 = FloatVector.fromArray(S, rows, cols + c).fma(xv, a1);
      a2 = FloatVector.fromArray(S, rows, 2 * cols + c).fma(xv, a2);
      a3 = FloatVector.fromArray(S, rows, 3 * cols + c).fma(xv, a3);
    }
    float s0 = a0.reduceLanes(VectorOperators.ADD);
    float s1 = a1.reduceLanes(VectorOperators.ADD);
    float s2 = a2.reduceLanes(VectorOperators.ADD);
    float s3 = a3.reduceLanes(VectorOperators.ADD);
    for (; c < cols; c++) {
      float xc = x[xb + c];
      s0 += rows[c] * xc;
      s1 += rows[cols + c] * xc;
      s2 += rows[2 * cols + c] * xc;
      s3 += rows[3 * cols + c] * xc;
    }
    y[yb] = s0;
    y[yb + 1] = s1;
    y[yb + 2] = s2;
    y[yb + 3] = s3;
  }

  /** Four weight rows times two tokens: 6 loads feed 8 FMAs, against 5 for 4 in {@link #dot4}. */
  private static void dot4x2(float[] rows, int cols, float[] x, int xb, int xs, float[] y, int yb, int ys) {
    FloatVector a0 = FloatVector.zero(S);
    FloatVector a1 = FloatVector.zero(S);
    FloatVector a2 = FloatVector.zero(S);
    FloatVector a3 = FloatVector.zero(S);
    FloatVector b0 = FloatVector.zero(S);
    FloatVector b1 = FloatVector.zero(S);
    FloatVector b2 = FloatVector.zero(S);
    FloatVector b3 = FloatVector.zero(S);
    int bound = S.loopBound(cols);
    int c = 0;
    for (; c < bound; c += S.length()) {
      FloatVector r0 = FloatVector.fromArray(S, rows, c);
      FloatVector r1 = FloatVector.fromArray(S, rows, cols + c);
      FloatVector r2 = FloatVector.fromArray(S, rows, 2 * cols + c);
      FloatVector r3 = FloatVector.fromArray(S, rows, 3 * cols + c);
      FloatVector xa = FloatVector.fromArray(S, x, xb + c);
      a0 = r0.fma(xa, a0);
      a1 = r1.fma(xa, a1);
      a2 = r2.fma(xa, a2);
      a3 = r3.fma(xa, a3);
      FloatVector xv = FloatVector.fromArray(S, x, xb + xs + c);
      b0 = r0.fma(xv, b0);
      b1 = r1.fma(xv, b1);
      b2 = r2.fma(xv, b2);
      b3 = r3.fma(xv, b3);
    }
    float s0 = a0.reduceLanes(VectorOperators.ADD);
    float s1 = a1.reduceLanes(VectorOperators.ADD);
    float s2 = a2.reduceLanes(VectorOperators.ADD);
    float s3 = a3.reduceLanes(VectorOperators.ADD);
    float u0 = b0.reduceLanes(VectorOperators.ADD);
    float u1 = b1.reduceLanes(VectorOperators.ADD);
    float u2 = b2.reduceLanes(VectorOperators.ADD);
    float u3 = b3.reduceLanes(VectorOperators.ADD);
    for (; c < cols; c++) {
      float xc = x[xb + c];
      float xd = x[xb + xs + c];
      s0 += rows[c] * xc;
      s1 += rows[cols + c] * xc;
      s2 += rows[2 * cols + c] * xc;
      s3 += rows[3 * cols + c] * xc;
      u0 += rows[c] * xd;
      u1 += rows[cols + c] * xd;
      u2 += rows[2 * cols + c] * xd;
      u3 += rows[3 * cols + c] * xd;
    }
    y[yb] = s0;
    y[yb + 1] = s1;
    y[yb + 2] = s2;
    y[yb + 3] = s3;
    y[yb + ys] = u0;
    y[yb + ys + 1] = u1;
    y[yb + ys + 2] = u2;
    y[yb + ys + 3] = u3;
  }

  private static float dot(float[] a, int aOff, float[] x, int xb, int n) {
    FloatVector acc = FloatVector.zero(S);
    int bound = S.loopBound(n);
    int c = 0;
    for (; c < bound; c += S.length()) {
      acc = FloatVector.fromArray(S, a, aOff + c).fma(FloatVector.fromArray(S, x, xb + c), acc);
    }
    float s = acc.reduceLanes(VectorOperators.ADD);
    for (; c < n; c++) {
      s += a[aOff + c] * x[xb + c];
    }
    return s;
  }

  private static void decode(Weight w, int r, float[] dst, int off, Scratch scratch) {
    int cols = w.cols();
    switch (w.type()) {
      case F32 -> w.floats.get(r * cols, dst, off, cols);
      case F16 -> {
        short[] h = scratch.halves;
        w.shorts.get(r * cols, h, 0, cols);
        for (int c = 0; c < cols; c++) {
          dst[off + c] = Float.float16ToFloat(h[c]);
        }
      }
      case BF16 -> {
        short[] h = scratch.halves;
        w.shorts.get(r * cols, h, 0, cols);
        for (int c = 0; c < cols; c++) {
          dst[off + c] = Float.intBitsToFloat(h[c] << 16);
        }
      }
      case Q8_0 -> {
        byte[] b = scratch.bytes;
        int blocks = cols >>> 5;
        w.raw().get(r * w.rowBytes(), b, 0, blocks * 34);
        for (int k = 0; k < blocks; k++) {
          int p = k * 34;
          float d = Float.float16ToFloat((short) ((b[p] & 0xff) | (b[p + 1] << 8)));
          int o = off + (k << 5);
          for (int j = 0; j < 32; j++) {
            dst[o + j] = d * b[p + 2 + j];
          }
        }
      }
    }
  }
}
