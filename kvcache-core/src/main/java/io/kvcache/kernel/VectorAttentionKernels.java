package io.kvcache.kernel;

import io.kvcache.simd.Lanes;
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
  private static final int L = F.length();
  /** Binary16 bit patterns, as many lanes as {@link #F}: half its bit size. */
  private static final VectorSpecies<Short> H =
      VectorSpecies.of(short.class, VectorShape.forBitSize(F.vectorBitSize() / 2));
  private static final VectorSpecies<Integer> I = VectorSpecies.of(int.class, F.vectorShape());

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
  public void scores(float[] q, int qOff, int rows, int d, float[] kT, int kOff, int pageTokens, float[] s, int sOff,
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
          scores4x2(q, q0, q1, q2, q3, d, kT, kOff + j, pageTokens, j, s, s0, sStride);
        } else {
          scores4x1(q, q0, q1, q2, q3, d, kT, kOff + j, pageTokens, j, s, s0, sStride);
        }
      }
    }
    for (; r < rows; r++) {
      int qr = qOff + r * d;
      int sr = sOff + r * sStride;
      for (int j = 0; j < pageTokens; j += L) {
        FloatVector acc = FloatVector.zero(F);
        for (int c = 0; c < d; c++) {
          acc = FloatVector.fromArray(F, kT, kOff + c * pageTokens + j).fma(FloatVector.broadcast(F, q[qr + c]), acc);
        }
        acc.intoArray(s, sr + j);
      }
    }
  }

  private static void scores4x2(float[] q, int q0, int q1, int q2, int q3, int d, float[] kT, int k0,
      int pageTokens, int j, float[] s, int s0, int sStride) {
    FloatVector a00 = FloatVector.zero(F), a01 = FloatVector.zero(F);
    FloatVector a10 = FloatVector.zero(F), a11 = FloatVector.zero(F);
    FloatVector a20 = FloatVector.zero(F), a21 = FloatVector.zero(F);
    FloatVector a30 = FloatVector.zero(F), a31 = FloatVector.zero(F);
    // Two channels per iteration: twice the independent loads in flight per loop branch, which
    // measured about 25% faster than one channel per iteration on a Zen 3 core.
    int c = 0, k = k0;
    for (; c + 1 < d; c += 2, k += 2 * pageTokens) {
      FloatVector x0 = FloatVector.fromArray(F, kT, k);
      FloatVector x1 = FloatVector.fromArray(F, kT, k + L);
      FloatVector y0 = FloatVector.fromArray(F, kT, k + pageTokens);
      FloatVector y1 = FloatVector.fromArray(F, kT, k + pageTokens + L);
      FloatVector b0 = FloatVector.broadcast(F, q[q0 + c]);
      a00 = x0.fma(b0, a00);
      a01 = x1.fma(b0, a01);
      FloatVector b1 = FloatVector.broadcast(F, q[q1 + c]);
      a10 = x0.fma(b1, a10);
      a11 = x1.fma(b1, a11);
      FloatVector b2 = FloatVector.broadcast(F, q[q2 + c]);
      a20 = x0.fma(b2, a20);
      a21 = x1.fma(b2, a21);
      FloatVector b3 = FloatVector.broadcast(F, q[q3 + c]);
      a30 = x0.fma(b3, a30);
      a31 = x1.fma(b3, a31);
      FloatVector e0 = FloatVector.broadcast(F, q[q0 + c + 1]);
      a00 = y0.fma(e0, a00);
      a01 = y1.fma(e0, a01);
      FloatVector e1 = FloatVector.broadcast(F, q[q1 + c + 1]);
      a10 = y0.fma(e1, a10);
      a11 = y1.fma(e1, a11);
      FloatVector e2 = FloatVector.broadcast(F, q[q2 + c + 1]);
      a20 = y0.fma(e2, a20);
      a21 = y1.fma(e2, a21);
      FloatVector e3 = FloatVector.broadcast(F, q[q3 + c + 1]);
      a30 = y0.fma(e3, a30);
      a31 = y1.fma(e3, a31);
    }
    if (c < d) {
      FloatVector x0 = FloatVector.fromArray(F, kT, k);
      FloatVector x1 = FloatVector.fromArray(F, kT, k + L);
      FloatVector b0 = FloatVector.broadcast(F, q[q0 + c]);
      a00 = x0.fma(b0, a00);
      a01 = x1.fma(b0, a01);
      FloatVector b1 = FloatVector.broadcast(F, q[q1 + c]);
      a10 = x0.fma(b1, a10);
      a11 = x1.fma(b1, a11);
      FloatVector b2 = FloatVector.broadcast(F, q[q2 + c]);
      a20 = x0.fma(b2, a20);
      a21 = x1.fma(b2, a21);
      FloatVector b3 = FloatVector.broadcast(F, q[q3 + c]);
      a30 = x0.fma(b3, a30);
      a31 = x1.fma(b3, a31);
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

  private static void scores4x1(float[] q, int q0, int q1, int q2, int q3, int d, float[] kT, int k0,
      int pageTokens, int j, float[] s, int s0, int sStride) {
    FloatVector a0 = FloatVector.zero(F), a1 = FloatVector.zero(F);
    FloatVector a2 = FloatVector.zero(F), a3 = FloatVector.zero(F);
    for (int c = 0, k = k0; c < d; c++, k += pageTokens) {
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
  public void accumulate(float[] p, int pOff, int pStride, int rows, float[] v, int vOff, int pageTokens, int d,
      float[] o, int oOff) {
    int full = d - d % VALUE_BLOCK;
    int r = 0;
    for (; r + 4 <= rows; r += 4) {
      int p0 = pOff + r * pStride;
      int o0 = oOff + r * d;
      int c = 0;
      for (; c + 2 * L <= full; c += 2 * L) {
        int x = vOff + AttentionKernels.valueIndex(0, c, d, pageTokens);
        int y = vOff + AttentionKernels.valueIndex(0, c + L, d, pageTokens);
        accumulate4x2(p, p0, pStride, v, x, y, pageTokens, d, o, o0 + c);
      }
      for (int rr = 0; rr < 4; rr++) {
        accumulateRest(p, p0 + rr * pStride, v, vOff, pageTokens, d, c, o, o0 + rr * d);
      }
    }
    for (; r < rows; r++) {
      accumulateRest(p, pOff + r * pStride, v, vOff, pageTokens, d, 0, o, oOff + r * d);
    }
  }

  /**
   * Four rows by {@code 2 * lanes} channels in full-width blocks, token 0 of the two halves at
   * {@code v0} and {@code v1} (the same block for 128- and 256-bit vectors, consecutive blocks for 512-bit).
   */
  private static void accumulate4x2(float[] p, int p0, int pStride, float[] v, int v0, int v1, int pageTokens, int d,
      float[] o, int oc) {
    FloatVector a00 = FloatVector.zero(F), a01 = FloatVector.zero(F);
    FloatVector a10 = FloatVector.zero(F), a11 = FloatVector.zero(F);
    FloatVector a20 = FloatVector.zero(F), a21 = FloatVector.zero(F);
    FloatVector a30 = FloatVector.zero(F), a31 = FloatVector.zero(F);
    int p1 = p0 + pStride;
    int p2 = p1 + pStride;
    int p3 = p2 + pStride;
    for (int j = 0, x = v0, y = v1; j < pageTokens; j++, x += VALUE_BLOCK, y += VALUE_BLOCK) {
      FloatVector x0 = FloatVector.fromArray(F, v, x);
      FloatVector x1 = FloatVector.fromArray(F, v, y);
      FloatVector w0 = FloatVector.broadcast(F, p[p0 + j]);
      a00 = x0.fma(w0, a00);
      a01 = x1.fma(w0, a01);
      FloatVector w1 = FloatVector.broadcast(F, p[p1 + j]);
      a10 = x0.fma(w1, a10);
      a11 = x1.fma(w1, a11);
      FloatVector w2 = FloatVector.broadcast(F, p[p2 + j]);
      a20 = x0.fma(w2, a20);
      a21 = x1.fma(w2, a21);
      FloatVector w3 = FloatVector.broadcast(F, p[p3 + j]);
      a30 = x0.fma(w3, a30);
      a31 = x1.fma(w3, a31);
    }
    addInto(a00, o, oc);
    addInto(a01, o, oc + L);
    addInto(a10, o, oc + d);
    addInto(a11, o, oc + d + L);
    addInto(a20, o, oc + 2 * d);
    addInto(a21, o, oc + 2 * d + L);
    addInto(a30, o, oc + 3 * d);
    addInto(a31, o, oc + 3 * d + L);
  }

  /**
   * One row from channel {@code c} on: the rest of the full-width blocks a vector at a time, then the
   * narrower last block (width {@code d % VALUE_BLOCK}) by vectors and scalars.
   */
  private static void accumulateRest(float[] p, int pr, float[] v, int vOff, int pageTokens, int d, int c, float[] o,
      int or) {
    int full = d - d % VALUE_BLOCK;
    for (; c + L <= d; c += L) {
      int stride = c < full ? VALUE_BLOCK : d - full;
      accumulateRow(p, pr, v, vOff + AttentionKernels.valueIndex(0, c, d, pageTokens), stride, pageTokens, o, or + c);
    }
    for (int j = 0; c < d && j < pageTokens; j++) {
      float pj = p[pr + j];
      int vj = vOff + AttentionKernels.valueIndex(j, c, d, pageTokens) - c;
      for (int cc = c; cc < d; cc++) {
        o[or + cc] += pj * v[vj + cc];
      }
    }
  }

  private static void accumulateRow(float[] p, int pr, float[] v, int x, int stride, int pageTokens, float[] o,
      int oc) {
    FloatVector acc = FloatVector.zero(F);
    for (int j = 0; j < pageTokens; j++, x += stride) {
      acc = FloatVector.fromArray(F, v, x).fma(FloatVector.broadcast(F, p[pr + j]), acc);
    }
    addInto(acc, o, oc);
  }

  private static void addInto(FloatVector acc, float[] o, int off) {
    FloatVector.fromArray(F, o, off).add(acc).intoArray(o, off);
  }

  /*
   * The half-page kernels below are scores/accumulate with each float load replaced by a load of
   * binary16 patterns widened in registers, in the same order, so they return the same floats as
   * widening the page first and running the float kernels on it, without the page's float copy (a
   * store and a reload of every element: 265 ns of the 1000-1200 a decode page takes on a Zen 3 core).
   * They copy the float kernels' blocking line for line; the Vector API has no load that is generic over
   * short[] and float[] without boxing, so the two cannot share one body.
   */

  /**
   * Finite halves from {@code a[off]} as floats times 2^-112. The lane is sign-extended, so after the
   * shift bit 31 holds the sign and bits 28-30 copies of it (cleared); bits 13-27 are exponent and
   * mantissa, which read as an f32 with a 112 smaller exponent bias: the value times 2^-112, exact for
   * normal and subnormal halves alike.
   */
  private static FloatVector half(short[] a, int off) {
    IntVector i = (IntVector) ShortVector.fromArray(H, a, off).convertShape(VectorOperators.S2I, I, 0);
    return i.lanewise(VectorOperators.LSHL, 13).and(0x8FFFE000).reinterpretAsFloats();
  }

  /**
   * Four rows (one register block) up to 256-bit vectors, none beyond. The kernels widen a page again
   * for every block of four rows, so past one block the float copy wins (AVX2, Zen 3: in place 1.07x to
   * 1.18x faster at 4 rows, even at 8, 0.84x at 64). With 512-bit vectors one {@code vcvtph2ps}
   * widens 16 halves (and the copy's burst of loads probably streams better): on an AVX-512 Xeon in place measured
   * 1.02-1.04x from L2 but 0.92x from memory at 4 rows, and 0.92x at 128K tokens through JMH.
   */
  @Override
  public int halfPageMaxRows() {
    return F.vectorBitSize() <= 256 ? 4 : 0;
  }

  @Override
  public void scoresHalf(float[] q, int qOff, int rows, int d, short[] kT, int kOff, int pageTokens, float[] s,
      int sOff, int sStride) {
    int r = 0;
    for (; r + 4 <= rows; r += 4) {
      int q0 = qOff + r * d;
      int q1 = q0 + d;
      int q2 = q1 + d;
      int q3 = q2 + d;
      int s0 = sOff + r * sStride;
      for (int j = 0; j < pageTokens; j += 2 * L) {
        if (j + 2 * L <= pageTokens) {
          scoresHalf4x2(q, q0, q1, q2, q3, d, kT, kOff + j, pageTokens, j, s, s0, sStride);
        } else {
          scoresHalf4x1(q, q0, q1, q2, q3, d, kT, kOff + j, pageTokens, j, s, s0, sStride);
        }
      }
    }
    for (; r < rows; r++) {
      int qr = qOff + r * d;
      int sr = sOff + r * sStride;
      for (int j = 0; j < pageTokens; j += L) {
        FloatVector acc = FloatVector.zero(F);
        for (int c = 0; c < d; c++) {
          acc = half(kT, kOff + c * pageTokens + j).fma(FloatVector.broadcast(F, q[qr + c]), acc);
        }
        acc.intoArray(s, sr + j);
      }
    }
  }

  private static void scoresHalf4x2(float[] q, int q0, int q1, int q2, int q3, int d, short[] kT, int k0,
      int pageTokens, int j, float[] s, int s0, int sStride) {
    FloatVector a00 = FloatVector.zero(F), a01 = FloatVector.zero(F);
    FloatVector a10 = FloatVector.zero(F), a11 = FloatVector.zero(F);
    FloatVector a20 = FloatVector.zero(F), a21 = FloatVector.zero(F);
    FloatVector a30 = FloatVector.zero(F), a31 = FloatVector.zero(F);
    int c = 0, k = k0;
    for (; c + 1 < d; c += 2, k += 2 * pageTokens) {
      FloatVector x0 = half(kT, k);
      FloatVector x1 = half(kT, k + L);
      FloatVector y0 = half(kT, k + pageTokens);
      FloatVector y1 = half(kT, k + pageTokens + L);
      FloatVector b0 = FloatVector.broadcast(F, q[q0 + c]);
      a00 = x0.fma(b0, a00);
      a01 = x1.fma(b0, a01);
      FloatVector b1 = FloatVector.broadcast(F, q[q1 + c]);
      a10 = x0.fma(b1, a10);
      a11 = x1.fma(b1, a11);
      FloatVector b2 = FloatVector.broadcast(F, q[q2 + c]);
      a20 = x0.fma(b2, a20);
      a21 = x1.fma(b2, a21);
      FloatVector b3 = FloatVector.broadcast(F, q[q3 + c]);
      a30 = x0.fma(b3, a30);
      a31 = x1.fma(b3, a31);
      FloatVector e0 = FloatVector.broadcast(F, q[q0 + c + 1]);
      a00 = y0.fma(e0, a00);
      a01 = y1.fma(e0, a01);
      FloatVector e1 = FloatVector.broadcast(F, q[q1 + c + 1]);
      a10 = y0.fma(e1, a10);
      a11 = y1.fma(e1, a11);
      FloatVector e2 = FloatVector.broadcast(F, q[q2 + c + 1]);
      a20 = y0.fma(e2, a20);
      a21 = y1.fma(e2, a21);
      FloatVector e3 = FloatVector.broadcast(F, q[q3 + c + 1]);
      a30 = y0.fma(e3, a30);
      a31 = y1.fma(e3, a31);
    }
    if (c < d) {
      FloatVector x0 = half(kT, k);
      FloatVector x1 = half(kT, k + L);
      FloatVector b0 = FloatVector.broadcast(F, q[q0 + c]);
      a00 = x0.fma(b0, a00);
      a01 = x1.fma(b0, a01);
      FloatVector b1 = FloatVector.broadcast(F, q[q1 + c]);
      a10 = x0.fma(b1, a10);
      a11 = x1.fma(b1, a11);
      FloatVector b2 = FloatVector.broadcast(F, q[q2 + c]);
      a20 = x0.fma(b2, a20);
      a21 = x1.fma(b2, a21);
      FloatVector b3 = FloatVector.broadcast(F, q[q3 + c]);
      a30 = x0.fma(b3, a30);
      a31 = x1.fma(b3, a31);
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

  private static void scoresHalf4x1(float[] q, int q0, int q1, int q2, int q3, int d, short[] kT, int k0,
      int pageTokens, int j, float[] s, int s0, int sStride) {
    FloatVector a0 = FloatVector.zero(F), a1 = FloatVector.zero(F);
    FloatVector a2 = FloatVector.zero(F), a3 = FloatVector.zero(F);
    for (int c = 0, k = k0; c < d; c++, k += pageTokens) {
      FloatVector kv = half(kT, k);
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
  public void accumulateHalf(float[] p, int pOff, int pStride, int rows, short[] v, int vOff, int first, int tokens,
      int pageTokens, int d, float[] o, int oOff) {
    int full = d - d % VALUE_BLOCK;
    int r = 0;
    for (; r + 4 <= rows; r += 4) {
      int p0 = pOff + r * pStride;
      int o0 = oOff + r * d;
      int c = 0;
      for (; c + 2 * L <= full; c += 2 * L) {
        int x = vOff + AttentionKernels.valueIndex(first, c, d, pageTokens);
        int y = vOff + AttentionKernels.valueIndex(first, c + L, d, pageTokens);
        accumulateHalf4x2(p, p0, pStride, v, x, y, tokens, d, o, o0 + c);
      }
      for (int rr = 0; rr < 4; rr++) {
        accumulateHalfRest(p, p0 + rr * pStride, v, vOff, first, tokens, pageTokens, d, c, o, o0 + rr * d);
      }
    }
    for (; r < rows; r++) {
      accumulateHalfRest(p, pOff + r * pStride, v, vOff, first, tokens, pageTokens, d, 0, o, oOff + r * d);
    }
  }

  /**
   * Four rows by {@code 2 * lanes} channels in full-width blocks over {@code tokens} tokens, the first
   * token of the two halves at {@code v0} and {@code v1} (the same block for 128- and 256-bit vectors,
   * consecutive blocks for 512-bit).
   */
  private static void accumulateHalf4x2(float[] p, int p0, int pStride, short[] v, int v0, int v1, int tokens, int d,
      float[] o, int oc) {
    FloatVector a00 = FloatVector.zero(F), a01 = FloatVector.zero(F);
    FloatVector a10 = FloatVector.zero(F), a11 = FloatVector.zero(F);
    FloatVector a20 = FloatVector.zero(F), a21 = FloatVector.zero(F);
    FloatVector a30 = FloatVector.zero(F), a31 = FloatVector.zero(F);
    int p1 = p0 + pStride;
    int p2 = p1 + pStride;
    int p3 = p2 + pStride;
    for (int j = 0, x = v0, y = v1; j < tokens; j++, x += VALUE_BLOCK, y += VALUE_BLOCK) {
      FloatVector x0 = half(v, x);
      FloatVector x1 = half(v, y);
      FloatVector w0 = FloatVector.broadcast(F, p[p0 + j]);
      a00 = x0.fma(w0, a00);
      a01 = x1.fma(w0, a01);
      FloatVector w1 = FloatVector.broadcast(F, p[p1 + j]);
      a10 = x0.fma(w1, a10);
      a11 = x1.fma(w1, a11);
      FloatVector w2 = FloatVector.broadcast(F, p[p2 + j]);
      a20 = x0.fma(w2, a20);
      a21 = x1.fma(w2, a21);
      FloatVector w3 = FloatVector.broadcast(F, p[p3 + j]);
      a30 = x0.fma(w3, a30);
      a31 = x1.fma(w3, a31);
    }
    addInto(a00, o, oc);
    addInto(a01, o, oc + L);
    addInto(a10, o, oc + d);
    addInto(a11, o, oc + d + L);
    addInto(a20, o, oc + 2 * d);
    addInto(a21, o, oc + 2 * d + L);
    addInto(a30, o, oc + 3 * d);
    addInto(a31, o, oc + 3 * d + L);
  }

  /**
   * One row from channel {@code c} on: the rest of the full-width blocks a vector at a time, then the
   * narrower last block (width {@code d % VALUE_BLOCK}) by vectors and scalars.
   */
  private static void accumulateHalfRest(float[] p, int pr, short[] v, int vOff, int first, int tokens, int pageTokens,
      int d, int c, float[] o, int or) {
    int full = d - d % VALUE_BLOCK;
    for (; c + L <= d; c += L) {
      int stride = c < full ? VALUE_BLOCK : d - full;
      accumulateHalfRow(p, pr, v, vOff + AttentionKernels.valueIndex(first, c, d, pageTokens), stride, tokens, o,
          or + c);
    }
    for (int j = 0; c < d && j < tokens; j++) {
      float pj = p[pr + j];
      int vj = vOff + AttentionKernels.valueIndex(first + j, c, d, pageTokens) - c;
      for (int cc = c; cc < d; cc++) {
        o[or + cc] += pj * ScalarAttentionKernels.halfScaled(v[vj + cc]);
      }
    }
  }

  private static void accumulateHalfRow(float[] p, int pr, short[] v, int x, int stride, int tokens, float[] o,
      int oc) {
    FloatVector acc = FloatVector.zero(F);
    for (int j = 0; j < tokens; j++, x += stride) {
      acc = half(v, x).fma(FloatVector.broadcast(F, p[pr + j]), acc);
    }
    addInto(acc, o, oc);
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
      FloatVector e = exp(FloatVector.fromArray(F, a, off + i).sub(mv));
      e.intoArray(a, off + i);
      sum = sum.add(e);
    }
    float total = Lanes.sum(sum);
    for (; i < n; i++) {
      float e = (float) Math.exp(a[off + i] - m);
      a[off + i] = e;
      total += e;
    }
    return total;
  }

  private static final float LOG2E = 1.44269504f;
  private static final float LN2_HI = 0.693359375f;
  private static final float LN2_LO = -2.12194440e-4f;
  /** 1.5 * 2^23: adding it rounds a float of magnitude below 2^22 to an integer, in its low bits. */
  private static final float ROUND = 12582912f;
  /** Below this, e^x is under the smallest normal float; such weights are taken as 0. */
  private static final float EXP_MIN = -87.33654f;

  /**
   * e^x for x <= 0 (and -infinity; {@link #expAndSum}'s contract), about 1 ulp: x = n ln 2 + r with |r| <= ln 2 / 2, e^r by a
   * degree-6 polynomial, 2^n into the exponent bits; results below the smallest normal float are 0.
   * Written out rather than {@code lanewise(EXP)}: that calls a native vector library once compiled
   * but {@code Math.exp} lane by lane before, and the two differ in the last bit, so the same
   * attention gave different floats early and late in a JVM's life (seen as rare mismatches between
   * two caches that must agree bit for bit). Adds, multiplies and FMAs round the same compiled or
   * not, so this one does not depend on the JIT (or on which vector library the platform has).
   */
  private static FloatVector exp(FloatVector x) {
    FloatVector xc = x.max(EXP_MIN);
    FloatVector shifted = xc.fma(FloatVector.broadcast(F, LOG2E), FloatVector.broadcast(F, ROUND));
    FloatVector n = shifted.sub(ROUND);
    FloatVector r = n.fma(FloatVector.broadcast(F, -LN2_HI), xc);
    r = n.fma(FloatVector.broadcast(F, -LN2_LO), r);
    FloatVector poly = r.fma(FloatVector.broadcast(F, 1.9875691500e-4f), FloatVector.broadcast(F, 1.3981999507e-3f));
    poly = poly.fma(r, FloatVector.broadcast(F, 8.3334519073e-3f));
    poly = poly.fma(r, FloatVector.broadcast(F, 4.1665795894e-2f));
    poly = poly.fma(r, FloatVector.broadcast(F, 1.6666665459e-1f));
    poly = poly.fma(r, FloatVector.broadcast(F, 5.0000001201e-1f));
    FloatVector y = poly.fma(r.mul(r), r).add(1f);
    // n is in [-126, 0]: its bits below 2^22 sit in the low bits of 'shifted'.
    IntVector bits = shifted.reinterpretAsInts().sub(Float.floatToRawIntBits(ROUND) - 127).lanewise(VectorOperators.LSHL, 23);
    FloatVector scaled = y.mul(bits.reinterpretAsFloats());
    return scaled.blend(0f, x.compare(VectorOperators.LT, EXP_MIN));
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

  @Override
  public void pageBounds(float[] qc, int group, float[] min, float[] max, int off, int n, float[] est) {
    int i = 0;
    for (; i + L <= n; i += L) {
      FloatVector lo = FloatVector.fromArray(F, min, off + i);
      FloatVector hi = FloatVector.fromArray(F, max, off + i);
      FloatVector e = FloatVector.zero(F);
      for (int g = 0; g < group; g++) {
        FloatVector qg = FloatVector.broadcast(F, qc[g]);
        e = e.add(lo.mul(qg).max(hi.mul(qg)));
      }
      FloatVector.fromArray(F, est, i).add(e).intoArray(est, i);
    }
    for (; i < n; i++) {
      float lo = min[off + i], hi = max[off + i];
      float e = 0f;
      for (int g = 0; g < group; g++) {
        e += Math.max(qc[g] * lo, qc[g] * hi);
      }
      est[i] += e;
    }
  }

  /**
   * A plain loop: C2 compiles {@link Float#float16ToFloat} in a counted loop to packed conversions
   * ({@code vcvtph2ps} on x86 with F16C). A Vector API version built from integer shifts and a
   * rebiasing multiply measured 2.4x slower here (310 ns vs 130 ns per 2048 values, one Zen 3 core),
   * because the Vector API has no lane-wise binary16 conversion to map to that instruction.
   */
  @Override
  public void f16ToF32(short[] src, int srcOff, float[] dst, int dstOff, int n) {
    for (int i = 0; i < n; i++) {
      dst[dstOff + i] = Float.float16ToFloat(src[srcOff + i]);
    }
  }
}
