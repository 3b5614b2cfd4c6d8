package io.kvcache.model;

import java.nio.ByteOrder;
import io.kvcache.simd.Lanes;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorSpecies;

/**
 * Vector API kernels: weight rows are decoded four at a time into float scratch by bulk copies and
 * loops C2 turns into packed conversions, then each activation row is loaded once per four weight
 * rows and two tokens at a time (eight fused multiply-add accumulators), or one token against four
 * rows for decode. Decode over f16 and bf16 weights has its own paths: one pass straight from the
 * mapped weights on Java 22+ ({@link #matvecSegment}), else copy-and-widen ({@link #matvecHalves}).
 */
final class VectorMatrixKernels implements MatrixKernels {

  private static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
  /** 16-bit lanes as many as {@link #S} has, and the ints they widen to. */
  private static final VectorSpecies<Short> SH = VectorSpecies.of(short.class, VectorShape.forBitSize(S.length() * 16));
  private static final VectorSpecies<Integer> SI = VectorSpecies.of(int.class, S.vectorShape());

  @Override
  public String name() {
    return "vector(" + S.length() + " lanes)";
  }

  @Override
  public void matmul(Weight w, float[] x, int xOff, int xStride, int n, float[] y, int yOff, int yStride, int r0,
      int r1, Scratch scratch) {
    scratch.check(w);
    if (n == 1 && (w.type() == DType.F16 || w.type() == DType.BF16)) {
      if (SegmentLoads.AVAILABLE) {
        matvecSegment(w, x, xOff, y, yOff, r0, r1, scratch);
      } else {
        matvecHalves(w, x, xOff, y, yOff, r0, r1, scratch);
      }
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
      float s0 = Lanes.sum(a0.add(b0));
      float s1 = Lanes.sum(a1.add(b1));
      float s2 = Lanes.sum(a2.add(b2));
      float s3 = Lanes.sum(a3.add(b3));
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

  /**
   * Decode's matrix-vector product over 16-bit weights in one pass (Java 22+): weights are loaded as
   * 16-bit vectors straight from the mapped buffer, widened in registers and multiplied, four rows at a
   * time against one load of the activations. Compared with {@link #matvecHalves} nothing is staged, so
   * the loads of the memory stream overlap the arithmetic instead of alternating with it. The f16 and
   * bf16 loops are separate methods: one loop holding both widenings is too big for C2 to inline all
   * four rows' loads (NodeCountInliningCutoff), and a vector that is not inlined is boxed.
   */
  private static void matvecSegment(Weight w, float[] x, int xOff, float[] y, int yOff, int r0, int r1,
      Scratch scratch) {
    int r4 = r0 + (r1 - r0) / 4 * 4;
    if (w.type() == DType.BF16) {
      matvecSegmentBf16(w, x, xOff, y, yOff, r0, r4);
    } else if (finiteHalves(w) && scaleActivations(x, xOff, w.cols(), scratch.rows)) {
      matvecSegmentF16(w, scratch.rows, x, xOff, y, yOff, r0, r4);
    } else { // inf/NaN among the weights, or an activation of 2^16 or more: the copying kernel
      r4 = r0;
    }
    if (r4 < r1) {
      matvecHalves(w, x, xOff, y, yOff, r4, r1, scratch);
    }
  }

  /**
   * The activations times 2^112 into {@code dst}, when every |x| is below 2^16 (so none overflows);
   * false otherwise (rare: those products take the copying kernel). With them,
   * {@link #matvecSegmentF16} widens a half in two operations: the
   * bits {@code (h << 13) & 0x8FFFE000} are the half's value times 2^-112, and the 2^112 sits in the
   * activation instead, so every product is the same f32 value as x times the half.
   */
  private static boolean scaleActivations(float[] x, int xOff, int cols, float[] dst) {
    float big = 0f;
    for (int c = 0; c < cols; c++) {
      big = Math.max(big, Math.abs(x[xOff + c]));
    }
    if (!(big < 0x1p16f)) { // also NaN
      return false;
    }
    for (int c = 0; c < cols; c++) {
      dst[c] = x[xOff + c] * 0x1p112f;
    }
    return true;
  }

  private static void matvecSegmentF16(Weight w, float[] xs, float[] x, int xOff, float[] y, int yOff, int r0,
      int r1) {
    int cols = w.cols();
    Object seg = w.segment();
    long rowBytes = 2L * cols;
    int len = S.length();
    int bound = cols - cols % len;
    for (int r = r0; r < r1; r += 4) {
      long b0 = r * rowBytes, b1 = b0 + rowBytes, b2 = b1 + rowBytes, b3 = b2 + rowBytes;
      FloatVector a0 = FloatVector.zero(S);
      FloatVector a1 = FloatVector.zero(S);
      FloatVector a2 = FloatVector.zero(S);
      FloatVector a3 = FloatVector.zero(S);
      for (int c = 0; c < bound; c += len) {
        FloatVector xv = FloatVector.fromArray(S, xs, c);
        long o = 2L * c;
        a0 = f16ScaledAt(seg, b0 + o).fma(xv, a0);
        a1 = f16ScaledAt(seg, b1 + o).fma(xv, a1);
        a2 = f16ScaledAt(seg, b2 + o).fma(xv, a2);
        a3 = f16ScaledAt(seg, b3 + o).fma(xv, a3);
      }
      store4(w, x, xOff, y, yOff, r, bound, Lanes.sum(a0), Lanes.sum(a1),
          Lanes.sum(a2), Lanes.sum(a3));
    }
  }

  /** Finite halves at a byte offset as f32 values times 2^-112: sign and magnitude bits moved in place. */
  private static FloatVector f16ScaledAt(Object seg, long offset) {
    ShortVector h;
    try {
      h = (ShortVector) SegmentLoads.LOAD.invokeExact(SH, seg, offset, ByteOrder.LITTLE_ENDIAN);
    } catch (Throwable t) {
      throw rethrow(t);
    }
    IntVector i = (IntVector) h.convertShape(VectorOperators.S2I, SI, 0);
    // The lane is sign-extended: after the shift bit 31 still holds the sign, bits 28-30 are copies of
    // it and are cleared, bits 13-27 are exponent and mantissa.
    return i.lanewise(VectorOperators.LSHL, 13).and(0x8FFFE000).reinterpretAsFloats();
  }

  private static void matvecSegmentBf16(Weight w, float[] x, int xOff, float[] y, int yOff, int r0, int r1) {
    int cols = w.cols();
    Object seg = w.segment();
    long rowBytes = 2L * cols;
    int len = S.length();
    int bound = cols - cols % len;
    for (int r = r0; r < r1; r += 4) {
      long b0 = r * rowBytes, b1 = b0 + rowBytes, b2 = b1 + rowBytes, b3 = b2 + rowBytes;
      FloatVector a0 = FloatVector.zero(S);
      FloatVector a1 = FloatVector.zero(S);
      FloatVector a2 = FloatVector.zero(S);
      FloatVector a3 = FloatVector.zero(S);
      for (int c = 0; c < bound; c += len) {
        FloatVector xv = FloatVector.fromArray(S, x, xOff + c);
        long o = 2L * c;
        a0 = bf16At(seg, b0 + o).fma(xv, a0);
        a1 = bf16At(seg, b1 + o).fma(xv, a1);
        a2 = bf16At(seg, b2 + o).fma(xv, a2);
        a3 = bf16At(seg, b3 + o).fma(xv, a3);
      }
      store4(w, x, xOff, y, yOff, r, bound, Lanes.sum(a0), Lanes.sum(a1),
          Lanes.sum(a2), Lanes.sum(a3));
    }
  }

  /**
   * Adds the columns past the last full vector to four rows' sums and stores them. It takes floats, not
   * vectors: a vector passed to a method that is not inlined is boxed.
   */
  private static void store4(Weight w, float[] x, int xOff, float[] y, int yOff, int r, int bound, float s0,
      float s1, float s2, float s3) {
    for (int c = bound; c < w.cols(); c++) {
      float xc = x[xOff + c];
      s0 += w.get(r, c) * xc;
      s1 += w.get(r + 1, c) * xc;
      s2 += w.get(r + 2, c) * xc;
      s3 += w.get(r + 3, c) * xc;
    }
    y[yOff + r] = s0;
    y[yOff + r + 1] = s1;
    y[yOff + r + 2] = s2;
    y[yOff + r + 3] = s3;
  }

  private static RuntimeException rethrow(Throwable t) {
    if (t instanceof RuntimeException r) {
      return r;
    }
    if (t instanceof Error e) {
      throw e;
    }
    return new IllegalStateException(t);
  }

  /** bf16 lanes at a byte offset to f32: the top half of the f32 bits, exact for every value. */
  private static FloatVector bf16At(Object seg, long offset) {
    ShortVector h;
    try {
      h = (ShortVector) SegmentLoads.LOAD.invokeExact(SH, seg, offset, ByteOrder.LITTLE_ENDIAN);
    } catch (Throwable t) {
      throw rethrow(t);
    }
    IntVector i = (IntVector) h.convertShape(VectorOperators.S2I, SI, 0);
    return i.lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats();
  }

  /**
   * Whether an f16 weight holds no infinity or NaN (exponent field 31), scanned once per weight on its
   * first one-pass product (a vector pass over its bytes, under the weight's lock) and remembered.
   */
  private static boolean finiteHalves(Weight w) {
    int known = w.finiteHalves;
    if (known == 0) {
      synchronized (w) { // the row-split workers meet here on the first token: one scans, the rest wait
        return scanHalves(w);
      }
    }
    return known == 1;
  }

  private static boolean scanHalves(Weight w) {
    int known = w.finiteHalves;
    if (known == 0) {
      Object seg = w.segment();
      long n = (long) w.rows() * w.cols();
      int len = S.length();
      long bound = n - n % len;
      IntVector worst = IntVector.zero(SI);
      for (long e = 0; e < bound; e += len) {
        ShortVector h;
        try { // the load stays in this method, as in f16ScaledAt, so the vector is not boxed
          h = (ShortVector) SegmentLoads.LOAD.invokeExact(SH, seg, 2 * e, ByteOrder.LITTLE_ENDIAN);
        } catch (Throwable t) {
          throw rethrow(t);
        }
        worst = worst.max(((IntVector) h.convertShape(VectorOperators.S2I, SI, 0)).and(0x7c00));
      }
      boolean finite = worst.reduceLanes(VectorOperators.MAX) != 0x7c00;
      for (long e = bound; e < n && finite; e++) {
        finite = (w.shorts.get((int) e) & 0x7c00) != 0x7c00;
      }
      known = finite ? 1 : 2;
      w.finiteHalves = known;
    }
    return known == 1;
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
    float s0 = Lanes.sum(a0);
    float s1 = Lanes.sum(a1);
    float s2 = Lanes.sum(a2);
    float s3 = Lanes.sum(a3);
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
    float s0 = Lanes.sum(a0);
    float s1 = Lanes.sum(a1);
    float s2 = Lanes.sum(a2);
    float s3 = Lanes.sum(a3);
    float u0 = Lanes.sum(b0);
    float u1 = Lanes.sum(b1);
    float u2 = Lanes.sum(b2);
    float u3 = Lanes.sum(b3);
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
    float s = Lanes.sum(acc);
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
