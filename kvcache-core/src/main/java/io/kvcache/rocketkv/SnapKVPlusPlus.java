package io.kvcache.rocketkv;

import io.kvcache.core.AttentionShape;
import io.kvcache.retention.LayerAccess;
import io.kvcache.retention.RetentionPolicy;
import io.kvcache.retention.SnapKV;
import java.util.HashMap;
import java.util.Map;

/**
 * RocketKV's stage 1, SnapKV++ (arXiv 2502.14051): SnapKV at the end of prefill with scores
 * aggregated over each KV head's query heads (GQA: one kept set per KV head, stored once) and a
 * pooling kernel that grows with the prompt, because a long prompt's important spans are wider.
 *
 * <p>Pooling kernel for a prompt of {@code T} tokens: {@code 2 * clamp(floor(T / 1024), 3, 31) + 1},
 * i.e. 7 below 4K tokens (SnapKV's kernel), 9 at 4K, 17 at 8K, 33 at 16K, 63 from 31K on. The paper states the
 * kernel is chosen adaptively from the input length; this rule is ours, set to meet SnapKV's 7 at
 * short prompts and the 63 that long-context runs of the authors' code use.
 *
 * <p>The budget is either fixed, or derived from RocketKV's split of a total token budget {@code k}:
 * for a total compression {@code c = T / k} each stage takes {@code sqrt(c)}, so stage 1 keeps
 * {@code sqrt(T * k)} tokens (at least {@code k}, at most {@code T}).
 * Scoring and selection are {@link SnapKV}'s, with max pooling and the mean over the group.
 */
public final class SnapKVPlusPlus implements RetentionPolicy {

  private final int fixedBudget;   // > 0: a fixed budget; 0: derived from tokenBudget
  private final int tokenBudget;
  private final int window;

  private SnapKVPlusPlus(int fixedBudget, int tokenBudget, int window) {
    if (window < 1) {
      throw new IllegalArgumentException("window must be >= 1, got " + window);
    }
    this.fixedBudget = fixedBudget;
    this.tokenBudget = tokenBudget;
    this.window = window;
  }

  /**
   * A fixed stage-1 budget.
   *
   * @param budget tokens kept per KV head, {@code >= window}
   * @param window observation window (the paper's SnapKV uses 32)
   * @return the policy
   */
  public static SnapKVPlusPlus of(int budget, int window) {
    if (budget < window) {
      throw new IllegalArgumentException("budget must be >= window (" + window + "), got " + budget);
    }
    return new SnapKVPlusPlus(budget, 0, window);
  }

  /**
   * The stage-1 budget RocketKV derives from a total token budget: {@code sqrt(T * tokenBudget)}.
   *
   * @param tokenBudget tokens stage 2 attends to per step, {@code >= window}
   * @param window      observation window
   * @return the policy
   */
  public static SnapKVPlusPlus forTokenBudget(int tokenBudget, int window) {
    if (tokenBudget < window) {
      throw new IllegalArgumentException("tokenBudget must be >= window (" + window + "), got " + tokenBudget);
    }
    return new SnapKVPlusPlus(0, tokenBudget, window);
  }

  /**
   * The pooling kernel for a prompt length.
   *
   * @param promptTokens the prompt length, {@code >= 0}
   * @return an odd kernel size from 7 to 63
   */
  public static int poolFor(int promptTokens) {
    io.kvcache.core.Checks.inRange("promptTokens", promptTokens, 0, Integer.MAX_VALUE);
    int half = Math.max(3, Math.min(31, promptTokens / 1024));
    return 2 * half + 1;
  }

  /**
   * The stage-1 budget for a prompt length.
   *
   * @param promptTokens the prompt length, {@code >= 0}
   * @return tokens kept per KV head
   */
  public int budgetFor(int promptTokens) {
    io.kvcache.core.Checks.inRange("promptTokens", promptTokens, 0, Integer.MAX_VALUE);
    if (fixedBudget > 0) {
      return fixedBudget;
    }
    long b = Math.round(Math.sqrt((double) promptTokens * tokenBudget));
    return (int) Math.min(promptTokens, Math.max(tokenBudget, b));
  }

  @Override
  public String name() {
    return fixedBudget > 0 ? "snapKV++(" + fixedBudget + "," + window + ")"
        : "snapKV++(sqrt(T*" + tokenBudget + ")," + window + ")";
  }

  @Override
  public int observationWindow() {
    return window;
  }

  @Override
  public State newState(AttentionShape shape) {
    return new St(shape);
  }

  /**
   * As {@link SnapKV}: the prompt is left whole until {@code endPrefill}, which reads the observation
   * window only (so the cache may defer a storage window step, and a layer sharing the cache sees what
   * the owner's prefill saw).
   */
  @Override
  public boolean actsAtEndOfPrompt() {
    return true;
  }

  @Override
  public String toString() {
    return name();
  }

  /** Delegates to a SnapKV state for the budget and kernel this prompt calls for. */
  private final class St implements State {
    private final AttentionShape shape;
    private final Map<Long, State> byBudgetAndPool = new HashMap<>();

    St(AttentionShape shape) {
      this.shape = shape;
    }

    @Override
    public void afterAppend(LayerAccess layer, boolean decode) {}

    @Override
    public void endPrefill(LayerAccess layer) {
      // T is the prompt tokens the layer holds (nothing is evicted before endPrefill), not one past the
      // last position: positions may start late or skip (KVCache.prefill takes explicit positions).
      int prompt = 0;
      for (int h = 0; h < shape.kvHeads(); h++) {
        prompt = Math.max(prompt, layer.store(h).size());
      }
      int budget = Math.max(window, budgetFor(prompt));
      int pool = poolFor(prompt);
      long key = ((long) budget << 32) | pool;
      byBudgetAndPool.computeIfAbsent(key, k -> SnapKV.of(budget, window, pool).newState(shape)).endPrefill(layer);
      if (layer.layer() == shape.layers() - 1) {
        // Layers of different prompt lengths (token-selective propagation) made states that no later layer
        // reaches; the prompt is over, and with them goes their prompt-sized scratch.
        byBudgetAndPool.clear();
      }
    }
  }
}
