package io.kvcache.skvq;

import jdk.incubator.vector.ByteVector;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * The fused kernels with the Vector API, for 8 float lanes (AVX2). Codes are dequantized in registers:
 * a bit-packed vector of codes is one broadcast word, one variable shift and one mask; a base-3 vector
 * is one 8-byte load, two multiplies, a mask and a shift (see {@link Ternary}); then one int-to-float
 * conversion feeds the FMAs of every query row (the GQA group), so each packed code is read once for
 * the whole group. The dequantization is factored out of the inner loops:
 * {@code q . k = scale * (q . code) + zero * sum(q)} per key group, and
 * {@code sum_j w_j v_j = sum_j (w_j scale_j) code_j + sum_j w_j zero_j} per value group.
 *
 * <p>Supports key and value widths 1, 1.5, 2 and 4 bits, head dimensions that are a multiple of 8 and
 * value groups that are a multiple of 8; {@link SkvqCodec} uses the scalar kernels elsewhere.
 */
final class VectorFusedKernels extends SkvqCodec.SupportingKernels {

  private static final VectorSpecies<Float> F = FloatVector.SPECIES_256;
  private static final VectorSpecies<Integer> I = IntVector.SPECIES_256;
  private static final VectorSpecies<Byte> B = ByteVector.SPECIES_64;
  private static final int L = 8;
  private static final int P = Layout.P;

  /** SHIFTS[width][base / 8]: lane {@code i} shifts by {@code base + width * i}. */
  private static final IntVector[][] SHIFTS = new IntVector[5][4];

  static {
    for (int w : new int[] {1, 2, 4}) {
      for (int b = 0; b < 4; b++) {
        int[] s = new int[L];
        for (int i = 0; i < L; i++) {
          s[i] = (b * 8 + w * i) & 31;
        }
        SHIFTS[w][b] = IntVector.fromArray(I, s, 0);
      }
    }
  }

  VectorFusedKernels() {}

  @Override
  String name() {
    return "vector-256";
  }

  @Override
  boolean supports(Layout lay) {
    return FloatVector.SPECIES_PREFERRED.length() >= L && lay.kb != Bits.EIGHT && lay.vb != Bits.EIGHT
        && lay.d % L == 0 && lay.vGroup % L == 0;
  }

  // ---- decoding ----------------------------------------------------------------------------------

  /** Codes of key channel {@code c}, tokens {@code 8h .. 8h+7}. */
  private static FloatVector keyCodes(Layout lay, Layout.QPage p, int c, int h) {
    IntVector v;
    if (lay.kb.ternary()) {
      int u = c * 2 + h;
      v = ternary(p.kt, (u % lay.kNv) * L, Ternary.POW3[u / lay.kNv]);
    } else {
      int w = lay.kb.width;
      int bit = (c * P + h * L) * w;
      v = IntVector.broadcast(I, p.kw[bit >>> 5]).lanewise(VectorOperators.LSHR, SHIFTS[w][(bit & 31) >>> 3])
          .and(lay.kb.levels);
    }
    return (FloatVector) v.convert(VectorOperators.I2F, 0);
  }

  /** Codes of value row {@code j}, channels {@code 8k .. 8k+7}. */
  private static FloatVector valueCodes(Layout lay, Layout.QPage p, int j, int k) {
    IntVector v;
    if (lay.vb.ternary()) {
      int u = j * lay.vChunks + k;
      v = ternary(p.vt, (u % lay.vNv) * L, Ternary.POW3[u / lay.vNv]);
    } else {
      int w = lay.vb.width;
      int bit = k * L * w;
      v = IntVector.broadcast(I, p.vw[j * lay.vRowWords + (bit >>> 5)])
          .lanewise(VectorOperators.LSHR, SHIFTS[w][(bit & 31) >>> 3]).and(lay.vb.levels);
    }
    return (FloatVector) v.convert(VectorOperators.I2F, 0);
  }

  private static IntVector ternary(byte[] a, int off, int pow3) {
    IntVector q = (IntVector) ByteVector.fromArray(B, a, off).convertShape(VectorOperators.B2I, I, 0);
    return q.and(0xFF).mul(pow3).and(0xFF).mul(3).lanewise(VectorOperators.LSHR, 8);
  }

  // ---- scores ------------------------------------------------------------------------------------

  @Override
  void scores(Layout lay, Layout.QPage p, float[] q, float[] qSum, int rows, float[] ks, float[] kz, float[] s,
      int sOff, int sStride) {
    int r = 0;
    for (; r + 4 <= rows; r += 4) {
      scores4(lay, p, q, qSum, r, ks, kz, s, sOff + r * sStride, sStride);
    }
    for (; r < rows; r++) {
      scores1(lay, p, q, qSum, r, ks, kz, s, sOff + r * sStride);
    }
  }

  private static void scores4(Layout lay, Layout.QPage p, float[] q, float[] qSum, int r, float[] ks, float[] kz,
      float[] s, int s0, int sStride) {
    int d = lay.d, G = lay.kGroups;
    int q0 = r * d, q1 = q0 + d, q2 = q1 + d, q3 = q2 + d;
    for (int g = 0; g < G; g++) {
      FloatVector a00 = FloatVector.zero(F), a01 = FloatVector.zero(F);
      FloatVector a10 = FloatVector.zero(F), a11 = FloatVector.zero(F);
      FloatVector a20 = FloatVector.zero(F), a21 = FloatVector.zero(F);
      FloatVector a30 = FloatVector.zero(F), a31 = FloatVector.zero(F);
      for (int c = g * lay.kGroup, e = Math.min(d, c + lay.kGroup); c < e; c++) {
        FloatVector k0 = keyCodes(lay, p, c, 0);
        FloatVector k1 = keyCodes(lay, p, c, 1);
        FloatVector b = FloatVector.broadcast(F, q[q0 + c]);
        a00 = k0.fma(b, a00);
        a01 = k1.fma(b, a01);
        b = FloatVector.broadcast(F, q[q1 + c]);
        a10 = k0.fma(b, a10);
        a11 = k1.fma(b, a11);
        b = FloatVector.broadcast(F, q[q2 + c]);
        a20 = k0.fma(b, a20);
        a21 = k1.fma(b, a21);
        b = FloatVector.broadcast(F, q[q3 + c]);
        a30 = k0.fma(b, a30);
        a31 = k1.fma(b, a31);
      }
      FloatVector sc0 = FloatVector.fromArray(F, ks, g * P), sc1 = FloatVector.fromArray(F, ks, g * P + L);
      FloatVector z0 = FloatVector.fromArray(F, kz, g * P), z1 = FloatVector.fromArray(F, kz, g * P + L);
      boolean first = g == 0;
      finish(a00, a01, sc0, sc1, z0, z1, qSum[r * G + g], s, s0, first);
      finish(a10, a11, sc0, sc1, z0, z1, qSum[(r + 1) * G + g], s, s0 + sStride, first);
      finish(a20, a21, sc0, sc1, z0, z1, qSum[(r + 2) * G + g], s, s0 + 2 * sStride, first);
      finish(a30, a31, sc0, sc1, z0, z1, qSum[(r + 3) * G + g], s, s0 + 3 * sStride, first);
    }
  }

  private static void scores1(Layout lay, Layout.QPage p, float[] q, float[] qSum, int r, float[] ks, float[] kz,
      float[] s, int s0) {
    int d = lay.d, G = lay.kGroups;
    for (int g = 0; g < G; g++) {
      FloatVector a0 = FloatVector.zero(F), a1 = FloatVector.zero(F);
      for (int c = g * lay.kGroup, e = Math.min(d, c + lay.kGroup); c < e; c++) {
        FloatVector b = FloatVector.broadcast(F, q[r * d + c]);
        a0 = keyCodes(lay, p, c, 0).fma(b, a0);
        a1 = keyCodes(lay, p, c, 1).fma(b, a1);
      }
      finish(a0, a1, FloatVector.fromArray(F, ks, g * P), FloatVector.fromArray(F, ks, g * P + L),
          FloatVector.fromArray(F, kz, g * P), FloatVector.fromArray(F, kz, g * P + L), qSum[r * G + g], s, s0,
          g == 0);
    }
  }

  /** {@code s = (first ? 0 : s) + scale * acc + zero * qSum} for the page's two token halves. */
  private static void finish(FloatVector a0, FloatVector a1, FloatVector sc0, FloatVector sc1, FloatVector z0,
      FloatVector z1, float qs, float[] s, int off, boolean first) {
    FloatVector b = FloatVector.broadcast(F, qs);
    FloatVector r0 = z0.mul(b), r1 = z1.mul(b);
    if (!first) {
      r0 = r0.add(FloatVector.fromArray(F, s, off));
      r1 = r1.add(FloatVector.fromArray(F, s, off + L));
    }
    a0.fma(sc0, r0).intoArray(s, off);
    a1.fma(sc1, r1).intoArray(s, off + L);
  }

  // ---- accumulate --------------------------------------------------------------------------------

  @Override
  void accumulate(Layout lay, Layout.QPage p, float[] w, int wOff, int wStride, int rows, float[] vs, float[] vz,
      float[] o, int oOff, float[] tmp) {
    int G = lay.vGroups, d = lay.d;
    // tmp[(r * P + j) * G + g] = w_rj * scale_jg; tmp[zBase + r * G + g] = sum_j w_rj * zero_jg.
    int zBase = rows * P * G;
    int live = 0; // tokens with a nonzero weight in some row: a bit per token
    for (int r = 0; r < rows; r++) {
      for (int g = 0; g < G; g++) {
        tmp[zBase + r * G + g] = 0f;
      }
      for (int j = 0; j < P; j++) {
        float wj = w[wOff + r * wStride + j];
        if (wj != 0f) {
          live |= 1 << j;
        }
        for (int g = 0; g < G; g++) {
          tmp[(r * P + j) * G + g] = wj * vs[j * G + g];
          tmp[zBase + r * G + g] += wj * vz[j * G + g];
        }
      }
    }
    int r = 0;
    for (; r + 4 <= rows; r += 4) {
      accumulate4(lay, p, tmp, r, zBase, live, o, oOff + r * d);
    }
    for (; r < rows; r++) {
      accumulate1(lay, p, tmp, r, zBase, live, o, oOff + r * d);
    }
  }

  private static void accumulate4(Layout lay, Layout.QPage p, float[] tmp, int r, int zBase, int live, float[] o,
      int o0) {
    int d = lay.d, G = lay.vGroups;
    int w0 = r * P * G, w1 = w0 + P * G, w2 = w1 + P * G, w3 = w2 + P * G;
    for (int k = 0; k < lay.vChunks; k++) {
      int g = k * L / lay.vGroup;
      FloatVector a0 = FloatVector.zero(F), a1 = FloatVector.zero(F);
      FloatVector a2 = FloatVector.zero(F), a3 = FloatVector.zero(F);
      for (int j = 0; j < P; j++) {
        if ((live & (1 << j)) == 0) {
          continue;
        }
        FloatVector v = valueCodes(lay, p, j, k);
        int t = j * G + g;
        a0 = v.fma(FloatVector.broadcast(F, tmp[w0 + t]), a0);
        a1 = v.fma(FloatVector.broadcast(F, tmp[w1 + t]), a1);
        a2 = v.fma(FloatVector.broadcast(F, tmp[w2 + t]), a2);
        a3 = v.fma(FloatVector.broadcast(F, tmp[w3 + t]), a3);
      }
      int c = k * L;
      addInto(a0, tmp[zBase + r * G + g], o, o0 + c);
      addInto(a1, tmp[zBase + (r + 1) * G + g], o, o0 + d + c);
      addInto(a2, tmp[zBase + (r + 2) * G + g], o, o0 + 2 * d + c);
      addInto(a3, tmp[zBase + (r + 3) * G + g], o, o0 + 3 * d + c);
    }
  }

  private static void accumulate1(Layout lay, Layout.QPage p, float[] tmp, int r, int zBase, int live, float[] o,
      int o0) {
    int G = lay.vGroups;
    int w0 = r * P * G;
    for (int k = 0; k < lay.vChunks; k++) {
      int g = k * L / lay.vGroup;
      FloatVector a0 = FloatVector.zero(F);
      for (int j = 0; j < P; j++) {
        if ((live & (1 << j)) != 0) {
          a0 = valueCodes(lay, p, j, k).fma(FloatVector.broadcast(F, tmp[w0 + j * G + g]), a0);
        }
      }
      addInto(a0, tmp[zBase + r * G + g], o, o0 + k * L);
    }
  }

  private static void addInto(FloatVector acc, float zero, float[] o, int off) {
    FloatVector.fromArray(F, o, off).add(acc).add(zero).intoArray(o, off);
  }
}
