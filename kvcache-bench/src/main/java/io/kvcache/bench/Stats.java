package io.kvcache.bench;

import java.util.Arrays;

/** Small statistics for timings: medians, because shared machines are noisy. */
final class Stats {
  private Stats() {}

  /**
   * @param values samples, not modified
   * @return their median (mean of the middle two for an even count)
   */
  static double median(double[] values) {
    if (values.length == 0) {
      throw new IllegalArgumentException("values must not be empty");
    }
    double[] s = values.clone();
    Arrays.sort(s);
    int n = s.length;
    return n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
  }
}
