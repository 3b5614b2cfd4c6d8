package io.kvcache.fastkv;

import io.kvcache.schedule.PrefillSchedule;

/**
 * FastKV's token-selective propagation (arXiv 2502.01068), the prefill-schedule half of FastKV: every
 * prompt row runs the layers up to the TSP layer; there the last {@code window} prompt rows score
 * the tokens (attention summed over heads and window rows, max-pooled along positions), and only the
 * top rows — the TSP length, or a rate of the prompt, always including the window and so the last
 * prompt token — travel on through the later layers, at their original positions.
 *
 * <p>The TSP layer is given relative to depth, as the share of the layers that run every prompt row
 * (the TSP layer is the last of them), because the paper fixes it per model: the authors' scripts
 * select at layer 15 of Llama-3.1-8B's 32, 17 of Ministral-8B's 36 and 19 of Mistral-Nemo's 40 —
 * each time exactly the first half of the layers, {@code fullShare = 0.5}. Honoured by the reference
 * decoder ({@link io.kvcache.model.LlamaModel}); an engine without one sees a full schedule.
 */
public final class TokenSelectivePropagation implements PrefillSchedule {

  private final double fullShare;
  private final int length;
  private final double rate;
  private final int window;
  private final int pool;

  private TokenSelectivePropagation(double fullShare, int length, double rate, int window, int pool) {
    if (!(fullShare > 0 && fullShare <= 1)) {
      throw new IllegalArgumentException("fullShare (share of layers that run every prompt row) must be in (0, 1], got "
          + fullShare);
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
    this.fullShare = fullShare;
    this.length = length;
    this.rate = rate;
    this.window = window;
    this.pool = pool;
  }

  /**
   * A fixed TSP length (FastKV v1: 2048 tokens).
   *
   * @param fullShare share of the layers that run every prompt row, the TSP layer the last of them, in
   *                  (0, 1] (paper: 0.5, layers 0-15 of 32)
   * @param tspLength rows that travel past the TSP layer, {@code >= 1}
   * @param window    observation window (paper: 8)
   * @param pool      odd max-pooling kernel (paper: 7)
   * @return the schedule
   */
  public static TokenSelectivePropagation ofLength(double fullShare, int tspLength, int window, int pool) {
    if (tspLength < 1) {
      throw new IllegalArgumentException("tspLength must be >= 1, got " + tspLength);
    }
    return new TokenSelectivePropagation(fullShare, tspLength, 0, window, pool);
  }

  /**
   * A TSP rate of the prompt (the later FastKV: e.g. 20%).
   *
   * @param fullShare share of the layers that run every prompt row, in (0, 1] (paper: 0.5)
   * @param tspRate   share of the prompt's rows that travel on, in (0, 1]
   * @param window    observation window
   * @param pool      odd max-pooling kernel
   * @return the schedule
   */
  public static TokenSelectivePropagation ofRate(double fullShare, double tspRate, int window, int pool) {
    return new TokenSelectivePropagation(fullShare, 0, tspRate, window, pool);
  }

  @Override
  public String name() {
    return "tsp(full=" + fullShare + "," + (length > 0 ? String.valueOf(length) : rate * 100 + "%") + ")";
  }

  /** {@code round(fullShare * layers) - 1}, at least layer 0: 15 of 32 layers at the paper's 0.5, 7 of 16. */
  @Override
  public int selectionLayer(int layers) {
    return Math.max(0, Math.min(layers - 1, (int) Math.round(fullShare * layers) - 1));
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
