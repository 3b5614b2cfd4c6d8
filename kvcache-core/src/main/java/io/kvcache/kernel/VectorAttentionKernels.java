package io.kvcache.kernel;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorSpecies;

/**
 * The kernels with the JDK Vector API, on the platform's preferred float species.
 *
 * <p>Register blocking: {@link #scores} computes a 4-row by one-page tile with lanes running over the
 * page's tokens (the key page is transposed), so each loaded key vector feeds four FMAs and no
 * horizontal reduction is needed; {@link #accumulate} computes a 4-row by {@code 2 * lanes}-channel
 * tile so each loaded value vector feeds four FMAs. Loaded only through {@link Kernels}, and only when
 * {@code jdk.incubator.vector} is present.
 */
final class VectorAttentionKernels implements AttentionKernels {

  private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
  private static final VectorSpecies<Integer> I = VectorSpecies.of(int.class, F.vectorShape());
  private static final VectorSpecies<Short> S =
      VectorSpecies.of(short.class, VectorShape.forBitSize(F.length() * Short.SIZE));
  private static final int L = F.length();
  /** 2^112: rebiases a binary16 exponent field moved into binary32 position (15 to 127). */
  private static final float F16_REBIAS = 0x1p112f;

  VectorAttentionKernels() {}

  /** Lanes of the float species; the page size must be a multiple of it. */
  static int lanes() {
    return L;
  }

  @Override
  public String name() {
    return "vector-" + F.vectorBitSize();
  }

  @Override
  public void scores(float[] q, int qOff, int rows, int d, float[] kT, int pageTokens, float[] s, int sOff,
      int sStride) {
    int r = 0;
    for (; r + 4 <= rows; r += 4) {
      int q0 = qOff + r * d;
      int q1 = q0 + d;
      int q2 = q1 + d;
      int q3 = q2 + d;
      int s0 = sOff + r * sStride;
      for (int j = 0; j < pageTokens; j += 2 * L) {
        if (j + 2 * L <= pageTokens) {
          scores4x2(q, q0, q1, q2, q3, d, kT, pageTokens, j, s, s0, sStride);
        } else {
          scores4x1(q, q0, q1, q2, q3, d, kT, pageTokens, j, s, s0, sStride);
        }
      }
    }
    for (; r < rows; r++) {
      int qr = qOff + r * d;
      int sr = sOff + r * sStride;
      for (int j = 0; j < pageTokens; j += L) {
        FloatVector acc = FloatVector.zero(F);
        for (int c = 0; c < d; c++) {
          acc = FloatVector.fromArray(F, kT, c * pageTokens + j).fma(FloatVector.broadcast(F, q[qr + c]), acc);
        }
        acc.intoArray(s, sr + j);
      }
    }
  }

  private static void scores4x2(float[] q, int q0, int q1, int q2, int q3, int d, float[] kT, int pageTokens,
      int j, float[] s, int s0, int sStride) {
    FloatVector a00 = FloatVector.zero(F), a01 = FloatVector.zero(F);
    FloatVector a10 = FloatVector.zero(F), a11 = FloatVector.zero(F);
    FloatVector a20 = FloatVector.zero(F), a21 = FloatVector.zero(F);
    FloatVector a30 = FloatVector.zero(F), a31 = FloatVector.zero(F);
    for (int c = 0, k = j; c < d; c++, k += pageTokens) {
      FloatVector k0 = FloatVector.fromArray(F, kT, k);
      FloatVector k1 = FloatVector.fromArray(F, kT, k + L);
      FloatVector b0 = FloatVector.broadcast(F, q[q0 + c]);
      a00 = k0.fma(b0, a00);
      a01 = k1.fma(b0, a01);
      FloatVector b1 = FloatVector.broadcast(F, q[q1 + c]);
      a10 = k0.fma(b1, a10);
      a11 = k1.fma(b1, a11);
      FloatVector b2 = FloatVector.broadcast(F, q[q2 + c]);
      a20 = k0.fma(b2, a20);
      a21 = k1.fma(b2, a21);
      FloatVector b3 = FloatVector.broadcast(F, q[q3 + c]);
      a30 = k0.fma(b3, a30);
      a31 = k1.fma(b3, a31);
    }
    a00.intoArray(s, s0 + j);
    a01.intoArray(s, s0 + j + L);
    a10.intoArray(s, s0 + sStride + j);
    a11.intoArray(s, s0 + sStride + j + L);
    a20.intoArray(s, s0 + 2 * sStride + j);
    a21.intoArray(s, s0 + 2 * sStride + j + L);
    a30.intoArray(s, s0 + 3 * sStride + j);
    a31.intoArray(s, s0 + 3 * sStride + j + L);
  }

  private static void scores4x1(float[] q, int q0, int q1, int q2, int q3, int d, float[] kT, int pageTokens,
      int j, float[] s, int s0, int sStride) {
    FloatVector a0 = FloatVector.zero(F), a1 = FloatVector.zero(F);
    FloatVector a2 = FloatVector.zero(F), a3 = FloatVector.zero(F);
    for (int c = 0, k = j; c < d; c++, k += pageTokens) {
      FloatVector kv = FloatVector.fromArray(F, kT, k);
      a0 = kv.fma(FloatVector.broadcast(F, q[q0 + c]), a0);
      a1 = kv.fma(FloatVector.broadcast(F, q[q1 + c]), a1);
      a2 = kv.fma(FloatVector.broadcast(F, q[q2 + c]), a2);
      a3 = kv.fma(FloatVector.broadcast(F, q[q3 + c]), a3);
    }
    a0.intoArray(s, s0 + j);
    a1.intoArray(s, s0 + sStride + j);
    a2.intoArray(s, s0 + 2 * sStride + j);
    a3.intoArray(s, s0 + 3 * sStride + j);
  }

  @Override
  public void accumulate(float[] p, int pOff, int pStride, int rows, float[] v, int pageTokens, int d, float[] o,
      int oOff) {
    int r = 0;
    for (; r + 4 <= rows; r += 4) {
      int p0 = pOff + r * pStride;
      int o0 = oOff + r * d;
      int c = 0;
      for (; c + 2 * L <= d; c += 2 * L) {
        accumulate4x2(p, p0, pStride, v, pageTokens, d, c, o, o0);
      }
      for (; c + L <= d; c += L) {
        for (int rr = 0; rr < 4; rr++) {
          accumulateRow(p, p0 + rr * pStride, v, pageTokens, d, c, o, o0 + rr * d);
        }
      }
      if (c < d) {
        accumulateTail(p, p0, pStride, 4, v, pageTokens, d, c, o, o0);
      }
    }
    for (; r < rows; r++) {
      int pr = pOff + r * pStride;
      int or = oOff + r * d;
      int c = 0;
      for (; c + L <= d; c += L) {
        accumulateRow(p, pr, v, pageTokens, d, c, o, or);
      }
      if (c < d) {
        accumulateTail(p, pr, pStride, 1, v, pageTokens, d, c, o, or);
      }
    }
  }

  private static void accumulate4x2(float[] p, int p0, int pStride, float[] v, int pageTokens, int d, int c,
      float[] o, int o0) {
    FloatVector a00 = FloatVector.zero(F), a01 = FloatVector.zero(F);
    FloatVector a10 = FloatVector.zero(F), a11 = FloatVector.zero(F);
    FloatVector a20 = FloatVector.zero(F), a21 = FloatVector.zero(F);
    FloatVector a30 = FloatVector.zero(F), a31 = FloatVector.zero(F);
    int p1 = p0 + pStride;
    int p2 = p1 + pStride;
    int p3 = p2 + pStride;
    for (int j = 0, vj = c; j < pageTokens; j++, vj += d) {
      FloatVector v0 = FloatVector.fromArray(F, v, vj);
      FloatVector v1 = FloatVector.fromArray(F, v, vj + L);
      FloatVector w0 = FloatVector.broadcast(F, p[p0 + j]);
      a00 = v0.fma(w0, a00);
      a01 = v1.fma(w0, a01);
      FloatVector w1 = FloatVector.broadcast(F, p[p1 + j]);
      a10 = v0.fma(w1, a10);
      a11 = v1.fma(w1, a11);
      FloatVector w2 = FloatVector.broadcast(F, p[p2 + j]);
      a20 = v0.fma(w2, a20);
      a21 = v1.fma(w2, a21);
      FloatVector w3 = FloatVector.broadcast(F, p[p3 + j]);
      a30 = v0.fma(w3, a30);
      a31 = v1.fma(w3, a31);
    }
    addInto(a00, o, o0 + c);
    addInto(a01, o, o0 + c + L);
    addInto(a10, o, o0 + d + c);
    addInto(a11, o, o0 + d + c + L);
    addInto(a20, o, o0 + 2 * d + c);
    addInto(a21, o, o0 + 2 * d + c + L);
    addInto(a30, o, o0 + 3 * d + c);
    addInto(a31, o, o0 + 3 * d + c + L);
  }

  private static void accumulateRow(float[] p, int pr, float[] v, int pageTokens, int d, int c, float[] o, int or) {
    FloatVector acc = FloatVector.zero(F);
    for (int j = 0, vj = c; j < pageTokens; j++, vj += d) {
      acc = FloatVector.fromArray(F, v, vj).fma(FloatVector.broadcast(F, p[pr + j]), acc);
    }
    addInto(acc, o, or + c);
  }

  private static void accumulateTail(float[] p, int p0, int pStride, int rows, float[] v, int pageTokens, int d,
      int c0, float[] o, int o0) {
    for (int r = 0; r < rows; r++) {
      for (int j = 0; j < pageTokens; j++) {
        float w = p[p0 + r * pStride + j];
        for (int c = c0; c < d; c++) {
          o[o0 + r * d + c] += w * v[j * d + c];
        }
      }
    }
  }

  private static void addInto(FloatVector acc, float[] o, int off) {
    FloatVector.fromArray(F, o, off).add(acc).intoArray(o, off);
  }

  @Override
  public float max(float[] a, int off, int n) {
    int i = 0;
    float m = Float.NEGATIVE_INFINITY;
    if (n >= L) {
      FloatVector acc = FloatVector.broadcast(F, Float.NEGATIVE_INFINITY);
      for (; i + L <= n; i += L) {
        acc = acc.max(FloatVector.fromArray(F, a, off + i));
      }
      m = acc.reduceLanes(VectorOperators.MAX);
    }
    for (; i < n; i++) {
      m = Math.max(m, a[off + i]);
    }
    return m;
  }

  @Override
  public float expAndSum(float[] a, int off, int n, float m) {
    int i = 0;
    FloatVector sum = FloatVector.zero(F);
    FloatVector mv = FloatVector.broadcast(F, m);
    for (; i + L <= n; i += L) {
      FloatVector e = FloatVector.fromArray(F, a, off + i).sub(mv).lanewise(VectorOperators.EXP);
      e.intoArray(a, off + i);
      sum = sum.add(e);
    }
    float total = sum.reduceLanes(VectorOperators.ADD);
    for (; i < n; i++) {
      float e = (float) Math.exp(a[off + i] - m);
      a[off + i] = e;
      total += e;
    }
    return total;
  }

  @Override
  public void scale(float[] a, int off, int n, float f) {
    int i = 0;
    FloatVector fv = FloatVector.broadcast(F, f);
    for (; i + L <= n; i += L) {
      FloatVector.fromArray(F, a, off + i).mul(fv).intoArray(a, off + i);
    }
    for (; i < n; i++) {
      a[off + i] *= f;
    }
  }

  /**
   * binary16 to binary32 without a lookup table: sign-extend to 32 bits, shift the exponent and
   * mantissa into binary32 position, keep the sign bit, then multiply by 2^112 to rebias the exponent.
   * The multiply also turns binary16 subnormals into the right normal floats. Infinity and NaN never
   * reach this path: codecs reject non-finite values and values outside the binary16 range.
   */
  @Override
  public void f16ToF32(short[] src, int srcOff, float[] dst, int dstOff, int n) {
    int i = 0;
    for (; i + L <= n; i += L) {
      IntVector bits = (IntVector) ShortVector.fromArray(S, src, srcOff + i).convertShape(VectorOperators.S2I, I, 0);
      bits.lanewise(VectorOperators.LSHL, 13)
          .lanewise(VectorOperators.AND, 0x8FFF_E000)
          .reinterpretAsFloats()
          .mul(F16_REBIAS)
          .intoArray(dst, dstOff + i);
    }
    for (; i < n; i++) {
      dst[dstOff + i] = Float.float16ToFloat(src[srcOff + i]);
    }
  }
}
