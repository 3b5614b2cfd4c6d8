package io.kvcache.core;

import io.kvcache.codec.StorageCodec;
import io.kvcache.retention.RetentionPolicy;

/**
 * The presets: the published KV-cache methods and the baselines they are compared with, each a few
 * lines of wiring over the four axes.
 */
public final class Strategies {

  private Strategies() {}

  /** @return the full cache in f16: every token, every layer, dense attention */
  public static KVCacheStrategy full() {
    return full(StorageCodec.f16());
  }

  /**
   * @param codec storage for every token
   * @return the full cache with the given storage
   */
  public static KVCacheStrategy full(StorageCodec codec) {
    return KVCacheStrategy.builder().name("full-" + codec.name()).codec(codec).build();
  }

  /**
   * StreamingLLM (arXiv 2309.17453) in f16: the first {@code sinks} tokens and the last
   * {@code window}. The paper uses 4 sinks.
   *
   * @param sinks  attention-sink tokens, {@code >= 0}
   * @param window recent tokens, {@code >= 1}
   * @return the strategy
   */
  public static KVCacheStrategy streamingLLM(int sinks, int window) {
    return KVCacheStrategy.builder()
        .name("streamingLLM(" + sinks + "," + window + ")")
        .retention(RetentionPolicy.sinksAndWindow(sinks, window))
        .build();
  }

  /**
   * SKVQ (arXiv 2405.06219) with the paper's headline setting: keys in 2 bits, values in 1.5 bits
   * (three levels), groups of 128 channels, the last 128 positions and 5 sinks in f16, clipping searched
   * and channels reordered on each layer's first prefill. Keeps every token; combine the codec
   * ({@link io.kvcache.skvq.SkvqCodec}) with a retention policy through {@link KVCacheStrategy#builder()}.
   *
   * @return the strategy
   */
  public static KVCacheStrategy skvq() {
    return skvq(io.kvcache.skvq.SkvqConfig.paperDefault());
  }

  /**
   * SKVQ with the given code widths and window, the paper's defaults otherwise.
   *
   * @param keyBits   key code width: 1, 1.5, 2, 4 or 8
   * @param valueBits value code width: 1, 1.5, 2, 4 or 8
   * @param window    full-precision recent positions, {@code >= 0}
   * @return the strategy
   */
  public static KVCacheStrategy skvq(double keyBits, double valueBits, int window) {
    io.kvcache.skvq.SkvqConfig c = io.kvcache.skvq.SkvqConfig.of(keyBits, valueBits);
    return skvq(c.withWindow(window, c.sinks()));
  }

  /**
   * SKVQ with every setting given.
   *
   * @param config the settings
   * @return the strategy, named after the settings
   */
  public static KVCacheStrategy skvq(io.kvcache.skvq.SkvqConfig config) {
    return KVCacheStrategy.builder().name(config.name()).codec(io.kvcache.skvq.SkvqCodec.of(config)).build();
  }
}
