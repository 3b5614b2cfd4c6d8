package io.kvcache.model;

import java.lang.System.Logger.Level;
import java.util.Locale;

/**
 * Weight-times-activations kernels of the decoder: {@code y[t][r] = sum_c W[r][c] * x[t][c]} for a
 * range of rows, so that callers can split the rows across threads. With one token it is the
 * matrix-vector product of decode; with a chunk of tokens the blocked matrix-matrix product of
 * prefill, each decoded weight row serving every token of the chunk.
 *
 * <p>{@link #scalar()} is the definition; {@link #vector()} uses the Vector API and is held to it by
 * tests. {@link #get()} chooses once, like {@link io.kvcache.kernel.Kernels}, honouring the same
 * system property {@code kvcache.kernels}.
 */
public interface MatrixKernels {

  /** @return a short name for logs */
  String name();

  /**
   * {@code y[yOff + t*yStride + r] = sum_c W[r][c] * x[xOff + t*xStride + c]} for {@code t < n} and
   * {@code r0 <= r < r1}.
   *
   * @param w       the weight matrix
   * @param x       activations, {@code n} rows of at least {@code w.cols()} floats
   * @param xOff    offset of token 0 in {@code x}
   * @param xStride floats between tokens in {@code x}
   * @param n       tokens, {@code >= 1}
   * @param y       output
   * @param yOff    offset of token 0 in {@code y}
   * @param yStride floats between tokens in {@code y}
   * @param r0      first row
   * @param r1      one past the last row
   * @param scratch per-thread scratch, made for at least {@code w.cols()} columns
   */
  void matmul(Weight w, float[] x, int xOff, int xStride, int n, float[] y, int yOff, int yStride, int r0, int r1,
      Scratch scratch);

  /** Per-thread buffers of a kernel, so that the kernels allocate nothing per call. */
  final class Scratch {
    final int maxCols;
    final float[] rows;
    final short[] halves;
    final byte[] bytes;

    /**
     * @param maxCols the widest matrix the scratch serves, {@code >= 1}
     */
    public Scratch(int maxCols) {
      if (maxCols < 1) {
        throw new IllegalArgumentException("maxCols must be >= 1, got " + maxCols);
      }
      this.maxCols = maxCols;
      this.rows = new float[4 * maxCols];
      this.halves = new short[maxCols];
      this.bytes = new byte[(maxCols + 31) / 32 * 34];
    }

    void check(Weight w) {
      if (w.cols() > maxCols) {
        throw new IllegalArgumentException("scratch made for " + maxCols + " columns, tensor " + w.name() + " has "
            + w.cols());
      }
    }
  }

  /** @return the scalar reference kernels */
  static MatrixKernels scalar() {
    return ScalarMatrixKernels.INSTANCE;
  }

  /**
   * @return the Vector API kernels
   * @throws IllegalStateException when {@code jdk.incubator.vector} is absent
   */
  static MatrixKernels vector() {
    if (!vectorAvailable()) {
      throw new IllegalStateException("vector matrix kernels unavailable: jdk.incubator.vector not in the boot layer;"
          + " run with --add-modules jdk.incubator.vector");
    }
    return Chosen.loadVector();
  }

  /** @return whether {@link #vector()} would succeed */
  static boolean vectorAvailable() {
    return ModuleLayer.boot().findModule("jdk.incubator.vector").isPresent();
  }

  /** @return the kernels this JVM uses, chosen once */
  static MatrixKernels get() {
    return Chosen.CHOSEN;
  }

  /** Holds the one-time choice. */
  final class Chosen {
    private static final MatrixKernels CHOSEN = choose();

    private Chosen() {}

    private static MatrixKernels choose() {
      String mode = System.getProperty("kvcache.kernels", "auto").trim().toLowerCase(Locale.ROOT);
      MatrixKernels k = switch (mode) {
        case "scalar" -> scalar();
        case "vector" -> vector();
        case "auto" -> vectorAvailable() ? loadVector() : scalar();
        default -> throw new IllegalArgumentException("kvcache.kernels must be one of auto, scalar, vector; got '"
            + mode + "'");
      };
      System.getLogger("io.kvcache.model").log(Level.INFO, "kvcache matrix kernels: {0}", k.name());
      return k;
    }

    static MatrixKernels loadVector() {
      // By name, so that this interface links on a JVM without jdk.incubator.vector.
      try {
        return (MatrixKernels) Class.forName("io.kvcache.model.VectorMatrixKernels").getDeclaredConstructor()
            .newInstance();
      } catch (ReflectiveOperationException e) {
        throw new IllegalStateException("cannot load the vector matrix kernels", e);
      }
    }
  }
}
