package io.kvcache.codec;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.function.IntFunction;
import org.junit.jupiter.api.Test;

/** Where pages live: which array holds each page, at which offset, and what is held but unused. */
class PageBlocksTest {

  private static final int LEN = 4096; // floats a page: 16 KiB, so 16 pages a block

  private static PageBlocks<float[]> blocks() {
    return new PageBlocks<>(float[]::new, LEN, Float.BYTES);
  }

  @Test
  void aReservationFillsBlocksOfAtMostMaxBlockBytesInOrder() {
    PageBlocks<float[]> b = blocks();
    b.reserve(0, 40);
    for (int p = 0; p < 40; p++) {
      b.allocate(p);
      assertEquals((p % 16) * LEN, b.base(p), "page " + p);
      assertSame(b.array(p - p % 16), b.array(p), "page " + p + " shares its block");
      assertEquals(p < 16 ? 16 - p - 1 : p < 32 ? 32 - p - 1 : 40 - p - 1, b.pending(p + 1), "pending after " + p);
    }
    assertEquals(16 * LEN, b.array(0).length);
    assertEquals(16 * LEN, b.array(16).length);
    assertEquals(8 * LEN, b.array(32).length, "the last block is the reservation's rest");
    assertNotSame(b.array(15), b.array(16));
    b.allocate(40); // beyond the reservation: an array of its own
    assertEquals(LEN, b.array(40).length);
    assertEquals(0, b.pending(41));
  }

  @Test
  void anAbandonedReservationsBlockIsStillUsedAndCounted() {
    PageBlocks<float[]> b = blocks();
    b.reserve(0, 40);
    for (int p = 0; p < 10; p++) {
      b.allocate(p);
    }
    assertEquals(6, b.pending(10), "pages 10-15 of the first block are held");
    b.reserve(10, 3); // a new hint before the first was used up
    assertEquals(6, b.pending(10), "still held, still counted");
    for (int p = 10; p < 14; p++) { // the last of them outside any reservation
      b.allocate(p);
      assertSame(b.array(0), b.array(p), "page " + p + " takes the held block's next page");
      assertEquals(p * LEN, b.base(p));
    }
    assertEquals(2, b.pending(14));
  }

  @Test
  void compactionCopiesOnlyPagesWhoseArrayHeldOthers() {
    PageBlocks<float[]> b = blocks();
    b.reserve(0, 20);
    for (int p = 0; p < 20; p++) {
      b.allocate(p);
      mark(b, p);
    }
    float[] first = b.array(0), second = b.array(16);
    assertEquals(16 * LEN, first.length);
    assertEquals(4 * LEN, second.length);
    b.release(19);
    b.release(18);
    b.compacted(18);
    assertSame(first, b.array(0), "a block whose every page survived stays");
    assertNotSame(second, b.array(16), "pages 16-17 leave the block that held 18-19");
    assertSame(b.array(16), b.array(17));
    assertEquals(2 * LEN, b.array(16).length);
    assertMarked(b, 18);
    assertEquals(0, b.pending(18));
  }

  @Test
  void compactionFreesTheUnusedPagesOfTheLastBlock() {
    PageBlocks<float[]> b = blocks();
    b.reserve(0, 16);
    for (int p = 0; p < 5; p++) {
      b.allocate(p);
    }
    b.release(4);
    b.compacted(4);
    assertEquals(4 * LEN, b.array(0).length, "four pages, not the block of sixteen");
    assertEquals(0, b.pending(4));
    b.allocate(4); // no reservation, no held block: an array of its own
    assertEquals(LEN, b.array(4).length);
  }

  @Test
  void aFailedBlockAllocationLeavesNoPageSharingAnother() {
    int[] calls = {0};
    IntFunction<float[]> failsOnce = n -> {
      if (++calls[0] == 2) {
        throw new OutOfMemoryError("test");
      }
      return new float[n];
    };
    PageBlocks<float[]> b = new PageBlocks<>(failsOnce, LEN, Float.BYTES);
    b.reserve(0, 32);
    for (int p = 0; p < 16; p++) {
      b.allocate(p);
    }
    assertThrows(OutOfMemoryError.class, () -> b.allocate(16));
    b.allocate(16); // the append is retried
    assertNotSame(b.array(0), b.array(16), "page 16 must not land on page 0's memory");
    assertEquals(0, b.base(16));
  }

  @Test
  void pagesWithAnArrayEachAreMergedIntoABlockOnceEightFollowOneAnother() {
    PageBlocks<float[]> b = blocks();
    int m = PageBlocks.MERGE_PAGES;
    for (int p = 0; p < 2 * m + 1; p++) { // no reservation, as decode opens pages
      b.allocate(p);
      mark(b, p);
      assertEquals(0, b.pending(p + 1), "nothing is held ahead, page " + p);
    }
    for (int g = 0; g < 2; g++) {
      float[] merged = b.array(g * m);
      assertEquals(m * LEN, merged.length, "group " + g + " is one block");
      for (int p = g * m; p < (g + 1) * m; p++) {
        assertSame(merged, b.array(p), "page " + p);
        assertEquals((p - g * m) * LEN, b.base(p), "page " + p + " in order");
      }
    }
    assertMarked(b, 2 * m + 1);
    assertEquals(LEN, b.array(2 * m).length, "the newest page waits for its group");
  }

  @Test
  void onlyRunsOfPagesWithAnArrayEachAreMerged() {
    PageBlocks<float[]> b = blocks();
    int m = PageBlocks.MERGE_PAGES;
    b.reserve(0, 3);
    for (int p = 0; p < 3 + m + 1; p++) {
      b.allocate(p);
      mark(b, p);
    }
    assertEquals(3 * LEN, b.array(0).length, "the reservation's block stays as it was");
    assertEquals(m * LEN, b.array(3).length, "the pages after it merge from page 3");
    assertEquals(LEN, b.array(3 + m).length);
    assertMarked(b, 3 + m + 1);
    b.release(3 + m);
    b.compacted(3 + m); // counting starts again after a compaction
    for (int p = 3 + m; p < 3 + 2 * m; p++) {
      b.allocate(p);
      mark(b, p);
      assertEquals(LEN, b.array(p).length, "page " + p + " not merged yet");
    }
    b.allocate(3 + 2 * m);
    mark(b, 3 + 2 * m);
    assertEquals(m * LEN, b.array(3 + m).length, "merged once eight follow one another again");
    for (int p = 3 + m; p < 3 + 2 * m; p++) {
      assertSame(b.array(3 + m), b.array(p));
      assertEquals((p - 3 - m) * LEN, b.base(p), "page " + p + " in order");
    }
    assertMarked(b, 3 + 2 * m + 1);
  }

  @Test
  void largePagesMergeInBlocksOfAtMostMaxBlockBytes() {
    int len = PageBlocks.MAX_BLOCK_BYTES / Float.BYTES / 4; // four pages fill a block
    PageBlocks<float[]> b = new PageBlocks<>(float[]::new, len, Float.BYTES);
    for (int p = 0; p < 9; p++) {
      b.allocate(p);
    }
    for (int p = 0; p < 8; p++) {
      assertEquals(4 * len, b.array(p).length, "page " + p + ": merged in fours");
      assertEquals((p % 4) * len, b.base(p));
    }
    int whole = PageBlocks.MAX_BLOCK_BYTES / Float.BYTES; // one page fills a block: never merged
    PageBlocks<float[]> one = new PageBlocks<>(float[]::new, whole, Float.BYTES);
    for (int p = 0; p < 2 * PageBlocks.MERGE_PAGES + 1; p++) {
      one.allocate(p);
      assertEquals(whole, one.array(p).length, "page " + p);
    }
  }

  /**
   * The grouped layout: within each block, groups of {@link PageBlocks#GROUP_PAGES} pages hold their
   * keys one after another and then one value page of all their tokens; the last group of a block
   * holds what is left.
   */
  @Test
  void groupedPagesKeepAGroupsKeysTogetherThenItsValues() {
    int d = 24; // head dim with a narrow last column block (16 + 8)
    int keys = d * HeadStore.PAGE_TOKENS, len = 2 * keys;
    int perBlock = PageBlocks.MAX_BLOCK_BYTES / (len * Float.BYTES); // 85 pages: 10 groups of 8 and one of 5
    PageBlocks<float[]> b = grouped(d);
    int pages = perBlock + 3;
    b.reserve(0, pages);
    for (int p = 0; p < pages; p++) {
      b.allocate(p);
      int i = p < perBlock ? p : p - perBlock, n = p < perBlock ? perBlock : 3;
      int g = i / 8, size = Math.min(8, n - 8 * g);
      assertEquals(size, b.groupSize(p), "page " + p);
      assertEquals(i % 8, b.groupIndex(p), "page " + p);
      assertEquals(8 * g * len + (i % 8) * keys, b.base(p), "keys of page " + p);
      assertEquals(8 * g * len + size * keys, b.valueBase(p), "values of page " + p + "'s group");
      assertEquals(b.valueBase(p) + 16 * 16 * size + (16 * (i % 8) + 5) * 8, b.valueRun(p, 5, 16),
          "token 5 of page " + p + ", channels 16-23");
    }
    assertEquals(5, b.groupSize(perBlock - 1), "the block's last group: 85 = 10 * 8 + 5");
    b.allocate(pages); // an array of its own: a group of one, keys then values
    assertEquals(0, b.base(pages));
    assertEquals(keys, b.valueBase(pages));
    assertEquals(1, b.groupSize(pages));
  }

  /** Merges and compactions move a grouped page's keys and values to its new group's places. */
  @Test
  void groupedPagesKeepTheirKeysAndValuesThroughMergesAndCompaction() {
    int d = 24;
    PageBlocks<float[]> b = grouped(d);
    int m = PageBlocks.MERGE_PAGES;
    for (int p = 0; p < 2 * m + 3; p++) { // singles, merged in eights as they come
      b.allocate(p);
      fill(b, p, d);
    }
    assertEquals(m, b.groupSize(0));
    assertEquals(1, b.groupSize(2 * m), "the newest pages wait for their group");
    assertFilled(b, 2 * m + 3, d);
    b.release(2 * m + 2);
    b.release(2 * m + 1);
    b.compacted(2 * m + 1); // the merged blocks stay, the single stays
    assertFilled(b, 2 * m + 1, d);

    PageBlocks<float[]> r = grouped(d);
    r.reserve(0, 20);
    for (int p = 0; p < 20; p++) {
      r.allocate(p);
      fill(r, p, d);
    }
    r.release(19);
    r.release(18);
    r.compacted(18);
    assertEquals(18 * 2 * d * HeadStore.PAGE_TOKENS, r.array(0).length, "one block of the 18 survivors");
    assertEquals(2, r.groupSize(17), "groups of 8, 8 and 2");
    assertFilled(r, 18, d);
  }

  private static PageBlocks<float[]> grouped(int d) {
    return new PageBlocks<>(float[]::new, d, Float.BYTES, PageBlocks.GROUP_PAGES);
  }

  /** Gives every key and value element of page {@code p} a value that names the page, token and channel. */
  private static void fill(PageBlocks<float[]> b, int p, int d) {
    float[] a = b.array(p);
    for (int j = 0; j < HeadStore.PAGE_TOKENS; j++) {
      for (int c = 0; c < d; c++) {
        a[b.base(p) + c * HeadStore.PAGE_TOKENS + j] = code(p, j, c);
        a[b.valueRun(p, j, c - c % 16) + c % 16] = -code(p, j, c);
      }
    }
  }

  private static void assertFilled(PageBlocks<float[]> b, int pages, int d) {
    for (int p = 0; p < pages; p++) {
      float[] a = b.array(p);
      for (int j = 0; j < HeadStore.PAGE_TOKENS; j++) {
        for (int c = 0; c < d; c++) {
          assertEquals(code(p, j, c), a[b.base(p) + c * HeadStore.PAGE_TOKENS + j], "key " + p + "/" + j + "/" + c);
          assertEquals(-code(p, j, c), a[b.valueRun(p, j, c - c % 16) + c % 16], "value " + p + "/" + j + "/" + c);
        }
      }
    }
  }

  private static float code(int p, int j, int c) {
    return 1 + p * 10000 + j * 100 + c;
  }

  /** Writes the page's number at its first and last element. */
  private static void mark(PageBlocks<float[]> b, int p) {
    b.array(p)[b.base(p)] = p;
    b.array(p)[b.base(p) + LEN - 1] = -p;
  }

  private static void assertMarked(PageBlocks<float[]> b, int pages) {
    for (int p = 0; p < pages; p++) {
      assertEquals(p, b.array(p)[b.base(p)], "page " + p + " keeps its data");
      assertEquals(-p, b.array(p)[b.base(p) + LEN - 1], "page " + p + " keeps its data");
    }
  }

}
