package io.kvcache.codec;

import io.kvcache.kernel.AttentionKernels;
import java.util.Arrays;

/**
 * The paged keys and values of one layer and KV head.
 *
 * <p>Tokens live in <em>slots</em>; slot {@code s} is entry {@code s % PAGE_TOKENS} of page
 * {@code s / PAGE_TOKENS}. An append fills a free slot (one freed by {@link #evict}, or the next fresh
 * one, allocating a page every {@link #PAGE_TOKENS} tokens), so it never copies the cache. Every slot
 * carries the token's original position; an empty or evicted slot carries {@link #EMPTY}, which is
 * larger than every query position, so the kernels' causal mask hides it with no extra test.
 *
 * <p>Attention is invariant under the order of the keys (positions are already rotated into K by
 * RoPE), so slot order does not matter; retention policies evict by slot and may {@link #compact} to
 * return whole pages.
 *
 * <p>Subclasses decide the encoding of a page; {@link #page} gives a page's keys (transposed) and
 * values (in column blocks, {@link AttentionKernels#valueIndex}) as floats, decoding into a
 * caller-provided buffer where the encoding is not f32.
 * Not thread-safe: one thread at a time.
 */
public abstract class HeadStore {

  /** Tokens per page. A multiple of every vector width the kernels use (4, 8, 16 floats). */
  public static final int PAGE_TOKENS = 16;

  /** The position of an empty or evicted slot. */
  public static final int EMPTY = Integer.MAX_VALUE;

  /** Channels per head. */
  protected final int headDim;

  private int[][] positions = new int[4][];
  private int[] pageMinPos = new int[4];
  private int[] pageMaxPos = new int[4];
  private int[] pageVersion = new int[4];
  private int pages;
  private int fresh; // next never-used slot
  private int live;
  private int[] freeSlots = new int[16];
  private int freeCount;
  // Versions of page indices whose entries a compaction dropped stay below this, so that a page added
  // again at such an index never repeats a version a reader may have cached for the one released there.
  private int versionFloor;

  /**
   * @param headDim channels per head, at least 1
   */
  protected HeadStore(int headDim) {
    if (headDim < 1) {
      throw new IllegalArgumentException("headDim must be >= 1, got " + headDim);
    }
    this.headDim = headDim;
  }

  /** @return channels per head */
  public final int headDim() {
    return headDim;
  }

  /** @return tokens held (live slots) */
  public final int size() {
    return live;
  }

  /** @return pages allocated; slots {@code [0, pageCount() * PAGE_TOKENS)} exist */
  public final int pageCount() {
    return pages;
  }

  /**
   * @param slot a slot below {@code pageCount() * PAGE_TOKENS}
   * @return the original position of the token in {@code slot}, or {@link #EMPTY}
   */
  public final int position(int slot) {
    return positions[slot / PAGE_TOKENS][slot % PAGE_TOKENS];
  }

  /**
   * The positions of one page's slots, for the kernels' mask. Do not modify.
   *
   * @param page a page index
   * @return {@link #PAGE_TOKENS} positions ({@link #EMPTY} where no token is)
   */
  public final int[] pagePositions(int page) {
    return positions[page];
  }

  /**
   * Smallest position in a page, {@link #EMPTY} when the page holds no token: a query at position
   * {@code p} can skip every page whose minimum exceeds {@code p}.
   *
   * @param page a page index
   * @return the smallest live position
   */
  public final int pageMinPosition(int page) {
    return pageMinPos[page];
  }

  /**
   * Largest position over a page's slots, an empty slot counting as {@link #EMPTY}: a query at
   * position {@code p} sees every slot of a page whose maximum is at most {@code p}, so its mask has
   * nothing to hide. Kept with the pages' other summaries in one array per store: reading it costs no
   * access to the page's own positions, which sit apart in the heap and, in a decode over a long
   * context, have left the caches since the previous step.
   *
   * @param page a page index
   * @return the largest position, {@link #EMPTY} while any slot is empty
   */
  public final int pageMaxPosition(int page) {
    return pageMaxPos[page];
  }

  /**
   * A counter that changes whenever a page's contents change (append, evict, compaction, a codec
   * re-encoding slots in place), so that readers can cache per-page summaries and know when to refresh
   * them.
   *
   * @param page a page index
   * @return the page's version
   */
  public final int pageVersion(int page) {
    return pageVersion[page];
  }

  /**
   * Says that a page's contents changed other than by an append, eviction or compaction (a codec
   * that re-encodes slots in place, as SKVQ quantizing a token that left its window), so that
   * {@link #pageVersion} moves and readers refresh what they cached of the page.
   *
   * @param page a page index
   */
  protected final void contentChanged(int page) {
    pageVersion[page]++;
  }

  /**
   * Stores one token. The caller has checked that {@code k} and {@code v} are finite.
   *
   * @param k        key row (after RoPE)
   * @param kOff     offset of the key's first channel
   * @param v        value row
   * @param vOff     offset of the value's first channel
   * @param position the token's original position, {@code >= 0} and not {@link #EMPTY}
   * @return the slot it went to
   * @throws IllegalArgumentException when the codec cannot represent a value, or for a negative or
   *     {@link #EMPTY} position
   */
  public final int append(float[] k, int kOff, float[] v, int vOff, int position) {
    // One int compare per token: an EMPTY position would count in size() but never be attended.
    if (position < 0 || position == EMPTY) {
      throw new IllegalArgumentException("position must be in [0, " + EMPTY + "), got " + position);
    }
    // Before a slot is taken: a bad offset must leave the store as it was.
    io.kvcache.core.Checks.span("k", k, kOff, headDim);
    io.kvcache.core.Checks.span("v", v, vOff, headDim);
    checkEncodable(k, kOff, v, vOff);
    int slot;
    if (freeCount > 0) {
      slot = freeSlots[--freeCount];
    } else {
      slot = fresh++;
      if (slot / PAGE_TOKENS == pages) {
        addPage();
      }
    }
    int page = slot / PAGE_TOKENS;
    int idx = slot % PAGE_TOKENS;
    write(page, idx, k, kOff, v, vOff);
    positions[page][idx] = position;
    refreshBounds(page); // 16 ints just written: the page's last empty slot may have been this one
    pageVersion[page]++;
    live++;
    return slot;
  }

  /**
   * Says that the next {@code tokens} appends come together (a prefill chunk), so that the store can
   * give the pages they will open shared blocks of memory (the f16 and f32 stores: blocks of at most
   * 256 KiB, each allocated when the appends reach its first page, and counted whole in
   * {@link #payloadBytes} from then on; pages not yet reached cost nothing). Nothing else changes:
   * slots, pages and results are what they would be without the hint, and a store may ignore it (the
   * default; also when the appends open fewer than two pages). Why it matters: pages allocated one by
   * one are separate arrays, and a collector that copies them with parallel workers (G1, Parallel)
   * scatters them across the heap; a decode step then reads a KV head's pages in no order the hardware
   * prefetcher can follow, and on a 2-core Zen 3 f16 decode from memory ran 1.3-1.4x slower (see
   * docs/benchmarks.md). Without the hint (decode's appends) the f16 and f32 stores copy each eight
   * such pages in a row into one block once the next page opens, which holds nothing ahead.
   *
   * @param tokens appends that follow, at least 0
   * @throws IllegalArgumentException for a negative count
   */
  public final void reserve(int tokens) {
    if (tokens < 0) {
      throw new IllegalArgumentException("tokens must be >= 0, got " + tokens);
    }
    long slots = (long) tokens - freeCount; // appends fill freed slots first
    if (slots <= 0) {
      return;
    }
    long newPages = (fresh + slots - 1) / PAGE_TOKENS + 1 - pages;
    if (newPages >= 2) {
      reservePages(pages, (int) Math.min(newPages, Integer.MAX_VALUE / PAGE_TOKENS));
    }
  }

  /**
   * Removes the token in {@code slot}; its slot is reused by a later append.
   *
   * @param slot a slot that holds a token
   * @throws IllegalArgumentException when the slot is out of range or empty
   */
  public final void evict(int slot) {
    if (slot < 0 || slot >= pages * PAGE_TOKENS || position(slot) == EMPTY) {
      throw new IllegalArgumentException("slot must hold a token, got slot " + slot + " (pages " + pages + ")");
    }
    int page = slot / PAGE_TOKENS;
    positions[page][slot % PAGE_TOKENS] = EMPTY;
    refreshBounds(page);
    pageVersion[page]++;
    if (freeCount == freeSlots.length) {
      freeSlots = Arrays.copyOf(freeSlots, freeCount * 2);
    }
    freeSlots[freeCount++] = slot;
    live--;
  }

  /**
   * Moves tokens from the last pages into free slots and releases the pages left empty, so that a
   * store that evicted many tokens holds {@code ceil(size() / PAGE_TOKENS)} pages.
   */
  public final void compact() {
    int target = (live + PAGE_TOKENS - 1) / PAGE_TOKENS;
    int dst = 0;
    int limit = pages * PAGE_TOKENS;
    for (int src = limit - 1; src >= target * PAGE_TOKENS; src--) {
      if (position(src) == EMPTY) {
        continue;
      }
      while (position(dst) != EMPTY) {
        dst++;
      }
      int sp = src / PAGE_TOKENS, si = src % PAGE_TOKENS;
      int dp = dst / PAGE_TOKENS, di = dst % PAGE_TOKENS;
      move(sp, si, dp, di);
      positions[dp][di] = positions[sp][si];
      positions[sp][si] = EMPTY;
      pageVersion[dp]++;
      pageVersion[sp]++;
      dst++;
    }
    boolean released = target < pages;
    for (int p = target; p < pages; p++) {
      release(p);
      positions[p] = null;
    }
    pages = target;
    if (released) {
      compacted();
    }
    fresh = pages * PAGE_TOKENS;
    freeCount = 0;
    for (int p = 0; p < pages; p++) {
      refreshBounds(p);
      pageVersion[p]++;
    }
    // What was sized for the pages and evictions before the compaction goes with them: fewer than
    // PAGE_TOKENS holes remain, and the per-page arrays keep room for twice the pages held at most.
    if (freeSlots.length > 2 * PAGE_TOKENS) {
      freeSlots = new int[PAGE_TOKENS];
    }
    int cap = Math.max(4, pages);
    if (positions.length > 2 * cap) {
      for (int p = cap; p < pageVersion.length; p++) {
        versionFloor = Math.max(versionFloor, pageVersion[p] + 1);
      }
      positions = Arrays.copyOf(positions, cap);
      pageMinPos = Arrays.copyOf(pageMinPos, cap);
      pageMaxPos = Arrays.copyOf(pageMaxPos, cap);
      pageVersion = Arrays.copyOf(pageVersion, cap);
    }
    // Holes left below the last page (fewer tokens than holes above) stay reusable.
    for (int slot = fresh - 1; slot >= 0; slot--) {
      if (position(slot) == EMPTY) {
        if (freeCount == freeSlots.length) {
          freeSlots = Arrays.copyOf(freeSlots, freeCount * 2);
        }
        freeSlots[freeCount++] = slot;
      }
    }
  }

  /**
   * Copies one stored key, decoded to floats, into {@code dst}.
   *
   * @param slot a slot holding a token
   * @param dst  destination
   * @param off  offset of channel 0
   */
  public abstract void readKey(int slot, float[] dst, int off);

  /**
   * Copies one stored value, decoded to floats, into {@code dst}.
   *
   * @param slot a slot holding a token
   * @param dst  destination
   * @param off  offset of channel 0
   */
  public abstract void readValue(int slot, float[] dst, int off);

  /**
   * One page's keys and values as floats, in one array from {@code o = pageOffset(page)}: the keys
   * transposed, {@code kT[o + c * PAGE_TOKENS + j]}, then the values {@link #valuesOffset()} further on
   * in column blocks, {@code v[o + valuesOffset() + AttentionKernels.valueIndex(j, c, headDim,
   * PAGE_TOKENS)]}. Keys and values of a page sit side by side so a decode step streams through memory
   * in one direction.
   *
   * @param page    a page index
   * @param buf     a buffer of {@code 2 * headDim * PAGE_TOKENS} floats the store may decode into
   * @param kernels the kernels that decode (scalar or vector), so a caller picks one path end to end
   * @return {@code buf}, or the array holding the page when it is stored as f32 (read it, do not write
   *     it); the page starts at {@link #pageOffset} in it
   */
  public abstract float[] page(int page, float[] buf, AttentionKernels kernels);

  /**
   * Where {@link #page} puts the page in the array it returns: 0 for a store that decodes into the
   * caller's buffer (the default), the page's place in its block for one that returns its own array.
   *
   * @param page a page index
   * @return offset of the page's first key element
   */
  public int pageOffset(int page) {
    return 0;
  }

  /**
   * Whether attention must score and accumulate {@code page} through the store's
   * {@link FusedPages} instead of reading floats from {@link #page}: true for pages a codec
   * attends to in its own encoding (SKVQ's quantized pages, read from their codes without a float
   * copy; f16 pages read in place by a decode tile); only a store that implements {@link FusedPages}
   * may return true. The default, false, keeps every page on the float path. The answer may depend on
   * the tile: ask only after {@link #prepareQueries} for the current tile.
   *
   * @param page a page index
   * @return true to use the store's own page kernels
   */
  public boolean fusedPage(int page) {
    return false;
  }

  /**
   * Called by attention before it scores pages with the query rows of one tile, so a store with
   * {@link #fusedPage fused pages} can prepare them once (SKVQ permutes them into its channel order;
   * f16 scales them for its in-place kernels). The rows stay valid, unchanged, until the next call;
   * {@link #fusedPage} and the {@link FusedPages} methods refer to the last call's tile. Default:
   * nothing.
   *
   * @param q       query rows, packed, already multiplied by the attention scale
   * @param qOff    offset of row 0
   * @param rows    number of rows
   * @param kernels the caller's kernels (scalar or vector)
   */
  public void prepareQueries(float[] q, int qOff, int rows, AttentionKernels kernels) {}

  /**
   * Called after attention has read the store (a prefill chunk's or a decode step's attention, or a
   * weights pass): a store with deferred work does it here. SKVQ moves the pages that have left its
   * full-precision window into quantized storage, so that a prefill chunk attends to its own tokens at
   * full precision, as the method prescribes. Under policies that act at the end of the prompt,
   * {@code PagedKVCache} defers the call to the layer's next append (and to the end of the prompt, and
   * to {@code stats()}), so that layers sharing a cache attend to the same store
   * ({@link io.kvcache.reader.PagedAttention#deferWindowStep}). Calling it again with nothing new is
   * harmless. Default: nothing.
   */
  public void attentionDone() {}

  /** @return where a page's values start, from the page's start: {@code headDim * PAGE_TOKENS} */
  public final int valuesOffset() {
    return headDim * PAGE_TOKENS;
  }

  /**
   * Where a page's array keeps token {@code idx}'s value channel {@code c}.
   *
   * @param idx the token's index within its page
   * @param c   the channel
   * @return the value's offset from the page's start
   */
  protected final int valueAt(int idx, int c) {
    return valuesOffset() + AttentionKernels.valueIndex(idx, c, headDim, PAGE_TOKENS);
  }

  /**
   * Where token {@code idx}'s values from channel {@code b} on start in a page's array: a token's
   * values lie in one run per column block ({@link AttentionKernels#valueIndex}) of
   * {@link #valueRunLength(int)} channels.
   *
   * @param idx the token's index within its page
   * @param b   the block's first channel, a multiple of {@link AttentionKernels#VALUE_BLOCK}
   * @return the run's offset from the page's start
   */
  protected final int valueRunStart(int idx, int b) {
    return valuesOffset() + b * PAGE_TOKENS + idx * valueRunLength(b);
  }

  /**
   * @param b a block's first channel, a multiple of {@link AttentionKernels#VALUE_BLOCK}
   * @return channels in that block: {@link AttentionKernels#VALUE_BLOCK}, or fewer for the last block
   */
  protected final int valueRunLength(int b) {
    return Math.min(AttentionKernels.VALUE_BLOCK, headDim - b);
  }

  /**
   * Bytes of key and value payload held: every allocated page, full or not, as its codec encodes it,
   * and the pages of a block that {@link #reserve} made and the appends have not reached yet.
   *
   * @return payload bytes
   */
  public abstract long payloadBytes();

  /**
   * Bytes of bookkeeping held: one int position per allocated slot.
   *
   * @return metadata bytes
   */
  public long metadataBytes() {
    return (long) pages * PAGE_TOKENS * Integer.BYTES;
  }

  /**
   * Throws when the codec cannot represent a value of {@code k} or {@code v}; stores nothing. The
   * cache calls it for a whole chunk before appending anything, so a rejected chunk changes nothing.
   *
   * @param k    key row
   * @param kOff key offset
   * @param v    value row
   * @param vOff value offset
   */
  public void checkEncodable(float[] k, int kOff, float[] v, int vOff) {}

  /**
   * Allocates the payload of page {@code page} (the next one).
   *
   * @param page the new page's index
   */
  protected abstract void allocate(int page);

  /**
   * Frees the payload of page {@code page}.
   *
   * @param page a page index
   */
  protected abstract void release(int page);

  /**
   * The hint of {@link #reserve}: pages {@code first} to {@code first + count - 1} are the next ones
   * {@link #allocate} will be asked for, in order. The default does nothing.
   *
   * @param first the next page's index ({@link #pageCount()})
   * @param count pages, at least 2
   */
  protected void reservePages(int first, int count) {}

  /**
   * Called at the end of a {@link #compact} that released pages, so that a store which gave several
   * pages one block can copy the survivors out of blocks that released pages would otherwise keep
   * alive. The default does nothing.
   */
  protected void compacted() {}

  /**
   * Encodes one token into entry {@code idx} of page {@code page}.
   *
   * @param page page index
   * @param idx  entry in the page
   * @param k    key row
   * @param kOff key offset
   * @param v    value row
   * @param vOff value offset
   */
  protected abstract void write(int page, int idx, float[] k, int kOff, float[] v, int vOff);

  /**
   * Moves one encoded token between entries.
   *
   * @param fromPage source page
   * @param fromIdx  source entry
   * @param toPage   destination page
   * @param toIdx    destination entry
   */
  protected abstract void move(int fromPage, int fromIdx, int toPage, int toIdx);

  private void addPage() {
    if (pages == positions.length) {
      int n = pages * 2;
      positions = Arrays.copyOf(positions, n);
      pageMinPos = Arrays.copyOf(pageMinPos, n);
      pageMaxPos = Arrays.copyOf(pageMaxPos, n);
      pageVersion = Arrays.copyOf(pageVersion, n);
    }
    int[] pos = new int[PAGE_TOKENS];
    Arrays.fill(pos, EMPTY);
    positions[pages] = pos;
    pageMinPos[pages] = EMPTY;
    pageMaxPos[pages] = EMPTY;
    pageVersion[pages] = Math.max(pageVersion[pages], versionFloor);
    allocate(pages);
    pages++;
  }

  private void refreshBounds(int page) {
    int lo = EMPTY, hi = Integer.MIN_VALUE;
    for (int p : positions[page]) {
      lo = Math.min(lo, p);
      hi = Math.max(hi, p);
    }
    pageMinPos[page] = lo;
    pageMaxPos[page] = hi;
  }

  /**
   * Attention kernels over a store's own page encoding, for the pages where {@link #fusedPage} is
   * true. A store implements this interface exactly when it can have such pages (SKVQ, f16). Both
   * methods act on the tile last passed to {@link #prepareQueries}, with at most that many rows.
   */
  public interface FusedPages {

    /**
     * Scores of the prepared query rows against a fused page, as {@link AttentionKernels#scores}
     * computes them for a float page: {@code s[sOff + r * sStride + j] = q_r . k_j}. Masking is the
     * caller's.
     *
     * @param page    a page for which {@link #fusedPage} is true
     * @param rows    the rows last passed to {@link #prepareQueries}
     * @param s       output scores
     * @param sOff    offset of row 0's first score
     * @param sStride distance between rows in {@code s}
     * @param kernels the caller's kernels
     */
    void pageScores(int page, int rows, float[] s, int sOff, int sStride, AttentionKernels kernels);

    /**
     * Adds the weighted values of a fused page to output rows, as {@link AttentionKernels#accumulate}
     * does for a float page: {@code o[oOff + r * headDim + c] += sum_j p[pOff + r * pStride + j] * v_j[c]}.
     *
     * @param page    a page for which {@link #fusedPage} is true
     * @param p       weights
     * @param pOff    offset of row 0's first weight
     * @param pStride distance between rows in {@code p}
     * @param rows    number of rows
     * @param o       output rows, packed, natural channel order
     * @param oOff    offset of row 0
     * @param kernels the caller's kernels
     */
    void pageAccumulate(int page, float[] p, int pOff, int pStride, int rows, float[] o, int oOff,
        AttentionKernels kernels);

    /**
     * How many pages from {@code page} on {@link #runScores} and {@link #runAccumulate} read as one
     * run: pages whose keys, and whose values, lie one after another in memory, so that a decode step
     * can take one softmax step for all of them and still read memory front to back. Default 1.
     *
     * @param page  a page for which {@link #fusedPage} is true
     * @param limit the most pages the caller takes, {@code >= 1}
     * @return a count in {@code [1, limit]}
     */
    default int runPages(int page, int limit) {
      return 1;
    }

    /**
     * {@link #pageScores} of {@code pages} consecutive pages, page {@code page + i}'s scores from
     * column {@code i * PAGE_TOKENS} of each row.
     *
     * @param page    the first page; {@code pages <= runPages(page, pages)}
     * @param pages   number of pages
     * @param rows    the rows last passed to {@link #prepareQueries}
     * @param s       output scores
     * @param sOff    offset of row 0's first score
     * @param sStride distance between rows in {@code s}, at least {@code pages * PAGE_TOKENS}
     * @param kernels the caller's kernels
     */
    default void runScores(int page, int pages, int rows, float[] s, int sOff, int sStride, AttentionKernels kernels) {
      for (int i = 0; i < pages; i++) {
        pageScores(page + i, rows, s, sOff + i * PAGE_TOKENS, sStride, kernels);
      }
    }

    /**
     * {@link #pageAccumulate} of {@code pages} consecutive pages, page {@code page + i}'s weights from
     * column {@code i * PAGE_TOKENS} of each row.
     *
     * @param page    the first page; {@code pages <= runPages(page, pages)}
     * @param pages   number of pages
     * @param p       weights
     * @param pOff    offset of row 0's first weight
     * @param pStride distance between rows in {@code p}
     * @param rows    number of rows
     * @param o       output rows, packed, natural channel order
     * @param oOff    offset of row 0
     * @param kernels the caller's kernels
     */
    default void runAccumulate(int page, int pages, float[] p, int pOff, int pStride, int rows, float[] o, int oOff,
        AttentionKernels kernels) {
      for (int i = 0; i < pages; i++) {
        pageAccumulate(page + i, p, pOff + i * PAGE_TOKENS, pStride, rows, o, oOff, kernels);
      }
    }
  }
}
