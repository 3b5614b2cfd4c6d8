package io.kvcache.fastkv;

import io.kvcache.schedule.PrefillSchedule;

/**
 * FastKV's token-selective propagation (arXiv 2502.01068), the prefill-schedule half of FastKV: every
 * prompt row runs the layers up to the TSP layer; there the last {@code window} prompt rows score
 * the tokens (attention summed over heads and window rows, max-pooled along positions), and only the
 * top rows — the TSP length, or a rate of the prompt, always including the window and so the last
 * prompt token — travel on through the later layers, at their original positions.
 *
 * <p>The TSP layer is given relative to depth, because the paper fixes it for one model: layer 15 of
 * Llama-3.1-8B's 32 is {@code 15 / 32}. Honoured by the reference decoder
 * ({@link io.kvcache.model.LlamaModel}); an engine without one sees a full schedule.
 */
public final class TokenSelectivePropagation implements PrefillSchedule {

  private final double layerFraction;
  private final int length;
  private final double rate;
  private final int window;
  private final int pool;

  private TokenSelectivePropagation(double layerFraction, int length, double rate, int window, int pool) {
    if (!(layerFraction >= 0 && layerFraction < 1)) {
      throw new IllegalArgumentException("layerFraction must be in [0, 1), got " + layerFraction);
    }
    if (length < 0) {
      throw new IllegalArgumentException("tspLength must be >= 1 (or 0 to use a rate), got " + length);
    }
    if (length == 0 && !(rate > 0 && rate <= 1)) {
      throw new IllegalArgumentException("tspRate must be in (0, 1], got " + rate);
    }
    if (window < 1) {
      throw new IllegalArgumentException("window must be >= 1, got " + window);
    }
    if (pool < 1 || pool % 2 == 0) {
      throw new IllegalArgumentException("pool must be an odd kernel size >= 1, got " + pool);
    }
    this.layerFraction = layerFraction;
    this.length = length;
    this.rate = rate;
    this.window = window;
    this.pool = pool;
  }

  /**
   * A fixed TSP length (FastKV v1: 2048 tokens).
   *
   * @param layerFraction the TSP layer as a share of depth, in [0, 1) (paper: 15/32)
   * @param tspLength     rows that travel past the TSP layer, {@code >= 1}
   * @param window        observation window (paper: 8)
   * @param pool          odd max-pooling kernel (paper: 7)
   * @return the schedule
   */
  public static TokenSelectivePropagation ofLength(double layerFraction, int tspLength, int window, int pool) {
    if (tspLength < 1) {
      throw new IllegalArgumentException("tspLength must be >= 1, got " + tspLength);
    }
    return new TokenSelectivePropagation(layerFraction, tspLength, 0, window, pool);
  }

  /**
   * A TSP rate of the prompt (the later FastKV: e.g. 20%).
   *
   * @param layerFraction the TSP layer as a share of depth, in [0, 1)
   * @param tspRate       share of the prompt's rows that travel on, in (0, 1]
   * @param window        observation window
   * @param pool          odd max-pooling kernel
   * @return the schedule
   */
  public static TokenSelectivePropagation ofRate(double layerFraction, double tspRate, int window, int pool) {
    return new TokenSelectivePropagation(layerFraction, 0, tspRate, window, pool);
  }

  @Override
  public String name() {
    return "tsp(" + layerFraction + "," + (length > 0 ? String.valueOf(length) : rate * 100 + "%") + ")";
  }

  @Override
  public int selectionLayer(int layers) {
    return Math.min(layers - 1, (int) Math.round(layerFraction * layers));
  }

  @Override
  public int rowsKept(int promptTokens) {
    int keep = length > 0 ? length : (int) Math.round(rate * promptTokens);
    return Math.max(Math.min(window, promptTokens), Math.min(promptTokens, keep));
  }

  @Override
  public int selectionWindow() {
    return window;
  }

  @Override
  public int selectionPool() {
    return pool;
  }

  @Override
  public String toString() {
    return name();
  }
}
