package io.kvcache.rocketkv;

import io.kvcache.codec.HeadStore;
import io.kvcache.core.AttentionShape;
import io.kvcache.reader.AttentionReader;
import io.kvcache.reader.PagedAttention;
import java.util.Arrays;

/**
 * RocketKV's stage 2 (arXiv 2502.14051), the hybrid sparse attention reader: each decode step
 * estimates every page's attention cheaply, then computes exact attention over the best pages only.
 *
 * <ul>
 *   <li><b>Sequence reduction</b> (as Quest): per page of {@link HeadStore#PAGE_TOKENS} tokens, the
 *       element-wise minimum and maximum of its keys, kept up to date by page version as tokens are
 *       appended or evicted.</li>
 *   <li><b>Head-dimension reduction</b> (as SparQ): only the {@code r} channels where the query is
 *       largest in magnitude, summed over the KV head's query heads so the group shares one choice.</li>
 *   <li>A page's estimate is {@code sum_g sum_{c in top-r} max(q_gc * min_c, q_gc * max_c)}: with all
 *       channels it is an upper bound on {@code sum_g q_g . k} for every key of the page.</li>
 *   <li>Pages are taken in order of their estimate until they hold at least {@code tokenBudget}
 *       tokens; the pages holding the {@code recentTokens} most recent positions are always taken.
 *       Then exact attention runs over exactly those pages.</li>
 * </ul>
 * When a KV head holds no more than {@code tokenBudget} tokens the reader is the dense reader.
 * Selection is by whole pages, so a step reads between {@code tokenBudget} and
 * {@code tokenBudget + PAGE_TOKENS - 1} selected tokens plus the recent pages.
 */
public final class HybridSparseReader implements AttentionReader {

  private final int tokenBudget;
  private final double channelFraction;
  private final int recentTokens;

  private HybridSparseReader(int tokenBudget, double channelFraction, int recentTokens) {
    if (tokenBudget < 1) {
      throw new IllegalArgumentException("tokenBudget must be >= 1, got " + tokenBudget);
    }
    if (!(channelFraction > 0 && channelFraction <= 1)) {
      throw new IllegalArgumentException("channelFraction must be in (0, 1], got " + channelFraction);
    }
    if (recentTokens < 0) {
      throw new IllegalArgumentException("recentTokens must be >= 0, got " + recentTokens);
    }
    this.tokenBudget = tokenBudget;
    this.channelFraction = channelFraction;
    this.recentTokens = recentTokens;
  }

  /**
   * @param tokenBudget    tokens attended per decode step and KV head, {@code >= 1}
   * @param channelFraction share of the head dimension used for the estimate, in (0, 1]
   * @param recentTokens   most recent positions always attended, {@code >= 0}
   * @return the reader
   */
  public static HybridSparseReader of(int tokenBudget, double channelFraction, int recentTokens) {
    return new HybridSparseReader(tokenBudget, channelFraction, recentTokens);
  }

  /** @return tokens attended per step and KV head */
  public int tokenBudget() {
    return tokenBudget;
  }

  /** @return share of the head dimension used for the estimate */
  public double channelFraction() {
    return channelFraction;
  }

  /** @return most recent positions always attended */
  public int recentTokens() {
    return recentTokens;
  }

  @Override
  public String name() {
    return "hybrid-top" + tokenBudget;
  }

  @Override
  public State newState(AttentionShape shape) {
    return new SparseState(shape);
  }

  @Override
  public String toString() {
    return name() + "(r=" + channelFraction + ", recent=" + recentTokens + ")";
  }

  /** Per-cache state: page summaries per layer and KV head, and per-head scratch. */
  private final class SparseState implements State {
    private final PageSummaries[][] summaries;
    private final int channels;

    SparseState(AttentionShape shape) {
      summaries = new PageSummaries[shape.layers()][shape.kvHeads()];
      channels = Math.max(1, (int) Math.round(channelFraction * shape.headDim()));
    }

    @Override
    public void decode(int layer, int kvHead, HeadStore store, PagedAttention work, int group, float[] q, int qOff,
        int position, float scale, float[] out, int outOff) {
      if (store.size() <= tokenBudget) {
        work.decode(store, group, q, qOff, position, scale, out, outOff);
        return;
      }
      PageSummaries s = summaries[layer][kvHead];
      if (s == null) {
        s = new PageSummaries(store.headDim());
        summaries[layer][kvHead] = s;
      }
      s.refresh(store, work.kernels());
      int n = s.select(store, group, q, qOff, position, channels, tokenBudget, recentTokens, work.kernels());
      work.decodePages(store, group, q, qOff, position, scale, out, outOff, s.selected, n);
    }
  }

  /**
   * Min/max key summaries of one store's pages, and the scratch of a selection. Channel-major
   * ({@code min[c * capacity + page]}) so that estimating every page over one chosen channel is a
   * contiguous, vectorised pass. Package-private so tests can check the bound and the selection.
   */
  static final class PageSummaries {
    private static final int P = HeadStore.PAGE_TOKENS;
    private final int d;
    private int capacity;
    float[] min = new float[0];
    float[] max = new float[0];
    int[] live = new int[0];
    int[] maxPos = new int[0];
    private int[] version = new int[0];
    private boolean[] known = new boolean[0];
    private final float[] buf;
    private final float[] qAbs;
    private final float[] qc;
    private final long[] channelKeys;
    private final int[] chosen;
    private float[] est = new float[0];
    private long[] pageKeys = new long[0];
    int[] selected = new int[0];

    PageSummaries(int headDim) {
      this.d = headDim;
      this.buf = new float[2 * headDim * P];
      this.qAbs = new float[headDim];
      this.qc = new float[64];
      this.channelKeys = new long[headDim];
      this.chosen = new int[headDim];
    }

    /** @return the minimum of channel {@code c} over the live keys of {@code page} */
    float min(int page, int c) {
      return min[c * capacity + page];
    }

    /** @return the maximum of channel {@code c} over the live keys of {@code page} */
    float max(int page, int c) {
      return max[c * capacity + page];
    }

    private void grow(int pages) {
      int n = Math.max(pages, Math.max(16, capacity * 2));
      float[] nmin = new float[n * d], nmax = new float[n * d];
      for (int c = 0; c < d; c++) {
        System.arraycopy(min, c * capacity, nmin, c * n, capacity);
        System.arraycopy(max, c * capacity, nmax, c * n, capacity);
      }
      min = nmin;
      max = nmax;
      live = Arrays.copyOf(live, n);
      maxPos = Arrays.copyOf(maxPos, n);
      version = Arrays.copyOf(version, n);
      known = Arrays.copyOf(known, n);
      est = new float[n];
      pageKeys = new long[n];
      selected = new int[n];
      capacity = n;
    }

    /** Recomputes the summaries of pages whose version changed since the last call. */
    void refresh(HeadStore store, io.kvcache.kernel.AttentionKernels kernels) {
      int pages = store.pageCount();
      if (capacity < pages) {
        grow(pages);
      }
      for (int p = 0; p < pages; p++) {
        if (known[p] && version[p] == store.pageVersion(p)) {
          continue;
        }
        int[] pos = store.pagePositions(p);
        float[] kT = store.page(p, buf, kernels);
        int k0 = store.pageOffset(p);
        int count = 0, newest = Integer.MIN_VALUE;
        for (int j = 0; j < P; j++) {
          if (pos[j] != HeadStore.EMPTY) {
            count++;
            newest = Math.max(newest, pos[j]);
          }
        }
        for (int c = 0; c < d; c++) {
          float lo = Float.POSITIVE_INFINITY, hi = Float.NEGATIVE_INFINITY;
          for (int j = 0; j < P; j++) {
            if (pos[j] != HeadStore.EMPTY) {
              float x = kT[k0 + c * P + j];
              lo = Math.min(lo, x);
              hi = Math.max(hi, x);
            }
          }
          // An empty page gets 0 bounds, not infinities, so the vector estimate stays finite; it is
          // never a candidate anyway (live == 0).
          min[c * capacity + p] = count == 0 ? 0f : lo;
          max[c * capacity + p] = count == 0 ? 0f : hi;
        }
        live[p] = count;
        maxPos[p] = newest;
        version[p] = store.pageVersion(p);
        known[p] = true;
      }
    }

    /**
     * Chooses the pages to attend to and leaves them in {@link #selected}.
     *
     * @return how many pages were selected
     */
    int select(HeadStore store, int group, float[] q, int qOff, int position, int channels, int budget, int recent,
        io.kvcache.kernel.AttentionKernels kernels) {
      // Head-dimension reduction: the channels with the largest |q| summed over the group.
      Arrays.fill(qAbs, 0f);
      for (int g = 0; g < group; g++) {
        for (int c = 0; c < d; c++) {
          qAbs[c] += Math.abs(q[qOff + g * d + c]);
        }
      }
      for (int c = 0; c < d; c++) {
        channelKeys[c] = sortKey(qAbs[c], c);
      }
      Arrays.sort(channelKeys, 0, d);
      for (int i = 0; i < channels; i++) {
        chosen[i] = (int) channelKeys[d - 1 - i];
      }
      // Sequence reduction: every page's estimate, one vectorised pass per chosen channel.
      int pages = store.pageCount();
      float[] qcol = group <= qc.length ? qc : new float[group];
      Arrays.fill(est, 0, pages, 0f);
      for (int i = 0; i < channels; i++) {
        int c = chosen[i];
        for (int g = 0; g < group; g++) {
          qcol[g] = q[qOff + g * d + c];
        }
        kernels.pageBounds(qcol, group, min, max, c * capacity, pages, est);
      }
      int n = 0, count = 0, candidates = 0;
      long recentFrom = (long) position - recent + 1;
      for (int p = 0; p < pages; p++) {
        if (live[p] == 0) {
          continue;
        }
        if (recent > 0 && maxPos[p] >= recentFrom) {
          selected[n++] = p; // the recent pages are always read
          count += live[p];
          continue;
        }
        pageKeys[candidates++] = sortKey(est[p], p);
      }
      Arrays.sort(pageKeys, 0, candidates);
      int target = count + budget; // the recent pages come on top of the budget
      for (int i = candidates - 1; i >= 0 && count < target; i--) {
        int p = (int) pageKeys[i];
        selected[n++] = p;
        count += live[p];
      }
      return n;
    }

    /** Orders by value, then index; the low 32 bits carry the index back. */
    private static long sortKey(float value, int index) {
      int bits = Float.floatToIntBits(value);
      int sortable = bits >= 0 ? bits : bits ^ 0x7FFF_FFFF; // monotone in the float value
      return ((long) sortable << 32) | (index & 0xFFFF_FFFFL);
    }
  }
}
