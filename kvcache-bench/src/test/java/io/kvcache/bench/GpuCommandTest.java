package io.kvcache.bench;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.bench.PrefillCommandTest.Result;
import io.kvcache.gpu.OpenClProbe;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The gpu command on whatever OpenCL device is here (PoCL in CI): its checks pass, its table has every
 * row, and a device name that matches nothing is one line. Without OpenCL the tests are skipped with
 * the probe's reason, except under {@code CI=true}, where .ci/run installs PoCL.
 */
class GpuCommandTest {

  @TempDir
  Path tmp;

  @BeforeAll
  static void needsOpenCl() {
    OpenClProbe probe = OpenClProbe.system();
    if (!"true".equals(System.getenv("CI"))) {
      Assumptions.assumeTrue(probe.usable(), () -> "skipped: " + probe.describe());
    }
  }

  @Test
  void checksPassAndTheTableHasEveryRow() throws IOException {
    Path csv = tmp.resolve("gpu.csv");
    Result r = PrefillCommandTest.run("gpu", "--decode", "256", "--prefill", "64", "--prefill-kernels", "simt",
        "--reps", "3", "--csv", csv.toString());
    assertEquals(0, r.exitCode(), r.err());
    assertFalse(r.out().contains("FAIL"), r.out());
    assertTrue(r.out().contains("check decode skvq") && r.out().contains("check decode dense")
        && r.out().contains("check prefill simt-f32"), r.out());
    // The SKVQ kernel is the portable one on PoCL, the tensor-core one on a recent NVIDIA card.
    String skvq = r.out().contains("decode skvq mma-f16") ? "mma-f16" : "simt-f32";
    List<String> lines = Files.readAllLines(csv);
    assertEquals("kernel,tokens,us,GB/s,TFLOP/s", lines.get(0));
    List<String> kernels = new ArrayList<>();
    for (String line : lines.subList(1, lines.size())) {
      String[] f = line.split(",");
      kernels.add(f[0] + "," + f[1]);
      double us = Double.parseDouble(f[2]);
      assertTrue(us > 0 && Double.isFinite(us), line);
    }
    assertEquals(List.of("empty launch,-", "decode dense,256", "decode top-2048,256", "decode skvq " + skvq + ",256",
        "call dense,256", "call skvq " + skvq + ",256", "prefill simt-f32,64"), kernels, String.join("\n", lines));
  }

  @Test
  void aDeviceNameThatMatchesNothingIsOneLine() {
    Result r = PrefillCommandTest.run("gpu", "--check-only", "--platform", "no-such-platform-xyz");
    assertEquals(2, r.exitCode(), r.out() + r.err());
    assertTrue(r.err().contains("no-such-platform-xyz") && r.err().strip().lines().count() == 1, r.err());
  }
}
