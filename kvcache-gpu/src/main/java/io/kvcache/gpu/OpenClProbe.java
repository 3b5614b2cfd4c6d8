package io.kvcache.gpu;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.Optional;
import java.util.stream.Stream;

/**
 * Finds what an OpenCL program needs before any native call is made: the ICD loader library
 * ({@code libOpenCL.so.1}) and the installable client drivers registered in the vendors directory
 * (PoCL, NVIDIA, ...). A backend asks this first, so that "no OpenCL here" becomes one clear log
 * line and the CPU kernels, rather than an {@link UnsatisfiedLinkError} deep in a binding.
 *
 * @param loader     the ICD loader library, if one was found
 * @param drivers    the registered drivers, in file-name order
 * @param vendorsDir the directory the drivers were looked for in ({@code OCL_ICD_VENDORS} or
 *                   {@link #VENDORS_DIR}), named when none is found
 */
public record OpenClProbe(Optional<Path> loader, List<Driver> drivers, Path vendorsDir) {

  /** Directories searched for the loader on Linux, in order. */
  public static final List<Path> LIBRARY_DIRS = List.of(Path.of("/usr/lib/x86_64-linux-gnu"),
      Path.of("/usr/lib/aarch64-linux-gnu"), Path.of("/usr/lib64"), Path.of("/usr/lib"), Path.of("/usr/local/lib"));

  /** Where the Khronos ICD loader looks for {@code *.icd} files. */
  public static final Path VENDORS_DIR = Path.of("/etc/OpenCL/vendors");

  /** Loader file names, most specific first. */
  private static final List<String> LOADER_NAMES = List.of("libOpenCL.so.1", "libOpenCL.so");

  /**
   * One registered OpenCL driver.
   *
   * @param icdFile the {@code .icd} file
   * @param library the driver library it names (a path or a bare soname)
   */
  public record Driver(Path icdFile, String library) {}

  /**
   * @param loader     the loader, or empty
   * @param drivers    the drivers, copied
   * @param vendorsDir the directory searched for drivers
   */
  public OpenClProbe {
    Objects.requireNonNull(loader, "loader");
    Objects.requireNonNull(vendorsDir, "vendorsDir");
    drivers = List.copyOf(drivers);
  }

  /**
   * A probe of the standard vendors directory.
   *
   * @param loader  the loader, or empty
   * @param drivers the drivers, copied
   */
  public OpenClProbe(Optional<Path> loader, List<Driver> drivers) {
    this(loader, drivers, VENDORS_DIR);
  }

  /**
   * Probes this machine's standard locations, honouring {@code OCL_ICD_VENDORS} as the loader does.
   *
   * @return what was found
   */
  public static OpenClProbe system() {
    String vendors = System.getenv("OCL_ICD_VENDORS");
    return probe(LIBRARY_DIRS, vendors != null && !vendors.isBlank() ? Path.of(vendors) : VENDORS_DIR);
  }

  /**
   * Probes the given locations.
   *
   * @param libraryDirs directories that may hold the loader
   * @param vendorsDir  directory of {@code .icd} files
   * @return what was found
   */
  public static OpenClProbe probe(List<Path> libraryDirs, Path vendorsDir) {
    Optional<Path> loader = Optional.empty();
    search:
    for (String name : LOADER_NAMES) {
      for (Path dir : libraryDirs) {
        Path candidate = dir.resolve(name);
        if (Files.isRegularFile(candidate)) { // follows symlinks: a dangling link is not a loader
          loader = Optional.of(candidate);
          break search;
        }
      }
    }
    List<Driver> drivers = new ArrayList<>();
    if (Files.isDirectory(vendorsDir)) {
      try (Stream<Path> files = Files.list(vendorsDir)) {
        for (Path icd : files.filter(p -> p.getFileName().toString().endsWith(".icd")).sorted().toList()) {
          String library = Files.readString(icd, StandardCharsets.UTF_8).strip();
          if (!library.isEmpty()) {
            drivers.add(new Driver(icd, library));
          }
        }
      } catch (IOException e) {
        throw new IllegalStateException("cannot read OpenCL vendors directory " + vendorsDir + ": " + e.getMessage(), e);
      }
    }
    return new OpenClProbe(loader, drivers, vendorsDir);
  }

  /** @return true when a loader and at least one driver are present */
  public boolean usable() {
    return loader.isPresent() && !drivers.isEmpty();
  }

  /** @return one line for the log: what was found, or what is missing and how to get it */
  public String describe() {
    if (loader.isEmpty()) {
      return "OpenCL unavailable: no ICD loader (libOpenCL.so.1) found; install ocl-icd-libopencl1 and a driver "
          + "(pocl-opencl-icd for CPUs); using the CPU kernels";
    }
    if (drivers.isEmpty()) {
      return "OpenCL unavailable: loader " + loader.get() + " found but no driver registered in " + vendorsDir
          + "; install pocl-opencl-icd or a GPU driver; using the CPU kernels";
    }
    StringBuilder sb = new StringBuilder("OpenCL loader ").append(loader.get()).append(", drivers:");
    for (Driver d : drivers) {
      sb.append(' ').append(d.library());
    }
    return sb.toString();
  }
}
