package io.kvcache.reader;

import io.kvcache.codec.HeadStore;
import io.kvcache.kernel.AttentionKernels;
import java.util.Arrays;

/**
 * Causal attention of query rows over one {@link HeadStore}, flash style: queries in tiles, keys and
 * values streamed page by page, softmax computed online (a running maximum and sum per row, the
 * output rescaled only when the maximum grows, which becomes rare as a sequence goes on), so nothing
 * of size {@code O(tokens)} is materialised and each page's keys and values are read together.
 *
 * <p>One routine serves decode and prefill. Decode is one token whose {@code group} query heads share
 * the KV head: all of them form one tile, so every key and value page is read from memory once for
 * the whole group (GQA). Prefill is many tokens: tiles of about {@value #TILE_ROWS} rows, and pages
 * wholly after a tile's last position are skipped (the causal triangle).
 *
 * <p>Where a store reads several pages as one run ({@link HeadStore.FusedPages#runPages}: f16 pages of
 * one group) and every row sees them whole, a decode tile takes one softmax step for the run instead of
 * one per page. The result is the same attention, rounded differently.
 *
 * <p>The mask is by position: a query at position {@code p} sees the slots whose position is
 * {@code <= p}; empty and evicted slots carry {@link HeadStore#EMPTY} and are never seen.
 *
 * <p>An instance holds scratch buffers sized for one head dimension and is not thread-safe; use one
 * per thread. It allocates nothing per call once warmed up.
 */
public final class PagedAttention {

  /** Target query rows per tile: the scaled queries and accumulators of a tile stay in L1/L2. */
  public static final int TILE_ROWS = 64;

  private static final int P = HeadStore.PAGE_TOKENS;
  /**
   * Most pages one softmax step takes ({@link HeadStore.FusedPages#runPages}): a step's maxima, sums
   * and rescaling, and the value tile's start and end, then happen once per 128 tokens rather than per
   * 16. Only pages every row sees whole take part (no mask), so a run is plain attention over its tokens.
   */
  private static final int RUN_PAGES = 8;
  /** Query tokens whose weights one pass over the pages computes together (SnapKV's whole window). */
  private static final int WEIGHTS_TOKENS = 32;

  private final AttentionKernels kernels;
  private final int d;
  private final float[] pageBuf;
  private final int vOff;
  private float[] qs = new float[0];
  private float[] o = new float[0];
  private float[] s = new float[0];
  private float[] m = new float[0];
  private float[] l = new float[0];
  private int[] rowPos = new int[0];
  private final int[] one = new int[1];
  private boolean deferWindowStep;

  /**
   * @param kernels the kernels to run (scalar or vector)
   * @param headDim channels per head, {@code >= 1}; the stores it reads must have the same
   */
  public PagedAttention(AttentionKernels kernels, int headDim) {
    if (kernels == null) {
      throw new IllegalArgumentException("kernels must not be null");
    }
    io.kvcache.core.Checks.inRange("headDim", headDim, 1, Integer.MAX_VALUE / (2 * P));
    this.kernels = kernels;
    this.d = headDim;
    this.pageBuf = new float[2 * headDim * P];
    this.vOff = headDim * P;
  }

  /**
   * Whether {@link #attend}, {@link #decode} and {@link #decodePages} leave the store's deferred step
   * ({@link HeadStore#attentionDone}: SKVQ quantizing what left its window) to the caller instead of
   * taking it when they are done. A cache whose layers share stores (SwiftKV's AcrossKV) defers it to
   * the next append, so that a sharing layer's queries see the store exactly as the owning layer's
   * did; {@link #weights} then scores the store as the attentions saw it. Default: not deferred.
   *
   * @param defer true to leave the step to the caller
   */
  public void deferWindowStep(boolean defer) {
    this.deferWindowStep = defer;
  }

  /** @return the kernels this instance runs */
  public AttentionKernels kernels() {
    return kernels;
  }

  /**
   * Decode attention of one token's {@code group} query heads over {@code store}.
   *
   * @param store    keys and values of one layer and KV head
   * @param group    query heads sharing this KV head
   * @param q        query rows of the group, {@code group * headDim} floats from {@code qOff}
   * @param qOff     offset of the first query head's row
   * @param position the query's position: slots up to it are visible
   * @param scale    attention scale, usually {@code 1 / sqrt(headDim)}
   * @param out      output rows, same layout as {@code q}
   * @param outOff   offset of the first output row
   */
  public void decode(HeadStore store, int group, float[] q, int qOff, int position, float scale, float[] out,
      int outOff) {
    one[0] = position;
    attend(store, 1, group, q, qOff, group * d, one, 0, scale, out, outOff, group * d);
  }

  /**
   * Causal attention of {@code tokens} query tokens, each with {@code group} heads, over {@code store}.
   * Row {@code (t, g)} is read from {@code q[qOff + t * qTokenStride + g * headDim]} and written to
   * {@code out[outOff + t * outTokenStride + g * headDim]}.
   *
   * @param store          keys and values of one layer and KV head
   * @param tokens         query tokens
   * @param group          query heads per token that share this KV head
   * @param q              queries
   * @param qOff           offset of token 0, head 0
   * @param qTokenStride   distance between tokens in {@code q}
   * @param positions      query positions, {@code positions[posOff + t]}
   * @param posOff         offset into {@code positions}
   * @param scale          attention scale
   * @param out            outputs
   * @param outOff         offset of token 0, head 0
   * @param outTokenStride distance between tokens in {@code out}
   */
  public void attend(HeadStore store, int tokens, int group, float[] q, int qOff, int qTokenStride,
      int[] positions, int posOff, float scale, float[] out, int outOff, int outTokenStride) {
    attend(store, tokens, group, q, qOff, qTokenStride, positions, posOff, scale, out, outOff, outTokenStride, null, 0);
  }

  /**
   * Decode attention of one token's {@code group} query heads over only the listed pages of
   * {@code store}: the exact attention of a sparse reader once it has chosen what to read.
   *
   * @param store     keys and values of one layer and KV head
   * @param group     query heads sharing this KV head
   * @param q         query rows of the group, {@code group * headDim} floats from {@code qOff}
   * @param qOff      offset of the first query head's row
   * @param position  the query's position
   * @param scale     attention scale
   * @param out       output rows, same layout as {@code q}
   * @param outOff    offset of the first output row
   * @param pageList  page indices to read, each at most once
   * @param pageCount how many entries of {@code pageList} to use
   */
  public void decodePages(HeadStore store, int group, float[] q, int qOff, int position, float scale, float[] out,
      int outOff, int[] pageList, int pageCount) {
    one[0] = position;
    attend(store, 1, group, q, qOff, group * d, one, 0, scale, out, outOff, group * d, pageList, pageCount);
  }

  private void attend(HeadStore store, int tokens, int group, float[] q, int qOff, int qTokenStride, int[] positions,
      int posOff, float scale, float[] out, int outOff, int outTokenStride, int[] pageList, int listed) {
    checkStore(store);
    checkRows(tokens, group, q, qOff, qTokenStride, positions, posOff);
    checkSpan("out", out, outOff, tokens, outTokenStride, group);
    if (pageList != null) {
      if (listed < 0 || listed > pageList.length) {
        throw new IllegalArgumentException("pageCount must be in [0, " + pageList.length + "], got " + listed);
      }
      for (int i = 0; i < listed; i++) {
        if (pageList[i] < 0 || pageList[i] >= store.pageCount()) {
          throw new IllegalArgumentException("pageList[" + i + "] must be a page in [0, " + store.pageCount()
              + "), got " + pageList[i]);
        }
      }
    }
    int tileTokens = Math.max(1, TILE_ROWS / group);
    ensure(Math.min(tokens, tileTokens) * group);
    for (int t0 = 0; t0 < tokens; t0 += tileTokens) {
      int tt = Math.min(tileTokens, tokens - t0);
      int rows = tt * group;
      int minPos = Integer.MAX_VALUE, maxPos = Integer.MIN_VALUE;
      for (int t = 0; t < tt; t++) {
        int pos = positions[posOff + t0 + t];
        minPos = Math.min(minPos, pos);
        maxPos = Math.max(maxPos, pos);
        for (int g = 0; g < group; g++) {
          int r = t * group + g;
          rowPos[r] = pos;
          int src = qOff + (t0 + t) * qTokenStride + g * d;
          for (int c = 0; c < d; c++) {
            qs[r * d + c] = q[src + c] * scale;
          }
        }
      }
      store.prepareQueries(qs, 0, rows, kernels);
      Arrays.fill(m, 0, rows, Float.NEGATIVE_INFINITY);
      Arrays.fill(l, 0, rows, 0f);
      Arrays.fill(o, 0, rows * d, 0f);

      int pages = pageList == null ? store.pageCount() : listed;
      for (int i = 0; i < pages; ) {
        int page = pageList == null ? i : pageList[i];
        int run = pageList == null ? runLength(store, page, pages - page, minPos) : 1;
        if (run > 1) {
          pageRun(store, page, run, rows);
        } else if (store.pageMinPosition(page) <= maxPos) { // else wholly in every row's future, or empty
          page(store, page, rows, minPos);
        }
        i += run;
      }

      for (int t = 0; t < tt; t++) {
        for (int g = 0; g < group; g++) {
          int r = t * group + g;
          int dst = outOff + (t0 + t) * outTokenStride + g * d;
          float inv = l[r] > 0f ? 1f / l[r] : 0f;
          for (int c = 0; c < d; c++) {
            out[dst + c] = o[r * d + c] * inv;
          }
        }
      }
    }
    if (!deferWindowStep) {
      store.attentionDone();
    }
  }

  /**
   * How many pages from {@code page} on form one run: fused pages the store reads together, each seen
   * whole by every row (no empty slot, no position after {@code minPos}); 1 where there is no run.
   */
  private static int runLength(HeadStore store, int page, int remaining, int minPos) {
    if (!(store instanceof HeadStore.FusedPages fp) || !store.fusedPage(page)
        || store.pageMaxPosition(page) > minPos) {
      return 1;
    }
    int limit = fp.runPages(page, Math.min(RUN_PAGES, remaining));
    int n = 1;
    while (n < limit && store.pageMaxPosition(page + n) <= minPos && store.fusedPage(page + n)) {
      n++;
    }
    return n;
  }

  /** One softmax step over a run of {@code n} pages (see {@link #runLength}). */
  private void pageRun(HeadStore store, int page, int n, int rows) {
    HeadStore.FusedPages fp = (HeadStore.FusedPages) store;
    int w = n * P;
    fp.runScores(page, n, rows, s, 0, w, kernels);
    softmaxStep(rows, w);
    fp.runAccumulate(page, n, s, 0, w, rows, o, 0, kernels);
  }

  private void page(HeadStore store, int page, int rows, int minPos) {
    boolean fused = store.fusedPage(page);
    float[] kv = null;
    int kvOff = 0;
    if (fused) {
      ((HeadStore.FusedPages) store).pageScores(page, rows, s, 0, P, kernels);
    } else {
      kv = store.page(page, pageBuf, kernels);
      kvOff = store.pageOffset(page);
      kernels.scores(qs, 0, rows, d, kv, kvOff, P, s, 0, P);
    }
    if (store.pageMaxPosition(page) > minPos) { // else every slot is visible to every row
      mask(store.pagePositions(page), rows);
    }
    softmaxStep(rows, P);
    if (fused) {
      ((HeadStore.FusedPages) store).pageAccumulate(page, s, 0, P, rows, o, 0, kernels);
    } else {
      kernels.accumulate(s, 0, P, rows, kv, kvOff + vOff, P, d, o, 0);
    }
  }

  /**
   * The online softmax over the scores of one step, {@code w} per row with stride {@code w}: the row's
   * running maximum and sum advance, the output is rescaled when the maximum grows, and the scores
   * become the step's weights.
   */
  private void softmaxStep(int rows, int w) {
    for (int r = 0; r < rows; r++) {
      int sr = r * w;
      float pm = kernels.max(s, sr, w);
      float mr = m[r];
      if (pm > mr) {
        if (l[r] > 0f) {
          float f = (float) Math.exp(mr - pm);
          l[r] *= f;
          kernels.scale(o, r * d, d, f);
        }
        mr = pm;
        m[r] = pm;
      }
      if (mr == Float.NEGATIVE_INFINITY) {
        Arrays.fill(s, sr, sr + w, 0f); // nothing visible to this row yet
      } else {
        l[r] += kernels.expAndSum(s, sr, w, mr);
      }
    }
  }

  /** Hides slots that are empty or later than a row's position. */
  private void mask(int[] pos, int rows) {
    for (int r = 0; r < rows; r++) {
      int limit = rowPos[r];
      int sr = r * P;
      for (int j = 0; j < P; j++) {
        if (pos[j] > limit) {
          s[sr + j] = Float.NEGATIVE_INFINITY;
        }
      }
    }
  }

  /**
   * Attention weights (softmax probabilities) that query rows give each slot, summed over tokens:
   * {@code acc[g * accStride + slot] += sum_t A[(t, g)][slot]}. Retention policies score tokens with
   * it (SnapKV's observation window, H2O's accumulated attention). Each row's weights sum to 1 over
   * the visible slots, so each {@code g} gains {@code tokens} in total.
   *
   * @param store        keys of one layer and KV head
   * @param tokens       query tokens
   * @param group        query heads per token sharing this KV head
   * @param q            queries, as in {@link #attend}
   * @param qOff         offset of token 0, head 0
   * @param qTokenStride distance between tokens in {@code q}
   * @param positions    query positions
   * @param posOff       offset into {@code positions}
   * @param scale        attention scale
   * @param acc          accumulators, at least {@code group * accStride} floats
   * @param accStride    distance between heads in {@code acc}, at least {@code store.pageCount() * PAGE_TOKENS}
   */
  public void weights(HeadStore store, int tokens, int group, float[] q, int qOff, int qTokenStride, int[] positions,
      int posOff, float scale, float[] acc, int accStride) {
    checkStore(store);
    checkRows(tokens, group, q, qOff, qTokenStride, positions, posOff);
    if (accStride < store.pageCount() * P) {
      throw new IllegalArgumentException("accStride must be >= slots (" + store.pageCount() * P + "), got " + accStride);
    }
    if (acc == null || (long) group * accStride > acc.length) {
      throw new IllegalArgumentException("acc must hold group * accStride = " + (long) group * accStride
          + " floats, got " + (acc == null ? "null" : "length " + acc.length));
    }
    // Up to WEIGHTS_TOKENS tokens' rows at once (row t * group + g), so each page is read, and for f16
    // widened, once per pass for all of them rather than once per token (SnapKV's window is 8-32
    // tokens). Each slot still adds the tokens' weights in token order. Kernels score rows in tiles of
    // 4 and may round a row of a tile differently from a row left over (SKVQ's fused kernels do), so
    // tokens are taken together only when a group fills whole tiles: every row then sits where it would
    // in a call for its token alone, and the weights are the same bits.
    int perPass = group % 4 == 0 ? WEIGHTS_TOKENS : 1;
    for (int t0 = 0; t0 < tokens; t0 += perPass) {
      weightsBlock(store, Math.min(perPass, tokens - t0), group, q, qOff + t0 * qTokenStride, qTokenStride,
          positions, posOff + t0, scale, acc, accStride);
    }
    if (!deferWindowStep) {
      store.attentionDone();
    }
  }

  /** Query rows, their positions and the group: checked once per call, so a bad one is named here. */
  private void checkRows(int tokens, int group, float[] q, int qOff, int qTokenStride, int[] positions, int posOff) {
    if (tokens < 0) {
      throw new IllegalArgumentException("tokens must be >= 0, got " + tokens);
    }
    if (group < 1) {
      throw new IllegalArgumentException("group must be >= 1, got " + group);
    }
    checkSpan("q", q, qOff, tokens, qTokenStride, group);
    if (positions == null || posOff < 0 || (long) posOff + tokens > positions.length) {
      throw new IllegalArgumentException("positions must hold " + tokens + " ints from offset " + posOff + ", got "
          + (positions == null ? "null" : "length " + positions.length));
    }
  }

  /** Rows {@code (t, g)} at {@code off + t * tokenStride + g * d}, {@code d} floats each. */
  private void checkSpan(String name, float[] a, int off, int tokens, int tokenStride, int group) {
    if (tokens == 0) {
      return;
    }
    long last = (long) off + (long) (tokens - 1) * tokenStride + (long) group * d;
    if (a == null || off < 0 || tokenStride < 0 || last > a.length) {
      throw new IllegalArgumentException(name + " must hold " + tokens + " tokens of " + group + " rows of " + d
          + " floats from offset " + off + " (token stride " + tokenStride + "), got "
          + (a == null ? "null" : "length " + a.length));
    }
  }

  /** A store of another head dimension would be read with this one's strides: plausible garbage. */
  private void checkStore(HeadStore store) {
    if (store.headDim() != d) {
      throw new IllegalArgumentException("store has headDim " + store.headDim() + ", this reader " + d);
    }
  }

  /** {@link #weights} for at most {@link #WEIGHTS_TOKENS} tokens, all of their rows together. */

  private void weightsBlock(HeadStore store, int tokens, int group, float[] q, int qOff, int qTokenStride,
      int[] positions, int posOff, float scale, float[] acc, int accStride) {
    int rows = tokens * group;
    ensure(rows);
    int minPos = Integer.MAX_VALUE;
    int maxPos = Integer.MIN_VALUE;
    for (int t = 0; t < tokens; t++) {
      int pos = positions[posOff + t];
      minPos = Math.min(minPos, pos);
      maxPos = Math.max(maxPos, pos);
      for (int g = 0; g < group; g++) {
        int r = t * group + g;
        rowPos[r] = pos;
        int src = qOff + t * qTokenStride + g * d;
        for (int c = 0; c < d; c++) {
          qs[r * d + c] = q[src + c] * scale;
        }
      }
    }
    store.prepareQueries(qs, 0, rows, kernels);
    // Pass 1: the running maximum and normaliser of each row.
    Arrays.fill(m, 0, rows, Float.NEGATIVE_INFINITY);
    Arrays.fill(l, 0, rows, 0f);
    for (int page = 0; page < store.pageCount(); page++) {
      if (store.pageMinPosition(page) > maxPos) {
        continue;
      }
      scorePage(store, page, rows, minPos);
      for (int r = 0; r < rows; r++) {
        int sr = r * P;
        float pm = kernels.max(s, sr, P);
        if (pm == Float.NEGATIVE_INFINITY) {
          continue;
        }
        if (pm > m[r]) {
          l[r] *= (float) Math.exp(m[r] - pm);
          m[r] = pm;
        }
        l[r] += kernels.expAndSum(s, sr, P, m[r]);
      }
    }
    // Pass 2: normalised probabilities into the accumulators.
    for (int page = 0; page < store.pageCount(); page++) {
      if (store.pageMinPosition(page) > maxPos) {
        continue;
      }
      scorePage(store, page, rows, minPos);
      for (int r = 0; r < rows; r++) {
        if (l[r] == 0f || store.pageMinPosition(page) > rowPos[r]) {
          continue;
        }
        int sr = r * P;
        kernels.expAndSum(s, sr, P, m[r]);
        float inv = 1f / l[r];
        int base = (r % group) * accStride + page * P;
        for (int j = 0; j < P; j++) {
          acc[base + j] += s[sr + j] * inv;
        }
      }
    }
  }

  private void scorePage(HeadStore store, int page, int rows, int pos) {
    if (store.fusedPage(page)) {
      ((HeadStore.FusedPages) store).pageScores(page, rows, s, 0, P, kernels);
    } else {
      float[] kv = store.page(page, pageBuf, kernels);
      kernels.scores(qs, 0, rows, d, kv, store.pageOffset(page), P, s, 0, P);
    }
    if (store.pageMaxPosition(page) > pos) {
      mask(store.pagePositions(page), rows);
    }
  }

  private void ensure(int rows) {
    if (qs.length < rows * d) {
      qs = new float[rows * d];
      o = new float[rows * d];
      s = new float[rows * P * RUN_PAGES];
      m = new float[rows];
      l = new float[rows];
      rowPos = new int[rows];
    }
  }
}
