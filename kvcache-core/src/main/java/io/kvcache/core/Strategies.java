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
}
