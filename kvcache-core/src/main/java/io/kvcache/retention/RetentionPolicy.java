package io.kvcache.retention;

import io.kvcache.core.AttentionShape;

/**
 * Retention policy, the second axis: which tokens stay, after prefill and as decode goes on.
 *
 * <p>A policy evicts through {@link LayerAccess#store(int)}; it never moves data itself. It may ask
 * the cache to keep the last prompt queries of each layer ({@link #observationWindow()}, SnapKV) and
 * to report each decode step's attention weights ({@link #wantsDecodeWeights()}, H2O). Policies are
 * immutable and thread-safe; per-cache state lives in the {@link State} they make.
 */
public interface RetentionPolicy {

  /** @return a short name for tables and logs */
  String name();

  /**
   * Prompt tokens whose queries the cache keeps per layer until {@link State#endPrefill}: SnapKV's
   * observation window. 0 when the policy needs none.
   *
   * @return the window length
   */
  default int observationWindow() {
    return 0;
  }

  /**
   * Whether the cache should compute each decode step's attention weights and pass them to
   * {@link State#afterDecodeWeights}. Costs one extra pass over the keys.
   *
   * @return true to receive the weights
   */
  default boolean wantsDecodeWeights() {
    return false;
  }

  /**
   * Whether this policy leaves the prompt alone until {@link State#endPrefill} and reads no prompt
   * queries there but the observation window's ({@link #observationWindow()}, the last prompt rows
   * stored with queries): then what it keeps does not depend on how the prompt was split into calls,
   * nor on rows stored without queries before the window, and a model runner may store such rows with
   * {@code KVCache.append} (token-selective propagation's selection layer does). True for keep-all and
   * SnapKV; default false, the safe answer (StreamingLLM and H2O evict as the prompt arrives).
   *
   * @return true when the policy acts on the prompt only at its end, through the observation window
   */
  default boolean actsAtEndOfPrompt() {
    return false;
  }

  /**
   * Makes the state for one cache.
   *
   * @param shape the model's attention shape
   * @return new state
   */
  State newState(AttentionShape shape);

  /** Keeps every token. */
  static RetentionPolicy keepAll() {
    return KeepAll.INSTANCE;
  }

  /**
   * StreamingLLM: keeps the tokens at the first {@code sinks} positions and those within the last
   * {@code window} positions. Both are by position, not by count: where positions have gaps (a prefill
   * schedule that drops rows, explicit positions) fewer tokens are held.
   *
   * @param sinks  positions kept from the start, {@code >= 0}
   * @param window most recent positions kept, {@code >= 1}
   * @return the policy
   */
  static RetentionPolicy sinksAndWindow(int sinks, int window) {
    return new SinksAndWindow(sinks, window);
  }

  /** Per-cache policy state. All calls come from the thread that drives the cache. */
  interface State {

    /**
     * Tokens were appended to every KV head of a layer: a prefill chunk (after its attention) or a
     * decode token (before its attention, so that a step attends to what the policy keeps).
     *
     * @param layer  the layer's stores and positions
     * @param decode true for a decode token, false for a prefill chunk
     */
    void afterAppend(LayerAccess layer, boolean decode);

    /**
     * The prompt is complete: compress with what was seen. The observation window, if requested, is
     * available through {@link LayerAccess#windowWeights}. The cache calls it once per layer, layers in
     * increasing order, so the last layer's call ends the prompt: a state may drop what it sized by the
     * prompt there.
     *
     * @param layer the layer's stores and positions
     */
    default void endPrefill(LayerAccess layer) {}

    /**
     * One decode step's attention weights for one layer and KV head, summed over the KV head's
     * query heads: {@code weights[slot]}, for slots below {@code store.pageCount() * PAGE_TOKENS}.
     * Called only when {@link #wantsDecodeWeights()} is true.
     *
     * @param layer   the layer's stores and positions
     * @param kvHead  the KV head
     * @param weights the weights; valid during the call only
     */
    default void afterDecodeWeights(LayerAccess layer, int kvHead, float[] weights) {}
  }
}
