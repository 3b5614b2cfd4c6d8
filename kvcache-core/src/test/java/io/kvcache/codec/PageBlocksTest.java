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
