package io.kvcache.retention;

import io.kvcache.codec.HeadStore;
import io.kvcache.core.AttentionShape;
import java.util.Arrays;

/**
 * H2O (arXiv 2306.14048): keep the "heavy hitters", the tokens with the largest attention
 * accumulated over every query so far, plus the most recent tokens; evict the weakest heavy hitter
 * whenever the budget {@code heavy + recent} is exceeded.
 *
 * <p>Scores, per KV head and slot: the attention weights of every query the cache has run, summed
 * over the KV head's query heads (GQA: the group keeps one index set). <b>Prompt:</b> after each
 * prefill chunk its queries' weights are added ({@link LayerAccess#chunkWeights}, the exact causal
 * softmax rows) and the cache is cut back to the budget, so a long prompt never holds more than
 * {@code budget + chunk} tokens; a one-chunk prompt is thus scored by all of its queries at once,
 * which is what the paper's implementation does. <b>Decode:</b> the new token is appended, the
 * budget is enforced before its attention (so a step attends to exactly {@code heavy + recent}
 * tokens), then its weights are added ({@link State#afterDecodeWeights}). The paper (Algorithm 1) and
 * the project's method notes take the other order: the step attends to the kept tokens and the new one,
 * adds its row, then evicts. We evict first so that a layer sharing the cache ({@code attendDecode},
 * AcrossKV) attends to exactly what the owning layer attended to, and a step never holds more than its
 * budget; the step's own row then counts from the next eviction on. The two orders keep the same tokens
 * on random inputs (a reference of each, {@code RetentionReferenceTest}) and differ where the step's
 * own attention decides the eviction.
 *
 * <p>Recent tokens are the {@code recent} largest positions, counted, not by position range, so the
 * count is exact under a prefill schedule that leaves gaps. Ties between equal scores keep the older
 * token. Immutable and thread-safe; per-cache scores live in the state.
 */
public final class H2O implements RetentionPolicy {

  private final int heavy;
  private final int recent;

  /**
   * @param heavy  heavy-hitter tokens kept per KV head, {@code >= 0}
   * @param recent most recent tokens kept per KV head, {@code >= 1}
   */
  public H2O(int heavy, int recent) {
    if (heavy < 0) {
      throw new IllegalArgumentException("heavy must be >= 0, got " + heavy);
    }
    if (recent < 1) {
      throw new IllegalArgumentException("recent must be >= 1, got " + recent);
    }
    this.heavy = heavy;
    this.recent = recent;
  }

  /** @return heavy hitters kept */
  public int heavy() {
    return heavy;
  }

  /** @return recent tokens kept */
  public int recent() {
    return recent;
  }

  @Override
  public String name() {
    return "h2o(" + heavy + "," + recent + ")";
  }

  @Override
  public boolean wantsDecodeWeights() {
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

  private final class St implements State {
    private final int group;
    private final float[][][] score; // [layer][kvHead][slot], summed over the group
    private int[] order = new int[0];
    private long[] lscratch = new long[0];
    private float[] acc = new float[0];
    private float[] tmp = new float[0];
    private boolean[] keep = new boolean[0];
    private long[] remapKey = new long[0];

    St(AttentionShape shape) {
      this.group = shape.groupSize();
      this.score = new float[shape.layers()][shape.kvHeads()][0];
    }

    @Override
    public void afterAppend(LayerAccess layer, boolean decode) {
      for (int h = 0; h < layer.shape().kvHeads(); h++) {
        HeadStore store = layer.store(h);
        int slots = store.pageCount() * HeadStore.PAGE_TOKENS;
        float[] s = scores(layer.layer(), h, slots);
        if (!decode) {
          ensure(slots);
          Arrays.fill(acc, 0, group * slots, 0f);
          layer.chunkWeights(h, acc, slots);
          for (int gi = 0; gi < group; gi++) {
            int base = gi * slots;
            for (int slot = 0; slot < slots; slot++) {
              s[slot] += acc[base + slot];
            }
          }
        }
        enforce(layer.layer(), h, store);
      }
    }

    @Override
    public void endPrefill(LayerAccess layer) {
      if (layer.layer() == layer.shape().layers() - 1) {
        // The scratch was sized by the largest prompt chunk; decode regrows it to the slots it holds.
        order = new int[0];
        lscratch = new long[0];
        acc = new float[0];
        tmp = new float[0];
        keep = new boolean[0];
        remapKey = new long[0];
      }
    }

    @Override
    public void afterDecodeWeights(LayerAccess layer, int kvHead, float[] weights) {
      HeadStore store = layer.store(kvHead);
      int slots = store.pageCount() * HeadStore.PAGE_TOKENS;
      float[] s = scores(layer.layer(), kvHead, slots);
      for (int slot = 0; slot < slots; slot++) {
        s[slot] += weights[slot]; // empty slots get 0: the mask hides them
      }
    }

    private float[] scores(int layer, int h, int slots) {
      float[] s = score[layer][h];
      if (s.length < slots) {
        s = Arrays.copyOf(s, Math.max(slots, 2 * s.length));
        score[layer][h] = s;
      }
      return s;
    }

    private void enforce(int layer, int h, HeadStore store) {
      int n = store.size();
      int budget = heavy + recent;
      if (n <= budget) {
        return;
      }
      int slots = store.pageCount() * HeadStore.PAGE_TOKENS;
      ensure(slots);
      float[] s = score[layer][h];
      TokenSelection.liveByPosition(store, order, lscratch);
      int older = n - recent;
      for (int i = 0; i < older; i++) {
        tmp[i] = s[order[i]];
      }
      TokenSelection.top(tmp, 0, older, heavy, keep, lscratch);
      for (int i = 0; i < older; i++) {
        if (!keep[i]) {
          store.evict(order[i]);
          s[order[i]] = 0f; // the slot's next token starts from nothing
        }
      }
      if (store.pageCount() * HeadStore.PAGE_TOKENS - store.size() >= 2 * HeadStore.PAGE_TOKENS) {
        score[layer][h] = compact(store, s);
      }
    }

    /**
     * Compacts the store and moves each token's score with it (compaction relocates tokens).
     *
     * @return the scores, in a smaller array where the old one was sized for more than twice the slots left
     */
    private float[] compact(HeadStore store, float[] s) {
      int slots = store.pageCount() * HeadStore.PAGE_TOKENS;
      int n = 0;
      for (int slot = 0; slot < slots; slot++) {
        int pos = store.position(slot);
        if (pos != HeadStore.EMPTY) {
          // Sorted by position; the score's bits ride along in the low half.
          remapKey[n++] = ((long) pos << 32) | (Float.floatToRawIntBits(s[slot]) & 0xffffffffL);
        }
      }
      Arrays.sort(remapKey, 0, n);
      store.compact();
      int after = store.pageCount() * HeadStore.PAGE_TOKENS;
      if (s.length > 2 * Math.max(after, HeadStore.PAGE_TOKENS)) {
        s = new float[after];
      } else {
        Arrays.fill(s, 0f);
      }
      for (int slot = 0; slot < after; slot++) {
        int pos = store.position(slot);
        if (pos != HeadStore.EMPTY) {
          int i = search(remapKey, n, pos);
          s[slot] = Float.intBitsToFloat((int) remapKey[i]);
        }
      }
      return s;
    }

    private void ensure(int slots) {
      if (order.length < slots) {
        order = new int[slots];
        lscratch = new long[slots];
        acc = new float[group * slots];
        tmp = new float[slots];
        keep = new boolean[slots];
        remapKey = new long[slots];
      }
    }
  }

  private static int search(long[] keys, int n, int pos) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
      int mid = (lo + hi) >>> 1;
      int p = (int) (keys[mid] >>> 32);
      if (p < pos) {
        lo = mid + 1;
      } else if (p > pos) {
        hi = mid - 1;
      } else {
        return mid;
      }
    }
    throw new IllegalStateException("position " + pos + " vanished in compaction");
  }
}
