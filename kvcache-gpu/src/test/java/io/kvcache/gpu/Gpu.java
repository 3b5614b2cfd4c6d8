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
}
