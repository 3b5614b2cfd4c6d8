package io.kvcache.gpu;

/**
 * Launch parameters of the GPU attention kernels: how the decode kernel splits a sequence and reads it,
 * and which causal prefill kernel runs. None of them changes a result beyond f32 rounding; they trade
 * speed on one device against another. The defaults are the fastest measured on an H100 (see
 * {@code docs/gpu.md}); {@link #fromSystemProperties()} lets a deployment override each one.
 *
 * @param decodeWorkGroup work-items per decode work-group, a power of two in [32, 1024]
 * @param decodeChunk     most tokens one decode work-group takes (its scores live in local memory), a
 *                        multiple of {@code decodeWorkGroup} and at most 8192; 0 for the largest multiple
 *                        up to 2048 that the device's local memory holds for the GQA group
 * @param decodeVector    halves one work-item loads at a time in decode, 4 or 8
 * @param splitsPerCu     decode work-groups per compute unit to aim for, at least 1
 * @param prefill         the causal prefill kernel
 */
public record GpuTuning(int decodeWorkGroup, int decodeChunk, int decodeVector, int splitsPerCu, Prefill prefill) {

  /** Which causal prefill kernel runs. */
  public enum Prefill {
    /** {@link #MMA} where the device supports it (NVIDIA, compute capability 8.0 or more), else {@link #SIMT}. */
    AUTO,
    /** Portable OpenCL C: f32 multiply-adds on the vector units, 32 query rows per work-group. */
    SIMT,
    /**
     * Tensor cores through inline PTX {@code mma.sync} with binary16 operands and f32 accumulation; the
     * f32 queries (scaled per row by a power of two) and probabilities are split into two binary16 parts
     * and both are multiplied, so that the result keeps f32 accuracy. Only NVIDIA devices of compute
     * capability 8.0 or more; asking for it elsewhere is an error.
     */
    MMA
  }

  /** @throws IllegalArgumentException naming the parameter, its value and the accepted range */
  public GpuTuning {
    if (decodeWorkGroup < 32 || decodeWorkGroup > 1024 || Integer.bitCount(decodeWorkGroup) != 1) {
      throw new IllegalArgumentException("decodeWorkGroup must be a power of two in [32, 1024], got " + decodeWorkGroup);
    }
    if (decodeChunk != 0 && (decodeChunk < decodeWorkGroup || decodeChunk > 8192 || decodeChunk % decodeWorkGroup != 0)) {
      throw new IllegalArgumentException("decodeChunk must be 0 (automatic) or a multiple of decodeWorkGroup="
          + decodeWorkGroup + " in [" + decodeWorkGroup + ", 8192], got " + decodeChunk);
    }
    if (decodeVector != 4 && decodeVector != 8) {
      throw new IllegalArgumentException("decodeVector must be 4 or 8, got " + decodeVector);
    }
    if (splitsPerCu < 1) {
      throw new IllegalArgumentException("splitsPerCu must be >= 1, got " + splitsPerCu);
    }
    if (prefill == null) {
      throw new IllegalArgumentException("prefill must not be null");
    }
  }

  /** @return the defaults: work-group 128, automatic chunk, vector 4, 4 splits per compute unit, prefill AUTO */
  public static GpuTuning defaults() {
    return new GpuTuning(128, 0, 4, 4, Prefill.AUTO);
  }

  /**
   * The defaults, each overridden by its system property where set: {@code kvcache.gpu.decodeWorkGroup},
   * {@code kvcache.gpu.decodeChunk}, {@code kvcache.gpu.decodeVector}, {@code kvcache.gpu.splitsPerCu},
   * {@code kvcache.gpu.prefill} ({@code auto}, {@code simt} or {@code mma}).
   *
   * @return the tuning
   * @throws IllegalArgumentException for a property that is not a number or outside its range
   */
  public static GpuTuning fromSystemProperties() {
    GpuTuning d = defaults();
    String p = System.getProperty("kvcache.gpu.prefill");
    Prefill prefill = d.prefill;
    if (p != null) {
      try {
        prefill = Prefill.valueOf(p.trim().toUpperCase(java.util.Locale.ROOT));
      } catch (IllegalArgumentException e) {
        throw new IllegalArgumentException("kvcache.gpu.prefill must be auto, simt or mma, got \"" + p + "\"");
      }
    }
    return new GpuTuning(intProperty("kvcache.gpu.decodeWorkGroup", d.decodeWorkGroup),
        intProperty("kvcache.gpu.decodeChunk", d.decodeChunk), intProperty("kvcache.gpu.decodeVector", d.decodeVector),
        intProperty("kvcache.gpu.splitsPerCu", d.splitsPerCu), prefill);
  }

  private static int intProperty(String name, int fallback) {
    String v = System.getProperty(name);
    if (v == null) {
      return fallback;
    }
    try {
      return Integer.parseInt(v.trim());
    } catch (NumberFormatException e) {
      throw new IllegalArgumentException(name + " must be an integer, got \"" + v + "\"");
    }
  }

  /**
   * @param decodeWorkGroup work-items per decode work-group
   * @param decodeChunk     most tokens per decode work-group
   * @param decodeVector    halves per load, 4 or 8
   * @return a copy with these decode parameters
   */
  public GpuTuning withDecode(int decodeWorkGroup, int decodeChunk, int decodeVector) {
    return new GpuTuning(decodeWorkGroup, decodeChunk, decodeVector, splitsPerCu, prefill);
  }

  /**
   * @param prefill the prefill kernel
   * @return a copy with it
   */
  public GpuTuning withPrefill(Prefill prefill) {
    return new GpuTuning(decodeWorkGroup, decodeChunk, decodeVector, splitsPerCu, prefill);
  }
}
