package io.kvcache.bench;

import io.kvcache.gpu.OpenClProbe;
import picocli.CommandLine.Command;

/**
 * Reports the OpenCL runtime this machine offers. The GPU kernels (prefill, dense and top-k decode
 * attention) will run from here once kvcache-gpu has them; today it tells whether they could.
 */
@Command(name = "gpu", mixinStandardHelpOptions = true,
    description = "Reports the OpenCL loader and drivers found (the GPU attention kernels are not built yet).")
final class GpuCommand implements Runnable {

  @Override
  public void run() {
    OpenClProbe probe = OpenClProbe.system();
    System.out.println(probe.describe());
    for (OpenClProbe.Driver d : probe.drivers()) {
      System.out.println("  " + d.icdFile() + " -> " + d.library());
    }
  }
}
