package io.kvcache.skvq;

import io.kvcache.codec.HeadStore;

/**
 * Where the codes of one quantized page live, for one head dimension and configuration. Shared by the
 * store (which writes codes), the scalar kernel (which reads them one by one) and the vector kernel
 * (which reads them a vector at a time); the layouts exist for the vector kernel's sake:
 *
 * <ul>
 *   <li><b>Keys</b>, transposed like the float page: code {@code i = c * 16 + j} (channel {@code c} in
 *       permuted order, token {@code j}) at bits {@code [i*b, i*b+b)} of an int stream, so the 16 tokens
 *       of one channel are one word at 2 bits and one SIMD lane per token needs one shift and one
 *       mask.</li>
 *   <li><b>Values</b>, row-major: token {@code j}'s codes at bits {@code [c*b, c*b+b)} of row
 *       {@code j}, each row padded to whole 32-bit words.</li>
 *   <li><b>Ternary</b> (1.5 bits): codes in <em>units</em> of 8 (8 tokens of one key channel, or 8
 *       channels of one value row); the page's units are spread over {@code nv = ceil(units / 5)} runs
 *       of 8 bytes, unit {@code u} in run {@code u % nv} as base-3 digit {@code u / nv}, so 8 lanes
 *       decode from one 8-byte load with one multiplier.</li>
 *   <li>Scale and zero point in f16: keys {@code [group * 16 + j]}, values {@code [j * groups + group]}.</li>
 * </ul>
 */
final class Layout {

  static final int P = HeadStore.PAGE_TOKENS;
  static final int UNIT = 8;

  final int d;
  final Bits kb;
  final Bits vb;
  final int kGroup;
  final int vGroup;
  final int kGroups;
  final int vGroups;
  final int kWords;
  final int kNv;
  final int vRowWords;
  final int vWords;
  final int vChunks;
  final int vNv;
  /**
   * Ternary values: for the unit of token {@code j} and chunk {@code k} ({@code u = j * vChunks + k}),
   * at {@code [k * P + j]}, where its 8 bytes start in the page's trits ({@code (u % vNv) * UNIT}) and
   * the power of 3 that brings its digit to the top ({@code 3^(u / vNv)}), so the vector kernel's inner
   * loop (over the tokens of one chunk) reads them at unit stride instead of dividing.
   */
  final int[] vUnitByte;
  /**
   * Shorts a kernel needs to unpack a page's ternary value codes, one per code, unit {@code u}'s 8 at
   * {@code u * 8} (so token {@code j}, channel {@code c} at {@code j * d + c}); every one of the page's
   * 8-byte runs is unpacked for each of its 5 digits, so the last digit's runs may pass the page's units.
   */
  final int vCodeScratch;
  final int[] vUnitPow;

  Layout(int d, SkvqConfig cfg) {
    this.d = d;
    this.kb = Bits.of("keyBits", cfg.keyBits());
    this.vb = Bits.of("valueBits", cfg.valueBits());
    this.kGroup = Math.min(cfg.keyGroup(), d);
    this.vGroup = Math.min(cfg.valueGroup(), d);
    this.kGroups = (d + kGroup - 1) / kGroup;
    this.vGroups = (d + vGroup - 1) / vGroup;
    this.kWords = kb.ternary() ? 0 : (P * d * kb.width + 31) / 32;
    this.kNv = kb.ternary() ? (d * (P / UNIT) + 4) / 5 : 0;
    this.vRowWords = vb.ternary() ? 0 : (d * vb.width + 31) / 32;
    this.vWords = P * vRowWords;
    this.vChunks = (d + UNIT - 1) / UNIT;
    this.vNv = vb.ternary() ? (P * vChunks + 4) / 5 : 0;
    int units = vb.ternary() ? P * vChunks : 0;
    this.vUnitByte = new int[units];
    this.vCodeScratch = vb.ternary() ? 5 * vNv * UNIT : 0;
    this.vUnitPow = new int[units];
    for (int u = 0; u < units; u++) {
      int at = (u % vChunks) * P + u / vChunks;
      vUnitByte[at] = (u % vNv) * UNIT;
      vUnitPow[at] = Ternary.POW3[u / vNv];
    }
  }

  /** @return bytes of one quantized page: codes, then f16 scales and zero points of K and V */
  long pageBytes() {
    long k = kb.ternary() ? (long) kNv * UNIT : (long) kWords * Integer.BYTES;
    long v = vb.ternary() ? (long) vNv * UNIT : (long) vWords * Integer.BYTES;
    return k + v + 2L * Short.BYTES * P * (kGroups + vGroups);
  }

  QPage newPage() {
    QPage p = new QPage();
    if (kb.ternary()) {
      p.kt = new byte[kNv * UNIT];
    } else {
      p.kw = new int[kWords];
    }
    if (vb.ternary()) {
      p.vt = new byte[vNv * UNIT];
    } else {
      p.vw = new int[vWords];
    }
    p.ks = new short[kGroups * P];
    p.kz = new short[kGroups * P];
    p.vs = new short[P * vGroups];
    p.vz = new short[P * vGroups];
    return p;
  }

  /** Key code of permuted channel {@code c}, token {@code j}. */
  int kCode(QPage p, int c, int j) {
    if (kb.ternary()) {
      int u = c * (P / UNIT) + j / UNIT;
      return Ternary.digit(p.kt[(u % kNv) * UNIT + j % UNIT], u / kNv);
    }
    int i = (c * P + j) * kb.width;
    return (p.kw[i >>> 5] >>> (i & 31)) & kb.levels;
  }

  void setKCode(QPage p, int c, int j, int code) {
    if (kb.ternary()) {
      int u = c * (P / UNIT) + j / UNIT;
      int at = (u % kNv) * UNIT + j % UNIT;
      p.kt[at] = Ternary.withDigit(p.kt[at], u / kNv, code);
      return;
    }
    int i = (c * P + j) * kb.width;
    p.kw[i >>> 5] = (p.kw[i >>> 5] & ~(kb.levels << (i & 31))) | (code << (i & 31));
  }

  /** Value code of token {@code j}, permuted channel {@code c}. */
  int vCode(QPage p, int j, int c) {
    if (vb.ternary()) {
      int u = j * vChunks + c / UNIT;
      return Ternary.digit(p.vt[(u % vNv) * UNIT + c % UNIT], u / vNv);
    }
    int i = c * vb.width;
    return (p.vw[j * vRowWords + (i >>> 5)] >>> (i & 31)) & vb.levels;
  }

  void setVCode(QPage p, int j, int c, int code) {
    if (vb.ternary()) {
      int u = j * vChunks + c / UNIT;
      int at = (u % vNv) * UNIT + c % UNIT;
      p.vt[at] = Ternary.withDigit(p.vt[at], u / vNv, code);
      return;
    }
    int i = c * vb.width;
    int w = j * vRowWords + (i >>> 5);
    p.vw[w] = (p.vw[w] & ~(vb.levels << (i & 31))) | (code << (i & 31));
  }

  /** Copies token {@code fj} of {@code from} (codes, scales, zeros) to token {@code tj} of {@code to}. */
  void copyToken(QPage from, int fj, QPage to, int tj) {
    for (int c = 0; c < d; c++) {
      setKCode(to, c, tj, kCode(from, c, fj));
      setVCode(to, tj, c, vCode(from, fj, c));
    }
    for (int g = 0; g < kGroups; g++) {
      to.ks[g * P + tj] = from.ks[g * P + fj];
      to.kz[g * P + tj] = from.kz[g * P + fj];
    }
    for (int g = 0; g < vGroups; g++) {
      to.vs[tj * vGroups + g] = from.vs[fj * vGroups + g];
      to.vz[tj * vGroups + g] = from.vz[fj * vGroups + g];
    }
  }

  /** One page's codes, scales and zero points. Fields are null where the width does not use them. */
  static final class QPage {
    int[] kw;
    byte[] kt;
    int[] vw;
    byte[] vt;
    short[] ks;
    short[] kz;
    short[] vs;
    short[] vz;
  }
}
