package io.kvcache.schedule;

/**
 * Prefill schedule, the fourth axis: how the model runs the prompt. Only a model runner can honour
 * it (the reference decoder does); an engine that ignores it still gets the other three axes in full
 * through the per-layer {@link io.kvcache.core.KVCache} API.
 *
 * <p>Three questions, each answered "as usual" by {@link #full()}:
 * <ul>
 *   <li>Token-selective propagation (FastKV): after which layer only some prompt rows travel on,
 *       and how many.</li>
 *   <li>SingleInputKV (SwiftKV): from which layer the prompt skips the remaining layers, their K/V
 *       projected from one earlier hidden state.</li>
 *   <li>AcrossKV (SwiftKV): which layers share one KV cache.</li>
 * </ul>
 * Implementations are immutable and thread-safe.
 */
public interface PrefillSchedule {

  /** @return a short name for tables and logs */
  String name();

  /**
   * The layer after which only selected prompt rows travel on; {@code layers} when every row runs
   * every layer.
   *
   * @param layers the model's depth
   * @return the selection layer, in {@code [0, layers]}
   */
  default int selectionLayer(int layers) {
    return layers;
  }

  /**
   * Prompt rows that travel past {@link #selectionLayer} for a prompt of {@code promptTokens}.
   *
   * @param promptTokens prompt length
   * @return rows kept, in {@code [1, promptTokens]}
   */
  default int rowsKept(int promptTokens) {
    return promptTokens;
  }

  /**
   * Prompt rows whose queries score the tokens at {@link #selectionLayer} (the observation window,
   * always among the rows kept).
   *
   * @return the window, {@code >= 1}; 8 by default, FastKV's
   */
  default int selectionWindow() {
    return 8;
  }

  /**
   * Max-pooling kernel applied along positions to the selection scores before the top rows are
   * taken, as SnapKV smooths its scores; 1 for none.
   *
   * @return an odd kernel size, {@code >= 1}; 1 by default
   */
  default int selectionPool() {
    return 1;
  }

  /**
   * The first layer that prompt tokens skip (their K/V computed from the hidden state entering it);
   * {@code layers} when none is skipped.
   *
   * @param layers the model's depth
   * @return the skip layer, in {@code [1, layers]}
   */
  default int skipFromLayer(int layers) {
    return layers;
  }

  /**
   * The layer whose KV cache {@code layer} uses: itself, or the first layer of its AcrossKV group.
   *
   * @param layer  a layer
   * @param layers the model's depth
   * @return the owning layer, {@code <= layer}
   */
  default int cacheLayer(int layer, int layers) {
    return layer;
  }

  /** Every prompt token runs every layer, and every layer has its own cache. */
  static PrefillSchedule full() {
    return FullSchedule.INSTANCE;
  }
}
