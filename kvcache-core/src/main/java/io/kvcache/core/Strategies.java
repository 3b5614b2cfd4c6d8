package io.kvcache.core;

import io.kvcache.codec.StorageCodec;
import io.kvcache.retention.RetentionPolicy;

/**
 * The presets: the published KV-cache methods and the baselines they are compared with, each a few
 * lines of wiring over the four axes. Every strategy returned is immutable and may be shared by threads;
 * each {@link KVCacheStrategy#newCache} makes an independent cache.
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
    requireNonNull("codec", codec);
    return KVCacheStrategy.builder().name("full-" + codec.name()).codec(codec).build();
  }

  /**
   * StreamingLLM (arXiv 2309.17453) in f16: the tokens at the first {@code sinks} positions and within
   * the last {@code window} positions (by position: with gaps in the positions, fewer tokens). The paper
   * uses 4 sinks.
   *
   * @param sinks  attention-sink positions, {@code >= 0}
   * @param window recent positions, {@code >= 1}
   * @return the strategy
   */
  public static KVCacheStrategy streamingLLM(int sinks, int window) {
    return KVCacheStrategy.builder()
        .name("streamingLLM(" + sinks + "," + window + ")")
        .retention(RetentionPolicy.sinksAndWindow(sinks, window))
        .build();
  }

  /**
   * SnapKV (arXiv 2404.14469), GQA-aware, in f16: at the end of the prompt each KV head keeps the
   * {@code budget - window} tokens the observation window attends to most (max-pooled, mean over the
   * group) plus the window. The paper uses window 32 and kernel 7. Other storage: {@code
   * snapKV(...).toBuilder().codec(codec).build()}.
   *
   * @param budget tokens kept per KV head, {@code >= window}
   * @param window observation window, {@code >= 1}
   * @param pool   odd max-pooling kernel, {@code >= 1}
   * @return the strategy
   */
  public static KVCacheStrategy snapKV(int budget, int window, int pool) {
    return KVCacheStrategy.builder()
        .name("snapKV(" + budget + "," + window + "," + pool + ")")
        .retention(io.kvcache.retention.SnapKV.of(budget, window, pool))
        .build();
  }

  /**
   * H2O (arXiv 2306.14048) in f16: the {@code heavy} tokens with the most accumulated attention plus
   * the {@code recent} latest, enforced after every prompt chunk and decode step. The paper splits
   * the budget in halves.
   *
   * @param heavy  heavy hitters per KV head, {@code >= 0}
   * @param recent recent tokens per KV head, {@code >= 1}
   * @return the strategy
   */
  public static KVCacheStrategy h2o(int heavy, int recent) {
    return KVCacheStrategy.builder()
        .name("h2o(" + heavy + "," + recent + ")")
        .retention(new io.kvcache.retention.H2O(heavy, recent))
        .build();
  }

  /**
   * KVCrush (arXiv 2503.00022) over SnapKV in f16, with its defaults: a quarter of the budget outside
   * the window for representatives chosen by head-behaviour signatures, random anchor, SnapKV window
   * 32, kernel 7.
   *
   * @param budget tokens kept per KV head, {@code >= 33} with the defaults (the window and one
   *     representative must fit)
   * @return the strategy
   */
  public static KVCacheStrategy kvCrush(int budget) {
    return kvCrush(io.kvcache.kvcrush.KVCrush.builder(budget).build());
  }

  /**
   * KVCrush with any configuration, in f16.
   *
   * @param policy the configured policy, from {@link io.kvcache.kvcrush.KVCrush#builder(int)}
   * @return the strategy
   */
  public static KVCacheStrategy kvCrush(io.kvcache.kvcrush.KVCrush policy) {
    requireNonNull("policy", policy);
    return KVCacheStrategy.builder().name(policy.name()).retention(policy).build();
  }

  /**
   * RocketKV (arXiv 2502.14051) in f16 with the paper's split of the compression: for a prompt of
   * {@code T} tokens and a total compression {@code c = T / tokenBudget}, stage 1 (SnapKV++, at the
   * end of prefill) keeps {@code sqrt(T * tokenBudget)} tokens per KV head and stage 2 (the hybrid
   * sparse reader) attends to {@code tokenBudget} of them per decode step, plus the 16 most recent.
   * The estimate uses a quarter of the head dimension. Observation window 32.
   *
   * @param tokenBudget tokens attended per decode step and KV head, {@code >= 32}
   * @return the strategy
   */
  public static KVCacheStrategy rocketKV(int tokenBudget) {
    return rocketKV(tokenBudget, io.kvcache.rocketkv.SnapKVPlusPlus.forTokenBudget(tokenBudget, 32), 0.25, 16);
  }

  /**
   * RocketKV with every knob: the stage-1 policy (e.g. a fixed {@code SnapKVPlusPlus.of(budget, w)}),
   * the stage-2 token budget, the share of channels the estimate uses and the recent tokens always read.
   *
   * @param tokenBudget     tokens attended per decode step and KV head
   * @param stage1          the stage-1 retention policy
   * @param channelFraction share of the head dimension for the estimate, in (0, 1]
   * @param recentTokens    most recent positions always attended
   * @return the strategy
   */
  public static KVCacheStrategy rocketKV(int tokenBudget, RetentionPolicy stage1, double channelFraction,
      int recentTokens) {
    requireNonNull("stage1", stage1);
    return KVCacheStrategy.builder()
        .name("rocketKV(" + tokenBudget + ")")
        .retention(stage1)
        .reader(io.kvcache.rocketkv.HybridSparseReader.of(tokenBudget, channelFraction, recentTokens))
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
    requireNonNull("config", config);
    return KVCacheStrategy.builder().name(config.name()).codec(io.kvcache.skvq.SkvqCodec.of(config)).build();
  }

  /**
   * FastKV (arXiv 2502.01068) in f16 with the later paper's defaults: token-selective propagation after
   * the first half of the layers (layer 15 of Llama-3.1-8B's 32; the first half for every model the authors
   * ran) with a
   * TSP rate of 20%, observation window 8, pooling kernel 7, and every
   * layer's cache compressed to {@code kvBudget} tokens per KV head at the end of the prompt with
   * GQA-aware SnapKV scores (mean over each KV head's query heads). The schedule needs a model runner
   * that honours it (the reference decoder does).
   *
   * @param kvBudget tokens kept per KV head in every layer, {@code >= 8}
   * @return the strategy
   */
  public static KVCacheStrategy fastKV(int kvBudget) {
    return fastKV(io.kvcache.fastkv.TokenSelectivePropagation.ofRate(0.5, 0.2, 8, 7), kvBudget, 8, 7);
  }

  /**
   * FastKV with every knob: the TSP schedule (fixed length or rate) and the KV compression, which are
   * independent (the later paper decouples prefill cost from decode cost).
   *
   * @param tsp      the token-selective propagation schedule
   * @param kvBudget tokens kept per KV head in every layer, {@code >= window}
   * @param window   observation window of the KV compression
   * @param pool     odd pooling kernel of the KV compression
   * @return the strategy
   */
  public static KVCacheStrategy fastKV(io.kvcache.fastkv.TokenSelectivePropagation tsp, int kvBudget, int window,
      int pool) {
    requireNonNull("tsp", tsp);
    return KVCacheStrategy.builder()
        .name("fastKV(" + tsp.name() + "," + kvBudget + ")")
        .schedule(tsp)
        .retention(io.kvcache.retention.SnapKV.of(kvBudget, window, pool))
        .build();
  }

  /**
   * SwiftKV (arXiv 2410.03960) in f16: prompt tokens skip the layers from {@code skipFraction} of the
   * depth on (SingleInputKV), and past that point groups of {@code acrossGroup} layers share one KV
   * cache (AcrossKV). The paper's setting is {@code swiftKV(0.5, 2)}: half the prefill compute, a
   * quarter of the KV memory saved. Needs a model runner that honours the schedule.
   *
   * @param skipFraction first skipped layer as a share of depth, in (0, 1]
   * @param acrossGroup  layers per shared cache past the skip point, {@code >= 1}
   * @return the strategy
   */
  public static KVCacheStrategy swiftKV(double skipFraction, int acrossGroup) {
    io.kvcache.swiftkv.SwiftKVSchedule s = new io.kvcache.swiftkv.SwiftKVSchedule(skipFraction, acrossGroup);
    return KVCacheStrategy.builder().name(s.name()).schedule(s).build();
  }

  /**
   * SwiftKV over other storage: the schedule of {@link #swiftKV(double, int)} with every owned cache
   * stored by {@code codec}. The paper's largest KV saving combines AcrossKV with quantized storage;
   * with SKVQ's headline setting that is {@code swiftKV(0.5, 2, Strategies.skvq().codec())}.
   *
   * @param skipFraction first skipped layer as a share of depth, in (0, 1]
   * @param acrossGroup  layers per shared cache past the skip point, {@code >= 1}
   * @param codec        storage of the layers that own a cache
   * @return the strategy, named {@code swiftKV(f,k)+codec}
   */
  public static KVCacheStrategy swiftKV(double skipFraction, int acrossGroup, StorageCodec codec) {
    requireNonNull("codec", codec);
    return swiftKV(new io.kvcache.swiftkv.SwiftKVSchedule(skipFraction, acrossGroup), codec);
  }

  /**
   * SwiftKV with a given schedule (e.g. the one a SwiftKV checkpoint's config names) and storage.
   *
   * @param schedule the SingleInputKV / AcrossKV schedule
   * @param codec    storage of the layers that own a cache
   * @return the strategy, named {@code schedule+codec}
   */
  public static KVCacheStrategy swiftKV(io.kvcache.swiftkv.SwiftKVSchedule schedule, StorageCodec codec) {
    if (schedule == null || codec == null) {
      throw new IllegalArgumentException("schedule and codec must not be null, got schedule=" + schedule
          + ", codec=" + codec);
    }
    return KVCacheStrategy.builder().name(schedule.name() + "+" + codec.name()).schedule(schedule).codec(codec)
        .build();
  }

  private static void requireNonNull(String name, Object value) {
    if (value == null) {
      throw new IllegalArgumentException(name + " must not be null");
    }
  }
}
