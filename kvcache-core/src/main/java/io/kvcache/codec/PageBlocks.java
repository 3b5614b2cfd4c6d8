package io.kvcache.codec;

import io.kvcache.kernel.AttentionKernels;
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
 * <p><b>Grouped layout</b> (the {@linkplain #PageBlocks(IntFunction, int, int, int) second
 * constructor}): a block's pages form groups of up to {@link #GROUP_PAGES}, and a group holds its
 * pages' keys one after another and then all of its values as one value page of {@code 16 * pages}
 * tokens in column blocks ({@link AttentionKernels#valueIndex}). Decode can then score a group's
 * pages one by one, take one softmax step for the group and add all of its values with one register
 * tile, and still read the group front to back: keys K0 K1 … K7, then values. With the plain layout a
 * page's values follow its keys (K0 V0 K1 V1 …), and a step over several pages jumps back and forth,
 * which the prefetchers do not follow. A page with an array of its own is a group of one, laid out as
 * in the plain layout.
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

  /** Pages per group in the grouped layout: 128 tokens, the same as a merge. */
  static final int GROUP_PAGES = MERGE_PAGES;

  private final IntFunction<A> newArray;
  private final int pageLen;
  private final int blockPages;
  private final int mergePages; // min(MERGE_PAGES, blockPages)
  private final int group; // pages per group: 1 for the plain layout
  private final int headDim; // grouped layout only
  private final int keyLen; // grouped layout only: a page's keys, headDim * PAGE_TOKENS elements
  private Object[] arrays = new Object[4];
  private int[] base = new int[4]; // the page's start (plain) or its keys' start (grouped)
  private int[] valueBase = new int[4]; // grouped: the start of the page's group's value page
  private int[] groupSize = new int[4]; // grouped: pages in the page's group
  private int[] groupIndex = new int[4]; // grouped: the page's index within its group
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
    this(newArray, pageLen, elementBytes, 1, 0);
  }

  /**
   * The grouped layout, for pages of {@code headDim * PAGE_TOKENS} transposed keys and as many values.
   *
   * @param newArray     makes an array of the given length
   * @param headDim      channels per head
   * @param elementBytes bytes per element
   * @param groupPages   pages per group, {@code >= 1}
   */
  PageBlocks(IntFunction<A> newArray, int headDim, int elementBytes, int groupPages) {
    this(newArray, 2 * headDim * HeadStore.PAGE_TOKENS, elementBytes, groupPages, headDim);
  }

  private PageBlocks(IntFunction<A> newArray, int pageLen, int elementBytes, int group, int headDim) {
    this.newArray = newArray;
    this.pageLen = pageLen;
    this.blockPages = Math.max(1, MAX_BLOCK_BYTES / (pageLen * elementBytes));
    this.mergePages = Math.min(MERGE_PAGES, blockPages);
    this.group = group;
    this.headDim = headDim;
    this.keyLen = headDim * HeadStore.PAGE_TOKENS;
  }

  /** @return the array holding page {@code page} */
  @SuppressWarnings("unchecked")
  A array(int page) {
    return (A) arrays[page];
  }

  /** @return where page {@code page} starts in its array; in the grouped layout, where its keys start */
  int base(int page) {
    return base[page];
  }

  /**
   * Grouped layout: where the value page of {@code page}'s group starts in its array. Token {@code j}
   * of the group (page {@code i} of the group holds tokens {@code 16 i .. 16 i + 15}) has channel
   * {@code c} at {@code valueBase + AttentionKernels.valueIndex(j, c, headDim, groupTokens)}.
   *
   * @param page a page
   * @return the offset of the group's value page
   */
  int valueBase(int page) {
    return valueBase[page];
  }

  /** @return grouped layout: pages in {@code page}'s group */
  int groupSize(int page) {
    return groupSize[page];
  }

  /** @return grouped layout: {@code page}'s index in its group */
  int groupIndex(int page) {
    return groupIndex[page];
  }

  /**
   * Grouped layout: where token {@code idx} of {@code page} keeps its values of column block {@code b}
   * ({@code min(VALUE_BLOCK, headDim - b)} consecutive channels).
   *
   * @param page a page
   * @param idx  the token's index in its page
   * @param b    the block's first channel, a multiple of {@link AttentionKernels#VALUE_BLOCK}
   * @return the run's offset in the page's array
   */
  int valueRun(int page, int idx, int b) {
    return valueBase[page] + AttentionKernels.valueIndex(
        groupIndex[page] * HeadStore.PAGE_TOKENS + idx, b, headDim, groupSize[page] * HeadStore.PAGE_TOKENS);
  }

  /** Records that {@code page} is page {@code i} of a block of {@code n} pages held in {@code array}. */
  private void place(int page, Object array, int i, int n) {
    arrays[page] = array;
    if (group == 1) {
      base[page] = i * pageLen;
      return;
    }
    int g = i / group;
    int start = g * group * pageLen;
    int size = Math.min(group, n - g * group);
    base[page] = start + (i % group) * keyLen;
    valueBase[page] = start + size * keyLen;
    groupSize[page] = size;
    groupIndex[page] = i % group;
  }

  /**
   * Copies page {@code page} from where it is now into {@code dst}, placed as page {@code i} of a block
   * of {@code n} pages, and records the new place.
   */
  private void moveInto(int page, A dst, int i, int n) {
    Object src = arrays[page];
    if (group == 1) {
      System.arraycopy(src, base[page], dst, i * pageLen, pageLen);
      place(page, dst, i, n);
      return;
    }
    int srcKeys = base[page];
    int srcValues = valueBase[page];
    int srcTokens = groupSize[page] * HeadStore.PAGE_TOKENS;
    int srcFirst = groupIndex[page] * HeadStore.PAGE_TOKENS;
    place(page, dst, i, n);
    System.arraycopy(src, srcKeys, dst, base[page], keyLen);
    for (int b = 0; b < headDim; b += AttentionKernels.VALUE_BLOCK) {
      System.arraycopy(src, srcValues + AttentionKernels.valueIndex(srcFirst, b, headDim, srcTokens), dst,
          valueRun(page, 0, b), HeadStore.PAGE_TOKENS * Math.min(AttentionKernels.VALUE_BLOCK, headDim - b));
    }
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
      valueBase = Arrays.copyOf(valueBase, page * 2);
      groupSize = Arrays.copyOf(groupSize, page * 2);
      groupIndex = Arrays.copyOf(groupIndex, page * 2);
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
        place(page, own, 0, 1);
        singles++;
        return;
      }
      int n = Math.min(blockPages, reservedCount - k);
      A fresh = newArray.apply(n * pageLen); // before any field changes: a failed allocation leaves no trace
      block = fresh;
      blockFirst = page;
      blockCount = n;
    }
    place(page, block, page - blockFirst, blockCount);
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
      moveInto(q, copy, q - from, to - from);
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
    int cap = Math.max(4, pages);
    if (arrays.length > 2 * cap) { // the released pages' entries (all null or unused) go too
      arrays = Arrays.copyOf(arrays, cap);
      base = Arrays.copyOf(base, cap);
      valueBase = Arrays.copyOf(valueBase, cap);
      groupSize = Arrays.copyOf(groupSize, cap);
      groupIndex = Arrays.copyOf(groupIndex, cap);
    }
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
