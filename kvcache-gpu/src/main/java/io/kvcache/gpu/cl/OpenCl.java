package io.kvcache.gpu.cl;

import io.kvcache.gpu.OpenClProbe;
import java.util.List;
import java.util.Locale;
import java.util.Optional;

/**
 * Opens a {@link ClContext} on a device chosen by name, through the binding named by the system
 * property {@value #BINDING_PROPERTY} ({@code lwjgl}, the default, or {@code jocl}).
 *
 * <p>A device is chosen by a case-insensitive substring of its platform's name and of its own name
 * (never by index: the H100 machine registers PoCL and NVIDIA, in an order nobody promises). Empty
 * substrings match anything; among the matches a GPU is preferred over other device types. The
 * defaults come from {@value #PLATFORM_PROPERTY} and {@value #DEVICE_PROPERTY}.
 *
 * <p>Contexts are opened without profiling unless asked ({@link #open(String, String, String, boolean)},
 * or {@value #PROFILING_PROPERTY}{@code =true} for the other methods): on an H100 a profiling queue
 * added about 25 us of host time to a decode call's upload, two launches and read-back (67 us against
 * 42 us with blocking transfers), so only benchmarks that report device times ask for it.
 */
public final class OpenCl {

  /** System property choosing the binding: {@code lwjgl} (default) or {@code jocl}. */
  public static final String BINDING_PROPERTY = "kvcache.opencl";
  /** System property: substring of the platform name to use (default: any). */
  public static final String PLATFORM_PROPERTY = "kvcache.opencl.platform";
  /** System property: substring of the device name to use (default: any). */
  public static final String DEVICE_PROPERTY = "kvcache.opencl.device";
  /** System property: {@code true} opens contexts with a profiling queue where no argument says (default false). */
  public static final String PROFILING_PROPERTY = "kvcache.opencl.profiling";

  private static final System.Logger LOG = System.getLogger("io.kvcache.gpu");

  private OpenCl() {}

  /**
   * Opens a device through the binding chosen by {@value #BINDING_PROPERTY}, with profiling as
   * {@value #PROFILING_PROPERTY} says (default off).
   *
   * @param platform substring of the platform name, "" for any
   * @param device   substring of the device name, "" for any
   * @return a context the caller closes
   * @throws ClException when no device matches or an OpenCL call fails
   */
  public static ClContext open(String platform, String device) {
    return open(System.getProperty(BINDING_PROPERTY, "lwjgl"), platform, device);
  }

  /**
   * As {@link #open(String, String, String, boolean)}, with profiling from {@value #PROFILING_PROPERTY}.
   *
   * @param binding  "lwjgl" or "jocl"
   * @param platform substring of the platform name, "" for any
   * @param device   substring of the device name, "" for any
   * @return a context the caller closes
   * @throws IllegalArgumentException for an unknown binding
   * @throws ClException when no device matches or an OpenCL call fails
   */
  public static ClContext open(String binding, String platform, String device) {
    return open(binding, platform, device, Boolean.getBoolean(PROFILING_PROPERTY));
  }

  /**
   * @param binding   "lwjgl" or "jocl"
   * @param platform  substring of the platform name, "" for any
   * @param device    substring of the device name, "" for any
   * @param profiling whether the queue records device times ({@link ClEvent#elapsedNanos()}), at a cost
   *                  in host time per command
   * @return a context the caller closes
   * @throws IllegalArgumentException for an unknown binding
   * @throws ClException when no device matches or an OpenCL call fails
   */
  public static ClContext open(String binding, String platform, String device, boolean profiling) {
    String p = platform.toLowerCase(Locale.ROOT);
    String d = device.toLowerCase(Locale.ROOT);
    return switch (binding.toLowerCase(Locale.ROOT)) {
      case "lwjgl" -> LwjglContext.open(p, d, profiling);
      case "jocl" -> JoclContext.open(p, d, profiling);
      default -> throw new IllegalArgumentException(
          BINDING_PROPERTY + " must be \"lwjgl\" or \"jocl\", got \"" + binding + "\"");
    };
  }

  /**
   * The graceful path: probes first, and where there is no OpenCL runtime or no matching device logs
   * one line and returns empty, so that the caller runs the CPU kernels.
   *
   * @return a context on the device named by the system properties, or empty
   */
  public static Optional<ClContext> tryOpen() {
    OpenClProbe probe;
    try {
      probe = OpenClProbe.system();
    } catch (IllegalStateException e) { // an unreadable vendors directory or .icd file: no OpenCL here
      LOG.log(System.Logger.Level.INFO, "kvcache gpu: OpenCL unavailable (" + e.getMessage() + "); using the CPU kernels");
      return Optional.empty();
    }
    if (!probe.usable()) {
      LOG.log(System.Logger.Level.INFO, "kvcache gpu: " + probe.describe());
      return Optional.empty();
    }
    try {
      ClContext c = open(System.getProperty(PLATFORM_PROPERTY, ""), System.getProperty(DEVICE_PROPERTY, ""));
      LOG.log(System.Logger.Level.INFO, "kvcache gpu: " + c.binding() + " on " + c.platformName() + " / " + c.deviceName());
      return Optional.of(c);
    } catch (ClException | LinkageError e) {
      LOG.log(System.Logger.Level.INFO, "kvcache gpu: OpenCL unavailable (" + e.getMessage().lines().findFirst().orElse("")
          + "); using the CPU kernels");
      return Optional.empty();
    }
  }

  static boolean matches(String name, String wanted) {
    return name.toLowerCase(Locale.ROOT).contains(wanted);
  }

  /**
   * The message when no device matches: what was asked for and every platform and device there is.
   *
   * @param platform the platform substring asked for, lower case
   * @param device   the device substring asked for, lower case
   * @param seen     every {@code "platform" / "device"} pair found
   * @return the message
   */
  static String noMatch(String platform, String device, List<String> seen) {
    return "no OpenCL device matches platform \"" + platform + "\" and device \"" + device + "\" (substrings, any "
        + "case); there " + (seen.isEmpty() ? "is no device" : "are: " + String.join(", ", seen));
  }
}
