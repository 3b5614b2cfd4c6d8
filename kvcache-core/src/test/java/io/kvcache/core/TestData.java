package io.kvcache.core;

import java.util.SplittableRandom;

/** Seeded random inputs; the seed is in every assertion message so a failure can be replayed. */
public final class TestData {
  private TestData() {}

  /**
   * A fresh seed per run, overridable with -Dkvcache.test.seed to replay a failure.
   *
   * @return a fresh seed, or the one given by -Dkvcache.test.seed
   */
  public static long seed() {
    String fixed = System.getProperty("kvcache.test.seed");
    return fixed != null ? Long.parseLong(fixed) : System.nanoTime();
  }

  /**
   * Gaussian floats.
   *
   * @param rnd    source
   * @param n      count
   * @param stddev standard deviation
   * @return the array
   */
  public static float[] gaussian(SplittableRandom rnd, int n, double stddev) {
    float[] a = new float[n];
    for (int i = 0; i < n; i++) {
      a[i] = (float) (rnd.nextGaussian() * stddev);
    }
    return a;
  }

  /**
   * Rounds every element to the nearest binary16 value, as f16 storage does.
   *
   * @param a the array
   * @return a rounded copy
   */
  public static float[] roundToF16(float[] a) {
    float[] r = new float[a.length];
    for (int i = 0; i < a.length; i++) {
      r[i] = Float.float16ToFloat(Float.floatToFloat16(a[i]));
    }
    return r;
  }
}
