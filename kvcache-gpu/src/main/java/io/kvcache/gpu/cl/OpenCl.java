package io.kvcache.gpu.cl;

import io.kvcache.gpu.OpenClProbe;
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
 */
public final class OpenCl {

  /** System property choosing the binding: {@code lwjgl} (default) or {@code jocl}. */
  public static final String BINDING_PROPERTY = "kvcache.opencl";
  /** System property: substring of the platform name to use (default: any). */
  public static final String PLATFORM_PROPERTY = "kvcache.opencl.platform";
  /** System property: substring of the device name to use (default: any). */
  public static final String DEVICE_PROPERTY = "kvcache.opencl.device";

  private static final System.Logger LOG = System.getLogger("io.kvcache.gpu");

  private OpenCl() {}

  /**
   * Opens a device through the binding chosen by {@value #BINDING_PROPERTY}.
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
   * @param binding  "lwjgl" or "jocl"
   * @param platform substring of the platform name, "" for any
   * @param device   substring of the device name, "" for any
   * @return a context the caller closes
   * @throws IllegalArgumentException for an unknown binding
   * @throws ClException when no device matches or an OpenCL call fails
   */
  public static ClContext open(String binding, String platform, String device) {
    String p = platform.toLowerCase(Locale.ROOT);
    String d = device.toLowerCase(Locale.ROOT);
    return switch (binding.toLowerCase(Locale.ROOT)) {
      case "lwjgl" -> LwjglContext.open(p, d);
      case "jocl" -> JoclContext.open(p, d);
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
    OpenClProbe probe = OpenClProbe.system();
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
}
