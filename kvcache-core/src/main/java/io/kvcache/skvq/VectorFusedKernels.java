package io.kvcache.skvq;

import jdk.incubator.vector.ByteVector;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShuffle;
import jdk.incubator.vector.VectorSpecies;

/**
 * The fused kernels with the Vector API, for 8 float lanes (AVX2). Codes are dequantized in registers:
 * a bit-packed vector of codes is one broadcast word, one variable shift and one mask; a base-3 vector
 * is one 8-byte load, two multiplies, a mask and a shift (see {@link Ternary}), and base-3 values are
 * first unpacked for the whole page into small integers in a scratch array (16 codes per vector
 * operation, once for all row blocks); then one int-to-float conversion feeds the FMAs of every query
 * row (the GQA group), so each packed code is read once for the whole group. The dequantization is factored out of the inner loops:
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
  private static final VectorSpecies<Byte> B16 = ByteVector.SPECIES_128;
  private static final VectorSpecies<Short> S = ShortVector.SPECIES_256;
  private static final VectorSpecies<Short> S8 = ShortVector.SPECIES_128;
  private static final int L = 8;
  private static final int P = Layout.P;

  VectorFusedKernels() {}

  @Override
  String name() {
    return "vector-256";
  }

  @Override
  String unsupported(Layout lay) {
    if (FloatVector.SPECIES_PREFERRED.length() < L) {
      return "this machine's vectors hold " + FloatVector.SPECIES_PREFERRED.length() + " floats, the kernels " + L;
    }
    if (lay.kb == Bits.EIGHT || lay.vb == Bits.EIGHT) {
      return "8-bit codes (the vector kernels take 1 to 4 bits)";
    }
    if (lay.d % L != 0 || lay.vGroup % L != 0) {
      return "head dim " + lay.d + " or value group " + lay.vGroup + " not a multiple of " + L;
    }
    return null;
  }

  // ---- scores ------------------------------------------------------------------------------------
  // Decoding is written out in each loop, one method per code packing: as helper methods C2 declined
  // to inline them, and a vector merged from two packings lost its exact type; either way every
  // vector was boxed and the FMAs ran in Java (10x slower).

  private static final IntVector LANE = IntVector.fromArray(I, new int[] {0, 1, 2, 3, 4, 5, 6, 7}, 0);

  @Override
  void scores(Layout lay, Layout.QPage p, float[] q, float[] qSum, int rows, float[] ks, float[] kz, float[] s,
      int sOff, int sStride) {
    int r = 0;
    for (; r + 4 <= rows; r += 4) {
      if (lay.kb.ternary()) {
        scores4Ternary(lay, p, q, qSum, r, ks, kz, s, sOff + r * sStride, sStride);
      } else {
        scores4Packed(lay, p, q, qSum, r, ks, kz, s, sOff + r * sStride, sStride);
      }
    }
    for (; r < rows; r++) {
      scores1(lay, p, q, qSum, r, ks, kz, s, sOff + r * sStride);
    }
  }

  private static void scores4Packed(Layout lay, Layout.QPage p, float[] q, float[] qSum, int r, float[] ks,
      float[] kz, float[] s, int s0, int sStride) {
    int d = lay.d, G = lay.kGroups;
    int q0 = r * d, q1 = q0 + d, q2 = q1 + d, q3 = q2 + d;
    int w = lay.kb.width, mask = lay.kb.levels;
    int[] words = p.kw;
    IntVector step = LANE.mul(w);
    // At 2 and 4 bits a channel's 16 codes fill whole words (one at 2 bits, tokens 8-15 in its upper
    // half; two at 4), so the shifts are two constant vectors instead of rebuilt from the bit offset per
    // channel: the loop C2 makes of that branch is half the instructions.
    boolean whole = w == 2 || w == 4;
    int wpc = Math.max(1, w / 2);
    IntVector lo = step, hi = w == 2 ? step.add(16) : step;
    for (int g = 0; g < G; g++) {
      FloatVector a00 = FloatVector.zero(F), a01 = FloatVector.zero(F);
      FloatVector a10 = FloatVector.zero(F), a11 = FloatVector.zero(F);
      FloatVector a20 = FloatVector.zero(F), a21 = FloatVector.zero(F);
      FloatVector a30 = FloatVector.zero(F), a31 = FloatVector.zero(F);
      for (int c = g * lay.kGroup, e = Math.min(d, c + lay.kGroup); c < e; c++) {
        FloatVector k0, k1;
        if (whole) {
          k0 = (FloatVector) IntVector.broadcast(I, words[c * wpc])
              .lanewise(VectorOperators.LSHR, lo).and(mask).convertShape(VectorOperators.I2F, F, 0);
          k1 = (FloatVector) IntVector.broadcast(I, words[c * wpc + wpc - 1])
              .lanewise(VectorOperators.LSHR, hi).and(mask).convertShape(VectorOperators.I2F, F, 0);
        } else {
          int b0 = c * P * w, b1 = b0 + L * w;
          k0 = (FloatVector) IntVector.broadcast(I, words[b0 >>> 5])
              .lanewise(VectorOperators.LSHR, step.add(b0 & 31)).and(mask).convertShape(VectorOperators.I2F, F, 0);
          k1 = (FloatVector) IntVector.broadcast(I, words[b1 >>> 5])
              .lanewise(VectorOperators.LSHR, step.add(b1 & 31)).and(mask).convertShape(VectorOperators.I2F, F, 0);
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
      // s = (first group ? 0 : s) + scale * acc + zero * sum(q over the group), written out (see above)
      FloatVector sc0 = FloatVector.fromArray(F, ks, g * P), sc1 = FloatVector.fromArray(F, ks, g * P + L);
      FloatVector z0 = FloatVector.fromArray(F, kz, g * P), z1 = FloatVector.fromArray(F, kz, g * P + L);
      int r0 = s0, r1 = s0 + sStride, r2 = r1 + sStride, r3 = r2 + sStride;
      FloatVector y00 = z0.mul(qSum[r * G + g]), y01 = z1.mul(qSum[r * G + g]);
      FloatVector y10 = z0.mul(qSum[(r + 1) * G + g]), y11 = z1.mul(qSum[(r + 1) * G + g]);
      FloatVector y20 = z0.mul(qSum[(r + 2) * G + g]), y21 = z1.mul(qSum[(r + 2) * G + g]);
      FloatVector y30 = z0.mul(qSum[(r + 3) * G + g]), y31 = z1.mul(qSum[(r + 3) * G + g]);
      if (g > 0) {
        y00 = y00.add(FloatVector.fromArray(F, s, r0));
        y01 = y01.add(FloatVector.fromArray(F, s, r0 + L));
        y10 = y10.add(FloatVector.fromArray(F, s, r1));
        y11 = y11.add(FloatVector.fromArray(F, s, r1 + L));
        y20 = y20.add(FloatVector.fromArray(F, s, r2));
        y21 = y21.add(FloatVector.fromArray(F, s, r2 + L));
        y30 = y30.add(FloatVector.fromArray(F, s, r3));
        y31 = y31.add(FloatVector.fromArray(F, s, r3 + L));
      }
      a00.fma(sc0, y00).intoArray(s, r0);
      a01.fma(sc1, y01).intoArray(s, r0 + L);
      a10.fma(sc0, y10).intoArray(s, r1);
      a11.fma(sc1, y11).intoArray(s, r1 + L);
      a20.fma(sc0, y20).intoArray(s, r2);
      a21.fma(sc1, y21).intoArray(s, r2 + L);
      a30.fma(sc0, y30).intoArray(s, r3);
      a31.fma(sc1, y31).intoArray(s, r3 + L);
    }
  }

  private static void scores4Ternary(Layout lay, Layout.QPage p, float[] q, float[] qSum, int r, float[] ks,
      float[] kz, float[] s, int s0, int sStride) {
    int d = lay.d, G = lay.kGroups;
    int q0 = r * d, q1 = q0 + d, q2 = q1 + d, q3 = q2 + d;
    int nv = lay.kNv;
    byte[] trits = p.kt;
    for (int g = 0; g < G; g++) {
      FloatVector a00 = FloatVector.zero(F), a01 = FloatVector.zero(F);
      FloatVector a10 = FloatVector.zero(F), a11 = FloatVector.zero(F);
      FloatVector a20 = FloatVector.zero(F), a21 = FloatVector.zero(F);
      FloatVector a30 = FloatVector.zero(F), a31 = FloatVector.zero(F);
      int c = g * lay.kGroup, e = Math.min(d, c + lay.kGroup);
      int run = (2 * c) % nv, digit = (2 * c) / nv; // unit 2c: its run of 8 bytes and base-3 digit
      for (; c < e; c++) {
        int m0 = Ternary.POW3[digit], o0 = run * L;
        if (++run == nv) {
          run = 0;
          digit++;
        }
        int m1 = Ternary.POW3[digit], o1 = run * L;
        if (++run == nv) {
          run = 0;
          digit++;
        }
        IntVector t0 = (IntVector) ByteVector.fromArray(B, trits, o0).convertShape(VectorOperators.B2I, I, 0);
        IntVector t1 = (IntVector) ByteVector.fromArray(B, trits, o1).convertShape(VectorOperators.B2I, I, 0);
        FloatVector k0 = (FloatVector) t0.and(0xFF).mul(m0).and(0xFF).mul(3).lanewise(VectorOperators.LSHR, 8)
            .convertShape(VectorOperators.I2F, F, 0);
        FloatVector k1 = (FloatVector) t1.and(0xFF).mul(m1).and(0xFF).mul(3).lanewise(VectorOperators.LSHR, 8)
            .convertShape(VectorOperators.I2F, F, 0);
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
      // s = (first group ? 0 : s) + scale * acc + zero * sum(q over the group), written out (see above)
      FloatVector sc0 = FloatVector.fromArray(F, ks, g * P), sc1 = FloatVector.fromArray(F, ks, g * P + L);
      FloatVector z0 = FloatVector.fromArray(F, kz, g * P), z1 = FloatVector.fromArray(F, kz, g * P + L);
      int r0 = s0, r1 = s0 + sStride, r2 = r1 + sStride, r3 = r2 + sStride;
      FloatVector y00 = z0.mul(qSum[r * G + g]), y01 = z1.mul(qSum[r * G + g]);
      FloatVector y10 = z0.mul(qSum[(r + 1) * G + g]), y11 = z1.mul(qSum[(r + 1) * G + g]);
      FloatVector y20 = z0.mul(qSum[(r + 2) * G + g]), y21 = z1.mul(qSum[(r + 2) * G + g]);
      FloatVector y30 = z0.mul(qSum[(r + 3) * G + g]), y31 = z1.mul(qSum[(r + 3) * G + g]);
      if (g > 0) {
        y00 = y00.add(FloatVector.fromArray(F, s, r0));
        y01 = y01.add(FloatVector.fromArray(F, s, r0 + L));
        y10 = y10.add(FloatVector.fromArray(F, s, r1));
        y11 = y11.add(FloatVector.fromArray(F, s, r1 + L));
        y20 = y20.add(FloatVector.fromArray(F, s, r2));
        y21 = y21.add(FloatVector.fromArray(F, s, r2 + L));
        y30 = y30.add(FloatVector.fromArray(F, s, r3));
        y31 = y31.add(FloatVector.fromArray(F, s, r3 + L));
      }
      a00.fma(sc0, y00).intoArray(s, r0);
      a01.fma(sc1, y01).intoArray(s, r0 + L);
      a10.fma(sc0, y10).intoArray(s, r1);
      a11.fma(sc1, y11).intoArray(s, r1 + L);
      a20.fma(sc0, y20).intoArray(s, r2);
      a21.fma(sc1, y21).intoArray(s, r2 + L);
      a30.fma(sc0, y30).intoArray(s, r3);
      a31.fma(sc1, y31).intoArray(s, r3 + L);
    }
  }

  /** One row (the rows left over from blocks of 4): plain loops over the codes, factored dequantization. */
  private static void scores1(Layout lay, Layout.QPage p, float[] q, float[] qSum, int r, float[] ks, float[] kz,
      float[] s, int s0) {
    int d = lay.d, G = lay.kGroups;
    for (int g = 0; g < G; g++) {
      int c0 = g * lay.kGroup, e = Math.min(d, c0 + lay.kGroup);
      for (int j = 0; j < P; j++) {
        float acc = 0f;
        for (int c = c0; c < e; c++) {
          acc += q[r * d + c] * lay.kCode(p, c, j);
        }
        float base = g == 0 ? 0f : s[s0 + j];
        s[s0 + j] = base + ks[g * P + j] * acc + kz[g * P + j] * qSum[r * G + g];
      }
    }
  }

  // ---- accumulate --------------------------------------------------------------------------------
  // The inner loops run over the 16 tokens of one chunk of 8 channels with every index at unit stride in
  // the token (weights group-major in tmp, the ternary unit tables chunk-major in Layout), so that C2
  // hoists their bounds checks; with strides known only at run time it checked all seven on every token,
  // and that scalar work, not the FMAs, set the speed. No token is skipped: a zero weight adds zero.

  @Override
  void accumulate(Layout lay, Layout.QPage p, float[] w, int wOff, int wStride, int rows, float[] vs, float[] vz,
      float[] o, int oOff, float[] tmp, short[] codes) {
    int G = lay.vGroups, d = lay.d;
    // tmp[(g * rows + r) * P + j] = w_rj * scale_jg; tmp[zBase + r * G + g] = sum_j w_rj * zero_jg.
    int zBase = rows * P * G;
    if (G == 1) {
      // One group per token (group >= head dim, the default): the same in vectors, 16 weights a row.
      FloatVector s0 = FloatVector.fromArray(F, vs, 0), s1 = FloatVector.fromArray(F, vs, L);
      FloatVector z0 = FloatVector.fromArray(F, vz, 0), z1 = FloatVector.fromArray(F, vz, L);
      for (int r = 0; r < rows; r++) {
        FloatVector x0 = FloatVector.fromArray(F, w, wOff + r * wStride);
        FloatVector x1 = FloatVector.fromArray(F, w, wOff + r * wStride + L);
        x0.mul(s0).intoArray(tmp, r * P);
        x1.mul(s1).intoArray(tmp, r * P + L);
        tmp[zBase + r] = sum(x0.mul(z0).add(x1.mul(z1)));
      }
    } else {
      prepare(w, wOff, wStride, rows, vs, vz, tmp, G, zBase);
    }
    int r = 0;
    if (lay.vb.ternary() && rows >= 4) {
      unpackTernary(lay, p.vt, codes, 0);
    }
    for (; r + 4 <= rows; r += 4) {
      if (lay.vb.ternary()) {
        accumulate4Codes(lay, codes, tmp, rows, r, zBase, o, oOff + r * d);
      } else {
        accumulate4Packed(lay, p, tmp, rows, r, zBase, o, oOff + r * d);
      }
    }
    for (; r < rows; r++) {
      accumulate1(lay, p, tmp, rows, r, zBase, o, oOff + r * d);
    }
  }

  private static final VectorShuffle<Float> SWAP1 = VectorShuffle.fromOp(F, i -> i ^ 1);
  private static final VectorShuffle<Float> SWAP2 = VectorShuffle.fromOp(F, i -> i ^ 2);
  private static final VectorShuffle<Float> SWAP4 = VectorShuffle.fromOp(F, i -> i ^ 4);

  /**
   * The 8 lanes' sum in a fixed tree, as {@code io.kvcache.simd.Lanes.sum} for the preferred species:
   * {@code reduceLanes(ADD)} adds in one order compiled and in another in its Java fallback, so the
   * same decode step could round differently before and after C2 compiles this method.
   */
  private static float sum(FloatVector v) {
    v = v.add(v.rearrange(SWAP1));
    v = v.add(v.rearrange(SWAP2));
    return v.add(v.rearrange(SWAP4)).lane(0);
  }

  /** The weights times each group's scale (group-major), and each row's zero-point terms. */
  private static void prepare(float[] w, int wOff, int wStride, int rows, float[] vs, float[] vz, float[] tmp, int G,
      int zBase) {
    for (int r = 0; r < rows; r++) {
      for (int g = 0; g < G; g++) {
        float z = 0f;
        for (int j = 0; j < P; j++) {
          float wj = w[wOff + r * wStride + j];
          tmp[(g * rows + r) * P + j] = wj * vs[j * G + g];
          z += wj * vz[j * G + g];
        }
        tmp[zBase + r * G + g] = z;
      }
    }
  }

  private static void accumulate4Packed(Layout lay, Layout.QPage p, float[] tmp, int rows, int r, int zBase,
      float[] o, int o0) {
    int d = lay.d, G = lay.vGroups;
    int w = lay.vb.width, mask = lay.vb.levels, rowWords = lay.vRowWords;
    int[] words = p.vw;
    IntVector step = LANE.mul(w);
    for (int k = 0; k < lay.vChunks; k++) {
      int g = k * L / lay.vGroup;
      int w0 = (g * rows + r) * P, w1 = w0 + P, w2 = w1 + P, w3 = w2 + P;
      FloatVector a0 = FloatVector.zero(F), a1 = FloatVector.zero(F);
      FloatVector a2 = FloatVector.zero(F), a3 = FloatVector.zero(F);
      int bit = k * L * w;
      IntVector shift = step.add(bit & 31);
      int word = bit >>> 5;
      for (int j = 0; j < P; j++) {
        FloatVector v = (FloatVector) IntVector.broadcast(I, words[j * rowWords + word])
            .lanewise(VectorOperators.LSHR, shift).and(mask).convertShape(VectorOperators.I2F, F, 0);
        a0 = v.fma(FloatVector.broadcast(F, tmp[w0 + j]), a0);
        a1 = v.fma(FloatVector.broadcast(F, tmp[w1 + j]), a1);
        a2 = v.fma(FloatVector.broadcast(F, tmp[w2 + j]), a2);
        a3 = v.fma(FloatVector.broadcast(F, tmp[w3 + j]), a3);
      }
      add4(a0, a1, a2, a3, tmp, zBase, r, G, g, o, o0 + k * L, d);
    }
  }

  /**
   * Unpacks a page's base-3 value codes into {@code codes} from {@code base} on, one short per code
   * ({@link Layout#vCodeScratch} of them): 16 bytes at a time, each widened once for its five digits.
   * Done once per page for all of a tile's row blocks, it replaces a multiply-and-shift decode per row
   * block and token with one load and one conversion, and leaves registers for a 4 x 16 accumulator
   * tile ({@link #accumulateRun4x2}).
   */
  private static void unpackTernary(Layout lay, byte[] trits, short[] codes, int base) {
    int nv = lay.vNv, n = nv * Layout.UNIT;
    // Digit i of a byte q is ((q * 3^i mod 256) * 3) >> 8, so each digit follows from the one before
    // with one multiply by 3, a shift and a mask: the bytes are loaded and widened once for all five
    // digits. The five are written out (a vector carried round a loop may be boxed). Every run is
    // unpacked for every digit; the last digit's runs past the page's units are never read.
    int r = 0;
    for (; r + 2 <= nv; r += 2) {
      int at = r * Layout.UNIT;
      ShortVector t = (ShortVector) ByteVector.fromArray(B16, trits, at)
          .convertShape(VectorOperators.ZERO_EXTEND_B2S, S, 0);
      ShortVector u = t.mul((short) 3);
      u.lanewise(VectorOperators.LSHR, 8).intoArray(codes, base + at);
      u = u.and((short) 0xFF).mul((short) 3);
      u.lanewise(VectorOperators.LSHR, 8).intoArray(codes, base + n + at);
      u = u.and((short) 0xFF).mul((short) 3);
      u.lanewise(VectorOperators.LSHR, 8).intoArray(codes, base + 2 * n + at);
      u = u.and((short) 0xFF).mul((short) 3);
      u.lanewise(VectorOperators.LSHR, 8).intoArray(codes, base + 3 * n + at);
      u = u.and((short) 0xFF).mul((short) 3);
      u.lanewise(VectorOperators.LSHR, 8).intoArray(codes, base + 4 * n + at);
    }
    for (; r < nv; r++) {
      for (int i = 0; i < 5; i++) {
        for (int c = 0; c < Layout.UNIT; c++) {
          codes[base + i * n + r * Layout.UNIT + c] = (short) Ternary.digit(trits[r * Layout.UNIT + c], i);
        }
      }
    }
  }

  /**
   * A run of pages as one: each page's ternary codes unpacked one after another (page {@code i}'s token
   * {@code j} at {@code (i * 16 + j) * d}: a page's unpacking overwrites only what the page before left
   * past its own codes), each token's weight times its scale, and one 4 x 16 register tile per two
   * channel chunks over all of the run's tokens.
   */
  @Override
  boolean accumulateRun(Layout lay, Layout.QPage[] pages, int first, int n, float[] w, int wOff, int wStride,
      int rows, float[] vs, float[] vz, float[] o, int oOff, float[] tmp, short[] codes) {
    if (!lay.vb.ternary() || lay.vGroups != 1 || rows % 4 != 0 || lay.vChunks % 2 != 0) {
      return false;
    }
    int d = lay.d, tokens = n * P;
    for (int i = 0; i < n; i++) {
      unpackTernary(lay, pages[first + i].vt, codes, i * P * d);
    }
    int zBase = rows * tokens;
    for (int r = 0; r < rows; r++) {
      runWeights(w, wOff + r * wStride, vs, vz, tokens, tmp, r * tokens, zBase + r);
    }
    for (int r = 0; r < rows; r += 4) {
      for (int k = 0; k < lay.vChunks; k += 2) {
        accumulateRun4x2(codes, tmp, r * tokens, tokens, k * L, d, zBase + r, 1, o, oOff + r * d + k * L);
      }
    }
    return true;
  }

  /** One row's weights times the tokens' scales into {@code tmp[t0 + t]}, and its zero-point term. */
  private static void runWeights(float[] w, int w0, float[] vs, float[] vz, int tokens, float[] tmp, int t0, int z) {
    FloatVector acc = FloatVector.zero(F);
    for (int t = 0; t < tokens; t += L) {
      FloatVector x = FloatVector.fromArray(F, w, w0 + t);
      x.mul(FloatVector.fromArray(F, vs, t)).intoArray(tmp, t0 + t);
      acc = x.fma(FloatVector.fromArray(F, vz, t), acc);
    }
    tmp[z] = sum(acc);
  }

  /**
   * Four rows (weights {@code tmp[w0 + i * tokens + t]}, zero-point terms {@code tmp[z + i * zStride]}) by
   * two chunks of 8 channels from {@code c0} over {@code tokens} unpacked codes (a page's or a run's),
   * token {@code t} at {@code c0 + t * d}. Every accumulator adds its tokens in order.
   */
  private static void accumulateRun4x2(short[] codes, float[] tmp, int w0, int tokens, int c0, int d, int z,
      int zStride, float[] o, int oc) {
    int w1 = w0 + tokens, w2 = w1 + tokens, w3 = w2 + tokens;
    FloatVector a0 = FloatVector.zero(F), a1 = FloatVector.zero(F);
    FloatVector a2 = FloatVector.zero(F), a3 = FloatVector.zero(F);
    FloatVector b0 = FloatVector.zero(F), b1 = FloatVector.zero(F);
    FloatVector b2 = FloatVector.zero(F), b3 = FloatVector.zero(F);
    for (int t = 0, x = c0; t < tokens; t++, x += d) {
      FloatVector v = (FloatVector) ShortVector.fromArray(S8, codes, x).convertShape(VectorOperators.S2F, F, 0);
      FloatVector u = (FloatVector) ShortVector.fromArray(S8, codes, x + L).convertShape(VectorOperators.S2F, F, 0);
      FloatVector c = FloatVector.broadcast(F, tmp[w0 + t]);
      a0 = v.fma(c, a0);
      b0 = u.fma(c, b0);
      c = FloatVector.broadcast(F, tmp[w1 + t]);
      a1 = v.fma(c, a1);
      b1 = u.fma(c, b1);
      c = FloatVector.broadcast(F, tmp[w2 + t]);
      a2 = v.fma(c, a2);
      b2 = u.fma(c, b2);
      c = FloatVector.broadcast(F, tmp[w3 + t]);
      a3 = v.fma(c, a3);
      b3 = u.fma(c, b3);
    }
    add4(a0, a1, a2, a3, tmp, z, 0, zStride, 0, o, oc, d);
    add4(b0, b1, b2, b3, tmp, z, 0, zStride, 0, o, oc + L, d);
  }

  /**
   * Four rows over codes unpacked by {@link #unpackTernary}: two chunks of 8 channels of one group at a
   * time, so each token's four weights are broadcast once for 16 channels. Every accumulator adds its
   * tokens in order, as decoding each code where it is used did: the same floats.
   */
  private static void accumulate4Codes(Layout lay, short[] codes, float[] tmp, int rows, int r, int zBase, float[] o,
      int o0) {
    int d = lay.d, G = lay.vGroups;
    int k = 0;
    for (; k + 1 < lay.vChunks && (k + 1) * L / lay.vGroup == k * L / lay.vGroup; k += 2) {
      int g = k * L / lay.vGroup;
      accumulateRun4x2(codes, tmp, (g * rows + r) * P, P, k * L, d, zBase + r * G + g, G, o, o0 + k * L);
    }
    for (; k < lay.vChunks; k++) {
      int g = k * L / lay.vGroup;
      int w0 = (g * rows + r) * P, w1 = w0 + P, w2 = w1 + P, w3 = w2 + P;
      FloatVector a0 = FloatVector.zero(F), a1 = FloatVector.zero(F);
      FloatVector a2 = FloatVector.zero(F), a3 = FloatVector.zero(F);
      for (int j = 0, x = k * L; j < P; j++, x += d) {
        FloatVector v = (FloatVector) ShortVector.fromArray(S8, codes, x).convertShape(VectorOperators.S2F, F, 0);
        a0 = v.fma(FloatVector.broadcast(F, tmp[w0 + j]), a0);
        a1 = v.fma(FloatVector.broadcast(F, tmp[w1 + j]), a1);
        a2 = v.fma(FloatVector.broadcast(F, tmp[w2 + j]), a2);
        a3 = v.fma(FloatVector.broadcast(F, tmp[w3 + j]), a3);
      }
      add4(a0, a1, a2, a3, tmp, zBase, r, G, g, o, o0 + k * L, d);
    }
  }

  /** Adds four rows' accumulators and their groups' zero-point terms into the outputs. */
  private static void add4(FloatVector a0, FloatVector a1, FloatVector a2, FloatVector a3, float[] tmp, int zBase,
      int r, int G, int g, float[] o, int off, int d) {
    FloatVector.fromArray(F, o, off).add(a0).add(tmp[zBase + r * G + g]).intoArray(o, off);
    FloatVector.fromArray(F, o, off + d).add(a1).add(tmp[zBase + (r + 1) * G + g]).intoArray(o, off + d);
    FloatVector.fromArray(F, o, off + 2 * d).add(a2).add(tmp[zBase + (r + 2) * G + g]).intoArray(o, off + 2 * d);
    FloatVector.fromArray(F, o, off + 3 * d).add(a3).add(tmp[zBase + (r + 3) * G + g]).intoArray(o, off + 3 * d);
  }

  /** One row (left over from blocks of 4): plain loops over the codes, with the factored dequantization. */
  private static void accumulate1(Layout lay, Layout.QPage p, float[] tmp, int rows, int r, int zBase, float[] o,
      int o0) {
    int G = lay.vGroups;
    for (int j = 0; j < P; j++) {
      for (int c = 0; c < lay.d; c++) {
        o[o0 + c] += tmp[((c / lay.vGroup) * rows + r) * P + j] * lay.vCode(p, j, c);
      }
    }
    for (int c = 0; c < lay.d; c++) {
      o[o0 + c] += tmp[zBase + r * G + c / lay.vGroup];
    }
  }
}
