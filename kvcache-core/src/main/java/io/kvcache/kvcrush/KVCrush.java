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
 * would evict, chosen by the similarity of their head behaviour, so that no kind of token loses its
 * voice entirely.
 *
 * <p>At {@code endPrefill}, per layer:
 * <ol>
 *   <li><b>Budget split.</b> {@code crush = round(crushShare * budget)} tokens for representatives,
 *       {@code budget - crush} for the importance policy: SnapKV keeps its observation window plus
 *       its top-scored earlier tokens; H2O keeps half (rounded up) as the most recent tokens plus the
 *       top-scored heavy hitters of the prompt.</li>
 *   <li><b>Head-behaviour signature.</b> Every token not protected by the window / recent set gets a
 *       binary vector with one bit per <em>query</em> head of the layer ({@code queryHeads} bits):
 *       bit {@code h} is 1 when query head {@code h}, selecting alone with the importance budget,
 *       would keep the token (its score is at least the head's {@code k}-th largest, {@code k} the
 *       importance policy's non-protected share). Query heads, not KV heads, because they are the
 *       ones that behave; under MHA this is the paper's definition exactly. All KV heads of a layer
 *       hold the same tokens in the same slots at the end of the prompt (nothing was evicted before),
 *       so one signature describes a token across the whole layer; should the stores differ (a
 *       custom cache), each KV head falls back to the bits of its own GQA group.</li>
 *   <li><b>Anchor grouping.</b> The tokens the importance policy drops (the candidates) are sorted by
 *       the Hamming distance of their signature to an anchor vector (ties by position) and split into
 *       {@code crush} buckets of equal size.</li>
 *   <li><b>Representatives.</b> The first token of every bucket is kept; the other candidates are
 *       evicted.</li>
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
    /** All zeros: the distance counts the heads that would keep a token. */
    ZEROS,
    /** All ones. */
    ONES,
    /** 0, 1, 0, 1, ... by head index. */
    ALTERNATING,
    /** A random vector, fixed by the seed (and the layer), so that runs repeat. */
    RANDOM,
    /** The candidates' mean signature rounded to bits (majority per head). */
    MEAN
  }

  private final int budget;
  private final int crush;
  private final double crushShare;
  private final Importance importance;
  private final int window;
  private final int pool;
  private final Anchor anchor;
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
    this.crush = Math.max(1, (int) Math.round(b.crushShare * b.budget));
    this.importance = b.importance;
    this.window = b.window;
    this.pool = b.pool;
    this.anchor = b.anchor;
    this.seed = b.seed;
    int importanceBudget = budget - crush;
    if (importance == Importance.SNAPKV && importanceBudget < window) {
      throw new IllegalArgumentException("budget - round(crushShare * budget) must be >= window (" + window
          + ") so that the window is kept, got budget=" + budget + " crushShare=" + crushShare);
    }
    if (importance == Importance.H2O && importanceBudget < 1) {
      throw new IllegalArgumentException("budget - round(crushShare * budget) must be >= 1, got budget=" + budget
          + " crushShare=" + crushShare);
    }
  }

  /**
   * A builder with the defaults: SnapKV importance, window 32, max pooling kernel 7, a quarter of
   * the budget for representatives, random anchor with seed 0.
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

  @Override
  public String name() {
    return "kvCrush(" + budget + "," + importance.name().toLowerCase(java.util.Locale.ROOT) + ",crush=" + crush
        + "," + anchor.name().toLowerCase(java.util.Locale.ROOT) + ")";
  }

  @Override
  public int observationWindow() {
    return importance == Importance.SNAPKV ? window : 0;
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
    private long seed;

    private Builder(int budget) {
      this.budget = budget;
    }

    /**
     * @param share share of the budget kept as representatives, in (0, 1); default 0.25
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

  /** Per-cache state: H2O's prompt accumulators when H2O is the importance policy, and scratch. */
  private final class CrushState implements State {
    private final AttentionShape shape;
    private final int group;
    private final int kvHeads;
    private final float[][][] promptAcc; // H2O: [layer][kvHead][g * slots + slot]
    private int[][] order = new int[0][];
    private float[][] perHead = new float[0][];
    private long[] sig = new long[0];
    private long[] lscratch = new long[0];
    private float[] acc = new float[0];
    private float[] tmp = new float[0];
    private float[] fscratch = new float[0];
    private float[] score = new float[0];
    private boolean[] keep = new boolean[0];
    private final int words;
    private final long[] anchorBits;

    CrushState(AttentionShape shape) {
      this.shape = shape;
      this.group = shape.groupSize();
      this.kvHeads = shape.kvHeads();
      this.promptAcc = importance == Importance.H2O ? new float[shape.layers()][kvHeads][0] : null;
      this.words = (shape.queryHeads() + 63) / 64;
      this.anchorBits = new long[words];
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
      // 1. Per query head importance scores over each KV head's unprotected tokens, in position order.
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
        if (importance == Importance.SNAPKV) {
          SnapKV.pooledWindowScores(layer, h, order[h], prefix[h], pool, true, acc, tmp, perHead[h]);
        } else {
          float[] a = promptAcc[layer.layer()][h];
          int stride = a.length / group;
          for (int gi = 0; gi < group; gi++) {
            for (int i = 0; i < prefix[h]; i++) {
              perHead[h][gi * prefix[h] + i] = a[gi * stride + order[h][i]];
            }
          }
        }
      }
      boolean aligned = aligned(layer, prefix);
      if (aligned) {
        signatures(0, kvHeads, prefix[0], importanceBudget - protectedCount[0]);
      }
      for (int h = 0; h < kvHeads; h++) {
        HeadStore store = layer.store(h);
        if (store.size() <= budget) {
          continue;
        }
        int p = prefix[h];
        int keepImportant = importanceBudget - protectedCount[h];
        if (!aligned) {
          signatures(h, h + 1, p, keepImportant);
        }
        // 2. The importance policy's own choice: the group's mean score, top keepImportant.
        SnapKV.aggregate(perHead[h], group, p, SnapKV.GroupAggregation.MEAN, score);
        TokenSelection.top(score, 0, p, keepImportant, keep, lscratch);
        // 3. Candidates sorted by (Hamming distance to the anchor, position); 4. one per bucket.
        int nc = 0;
        int sigHeads = aligned ? shape.queryHeads() : group;
        anchorFor(layer.layer(), sigHeads, p);
        for (int i = 0; i < p; i++) {
          if (!keep[i]) {
            int dist = 0;
            for (int w = 0; w < words; w++) {
              dist += Long.bitCount(sig[i * words + w] ^ anchorBits[w]);
            }
            lscratch[nc++] = ((long) dist << 32) | i;
          }
        }
        Arrays.sort(lscratch, 0, nc);
        int reps = Math.min(crush, nc);
        for (int b = 0; b < reps; b++) {
          keep[(int) lscratch[(int) ((long) b * nc / reps)]] = true;
        }
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

    /**
     * Signature bits of query heads {@code [h0 * group, h1 * group)}, renumbered from bit 0: bit set
     * when the token is in that query head's own top {@code k}.
     */
    private void signatures(int h0, int h1, int p, int k) {
      Arrays.fill(sig, 0, p * words, 0L);
      if (k <= 0) {
        return;
      }
      int bit = 0;
      for (int h = h0; h < h1; h++) {
        for (int gi = 0; gi < group; gi++, bit++) {
          float[] s = perHead[h];
          int off = gi * p;
          float thr = TokenSelection.kthLargest(s, off, p, Math.min(k, p), fscratch);
          int w = bit >>> 6;
          long m = 1L << (bit & 63);
          for (int i = 0; i < p; i++) {
            if (s[off + i] >= thr) {
              sig[i * words + w] |= m;
            }
          }
        }
      }
    }

    /** Fills {@link #anchorBits} for {@code bits} signature bits of the current candidates. */
    private void anchorFor(int layer, int bits, int p) {
      Arrays.fill(anchorBits, 0L);
      switch (anchor) {
        case ZEROS -> { }
        case ONES -> {
          for (int b = 0; b < bits; b++) {
            anchorBits[b >>> 6] |= 1L << (b & 63);
          }
        }
        case ALTERNATING -> {
          for (int b = 1; b < bits; b += 2) {
            anchorBits[b >>> 6] |= 1L << (b & 63);
          }
        }
        case RANDOM -> {
          SplittableRandom rnd = new SplittableRandom(seed * 0x9E3779B97F4A7C15L + layer);
          for (int b = 0; b < bits; b++) {
            if (rnd.nextBoolean()) {
              anchorBits[b >>> 6] |= 1L << (b & 63);
            }
          }
        }
        case MEAN -> {
          int nc = 0;
          int[] ones = new int[bits];
          for (int i = 0; i < p; i++) {
            if (!keep[i]) {
              nc++;
              for (int b = 0; b < bits; b++) {
                if ((sig[i * words + (b >>> 6)] & (1L << (b & 63))) != 0) {
                  ones[b]++;
                }
              }
            }
          }
          for (int b = 0; b < bits; b++) {
            if (2 * ones[b] > nc) {
              anchorBits[b >>> 6] |= 1L << (b & 63);
            }
          }
        }
        default -> throw new IllegalStateException("unknown anchor " + anchor);
      }
    }

    private void ensure(int slots) {
      if (lscratch.length < slots) {
        order = new int[kvHeads][slots];
        perHead = new float[kvHeads][group * slots];
        sig = new long[words * slots];
        lscratch = new long[slots];
        acc = new float[group * slots];
        tmp = new float[slots];
        fscratch = new float[slots];
        score = new float[slots];
        keep = new boolean[slots];
      }
    }
  }
}
