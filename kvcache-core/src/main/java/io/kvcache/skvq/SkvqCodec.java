package io.kvcache.skvq;

import io.kvcache.codec.HeadStore;
import io.kvcache.codec.StorageCodec;
import io.kvcache.kernel.AttentionKernels;
import io.kvcache.kernel.Kernels;

/**
 * SKVQ storage (arXiv 2405.06219): keys and values of old tokens as clipped group-wise codes of 1 to 8
 * bits (1.5 = three levels), in a channel order calibrated so that channels of similar range share a
 * group; the most recent {@code window} positions and the first {@code sinks} positions in f16. Decode
 * attention reads the codes directly (fused dequantization). Immutable and thread-safe; see
 * {@code docs/skvq.md}.
 *
 * <p>Keys and values must be finite and within +-32000 (a little inside binary16's +-65504, so that a
 * group's f16 scale and zero point stay finite); an append outside that range is refused with an
 * {@link IllegalArgumentException} naming the value, as f16 storage refuses values beyond +-65504.
 */
public final class SkvqCodec implements StorageCodec {

  private final SkvqConfig config;
  private final float[] calibKeys;
  private final float[] calibValues;
  private final int calibTokens;

  private SkvqCodec(SkvqConfig config, float[] keys, float[] values, int tokens) {
    if (config == null) {
      throw new IllegalArgumentException("config must not be null");
    }
    this.config = config;
    this.calibKeys = keys;
    this.calibValues = values;
    this.calibTokens = tokens;
  }

  /**
   * A codec that calibrates each layer and KV head on its own first prefill (the tokens held when the
   * first page leaves the window, sinks excluded).
   *
   * @param config the settings
   * @return the codec
   */
  public static SkvqCodec of(SkvqConfig config) {
    return new SkvqCodec(config, null, null, 0);
  }

  /**
   * A copy that calibrates every store on the given rows instead of its first prefill: keys and
   * values of {@code tokens} tokens, row-major {@code [token][channel]}, one head wide.
   *
   * @param keys   calibration keys, {@code tokens * headDim} floats
   * @param values calibration values, same shape
   * @param tokens calibration tokens, {@code >= 1}
   * @return the calibrated codec; stores of another head dimension reject it
   */
  public SkvqCodec withCalibration(float[] keys, float[] values, int tokens) {
    if (keys == null || values == null) {
      throw new IllegalArgumentException("keys and values must not be null, got " + (keys == null ? "null" : "an array")
          + " and " + (values == null ? "null" : "an array"));
    }
    if (tokens < 1) {
      throw new IllegalArgumentException("tokens must be >= 1, got " + tokens);
    }
    if (keys.length % tokens != 0 || keys.length != values.length) {
      throw new IllegalArgumentException("keys and values must both hold tokens * headDim floats (tokens=" + tokens
          + "), got " + keys.length + " and " + values.length);
    }
    for (int i = 0; i < keys.length; i++) {
      if (!(Math.abs(keys[i]) <= Quant.MAX_ABS) || !(Math.abs(values[i]) <= Quant.MAX_ABS)) {
        throw new IllegalArgumentException("calibration data must be finite and within +-" + Quant.MAX_ABS
            + ", got " + keys[i] + " / " + values[i] + " at index " + i);
      }
    }
    return new SkvqCodec(config, keys.clone(), values.clone(), tokens);
  }

  /** @return the settings */
  public SkvqConfig config() {
    return config;
  }

  @Override
  public String name() {
    return config.name();
  }

  @Override
  public HeadStore newStore(int headDim) {
    if (calibKeys != null && calibKeys.length != calibTokens * headDim) {
      throw new IllegalArgumentException("calibration rows are " + calibKeys.length / calibTokens
          + " channels wide, but headDim is " + headDim);
    }
    return new SkvqStore(headDim, config, calibKeys, calibValues, calibTokens);
  }

  @Override
  public String toString() {
    return name();
  }

  /**
   * The fused kernels matching the caller's attention kernels: the scalar reference with the scalar
   * kernels, the Vector API version otherwise (where it supports the layout).
   */
  static FusedKernels fused(AttentionKernels kernels, Layout lay) {
    if (kernels == Kernels.scalar()) {
      return ScalarFusedKernels.INSTANCE;
    }
    String why = VectorHolder.VECTOR == null ? "vector kernels unavailable (" + VectorHolder.failure + ")"
        : VectorHolder.VECTOR.unsupported(lay);
    if (why != null) {
      // Same results to float rounding, several times slower: say so once per reason, as the attention
      // kernels' choice is logged, rather than fall back in silence.
      if (FALLBACKS_LOGGED.add(why)) {
        System.getLogger("io.kvcache.skvq").log(System.Logger.Level.INFO,
            "kvcache SKVQ fused attention: scalar kernels: " + why);
      }
      return ScalarFusedKernels.INSTANCE;
    }
    return VectorHolder.VECTOR;
  }

  private static final java.util.Set<String> FALLBACKS_LOGGED = java.util.concurrent.ConcurrentHashMap.newKeySet();

  /** The vector kernels, loaded by name so this class links without {@code jdk.incubator.vector}. */
  static final class VectorHolder {
    /** Why {@link #VECTOR} is null, for the log line. */
    static String failure = "";
    static final SupportingKernels VECTOR = load();

    private static SupportingKernels load() {
      if (!Kernels.vectorAvailable()) {
        failure = "jdk.incubator.vector not present";
        return null;
      }
      try {
        return (SupportingKernels) Class.forName("io.kvcache.skvq.VectorFusedKernels").getDeclaredConstructor()
            .newInstance();
      } catch (ReflectiveOperationException | LinkageError e) {
        failure = e.toString();
        return null;
      }
    }
  }

  /** Fused kernels that handle only some layouts (the vector kernels: 8 float lanes, aligned groups). */
  abstract static class SupportingKernels extends FusedKernels {
    /** @return null where these kernels take the layout, else why not (for the log line) */
    abstract String unsupported(Layout lay);
  }
}
