package io.kvcache.codec;

import java.util.Arrays;
import java.util.function.IntFunction;

/**
 * Where the pages of a store live: page {@code p} is {@code pageLen} elements of {@link #array}
 * from {@link #base}. The pages of one {@link HeadStore#reserve reservation} share one block, the
 * others have an array each. Why blocks: a collector that copies live objects with parallel workers
 * (G1, Parallel) scatters pages that are separate arrays across the heap, and decode then reads a KV
 * head's pages in an order the hardware prefetcher cannot follow; a block moves as one object.
 * Blocks hold at most {@link #MAX_BLOCK_BYTES}: a longer reservation takes several, each allocated when
 * the appends reach it, and none is large enough to be a humongous object for G1 (half a region, and
 * regions are at least 1 MiB), which would pad it to whole regions.
 *
 * @param <A> the primitive array type of a page ({@code short[]}, {@code float[]})
 */
final class PageBlocks<A> {

  /** Largest block, in bytes. */
  static final int MAX_BLOCK_BYTES = 256 * 1024;

  private final IntFunction<A> newArray;
  private final int pageLen;
  private final int blockPages;
  private Object[] arrays = new Object[4];
  private int[] base = new int[4];
  private int reservedFirst;
  private int reservedCount; // 0: no reservation
  private A block; // the reservation's current block
  private int blockFirst; // its first page
  private int blockCount;

  /**
   * @param newArray     makes an array of the given length
   * @param pageLen      elements per page
   * @param elementBytes bytes per element
   */
  PageBlocks(IntFunction<A> newArray, int pageLen, int elementBytes) {
    this.newArray = newArray;
    this.pageLen = pageLen;
    this.blockPages = Math.max(1, MAX_BLOCK_BYTES / (pageLen * elementBytes));
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
    block = null;
  }

  /** {@link HeadStore#allocate}: the reservation's next page, or an array of its own. */
  void allocate(int page) {
    if (page == arrays.length) {
      arrays = Arrays.copyOf(arrays, page * 2);
      base = Arrays.copyOf(base, page * 2);
    }
    int k = page - reservedFirst;
    if (k < 0 || k >= reservedCount) {
      dropReservation(); // none, or one the appends did not follow
      arrays[page] = newArray.apply(pageLen);
      base[page] = 0;
      return;
    }
    if (block == null || page >= blockFirst + blockCount) {
      blockFirst = page;
      blockCount = Math.min(blockPages, reservedCount - k);
      block = newArray.apply(blockCount * pageLen);
    }
    arrays[page] = block;
    base[page] = (page - blockFirst) * pageLen;
    if (k == reservedCount - 1) {
      dropReservation();
    }
  }

  private void dropReservation() {
    reservedCount = 0;
    block = null;
  }

  /** {@link HeadStore#release}. */
  void release(int page) {
    arrays[page] = null;
  }

  /**
   * {@link HeadStore#compacted}: the first {@code pages} pages survived, and their blocks may also hold
   * released pages, which would stay allocated; copies the survivors into new blocks of their size.
   */
  void compacted(int pages) {
    dropReservation();
    for (int first = 0; first < pages; first += blockPages) {
      int n = Math.min(blockPages, pages - first);
      A copy = newArray.apply(n * pageLen);
      for (int p = first; p < first + n; p++) {
        System.arraycopy(arrays[p], base[p], copy, (p - first) * pageLen, pageLen);
        arrays[p] = copy;
        base[p] = (p - first) * pageLen;
      }
    }
  }

  /**
   * @param pages pages allocated ({@link HeadStore#pageCount})
   * @return pages of the current block not allocated yet: memory held, not in use
   */
  int pending(int pages) {
    return block == null ? 0 : blockFirst + blockCount - pages;
  }
}
