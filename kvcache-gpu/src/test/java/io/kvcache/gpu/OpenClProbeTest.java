package io.kvcache.gpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.condition.EnabledIfEnvironmentVariable;
import org.junit.jupiter.api.io.TempDir;

/** The OpenCL probe on fake layouts, and on the CI machine, where .ci/run installs PoCL. */
class OpenClProbeTest {

  @Test
  void findsLoaderAndDriversInOrder(@TempDir Path tmp) throws IOException {
    Path lib = Files.createDirectories(tmp.resolve("lib"));
    Files.writeString(lib.resolve("libOpenCL.so.1"), "");
    Path vendors = Files.createDirectories(tmp.resolve("vendors"));
    Files.writeString(vendors.resolve("pocl.icd"), "libpocl.so.2\n");
    Files.writeString(vendors.resolve("nvidia.icd"), "libnvidia-opencl.so.1\n");
    Files.writeString(vendors.resolve("README"), "not a driver");
    Files.writeString(vendors.resolve("empty.icd"), "  \n");

    OpenClProbe p = OpenClProbe.probe(List.of(tmp.resolve("missing"), lib), vendors);

    assertEquals(lib.resolve("libOpenCL.so.1"), p.loader().orElseThrow());
    assertEquals(List.of("libnvidia-opencl.so.1", "libpocl.so.2"),
        p.drivers().stream().map(OpenClProbe.Driver::library).toList());
    assertTrue(p.usable());
    assertTrue(p.describe().contains("libpocl.so.2"), p.describe());
  }

  @Test
  void missingLoaderOrDriverIsExplainedInOneLine(@TempDir Path tmp) throws IOException {
    OpenClProbe none = OpenClProbe.probe(List.of(tmp), tmp.resolve("no-vendors"));
    assertFalse(none.usable());
    assertTrue(none.describe().contains("no ICD loader") && none.describe().contains("CPU kernels"), none.describe());

    Files.writeString(tmp.resolve("libOpenCL.so"), "");
    OpenClProbe noDriver = OpenClProbe.probe(List.of(tmp), tmp);
    assertFalse(noDriver.usable());
    assertTrue(noDriver.describe().contains("no driver") && noDriver.describe().contains("pocl-opencl-icd"),
        noDriver.describe());
    assertTrue(noDriver.describe().contains("registered in " + tmp), "names the directory searched: "
        + noDriver.describe());
  }

  @Test
  void danglingLoaderSymlinkIsNotALoader(@TempDir Path tmp) throws IOException {
    Files.createSymbolicLink(tmp.resolve("libOpenCL.so.1"), tmp.resolve("gone.so"));
    assertTrue(OpenClProbe.probe(List.of(tmp), tmp).loader().isEmpty());
  }

  /** .ci/run installs pocl-opencl-icd; this fails if that step is ever lost. */
  @Test
  @EnabledIfEnvironmentVariable(named = "CI", matches = "true")
  void ciMachineHasPoclInstalled() {
    OpenClProbe p = OpenClProbe.system();
    assertTrue(p.usable(), p.describe());
    assertTrue(p.drivers().stream().anyMatch(d -> d.library().contains("pocl")), p.describe());
  }
}
