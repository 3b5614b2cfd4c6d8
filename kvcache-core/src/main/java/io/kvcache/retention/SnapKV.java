package io.kvcache.retention;

import io.kvcache.codec.HeadStore;
import io.kvcache.core.AttentionShape;

/**
 * SnapKV (arXiv 2404.14469), GQA-aware: at the end of prefill, the last {@code window} prompt
 * queries (the observation window) vote for the earlier tokens with their attention weights; the
 * votes are smoothed by 1-D pooling along positions; each KV head keeps the {@code budget - window}
 * best-voted earlier tokens plus the whole window.
 *
 * <p>Per KV head: {@code s[g][j] = sum over window tokens i of A[(i, g)][j]} for each query head
 * {@code g} of the group (softmax over the full causal row), pooled along {@code j} per query head
 * (max by default, kernel {@code pool}) over the tokens before the window, then aggregated over the
 * group (mean by default, or max) so that the group keeps one index set and the KV head is stored
 * once. Selection is exact: after {@code endPrefill} every KV head holds
 * {@code min(promptTokens, budget)} tokens. Decode tokens are appended and kept (the paper compresses
 * the prompt only), so the count grows by one per decode step.
 *
 * <p>Immutable and thread-safe; the per-cache state holds only scratch.
 */
public final class SnapKV implements RetentionPolicy {

  /** How the scores of a KV head's query heads are combined into one. */
  public enum GroupAggregation {
    /** Mean over the group (FastKV, AdaKV's GQA variant). */
    MEAN,
    /** Maximum over the group. */
    MAX
  }

  private final int budget;
  private final int window;
  private final int pool;
  private final boolean maxPool;
  private final GroupAggregation aggregation;

  /**
   * @param budget      tokens kept per KV head after the prompt, {@code >= window}
   * @param window      observation window, the last prompt tokens, {@code >= 1} (paper: 32)
   * @param pool        odd pooling kernel, {@code >= 1} (paper: 7; 1 disables pooling)
   * @param maxPool     true for max pooling (paper), false for average pooling
   * @param aggregation how a KV head's query heads are combined
   */
  public SnapKV(int budget, int window, int pool, boolean maxPool, GroupAggregation aggregation) {
    checkWindowAndPool(window, pool);
    if (budget < window) {
      throw new IllegalArgumentException("budget must be >= window (" + window + "), got " + budget);
    }
    if (aggregation == null) {
      throw new IllegalArgumentException("aggregation must not be null");
    }
    this.budget = budget;
    this.window = window;
    this.pool = pool;
    this.maxPool = maxPool;
    this.aggregation = aggregation;
  }

  /**
   * The paper's setting: max pooling, mean over the GQA group.
   *
   * @param budget tokens kept per KV head, {@code >= window}
   * @param window observation window, {@code >= 1}
   * @param pool   odd pooling kernel, {@code >= 1}
   * @return the policy
   */
  public static SnapKV of(int budget, int window, int pool) {
    return new SnapKV(budget, window, pool, true, GroupAggregation.MEAN);
  }

  static void checkWindowAndPool(int window, int pool) {
    if (window < 1) {
      throw new IllegalArgumentException("window must be >= 1, got " + window);
    }
    if (pool < 1 || pool % 2 == 0) {
      throw new IllegalArgumentException("pool must be an odd kernel size >= 1, got " + pool);
    }
  }

  /** @return tokens kept per KV head */
  public int budget() {
    return budget;
  }

  /** @return the observation window */
  public int window() {
    return window;
  }

  /** @return the pooling kernel */
  public int pool() {
    return pool;
  }

  @Override
  public String name() {
    return "snapKV(" + budget + "," + window + "," + pool + (maxPool ? "" : ",avg")
        + (aggregation == GroupAggregation.MEAN ? "" : ",max") + ")";
  }

  @Override
  public int observationWindow() {
    return window;
  }

  @Override
  public boolean actsAtEndOfPrompt() {
    return true;
  }

  @Override
  public State newState(AttentionShape shape) {
    return new St(shape);
  }

  @Override
  public String toString() {
    return name();
  }

  /**
   * Pooled observation-window scores of one KV head's query heads over the tokens before the window:
   * {@code out[g * prefix + i]} for the token in slot {@code order[i]}, {@code i < prefix}.
   *
   * @param layer   the layer
   * @param kvHead  the KV head
   * @param order   live slots in position order (see {@link TokenSelection#liveByPosition})
   * @param prefix  tokens before the window: the first {@code prefix} entries of {@code order}
   * @param pool    odd pooling kernel
   * @param maxPool max (true) or average pooling
   * @param acc     scratch, at least {@code groupSize * slots} floats; overwritten
   * @param tmp     scratch, at least {@code prefix} floats
   * @param out     at least {@code groupSize * prefix} floats
   */
  public static void pooledWindowScores(LayerAccess layer, int kvHead, int[] order, int prefix, int pool,
      boolean maxPool, float[] acc, float[] tmp, float[] out) {
    int g = layer.shape().groupSize();
    int slots = layer.store(kvHead).pageCount() * HeadStore.PAGE_TOKENS;
    java.util.Arrays.fill(acc, 0, g * slots, 0f);
    layer.windowWeights(kvHead, acc, slots);
    for (int gi = 0; gi < g; gi++) {
      int base = gi * slots;
      for (int i = 0; i < prefix; i++) {
        tmp[i] = acc[base + order[i]];
      }
      TokenSelection.pool(tmp, 0, prefix, pool, maxPool, out, gi * prefix);
    }
  }

  /**
   * Combines per-query-head scores into one score per token.
   *
   * @param perHead     {@code perHead[g * n + i]}
   * @param group       query heads
   * @param n           tokens
   * @param aggregation mean or max
   * @param out         {@code n} floats
   */
  public static void aggregate(float[] perHead, int group, int n, GroupAggregation aggregation, float[] out) {
    if (aggregation == null) {
      throw new IllegalArgumentException("aggregation must be MEAN or MAX, got null");
    }
    System.arraycopy(perHead, 0, out, 0, n);
    for (int gi = 1; gi < group; gi++) {
      int base = gi * n;
      if (aggregation == GroupAggregation.MAX) {
        for (int i = 0; i < n; i++) {
          out[i] = Math.max(out[i], perHead[base + i]);
        }
      } else {
        for (int i = 0; i < n; i++) {
          out[i] += perHead[base + i];
        }
      }
    }
    if (aggregation == GroupAggregation.MEAN && group > 1) {
      float inv = 1f / group;
      for (int i = 0; i < n; i++) {
        out[i] *= inv;
      }
    }
  }

  /**
   * Per-cache state: scratch only, one set per KV head so that the heads of a layer compress in
   * parallel; selection happens once, at {@code endPrefill}.
   */
  private final class St implements State {
    private final int group;
    private final Scratch[] scratch;

    St(AttentionShape shape) {
      this.group = shape.groupSize();
      this.scratch = new Scratch[shape.kvHeads()];
      for (int h = 0; h < scratch.length; h++) {
        scratch[h] = new Scratch();
      }
    }

    @Override
    public void afterAppend(LayerAccess layer, boolean decode) {}

    @Override
    public void endPrefill(LayerAccess layer) {
      layer.forEachKvHead(h -> compress(layer, h));
      if (layer.layer() == layer.shape().layers() - 1) {
        // Selection happens once: the scratch, sized by the prompt, is not kept for the decode.
        for (int h = 0; h < scratch.length; h++) {
          scratch[h] = new Scratch();
        }
      }
    }

    private void compress(LayerAccess layer, int h) {
      HeadStore store = layer.store(h);
      int n = store.size();
      if (n <= budget) {
        return;
      }
      Scratch x = scratch[h];
      x.ensure(store.pageCount() * HeadStore.PAGE_TOKENS, group);
      TokenSelection.liveByPosition(store, x.order, x.lscratch);
      int w = Math.min(layer.windowTokens(), n);
      int prefix = n - w;
      pooledWindowScores(layer, h, x.order, prefix, pool, maxPool, x.acc, x.tmp, x.perHead);
      aggregate(x.perHead, group, prefix, aggregation, x.score);
      TokenSelection.top(x.score, 0, prefix, budget - w, x.keep, x.lscratch);
      for (int i = 0; i < prefix; i++) {
        if (!x.keep[i]) {
          store.evict(x.order[i]);
        }
      }
      store.compact();
    }
  }

  /** One KV head's selection scratch, grown to the largest store seen. */
  private static final class Scratch {
    int[] order = new int[0];
    long[] lscratch = new long[0];
    float[] acc = new float[0];
    float[] tmp = new float[0];
    float[] perHead = new float[0];
    float[] score = new float[0];
    boolean[] keep = new boolean[0];

    void ensure(int slots, int group) {
      if (order.length < slots) {
        order = new int[slots];
        lscratch = new long[slots];
        acc = new float[group * slots];
        tmp = new float[slots];
        perHead = new float[group * slots];
        score = new float[slots];
        keep = new boolean[slots];
      }
    }
  }
}
