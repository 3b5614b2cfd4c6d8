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

  // ---- scores ------------------------------------------------------------------------------------
  // The decoding is written out in the loops: as helper methods C2 declined to inline them ("callee is
  // too large" at the call sites it compiled first), and every vector crossing a call was boxed (10x).

  private static final IntVector LANE = IntVector.fromArray(I, new int[] {0, 1, 2, 3, 4, 5, 6, 7}, 0);

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
    boolean ternary = lay.kb.ternary();
    int w = lay.kb.width, mask = lay.kb.levels, nv = lay.kNv;
    int[] words = p.kw;
    byte[] trits = p.kt;
    IntVector step = LANE.mul(w);
    for (int g = 0; g < G; g++) {
      FloatVector a00 = FloatVector.zero(F), a01 = FloatVector.zero(F);
      FloatVector a10 = FloatVector.zero(F), a11 = FloatVector.zero(F);
      FloatVector a20 = FloatVector.zero(F), a21 = FloatVector.zero(F);
      FloatVector a30 = FloatVector.zero(F), a31 = FloatVector.zero(F);
      int c = g * lay.kGroup, e = Math.min(d, c + lay.kGroup);
      int run = 0, digit = 0; // ternary: unit 2c in run 'run' as digit 'digit'
      if (ternary) {
        run = (2 * c) % nv;
        digit = (2 * c) / nv;
      }
      for (; c < e; c++) {
        FloatVector k0, k1;
        if (ternary) {
          int m0 = Ternary.POW3[digit];
          int o0 = run * L;
          if (++run == nv) {
            run = 0;
            digit++;
          }
          int m1 = Ternary.POW3[digit];
          int o1 = run * L;
          if (++run == nv) {
            run = 0;
            digit++;
          }
          IntVector t0 = (IntVector) ByteVector.fromArray(B, trits, o0).convertShape(VectorOperators.B2I, I, 0);
          IntVector t1 = (IntVector) ByteVector.fromArray(B, trits, o1).convertShape(VectorOperators.B2I, I, 0);
          k0 = (FloatVector) t0.and(0xFF).mul(m0).and(0xFF).mul(3).lanewise(VectorOperators.LSHR, 8)
              .convert(VectorOperators.I2F, 0);
          k1 = (FloatVector) t1.and(0xFF).mul(m1).and(0xFF).mul(3).lanewise(VectorOperators.LSHR, 8)
              .convert(VectorOperators.I2F, 0);
        } else {
          int b0 = c * P * w, b1 = b0 + L * w;
          k0 = (FloatVector) IntVector.broadcast(I, words[b0 >>> 5])
              .lanewise(VectorOperators.LSHR, step.add(b0 & 31)).and(mask).convert(VectorOperators.I2F, 0);
          k1 = (FloatVector) IntVector.broadcast(I, words[b1 >>> 5])
              .lanewise(VectorOperators.LSHR, step.add(b1 & 31)).and(mask).convert(VectorOperators.I2F, 0);
        }
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
      // s = (first group ? 0 : s) + scale * acc + zero * sum(q over the group)
      FloatVector sc0 = FloatVector.fromArray(F, ks, g * P), sc1 = FloatVector.fromArray(F, ks, g * P + L);
      FloatVector z0 = FloatVector.fromArray(F, kz, g * P), z1 = FloatVector.fromArray(F, kz, g * P + L);
      int G0 = r * G + g;
      boolean first = g == 0;
      store2(a00, a01, sc0, sc1, z0, z1, qSum[G0], s, s0, first);
      store2(a10, a11, sc0, sc1, z0, z1, qSum[G0 + G], s, s0 + sStride, first);
      store2(a20, a21, sc0, sc1, z0, z1, qSum[G0 + 2 * G], s, s0 + 2 * sStride, first);
      store2(a30, a31, sc0, sc1, z0, z1, qSum[G0 + 3 * G], s, s0 + 3 * sStride, first);
    }
  }

  /** Once per page and group, outside the hot loop: {@code s = (first ? 0 : s) + scale * acc + zero * qSum}. */
  private static void store2(FloatVector x0, FloatVector x1, FloatVector sc0, FloatVector sc1, FloatVector z0,
      FloatVector z1, float qSum, float[] s, int off, boolean first) {
    FloatVector qs = FloatVector.broadcast(F, qSum);
    FloatVector y0 = z0.mul(qs), y1 = z1.mul(qs);
    if (!first) {
      y0 = y0.add(FloatVector.fromArray(F, s, off));
      y1 = y1.add(FloatVector.fromArray(F, s, off + L));
    }
    x0.fma(sc0, y0).intoArray(s, off);
    x1.fma(sc1, y1).intoArray(s, off + L);
  }

  private static void scores1(Layout lay, Layout.QPage p, float[] q, float[] qSum, int r, float[] ks, float[] kz,
      float[] s, int s0) {
    int d = lay.d, G = lay.kGroups;
    boolean ternary = lay.kb.ternary();
    int w = lay.kb.width, mask = lay.kb.levels, nv = lay.kNv;
    IntVector step = LANE.mul(w);
    for (int g = 0; g < G; g++) {
      FloatVector a0 = FloatVector.zero(F), a1 = FloatVector.zero(F);
      for (int c = g * lay.kGroup, e = Math.min(d, c + lay.kGroup); c < e; c++) {
        FloatVector k0, k1;
        if (ternary) {
          int u0 = 2 * c, u1 = u0 + 1;
          IntVector t0 = (IntVector) ByteVector.fromArray(B, p.kt, (u0 % nv) * L).convertShape(VectorOperators.B2I, I, 0);
          IntVector t1 = (IntVector) ByteVector.fromArray(B, p.kt, (u1 % nv) * L).convertShape(VectorOperators.B2I, I, 0);
          k0 = (FloatVector) t0.and(0xFF).mul(Ternary.POW3[u0 / nv]).and(0xFF).mul(3)
              .lanewise(VectorOperators.LSHR, 8).convert(VectorOperators.I2F, 0);
          k1 = (FloatVector) t1.and(0xFF).mul(Ternary.POW3[u1 / nv]).and(0xFF).mul(3)
              .lanewise(VectorOperators.LSHR, 8).convert(VectorOperators.I2F, 0);
        } else {
          int b0 = c * P * w, b1 = b0 + L * w;
          k0 = (FloatVector) IntVector.broadcast(I, p.kw[b0 >>> 5])
              .lanewise(VectorOperators.LSHR, step.add(b0 & 31)).and(mask).convert(VectorOperators.I2F, 0);
          k1 = (FloatVector) IntVector.broadcast(I, p.kw[b1 >>> 5])
              .lanewise(VectorOperators.LSHR, step.add(b1 & 31)).and(mask).convert(VectorOperators.I2F, 0);
        }
        FloatVector b = FloatVector.broadcast(F, q[r * d + c]);
        a0 = k0.fma(b, a0);
        a1 = k1.fma(b, a1);
      }
      FloatVector qs = FloatVector.broadcast(F, qSum[r * G + g]);
      FloatVector y0 = FloatVector.fromArray(F, kz, g * P).mul(qs);
      FloatVector y1 = FloatVector.fromArray(F, kz, g * P + L).mul(qs);
      if (g > 0) {
        y0 = y0.add(FloatVector.fromArray(F, s, s0));
        y1 = y1.add(FloatVector.fromArray(F, s, s0 + L));
      }
      a0.fma(FloatVector.fromArray(F, ks, g * P), y0).intoArray(s, s0);
      a1.fma(FloatVector.fromArray(F, ks, g * P + L), y1).intoArray(s, s0 + L);
    }
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
    boolean ternary = lay.vb.ternary();
    int w = lay.vb.width, mask = lay.vb.levels, nv = lay.vNv, chunks = lay.vChunks, rowWords = lay.vRowWords;
    int[] words = p.vw;
    byte[] trits = p.vt;
    IntVector step = LANE.mul(w);
    for (int k = 0; k < chunks; k++) {
      int g = k * L / lay.vGroup;
      FloatVector a0 = FloatVector.zero(F), a1 = FloatVector.zero(F);
      FloatVector a2 = FloatVector.zero(F), a3 = FloatVector.zero(F);
      int bit = k * L * w;
      IntVector shift = step.add(bit & 31);
      int word = bit >>> 5;
      int run = k % Math.max(nv, 1), digit = k / Math.max(nv, 1); // ternary: unit j * chunks + k
      for (int j = 0; j < P; j++) {
        if ((live & (1 << j)) != 0) {
          FloatVector v;
          if (ternary) {
            IntVector t = (IntVector) ByteVector.fromArray(B, trits, run * L).convertShape(VectorOperators.B2I, I, 0);
            v = (FloatVector) t.and(0xFF).mul(Ternary.POW3[digit]).and(0xFF).mul(3)
                .lanewise(VectorOperators.LSHR, 8).convert(VectorOperators.I2F, 0);
          } else {
            v = (FloatVector) IntVector.broadcast(I, words[j * rowWords + word]).lanewise(VectorOperators.LSHR, shift)
                .and(mask).convert(VectorOperators.I2F, 0);
          }
          int t = j * G + g;
          a0 = v.fma(FloatVector.broadcast(F, tmp[w0 + t]), a0);
          a1 = v.fma(FloatVector.broadcast(F, tmp[w1 + t]), a1);
          a2 = v.fma(FloatVector.broadcast(F, tmp[w2 + t]), a2);
          a3 = v.fma(FloatVector.broadcast(F, tmp[w3 + t]), a3);
        }
        if (ternary) {
          run += chunks;
          while (run >= nv) {
            run -= nv;
            digit++;
          }
        }
      }
      int c = k * L;
      FloatVector.fromArray(F, o, o0 + c).add(a0).add(tmp[zBase + r * G + g]).intoArray(o, o0 + c);
      FloatVector.fromArray(F, o, o0 + d + c).add(a1).add(tmp[zBase + (r + 1) * G + g]).intoArray(o, o0 + d + c);
      FloatVector.fromArray(F, o, o0 + 2 * d + c).add(a2).add(tmp[zBase + (r + 2) * G + g])
          .intoArray(o, o0 + 2 * d + c);
      FloatVector.fromArray(F, o, o0 + 3 * d + c).add(a3).add(tmp[zBase + (r + 3) * G + g])
          .intoArray(o, o0 + 3 * d + c);
    }
  }

  private static void accumulate1(Layout lay, Layout.QPage p, float[] tmp, int r, int zBase, int live, float[] o,
      int o0) {
    int G = lay.vGroups;
    int w0 = r * P * G;
    boolean ternary = lay.vb.ternary();
    int w = lay.vb.width, mask = lay.vb.levels, nv = lay.vNv, chunks = lay.vChunks;
    IntVector step = LANE.mul(w);
    for (int k = 0; k < chunks; k++) {
      int g = k * L / lay.vGroup;
      FloatVector a0 = FloatVector.zero(F);
      int bit = k * L * w;
      for (int j = 0; j < P; j++) {
        if ((live & (1 << j)) == 0) {
          continue;
        }
        FloatVector v;
        if (ternary) {
          int u = j * chunks + k;
          IntVector t = (IntVector) ByteVector.fromArray(B, p.vt, (u % nv) * L).convertShape(VectorOperators.B2I, I, 0);
          v = (FloatVector) t.and(0xFF).mul(Ternary.POW3[u / nv]).and(0xFF).mul(3)
              .lanewise(VectorOperators.LSHR, 8).convert(VectorOperators.I2F, 0);
        } else {
          v = (FloatVector) IntVector.broadcast(I, p.vw[j * lay.vRowWords + (bit >>> 5)])
              .lanewise(VectorOperators.LSHR, step.add(bit & 31)).and(mask).convert(VectorOperators.I2F, 0);
        }
        a0 = v.fma(FloatVector.broadcast(F, tmp[w0 + j * G + g]), a0);
      }
      FloatVector.fromArray(F, o, o0 + k * L).add(a0).add(tmp[zBase + r * G + g]).intoArray(o, o0 + k * L);
    }
  }
}
