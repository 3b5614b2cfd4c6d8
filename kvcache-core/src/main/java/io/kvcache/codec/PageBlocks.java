package io.kvcache.codec;

import java.util.Arrays;
import java.util.function.IntFunction;

/**
 * Where the pages of a store live: page {@code p} is {@code pageLen} elements of {@link #array}
 * from {@link #base}. The pages of one {@link HeadStore#reserve reservation} share one block, the
 * others have an array each. Why blocks: a collector that copies live objects with parallel workers
 * (G1, Parallel) scatters pages that are separate arrays across the heap, and decode then reads a KV
 * head's pages in an order the hardware prefetcher cannot follow; a block moves as one object.
 *
 * @param <A> the primitive array type of a page ({@code short[]}, {@code float[]})
 */
final class PageBlocks<A> {

  private final IntFunction<A> newArray;
  private final int pageLen;
  private Object[] arrays = new Object[4];
  private int[] base = new int[4];
  private A reserved; // the block of a reservation not yet wholly allocated
  private int reservedFirst;
  private int reservedCount;

  /**
   * @param newArray makes an array of the given length
   * @param pageLen  elements per page
   */
  PageBlocks(IntFunction<A> newArray, int pageLen) {
    this.newArray = newArray;
    this.pageLen = pageLen;
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

  /** {@link HeadStore#reservePages}: one block for pages {@code first .. first + count - 1}. */
  void reserve(int first, int count) {
    reserved = newArray.apply(Math.multiplyExact(count, pageLen));
    reservedFirst = first;
    reservedCount = count;
  }

  /** {@link HeadStore#allocate}: the reservation's next page, or an array of its own. */
  void allocate(int page) {
    if (page == arrays.length) {
      arrays = Arrays.copyOf(arrays, page * 2);
      base = Arrays.copyOf(base, page * 2);
    }
    int k = page - reservedFirst;
    if (reserved != null && k >= 0 && k < reservedCount) {
      arrays[page] = reserved;
      base[page] = k * pageLen;
      if (k == reservedCount - 1) {
        reserved = null;
      }
    } else {
      reserved = null; // a reservation the appends did not follow
      arrays[page] = newArray.apply(pageLen);
      base[page] = 0;
    }
  }

  /** {@link HeadStore#release}. */
  void release(int page) {
    arrays[page] = null;
  }

  /**
   * {@link HeadStore#compacted}: the first {@code pages} pages survived, and their blocks may also hold
   * released pages, which would stay allocated; copies the survivors into one new block.
   */
  void compacted(int pages) {
    reserved = null;
    if (pages == 0) {
      return;
    }
    A block = newArray.apply(Math.multiplyExact(pages, pageLen));
    for (int p = 0; p < pages; p++) {
      System.arraycopy(arrays[p], base[p], block, p * pageLen, pageLen);
      arrays[p] = block;
      base[p] = p * pageLen;
    }
  }

  /**
   * @param pages pages allocated ({@link HeadStore#pageCount})
   * @return pages of a pending reservation not allocated yet: memory held, not in use
   */
  int pending(int pages) {
    return reserved == null ? 0 : reservedCount - (pages - reservedFirst);
  }
}
