package io.kvcache.skvq;

/**
 * Five base-3 digits in a byte. The digits {@code t0..t4} form {@code v = t0*81 + t1*27 + t2*9 + t3*3 + t4}
 * (0..242), stored as {@code q = ceil(v * 256 / 243)}, so that {@code q / 256} is the base-3 fraction
 * {@code 0.t0t1t2t3t4} rounded up. Digit {@code i} is then {@code ((q * 3^i) mod 256) * 3 >> 8}: two
 * multiplies, a mask and a shift, all lane-wise, which is what lets the vector kernel decode 1.5-bit
 * codes in registers. The round-up error of {@code q / 256} is below {@code 1/256}, and {@code 3^5 / 256 < 1},
 * so it never carries into a digit.
 */
final class Ternary {

  static final int[] POW3 = {1, 3, 9, 27, 81};

  private Ternary() {}

  static int digit(byte q, int i) {
    return (((q & 0xFF) * POW3[i]) & 0xFF) * 3 >>> 8;
  }

  static byte encode(int t0, int t1, int t2, int t3, int t4) {
    return fromValue(t0 * 81 + t1 * 27 + t2 * 9 + t3 * 3 + t4);
  }

  static byte withDigit(byte q, int i, int t) {
    int v = 0;
    for (int k = 0; k < 5; k++) {
      v += (k == i ? t : digit(q, k)) * POW3[4 - k];
    }
    return fromValue(v);
  }

  private static byte fromValue(int v) {
    return (byte) ((v * 256 + 242) / 243);
  }
}
