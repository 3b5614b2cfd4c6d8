package io.kvcache.codec;

import java.util.Arrays;
import java.util.IdentityHashMap;
import java.util.function.IntFunction;

/**
 * Where the pages of a store live: page {@code p} is {@code pageLen} elements of {@link #array}
 * from {@link #base}. The pages of a {@link HeadStore#reserve reservation} share blocks, and a page
 * allocated while the last block still has room takes its next page; the others (pages that decode
 * opens one token at a time) start as an array each, and every {@link #MERGE_PAGES} of them in a row
 * (fewer for large pages) are then copied into one block, so that no memory is held ahead of the
 * appends. Why blocks: a collector that copies live objects with parallel workers (G1, Parallel)
 * scatters pages that are separate arrays across the heap, and decode then reads a KV head's pages in
 * an order the hardware prefetcher cannot follow; a block moves as one object. Blocks hold at most {@link #MAX_BLOCK_BYTES}: a longer reservation takes several, each allocated when
 * the appends reach it, and none is large enough to be a humongous object for G1 (half a region, and
 * regions are at least 1 MiB), which would pad it to whole regions.
 *
 * @param <A> the primitive array type of a page ({@code short[]}, {@code float[]})
 */
final class PageBlocks<A> {

  /** Largest block, in bytes. */
  static final int MAX_BLOCK_BYTES = 256 * 1024;

  /**
   * Pages with an array each that are merged into one block once that many follow one another (fewer
   * where a block of {@link #MAX_BLOCK_BYTES} holds fewer; none where it holds one page): 128 tokens,
   * 64 KiB of f16 at head dim 128. A copy of that size every 128 decode steps costs far less than the
   * steps' reads. Every KV head of every layer opens its pages in the same decode steps, so a model's
   * stores all merge in one step: for 32 layers of 8 KV heads, 16 MiB copied once every 128 steps.
   */
  static final int MERGE_PAGES = 8;

  private final IntFunction<A> newArray;
  private final int pageLen;
  private final int blockPages;
  private final int mergePages; // min(MERGE_PAGES, blockPages)
  private Object[] arrays = new Object[4];
  private int[] base = new int[4];
  private int reservedFirst;
  private int reservedCount; // 0: no reservation
  private A block; // the last block made: pages blockFirst .. blockFirst + blockCount - 1, some maybe not yet allocated
  private int blockFirst; // its first page
  private int blockCount;
  private int singles; // pages with an array each, in a row, ending at the last allocated page

  /**
   * @param newArray     makes an array of the given length
   * @param pageLen      elements per page
   * @param elementBytes bytes per element
   */
  PageBlocks(IntFunction<A> newArray, int pageLen, int elementBytes) {
    this.newArray = newArray;
    this.pageLen = pageLen;
    this.blockPages = Math.max(1, MAX_BLOCK_BYTES / (pageLen * elementBytes));
    this.mergePages = Math.min(MERGE_PAGES, blockPages);
  }

  /** @return the array holding page {@code page} */
  @SuppressWarnings("unchecked")
  A array(int page) {
    return (A) arrays[page];
  }

  /** @return where page {@code page} starts in its array */
  int base(int page) {
    return base[page];
  }

  /** {@link HeadStore#reservePages}: pages {@code first .. first + count - 1} go into shared blocks. */
  void reserve(int first, int count) {
    reservedFirst = first;
    reservedCount = count;
  }

  /**
   * {@link HeadStore#allocate}: the current block's next page while it has one (whether or not a
   * reservation still covers it: its pages are held either way), else a new block for a reserved page,
   * else an array of its own; when the {@link #MERGE_PAGES} pages before it (fewer for large pages)
   * have an array each, they are first copied into one block.
   */
  void allocate(int page) {
    if (page == arrays.length) {
      arrays = Arrays.copyOf(arrays, page * 2);
      base = Arrays.copyOf(base, page * 2);
    }
    if (block == null || page >= blockFirst + blockCount) {
      block = null;
      int k = page - reservedFirst;
      if (k < 0 || k >= reservedCount) {
        A own = newArray.apply(pageLen);
        if (singles == mergePages && mergePages > 1) {
          merge(page - mergePages);
          singles = 0;
        }
        arrays[page] = own;
        base[page] = 0;
        singles++;
        return;
      }
      int n = Math.min(blockPages, reservedCount - k);
      A fresh = newArray.apply(n * pageLen); // before any field changes: a failed allocation leaves no trace
      block = fresh;
      blockFirst = page;
      blockCount = n;
    }
    arrays[page] = block;
    base[page] = (page - blockFirst) * pageLen;
    singles = 0;
  }

  /**
   * Copies pages {@code first .. first + mergePages - 1} into one block, where each still has an array
   * of its own (a compaction resets the count of such pages, so this holds; checked rather than
   * assumed, since a page that shares an array would keep that array alive).
   */
  private void merge(int first) {
    for (int p = first; p < first + mergePages; p++) {
      if (arrays[p] == null || java.lang.reflect.Array.getLength(arrays[p]) != pageLen) {
        return;
      }
    }
    copyIntoBlock(first, first + mergePages);
  }

  /**
   * Copies pages {@code from .. to - 1} into one new block and points them at it. The block is
   * allocated before any field changes: a failed allocation leaves the pages where they were.
   */
  private void copyIntoBlock(int from, int to) {
    A copy = newArray.apply((to - from) * pageLen);
    for (int q = from; q < to; q++) {
      System.arraycopy(arrays[q], base[q], copy, (q - from) * pageLen, pageLen);
      arrays[q] = copy;
      base[q] = (q - from) * pageLen;
    }
  }

  /** {@link HeadStore#release}. */
  void release(int page) {
    arrays[page] = null;
  }

  /**
   * {@link HeadStore#compacted}: the first {@code pages} pages survived. An array that held a released
   * page, or pages not yet allocated, would keep them allocated: the survivors in such arrays are copied
   * into new blocks (at most {@link #MAX_BLOCK_BYTES} each, consecutive pages together), the others stay.
   */
  void compacted(int pages) {
    block = null;
    reservedCount = 0;
    singles = 0;
    IdentityHashMap<Object, Integer> refs = new IdentityHashMap<>();
    for (int p = 0; p < pages; p++) {
      refs.merge(arrays[p], 1, Integer::sum);
    }
    int p = 0;
    while (p < pages) {
      if (!partlyUsed(arrays[p], refs)) {
        p++;
        continue;
      }
      int end = p;
      while (end < pages && end - p < blockPages && partlyUsed(arrays[end], refs)) {
        end++;
      }
      copyIntoBlock(p, end);
      p = end;
    }
  }

  private boolean partlyUsed(Object array, IdentityHashMap<Object, Integer> refs) {
    Integer n = refs.get(array);
    return n != null && (long) n * pageLen < java.lang.reflect.Array.getLength(array);
  }

  /**
   * @param pages pages allocated ({@link HeadStore#pageCount})
   * @return pages of the current block not allocated yet: memory held, not in use
   */
  int pending(int pages) {
    return block == null ? 0 : Math.max(0, blockFirst + blockCount - pages);
  }
}
