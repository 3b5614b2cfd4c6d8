package io.kvcache.kvcrush;

import io.kvcache.codec.HeadStore;
import io.kvcache.core.AttentionShape;
import io.kvcache.retention.LayerAccess;
import io.kvcache.retention.RetentionPolicy;
import io.kvcache.retention.SnapKV;
import io.kvcache.retention.TokenSelection;
import java.util.Arrays;
import java.util.SplittableRandom;

/**
 * KVCrush (arXiv 2503.00022): under a token budget, an importance policy (SnapKV or H2O) keeps most
 * of the budget, and the rest keeps <em>representatives</em> of the tokens the importance policy
 * evicts, chosen by the similarity of their head behaviour, so that no kind of token loses its voice
 * entirely.
 *
 * <p>At {@code endPrefill}, per layer (the details follow the authors' implementations, OpenVINO
 * GenAI's {@code KVCrushAlgorithm} and the vLLM integration; docs/kvcrush.md names each source):
 * <ol>
 *   <li><b>Budget split.</b> The tokens the importance policy always keeps (SnapKV's observation
 *       window) count inside {@code budget}, so that KVCrush holds exactly as many tokens as SnapKV at
 *       the same budget; of the rest, {@code crush = max(1, floor(crushShare * (budget - window)))} are
 *       representatives (the vLLM integration's {@code kvcrush_ratio} of the budget outside the
 *       always-kept tokens). With H2O, whose recent tokens are part of its own budget, the share is of
 *       {@code budget}. SnapKV keeps its window plus its top-scored earlier tokens; H2O keeps half of its
 *       share (rounded up) as the most recent tokens plus the top-scored heavy hitters.</li>
 *   <li><b>Head-behaviour signature.</b> Every unprotected token gets one bit per KV head of the
 *       layer: bit {@code h} is 1 when the token is in the top half of KV head {@code h}'s importance
 *       scores (the group's mean, the score the importance policy ranks by). All KV heads of a layer
 *       hold the same tokens in the same slots at the end of the prompt, so one signature describes a
 *       token across the layer; should the stores differ (a custom cache), each KV head uses its own
 *       bit alone.</li>
 *   <li><b>Anchor grouping.</b> The candidates, exactly the unprotected tokens the importance policy
 *       evicts, are sorted by the Hamming distance of their signature to an anchor vector (ties by
 *       position) and split into {@code crush} buckets of equal size.</li>
 *   <li><b>Representatives.</b> One token of every bucket is kept, by default its first (the authors'
 *       choice: uniformly spaced along the sorted list), or with {@link Representative#MOST_IMPORTANT}
 *       the one the importance policy scores highest; the other candidates are evicted.</li>
 * </ol>
 * Every KV head then holds exactly {@code min(promptTokens, budget)} tokens. Decode tokens are
 * appended and kept, as with SnapKV: KVCrush compresses the prompt once.
 *
 * <p>Immutable and thread-safe; build with {@link #builder(int)}.
 */
public final class KVCrush implements RetentionPolicy {

  /** The importance policy that KVCrush completes. */
  public enum Importance {
    /** SnapKV: observation-window votes, pooled, GQA mean; the window is always kept. */
    SNAPKV,
    /** H2O: attention accumulated over every prompt query (per query head); recent tokens kept. */
    H2O
  }

  /** The anchor binary vector the Hamming distances are measured to. */
  public enum Anchor {
    /** All zeros: the distance counts the heads in whose top half a token is. */
    ZEROS,
    /** All ones. */
    ONES,
    /** 0, 1, 0, 1, ... by head index. */
    ALTERNATING,
    /** A random vector, fixed by the seed (and the layer), so that runs repeat. */
    RANDOM,
    /** The mean signature of every scored token rounded to bits (majority per head). */
    MEAN
  }

  /** Which token of a bucket is kept as its representative. */
  public enum Representative {
    /**
     * The bucket's first token in (distance, position) order: representatives uniformly spaced along
     * the sorted candidates, as both of the authors' implementations take them.
     */
    FIRST,
    /**
     * The bucket's token with the highest importance score (the score the importance policy ranks by),
     * ties to the first: a deviation from the authors' implementations, measured in docs/kvcrush.md.
     */
    MOST_IMPORTANT
  }

  private final int budget;
  private final int crush;
  private final double crushShare;
  private final Importance importance;
  private final int window;
  private final int pool;
  private final Anchor anchor;
  private final Representative representative;
  private final long seed;

  private KVCrush(Builder b) {
    if (b.budget < 2) {
      throw new IllegalArgumentException("budget must be >= 2, got " + b.budget);
    }
    if (!(b.crushShare > 0 && b.crushShare < 1)) {
      throw new IllegalArgumentException("crushShare must be in (0, 1), got " + b.crushShare);
    }
    SnapKVCheck.windowAndPool(b.window, b.pool);
    this.budget = b.budget;
    this.crushShare = b.crushShare;
    this.importance = b.importance;
    int shared = b.importance == Importance.SNAPKV ? b.budget - b.window : b.budget;
    this.crush = Math.max(1, (int) Math.floor(b.crushShare * shared));
    this.window = b.window;
    this.pool = b.pool;
    this.anchor = b.anchor;
    this.representative = b.representative;
    this.seed = b.seed;
    int importanceBudget = budget - crush;
    if (importance == Importance.SNAPKV && importanceBudget < window) {
      throw new IllegalArgumentException("budget must leave room for the window (" + window
          + ") and at least one representative, got budget=" + budget + " crushShare=" + crushShare);
    }
    if (importance == Importance.H2O && importanceBudget < 1) {
      throw new IllegalArgumentException("budget - floor(crushShare * budget) must be >= 1, got budget=" + budget
          + " crushShare=" + crushShare);
    }
  }

  /**
   * A builder with the defaults: SnapKV importance, window 32, max pooling kernel 7, a quarter of
   * the budget outside the window for representatives (the vLLM integration's {@code kvcrush_ratio}
   * default), random anchor with seed 0 (OpenVINO GenAI's {@code KVCrushConfig} default).
   *
   * @param budget tokens kept per KV head after the prompt, {@code >= 2}
   * @return the builder
   */
  public static Builder builder(int budget) {
    return new Builder(budget);
  }

  /** @return tokens kept per KV head */
  public int budget() {
    return budget;
  }

  /** @return tokens of the budget kept as representatives */
  public int crushTokens() {
    return crush;
  }

  /** @return the importance policy */
  public Importance importance() {
    return importance;
  }

  /** @return the anchor */
  public Anchor anchor() {
    return anchor;
  }

  /** @return which token of a bucket is kept */
  public Representative representative() {
    return representative;
  }

  @Override
  public String name() {
    return "kvCrush(" + budget + "," + importance.name().toLowerCase(java.util.Locale.ROOT) + ",crush=" + crush
        + "," + anchor.name().toLowerCase(java.util.Locale.ROOT)
        + (representative == Representative.FIRST ? "" : ",most-important") + ")";
  }

  @Override
  public int observationWindow() {
    return importance == Importance.SNAPKV ? window : 0;
  }

  /**
   * True with SnapKV importance, which reads the observation window at {@code endPrefill} and nothing
   * before; H2O importance accumulates every prompt query's weights as the prompt arrives.
   */
  @Override
  public boolean actsAtEndOfPrompt() {
    return importance == Importance.SNAPKV;
  }

  @Override
  public State newState(AttentionShape shape) {
    return new CrushState(shape);
  }

  @Override
  public String toString() {
    return name();
  }

  /** Builds a {@link KVCrush}; {@link #build()} validates the combination. */
  public static final class Builder {
    private final int budget;
    private double crushShare = 0.25;
    private Importance importance = Importance.SNAPKV;
    private int window = 32;
    private int pool = 7;
    private Anchor anchor = Anchor.RANDOM;
    private Representative representative = Representative.FIRST;
    private long seed;

    private Builder(int budget) {
      this.budget = budget;
    }

    /**
     * @param share share of the budget (outside SnapKV's window) kept as representatives, in (0, 1);
     *     default 0.25
     * @return this builder
     */
    public Builder crushShare(double share) {
      this.crushShare = share;
      return this;
    }

    /**
     * @param importance the importance policy; default SnapKV
     * @return this builder
     */
    public Builder importance(Importance importance) {
      if (importance == null) {
        throw new IllegalArgumentException("importance must not be null");
      }
      this.importance = importance;
      return this;
    }

    /**
     * @param window SnapKV's observation window, {@code >= 1}; default 32
     * @return this builder
     */
    public Builder window(int window) {
      this.window = window;
      return this;
    }

    /**
     * @param pool SnapKV's odd max-pooling kernel, {@code >= 1}; default 7
     * @return this builder
     */
    public Builder pool(int pool) {
      this.pool = pool;
      return this;
    }

    /**
     * @param anchor the anchor vector; default random
     * @return this builder
     */
    public Builder anchor(Anchor anchor) {
      if (anchor == null) {
        throw new IllegalArgumentException("anchor must not be null");
      }
      this.anchor = anchor;
      return this;
    }

    /**
     * @param representative which token of a bucket is kept; default {@link Representative#FIRST}
     * @return this builder
     */
    public Builder representative(Representative representative) {
      if (representative == null) {
        throw new IllegalArgumentException("representative must not be null");
      }
      this.representative = representative;
      return this;
    }

    /**
     * @param seed seed of the random anchor; default 0
     * @return this builder
     */
    public Builder seed(long seed) {
      this.seed = seed;
      return this;
    }

    /** @return the policy */
    public KVCrush build() {
      return new KVCrush(this);
    }
  }

  /** Argument checks shared with SnapKV's. */
  private static final class SnapKVCheck {
    static void windowAndPool(int window, int pool) {
      if (window < 1) {
        throw new IllegalArgumentException("window must be >= 1, got " + window);
      }
      if (pool < 1 || pool % 2 == 0) {
        throw new IllegalArgumentException("pool must be an odd kernel size >= 1, got " + pool);
      }
    }
  }

  /**
   * Sets signature bit {@code bit} of the tokens in the top half of one head's scores: exactly
   * {@code n / 2} of them, ties to the older token. The authors' implementations threshold every head
   * this way (a head "keeps" a token when it is in the head's better half), whatever the budget.
   *
   * @param score   the head's scores, {@code score[off + i]} for token {@code i < n}
   * @param off     first score
   * @param n       tokens
   * @param bit     the signature bit to set
   * @param sig     signatures, {@code words} longs per token; only bit {@code bit} is touched
   * @param words   longs per signature
   * @param top     scratch, at least {@code n} entries
   * @param scratch scratch, at least {@code n} entries
   */
  static void setHalfBits(float[] score, int off, int n, int bit, long[] sig, int words, boolean[] top,
      long[] scratch) {
    TokenSelection.top(score, off, n, n / 2, top, scratch);
    int w = bit >>> 6;
    long m = 1L << (bit & 63);
    for (int i = 0; i < n; i++) {
      if (top[i]) {
        sig[i * words + w] |= m;
      }
    }
  }

  /**
   * Keeps representatives of the candidates, the tokens {@code i < n} with {@code keep[i] == false}
   * (those the importance policy evicts): sorted by the Hamming distance of their signature to the
   * anchor, ties by index (so by position), split into {@code reps} buckets of equal size, and one
   * token of each bucket marked kept: its first, or with {@code score} its highest-scored (ties to the
   * first). Fewer candidates than {@code reps} are all kept.
   *
   * @param sig     signatures, {@code words} longs per token
   * @param words   longs per signature
   * @param anchor  the anchor, {@code words} longs
   * @param n       tokens
   * @param reps    buckets, {@code >= 0}
   * @param score   the tokens' importance scores ({@code score[i]}, {@code i < n}), or null to keep each
   *                bucket's first token
   * @param keep    in: the importance policy's choice; out: plus the representatives
   * @param scratch at least {@code n} entries
   * @return the number of representatives kept, {@code min(reps, candidates)}
   */
  static int keepRepresentatives(long[] sig, int words, long[] anchor, int n, int reps, float[] score,
      boolean[] keep, long[] scratch) {
    int nc = 0;
    for (int i = 0; i < n; i++) {
      if (!keep[i]) {
        int dist = 0;
        for (int w = 0; w < words; w++) {
          dist += Long.bitCount(sig[i * words + w] ^ anchor[w]);
        }
        scratch[nc++] = ((long) dist << 32) | i;
      }
    }
    Arrays.sort(scratch, 0, nc);
    int r = Math.min(reps, nc);
    for (int b = 0; b < r; b++) {
      // Bucket b is sorted entries [b * nc / r, (b + 1) * nc / r).
      int lo = (int) ((long) b * nc / r);
      int best = (int) scratch[lo];
      if (score != null) {
        int hi = (int) ((long) (b + 1) * nc / r);
        for (int e = lo + 1; e < hi; e++) {
          int t = (int) scratch[e];
          if (score[t] > score[best]) {
            best = t;
          }
        }
      }
      keep[best] = true;
    }
    return r;
  }

  /**
   * Fills {@code out} with the anchor for signatures of {@code bits} bits over {@code n} tokens.
   *
   * @param anchor the mode
   * @param seed   the random anchor's seed
   * @param layer  the layer (mixed into the random anchor so that layers differ)
   * @param bits   signature bits
   * @param sig    the tokens' signatures (for {@link Anchor#MEAN})
   * @param words  longs per signature
   * @param n      tokens
   * @param out    {@code words} longs
   */
  static void anchorBits(Anchor anchor, long seed, int layer, int bits, long[] sig, int words, int n, long[] out) {
    Arrays.fill(out, 0, words, 0L);
    switch (anchor) {
      case ZEROS -> { }
      case ONES -> {
        for (int b = 0; b < bits; b++) {
          out[b >>> 6] |= 1L << (b & 63);
        }
      }
      case ALTERNATING -> {
        for (int b = 1; b < bits; b += 2) {
          out[b >>> 6] |= 1L << (b & 63);
        }
      }
      case RANDOM -> {
        SplittableRandom rnd = new SplittableRandom(seed * 0x9E3779B97F4A7C15L + layer);
        for (int b = 0; b < bits; b++) {
          if (rnd.nextBoolean()) {
            out[b >>> 6] |= 1L << (b & 63);
          }
        }
      }
      case MEAN -> {
        // Majority bit over every scored token, as both authors' implementations take the mean.
        for (int b = 0; b < bits; b++) {
          int w = b >>> 6;
          long m = 1L << (b & 63);
          int ones = 0;
          for (int i = 0; i < n; i++) {
            if ((sig[i * words + w] & m) != 0) {
              ones++;
            }
          }
          if (2 * ones > n) {
            out[w] |= m;
          }
        }
      }
      default -> throw new IllegalStateException("unknown anchor " + anchor);
    }
  }

  /** Per-cache state: H2O's prompt accumulators when H2O is the importance policy, and scratch. */
  private final class CrushState implements State {
    private final int group;
    private final int kvHeads;
    private final int words;
    private final float[][][] promptAcc; // H2O: [layer][kvHead][g * slots + slot]
    private final long[] anchorVec;
    private int[][] order = new int[0][];
    private float[][] kvScore = new float[0][];
    private float[] perHead = new float[0];
    private long[] sig = new long[0];
    private long[] lscratch = new long[0];
    private float[] acc = new float[0];
    private float[] tmp = new float[0];
    private boolean[] top = new boolean[0];
    private boolean[] keep = new boolean[0];

    CrushState(AttentionShape shape) {
      this.group = shape.groupSize();
      this.kvHeads = shape.kvHeads();
      this.words = (kvHeads + 63) / 64;
      this.promptAcc = importance == Importance.H2O ? new float[shape.layers()][kvHeads][0] : null;
      this.anchorVec = new long[words];
    }

    @Override
    public void afterAppend(LayerAccess layer, boolean decode) {
      if (decode || promptAcc == null) {
        return;
      }
      for (int h = 0; h < kvHeads; h++) {
        int slots = layer.store(h).pageCount() * HeadStore.PAGE_TOKENS;
        float[] a = promptAcc[layer.layer()][h];
        if (a.length < group * slots) {
          // Nothing is evicted before endPrefill, so slots only grow; keep the per-head stride in step.
          float[] grown = new float[group * Math.max(slots, 2 * (a.length / group))];
          int oldSlots = a.length / group, newSlots = grown.length / group;
          for (int gi = 0; gi < group; gi++) {
            System.arraycopy(a, gi * oldSlots, grown, gi * newSlots, oldSlots);
          }
          a = grown;
          promptAcc[layer.layer()][h] = a;
        }
        layer.chunkWeights(h, a, a.length / group);
      }
    }

    @Override
    public void endPrefill(LayerAccess layer) {
      select(layer);
      if (layer.layer() == layer.shape().layers() - 1) {
        // Selection happens once: the scratch, sized by the prompt, is not kept for the decode.
        order = new int[0][];
        kvScore = new float[0][];
        perHead = new float[0];
        sig = new long[0];
        lscratch = new long[0];
        acc = new float[0];
        tmp = new float[0];
        top = new boolean[0];
        keep = new boolean[0];
      }
    }

    private void select(LayerAccess layer) {
      boolean over = false;
      for (int h = 0; h < kvHeads; h++) {
        over |= layer.store(h).size() > budget;
      }
      if (!over) {
        if (promptAcc != null) {
          Arrays.fill(promptAcc[layer.layer()], new float[0]);
        }
        return;
      }
      int importanceBudget = budget - crush;
      int[] protectedCount = new int[kvHeads];
      int[] prefix = new int[kvHeads];
      int maxSlots = 0;
      for (int h = 0; h < kvHeads; h++) {
        maxSlots = Math.max(maxSlots, layer.store(h).pageCount() * HeadStore.PAGE_TOKENS);
      }
      ensure(maxSlots);
      // 1. The importance policy's score of every unprotected token, per KV head (the group's mean, the
      //    score the policy ranks by), in position order.
      for (int h = 0; h < kvHeads; h++) {
        HeadStore store = layer.store(h);
        int n = TokenSelection.liveByPosition(store, order[h], lscratch);
        int prot = importance == Importance.SNAPKV ? Math.min(layer.windowTokens(), n)
            : Math.min((importanceBudget + 1) / 2, n);
        protectedCount[h] = prot;
        prefix[h] = n - prot;
        if (n <= budget) {
          continue;
        }
        int p = prefix[h];
        if (importance == Importance.SNAPKV) {
          SnapKV.pooledWindowScores(layer, h, order[h], p, pool, true, acc, tmp, perHead);
        } else {
          float[] a = promptAcc[layer.layer()][h];
          int stride = a.length / group;
          for (int gi = 0; gi < group; gi++) {
            for (int i = 0; i < p; i++) {
              perHead[gi * p + i] = a[gi * stride + order[h][i]];
            }
          }
        }
        SnapKV.aggregate(perHead, group, p, SnapKV.GroupAggregation.MEAN, kvScore[h]);
      }
      // 2. Signatures: one bit per KV head of the layer when every KV head holds the same positions in
      //    the same slots (always so at the end of a prompt), else each KV head its own single bit.
      boolean aligned = aligned(layer, prefix);
      if (aligned) {
        int p = prefix[0];
        Arrays.fill(sig, 0, p * words, 0L);
        for (int h = 0; h < kvHeads; h++) {
          setHalfBits(kvScore[h], 0, p, h, sig, words, top, lscratch);
        }
        anchorBits(anchor, seed, layer.layer(), kvHeads, sig, words, p, anchorVec);
      }
      for (int h = 0; h < kvHeads; h++) {
        HeadStore store = layer.store(h);
        if (store.size() <= budget) {
          continue;
        }
        int p = prefix[h];
        if (!aligned) {
          Arrays.fill(sig, 0, p * words, 0L);
          setHalfBits(kvScore[h], 0, p, 0, sig, words, top, lscratch);
          anchorBits(anchor, seed, layer.layer(), 1, sig, words, p, anchorVec);
        }
        // 3. The importance policy's own choice, then 4. representatives of what it evicts.
        TokenSelection.top(kvScore[h], 0, p, importanceBudget - protectedCount[h], keep, lscratch);
        keepRepresentatives(sig, words, anchorVec, p, crush,
            representative == Representative.MOST_IMPORTANT ? kvScore[h] : null, keep, lscratch);
        for (int i = 0; i < p; i++) {
          if (!keep[i]) {
            store.evict(order[h][i]);
          }
        }
        store.compact();
      }
      if (promptAcc != null) {
        Arrays.fill(promptAcc[layer.layer()], new float[0]);
      }
    }

    /** Whether every KV head holds the same positions in the same slots (then one signature serves all). */
    private boolean aligned(LayerAccess layer, int[] prefix) {
      HeadStore first = layer.store(0);
      for (int h = 1; h < kvHeads; h++) {
        HeadStore s = layer.store(h);
        if (s.pageCount() != first.pageCount() || s.size() != first.size() || prefix[h] != prefix[0]) {
          return false;
        }
        for (int page = 0; page < s.pageCount(); page++) {
          if (!Arrays.equals(s.pagePositions(page), first.pagePositions(page))) {
            return false;
          }
        }
      }
      return true;
    }

    private void ensure(int slots) {
      if (lscratch.length < slots) {
        order = new int[kvHeads][slots];
        kvScore = new float[kvHeads][slots];
        perHead = new float[group * slots];
        sig = new long[words * slots];
        lscratch = new long[slots];
        acc = new float[group * slots];
        tmp = new float[slots];
        top = new boolean[slots];
        keep = new boolean[slots];
      }
    }
  }
}
