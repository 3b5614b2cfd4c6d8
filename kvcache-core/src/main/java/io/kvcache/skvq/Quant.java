package io.kvcache.skvq;

/**
 * Clipped asymmetric group quantization (SKVQ section 3.2) and the calibration that picks the channel
 * permutation and the clipping ratio.
 *
 * <p>For a group with minimum {@code m} and maximum {@code M} and clipping ratio {@code alpha}: the zero
 * point is {@code alpha * m} rounded down to f16, the scale {@code (alpha * M - zero) / levels} rounded up to
 * f16, and a value's code {@code clamp(round((x - zero) / scale), 0, levels)}, computed against the f16
 * values actually stored so that decoding ({@code zero + scale * code}) is off by at most {@code scale / 2}
 * for every value inside the clipped range.
 */
final class Quant {

  /** Largest magnitude SKVQ accepts, so that scale and zero point stay finite in f16. */
  static final float MAX_ABS = 32000f;
  /** Calibration rows used at most: ranges and errors settle long before, and it bounds the cost. */
  static final int MAX_CALIBRATION_ROWS = 256;

  private Quant() {}

  static short f16Down(float v) {
    short h = Float.floatToFloat16(v);
    return Float.float16ToFloat(h) > v ? step(h, false) : h;
  }

  static short f16Up(float v) {
    short h = Float.floatToFloat16(v);
    return Float.float16ToFloat(h) < v ? step(h, true) : h;
  }

  /** The neighbouring binary16 value towards +infinity ({@code up}) or -infinity. */
  private static short step(short h, boolean up) {
    int bits = h & 0xFFFF;
    boolean negative = (bits & 0x8000) != 0;
    int mag = bits & 0x7FFF;
    if (mag == 0) {
      return (short) (up ? 0x0001 : 0x8001);
    }
    if (up != negative) {
      mag++;
    } else {
      mag--;
    }
    return (short) ((negative ? 0x8000 : 0) | mag);
  }

  /**
   * Quantizes {@code x[off + i]} for {@code i < n}.
   *
   * @return {@code (scale16 << 16) | (zero16 & 0xFFFF)}; codes written to {@code codes[off + i]}
   */
  static int quantize(float[] x, int off, int n, int levels, float alpha, int[] codes) {
    float min = Float.POSITIVE_INFINITY, max = Float.NEGATIVE_INFINITY;
    for (int i = 0; i < n; i++) {
      min = Math.min(min, x[off + i]);
      max = Math.max(max, x[off + i]);
    }
    short z16 = f16Down(alpha * min);
    float z = Float.float16ToFloat(z16);
    short s16 = f16Up((alpha * max - z) / levels);
    float s = Float.float16ToFloat(s16);
    float inv = s > 0 ? 1f / s : 0f;
    for (int i = 0; i < n; i++) {
      int code = s > 0 ? Math.round((x[off + i] - z) * inv) : 0;
      codes[off + i] = Math.max(0, Math.min(levels, code));
    }
    return (s16 << 16) | (z16 & 0xFFFF);
  }

  static float scaleOf(int packed) {
    return Float.float16ToFloat((short) (packed >>> 16));
  }

  static float zeroOf(int packed) {
    return Float.float16ToFloat((short) packed);
  }

  /** Sum of squared reconstruction errors of {@code rows} rows (natural order) under a permutation. */
  static double error(float[] rows, int n, int d, int[] perm, int group, int levels, float alpha) {
    float[] x = new float[d];
    int[] codes = new int[d];
    double sum = 0;
    for (int r = 0; r < n; r++) {
      for (int c = 0; c < d; c++) {
        x[c] = rows[r * d + perm[c]];
      }
      for (int g0 = 0; g0 < d; g0 += group) {
        int len = Math.min(group, d - g0);
        int p = quantize(x, g0, len, levels, alpha, codes);
        float s = scaleOf(p), z = zeroOf(p);
        for (int c = g0; c < g0 + len; c++) {
          double e = x[c] - (z + s * codes[c]);
          sum += e * e;
        }
      }
    }
    return sum;
  }

  /** A permutation and clipping ratio for one of K or V. */
  record Choice(int[] perm, float alpha, double error) {}

  /**
   * Picks the permutation and clipping ratio with the least reconstruction error on the rows: the
   * candidates are the identity and, when reordering is on and there is more than one group, the
   * channels sorted by range ({@code max - min}), by centre ({@code (max + min) / 2}) and by magnitude
   * ({@code max(|min|, |max|)}), each cut into
   * consecutive groups; the ratio is the given one, or the best of {@code 1.00, 0.99, ..., 0.80}. Because
   * the identity is a candidate, reordering never increases the error on the calibration rows.
   */
  static Choice calibrate(float[] rows, int n, int d, int group, int levels, boolean reorder, double clip) {
    int[] identity = new int[d];
    for (int c = 0; c < d; c++) {
      identity[c] = c;
    }
    int[][] candidates;
    if (reorder && group < d && n > 0) {
      float[] min = new float[d], max = new float[d];
      java.util.Arrays.fill(min, Float.POSITIVE_INFINITY);
      java.util.Arrays.fill(max, Float.NEGATIVE_INFINITY);
      for (int r = 0; r < n; r++) {
        for (int c = 0; c < d; c++) {
          float v = rows[r * d + c];
          min[c] = Math.min(min[c], v);
          max[c] = Math.max(max[c], v);
        }
      }
      candidates = new int[][] {identity, sortedBy(d, c -> max[c] - min[c]), sortedBy(d, c -> max[c] + min[c]),
          sortedBy(d, c -> Math.max(Math.abs(min[c]), Math.abs(max[c])))};
    } else {
      candidates = new int[][] {identity};
    }
    Choice best = null;
    for (int[] perm : candidates) {
      if (clip != 0) {
        double e = error(rows, n, d, perm, group, levels, (float) clip);
        if (best == null || e < best.error()) {
          best = new Choice(perm, (float) clip, e);
        }
        continue;
      }
      for (int step = 0; step <= 20; step++) {
        float alpha = 1f - 0.01f * step;
        double e = error(rows, n, d, perm, group, levels, alpha);
        if (best == null || e < best.error()) {
          best = new Choice(perm, alpha, e);
        }
      }
    }
    return best;
  }

  private static int[] sortedBy(int d, java.util.function.IntToDoubleFunction key) {
    Integer[] idx = new Integer[d];
    for (int c = 0; c < d; c++) {
      idx[c] = c;
    }
    java.util.Arrays.sort(idx, java.util.Comparator.comparingDouble(key::applyAsDouble));
    int[] perm = new int[d];
    for (int c = 0; c < d; c++) {
      perm[c] = idx[c];
    }
    return perm;
  }
}
