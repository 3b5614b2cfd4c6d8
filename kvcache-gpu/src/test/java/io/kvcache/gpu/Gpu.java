package io.kvcache.gpu;

import io.kvcache.gpu.cl.ClContext;
import io.kvcache.gpu.cl.ClException;
import io.kvcache.gpu.cl.OpenCl;
import org.junit.jupiter.api.Assumptions;

/**
 * Opens a test device. Without OpenCL the test is skipped with the probe's reason, except under
 * {@code CI=true}, where .ci/run installs PoCL and a missing device is a failure.
 */
final class Gpu {

  private Gpu() {}

  static final boolean CI = "true".equals(System.getenv("CI"));

  /** A fresh random seed, or {@code -Dkvcache.test.seed} to replay a failure (as kvcache-core's tests). */
  static long seed() {
    String fixed = System.getProperty("kvcache.test.seed");
    return fixed != null ? Long.parseLong(fixed) : System.nanoTime();
  }

  static ClContext open(String binding) {
    OpenClProbe probe = OpenClProbe.system();
    if (!CI) {
      Assumptions.assumeTrue(probe.usable(), () -> "skipped: " + probe.describe());
    }
    // PoCL in CI and here; on a GPU machine the tests run on whatever -Dkvcache.opencl.platform names.
    try {
      // Profiling on: tests read kernel times; ClContextTest covers a context without it.
      return OpenCl.open(binding, System.getProperty(OpenCl.PLATFORM_PROPERTY, ""),
          System.getProperty(OpenCl.DEVICE_PROPERTY, ""), true);
    } catch (ClException e) {
      // JOCL needs the unversioned libOpenCL.so, which CI installs (ocl-icd-opencl-dev); elsewhere skip.
      if (!CI && e.getMessage().startsWith("JOCL cannot load")) {
        Assumptions.abort("skipped: " + e.getMessage());
      }
      throw e;
    }
  }

  /**
   * Decode attention in float64 over what the stores hold (their keys and values as read back: f16
   * values, or SKVQ's dequantized codes), every query head against its KV head's tokens at positions up
   * to {@code qpos}, scaled by 1 / sqrt(head dim); zeros for an empty store.
   */
  static float[] float64Decode(io.kvcache.codec.HeadStore[] stores, io.kvcache.core.AttentionShape s, float[] q,
      int qpos) {
    int d = s.headDim(), g = s.groupSize();
    float[] out = new float[s.queryHeads() * d];
    float[] key = new float[d], val = new float[d];
    for (int hq = 0; hq < s.queryHeads(); hq++) {
      io.kvcache.codec.HeadStore st = stores[hq / g];
      int n = st.size();
      double[] score = new double[n];
      double max = Double.NEGATIVE_INFINITY;
      for (int t = 0; t < n; t++) {
        st.readKey(t, key, 0);
        double dot = 0;
        for (int c = 0; c < d; c++) {
          dot += (double) q[hq * d + c] * key[c];
        }
        score[t] = st.position(t) <= qpos ? dot / Math.sqrt(d) : Double.NEGATIVE_INFINITY;
        max = Math.max(max, score[t]);
      }
      double sum = 0;
      double[] acc = new double[d];
      for (int t = 0; t < n && max > Double.NEGATIVE_INFINITY; t++) {
        double p = Math.exp(score[t] - max);
        sum += p;
        st.readValue(t, val, 0);
        for (int c = 0; c < d; c++) {
          acc[c] += p * val[c];
        }
      }
      for (int c = 0; c < d; c++) {
        out[hq * d + c] = sum > 0 ? (float) (acc[c] / sum) : 0f;
      }
    }
    return out;
  }
}
