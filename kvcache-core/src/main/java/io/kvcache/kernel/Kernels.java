package io.kvcache.kernel;

import java.lang.System.Logger.Level;

/**
 * Chooses the {@link AttentionKernels} implementation once, on the first {@link #get()}, and logs the
 * choice in one line.
 *
 * <p>The Vector API implementation is used when the module {@code jdk.incubator.vector} is in the
 * boot layer (run with {@code --add-modules jdk.incubator.vector}) and the preferred float vector
 * holds 4 to 16 lanes. The system property {@code kvcache.kernels=scalar} forces the scalar
 * reference; {@code kvcache.kernels=vector} makes a missing Vector API an error instead of a
 * fallback.
 */
public final class Kernels {

  /** The system property that picks the implementation: {@code auto} (default), {@code scalar}, {@code vector}. */
  public static final String PROPERTY = "kvcache.kernels";

  private Kernels() {}

  /**
   * The choice, made once on first use. A bad {@value #PROPERTY} is kept as the error rather than thrown
   * from a static initialiser: that would leave this class unusable for the JVM's life ({@link #scalar()}
   * included), every later call seeing only {@code NoClassDefFoundError} without the reason.
   */
  private static final class Chosen {
    static final AttentionKernels KERNELS;
    static final RuntimeException ERROR;

    static {
      AttentionKernels k = null;
      RuntimeException error = null;
      try {
        k = choose();
      } catch (RuntimeException e) {
        error = e;
      }
      KERNELS = k;
      ERROR = error;
    }
  }

  /**
   * The kernels this JVM uses.
   *
   * @return the chosen implementation, never null
   * @throws IllegalStateException on every call when {@value #PROPERTY} holds an unknown value, or is
   *     {@code vector} where the Vector API is unavailable; the message says which
   */
  public static AttentionKernels get() {
    if (Chosen.ERROR != null) {
      throw new IllegalStateException("no attention kernels: " + Chosen.ERROR.getMessage(), Chosen.ERROR);
    }
    return Chosen.KERNELS;
  }

  /**
   * The scalar reference implementation, always available.
   *
   * @return the scalar kernels
   */
  public static AttentionKernels scalar() {
    return ScalarAttentionKernels.INSTANCE;
  }

  /**
   * The Vector API implementation, for tests and benchmarks that compare the two.
   *
   * @return the vector kernels
   * @throws IllegalStateException when {@code jdk.incubator.vector} is not available
   */
  public static AttentionKernels vector() {
    String why = vectorUnavailableReason();
    if (why != null) {
      throw new IllegalStateException("vector kernels unavailable: " + why);
    }
    return loadVector();
  }

  /**
   * Whether {@link #vector()} would succeed.
   *
   * @return true when the Vector API kernels can run here
   */
  public static boolean vectorAvailable() {
    return vectorUnavailableReason() == null;
  }

  private static AttentionKernels choose() {
    return choose(System.getProperty(PROPERTY, "auto"));
  }

  /** The choice for a value of {@value #PROPERTY}; package-private for tests. */
  static AttentionKernels choose(String property) {
    System.Logger log = System.getLogger("io.kvcache.kernel");
    String mode = property.trim().toLowerCase(java.util.Locale.ROOT);
    AttentionKernels k;
    String why;
    switch (mode) {
      case "scalar" -> {
        k = ScalarAttentionKernels.INSTANCE;
        why = "forced by -D" + PROPERTY + "=scalar";
      }
      case "vector" -> {
        k = vector();
        why = "forced by -D" + PROPERTY + "=vector";
      }
      case "auto" -> {
        String unavailable = vectorUnavailableReason();
        if (unavailable == null) {
          k = loadVector();
          why = "jdk.incubator.vector present";
        } else {
          k = ScalarAttentionKernels.INSTANCE;
          why = unavailable;
        }
      }
      default -> throw new IllegalArgumentException(
          PROPERTY + " must be one of auto, scalar, vector; got '" + mode + "'");
    }
    log.log(Level.INFO, "kvcache attention kernels: {0} ({1})", k.name(), why);
    return k;
  }

  private static String vectorUnavailableReason() {
    if (ModuleLayer.boot().findModule("jdk.incubator.vector").isEmpty()) {
      return "jdk.incubator.vector not in the boot layer; run with --add-modules jdk.incubator.vector";
    }
    int lanes = VectorLanes.lanes();
    // Each vector of a value page's channels must sit inside one AttentionKernels.VALUE_BLOCK.
    if (lanes < 4 || lanes > 16 || Integer.bitCount(lanes) != 1) {
      return "preferred float vector has " + lanes + " lanes; the vector kernels need 4, 8 or 16";
    }
    return null;
  }

  private static AttentionKernels loadVector() {
    // Loaded by name so that this class links on a JVM without jdk.incubator.vector.
    try {
      return (AttentionKernels) Class.forName("io.kvcache.kernel.VectorAttentionKernels")
          .getDeclaredConstructor().newInstance();
    } catch (ReflectiveOperationException e) {
      throw new IllegalStateException("cannot load the vector kernels", e);
    }
  }

  /** Isolates the one Vector API call made before we know the module is there. */
  private static final class VectorLanes {
    static int lanes() {
      try {
        return (int) Class.forName("io.kvcache.kernel.PreferredLanes").getDeclaredMethod("lanes").invoke(null);
      } catch (ReflectiveOperationException e) {
        return 0;
      }
    }
  }
}
