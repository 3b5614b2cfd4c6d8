package io.kvcache.codec;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.core.TestData;
import io.kvcache.kernel.AttentionKernels;
import io.kvcache.kernel.Kernels;
import io.kvcache.reader.PagedAttention;
import java.util.HashMap;
import java.util.Map;
import java.util.SplittableRandom;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** Paged storage: slots, eviction, reuse, compaction and byte accounting, for each codec. */
class HeadStoreTest {

  static StorageCodec codec(String name) {
    return name.equals("f32") ? StorageCodec.f32() : StorageCodec.f16();
  }

  static float[] row(SplittableRandom rnd, int d) {
    float[] a = new float[d];
    for (int i = 0; i < d; i++) {
      a[i] = (float) rnd.nextGaussian();
    }
    return a;
  }

  static float[] stored(String codec, float[] a) {
    if (codec.equals("f32")) {
      return a.clone();
    }
    float[] r = new float[a.length];
    for (int i = 0; i < a.length; i++) {
      r[i] = Float.float16ToFloat(Float.floatToFloat16(a[i]));
    }
    return r;
  }

  @ParameterizedTest
  @ValueSource(strings = {"f32", "f16"})
  void evictReuseAndCompactKeepEveryLiveTokenIntact(String codecName) {
    int d = 24;
    HeadStore store = codec(codecName).newStore(d);
    long seed = TestData.seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    Map<Integer, float[]> keys = new HashMap<>();
    Map<Integer, float[]> values = new HashMap<>();
    Map<Integer, Integer> slotOf = new HashMap<>();
    int pos = 0;
    for (; pos < 100; pos++) {
      float[] k = row(rnd, d), v = row(rnd, d);
      slotOf.put(pos, store.append(k, 0, v, 0, pos));
      keys.put(pos, stored(codecName, k));
      values.put(pos, stored(codecName, v));
    }
    assertEquals(100, store.size());
    assertEquals(7, store.pageCount());
    // Evict every position not divisible by 3, then append a few that must reuse freed slots.
    for (int p = 0; p < 100; p++) {
      if (p % 3 != 0) {
        store.evict(slotOf.remove(p));
        keys.remove(p);
        values.remove(p);
      }
    }
    assertEquals(34, store.size());
    for (; pos < 110; pos++) {
      float[] k = row(rnd, d), v = row(rnd, d);
      int slot = store.append(k, 0, v, 0, pos);
      assertTrue(slot < 7 * HeadStore.PAGE_TOKENS, "append reuses a freed slot, got " + slot + ", seed " + seed);
      keys.put(pos, stored(codecName, k));
      values.put(pos, stored(codecName, v));
    }
    assertEquals(7, store.pageCount(), "no page allocated while slots are free");
    store.compact();
    assertEquals(44, store.size());
    assertEquals(3, store.pageCount(), "ceil(44 / 16) pages after compaction");
    int seen = 0;
    float[] buf = new float[d];
    for (int slot = 0; slot < store.pageCount() * HeadStore.PAGE_TOKENS; slot++) {
      int p = store.position(slot);
      if (p == HeadStore.EMPTY) {
        continue;
      }
      seen++;
      store.readKey(slot, buf, 0);
      assertArrayEquals(keys.get(p), buf, "key of position " + p + ", seed " + seed);
      store.readValue(slot, buf, 0);
      assertArrayEquals(values.get(p), buf, "value of position " + p + ", seed " + seed);
    }
    assertEquals(44, seen);
    for (int page = 0; page < store.pageCount(); page++) {
      int min = HeadStore.EMPTY;
      for (int p : store.pagePositions(page)) {
        min = Math.min(min, p);
      }
      assertEquals(min, store.pageMinPosition(page), "page " + page + " minimum position");
    }
  }

  @ParameterizedTest
  @ValueSource(strings = {"f32", "f16"})
  void pagesDecodeToTheStoredTokens(String codecName) {
    int d = 40; // two full value blocks and a narrower one
    HeadStore store = codec(codecName).newStore(d);
    long seed = TestData.seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    float[][] k = new float[20][], v = new float[20][];
    for (int t = 0; t < 20; t++) {
      k[t] = row(rnd, d);
      v[t] = row(rnd, d);
      store.append(k[t], 0, v[t], 0, t);
    }
    float[] kBuf = new float[2 * d * HeadStore.PAGE_TOKENS];
    for (int t = 0; t < 20; t++) {
      int page = t / HeadStore.PAGE_TOKENS, j = t % HeadStore.PAGE_TOKENS;
      float[] kT = store.page(page, kBuf, Kernels.scalar());
      float[] vv = kT;
      int o = store.pageOffset(page);
      float[] ks = stored(codecName, k[t]), vs = stored(codecName, v[t]);
      for (int c = 0; c < d; c++) {
        assertEquals(ks[c], kT[o + c * HeadStore.PAGE_TOKENS + j], "key token " + t + " channel " + c + ", seed " + seed);
        assertEquals(vs[c], vv[o + store.valuesOffset() + AttentionKernels.valueIndex(j, c, d, HeadStore.PAGE_TOKENS)],
            "value token " + t + " channel " + c + ", seed " + seed);
      }
    }
  }

  @ParameterizedTest
  @ValueSource(strings = {"f32", "f16"})
  void bytesCountWholePages(String codecName) {
    int d = 64;
    HeadStore store = codec(codecName).newStore(d);
    int bytesPerValue = codecName.equals("f32") ? 4 : 2;
    float[] z = new float[d];
    for (int t = 0; t < 17; t++) {
      store.append(z, 0, z, 0, t);
    }
    assertEquals(2L * 16 * d * 2 * bytesPerValue, store.payloadBytes());
    assertEquals(2L * 16 * Integer.BYTES, store.metadataBytes());
  }

  @ParameterizedTest
  @ValueSource(strings = {"f32", "f16"})
  void reservedPagesShareABlockAndHoldWhatSeparatePagesHold(String codecName) {
    int d = 40; // two full value blocks and a narrower one
    HeadStore plain = codec(codecName).newStore(d);
    HeadStore reserved = codec(codecName).newStore(d);
    long seed = TestData.seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    reserved.reserve(70);
    for (int t = 0; t < 70; t++) {
      float[] k = row(rnd, d), v = row(rnd, d);
      assertEquals(plain.append(k, 0, v, 0, t), reserved.append(k, 0, v, 0, t));
    }
    assertEquals(5, reserved.pageCount());
    assertEquals(plain.payloadBytes(), reserved.payloadBytes());
    assertSameContents(plain, reserved, d, 70, rnd, "a reserved block, seed " + seed);
    if (codecName.equals("f32")) { // f32 hands out its own array: one block, the pages in order
      int len = 2 * d * HeadStore.PAGE_TOKENS;
      for (int page = 0; page < 5; page++) {
        assertEquals(5 * len, reserved.page(page, null, Kernels.scalar()).length, "one block for the reservation");
        assertEquals(page * len, reserved.pageOffset(page), "page " + page + " in the block");
      }
    }
  }

  /**
   * Same page bits and slot reads in {@code actual} as in {@code expected}, and the same decode output
   * (with the scalar kernels, which read f16 pages in place on every machine, and the chosen ones): the
   * same bits for f32; for f16 within 1e-5 relative (the f32 kernel tolerance), since decode takes one
   * softmax step per group of pages ({@link HeadStore.FusedPages#runPages}) and two stores group their
   * pages differently.
   */
  private static void assertSameContents(HeadStore expected, HeadStore actual, int d, int tokens,
      SplittableRandom rnd, String what) {
    int len = 2 * d * HeadStore.PAGE_TOKENS;
    float[] a = new float[len], b = new float[len];
    for (int page = 0; page < expected.pageCount(); page++) {
      float[] pa = expected.page(page, a, Kernels.scalar());
      float[] pb = actual.page(page, b, Kernels.scalar());
      int oa = expected.pageOffset(page), ob = actual.pageOffset(page);
      for (int i = 0; i < len; i++) {
        assertEquals(Float.floatToRawIntBits(pa[oa + i]), Float.floatToRawIntBits(pb[ob + i]),
            what + ": page " + page + " element " + i);
      }
    }
    float[] key = new float[d], value = new float[d], key2 = new float[d], value2 = new float[d];
    for (int slot = 0; slot < tokens; slot++) {
      expected.readKey(slot, key, 0);
      actual.readKey(slot, key2, 0);
      assertArrayEquals(key, key2, what + ": key of slot " + slot);
      expected.readValue(slot, value, 0);
      actual.readValue(slot, value2, 0);
      assertArrayEquals(value, value2, what + ": value of slot " + slot);
    }
    int group = 4;
    float[] q = row(rnd, group * d);
    for (AttentionKernels kernels : new AttentionKernels[] {Kernels.scalar(), Kernels.get()}) {
      float[] o1 = new float[group * d], o2 = new float[group * d];
      new PagedAttention(kernels, d).decode(expected, group, q, 0, tokens, 0.125f, o1, 0);
      new PagedAttention(kernels, d).decode(actual, group, q, 0, tokens, 0.125f, o2, 0);
      if (expected instanceof HeadStore.FusedPages) {
        for (int i = 0; i < o1.length; i++) {
          assertEquals(o1[i], o2[i], 1e-5 * (1 + Math.abs(o1[i])), what + ": decode, " + kernels.name() + " " + i);
        }
      } else {
        assertArrayEquals(o1, o2, what + ": decode, " + kernels.name());
      }
    }
  }

  @ParameterizedTest
  @ValueSource(strings = {"f32", "f16"})
  void pagesOpenedOneTokenAtATimeAreMergedAndHoldWhatTheyHeld(String codecName) {
    int d = 40;
    int tokens = 20 * HeadStore.PAGE_TOKENS - 5; // 20 pages: two groups of 8 merged, 4 pages not yet
    HeadStore decoded = codec(codecName).newStore(d); // appended as decode does, no reservation
    HeadStore reserved = codec(codecName).newStore(d);
    reserved.reserve(tokens);
    long seed = TestData.seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    for (int t = 0; t < tokens; t++) {
      float[] k = row(rnd, d), v = row(rnd, d);
      assertEquals(reserved.append(k, 0, v, 0, t), decoded.append(k, 0, v, 0, t));
    }
    assertEquals(reserved.payloadBytes(), decoded.payloadBytes(), "merging holds nothing ahead");
    assertSameContents(reserved, decoded, d, tokens, rnd, "merged pages, seed " + seed);
    if (codecName.equals("f32")) { // f32 hands out its own array
      int len = 2 * d * HeadStore.PAGE_TOKENS;
      for (int page = 0; page < 20; page++) {
        assertEquals(page < 16 ? 8 * len : len, decoded.page(page, null, Kernels.scalar()).length,
            "page " + page + ": merged in groups of 8");
        assertEquals(page < 16 ? (page % 8) * len : 0, decoded.pageOffset(page), "page " + page + " in order");
      }
    }
  }

  @ParameterizedTest
  @ValueSource(strings = {"f32", "f16"})
  void compactionCopiesTheSurvivorsOutOfTheirBlock(String codecName) {
    int d = 24;
    HeadStore store = codec(codecName).newStore(d);
    long seed = TestData.seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    Map<Integer, float[]> keys = new HashMap<>();
    Map<Integer, float[]> values = new HashMap<>();
    store.reserve(64);
    for (int t = 0; t < 64; t++) {
      float[] k = row(rnd, d), v = row(rnd, d);
      int slot = store.append(k, 0, v, 0, t);
      if (t % 4 == 0) {
        keys.put(t, stored(codecName, k));
        values.put(t, stored(codecName, v));
      } else {
        store.evict(slot);
      }
    }
    store.compact();
    assertEquals(1, store.pageCount(), "16 tokens in one page");
    assertEquals(16L * d * 2 * (codecName.equals("f32") ? 4 : 2), store.payloadBytes(), "one page held");
    if (codecName.equals("f32")) {
      float[] page = store.page(0, new float[2 * d * HeadStore.PAGE_TOKENS], Kernels.scalar());
      assertEquals(2 * d * HeadStore.PAGE_TOKENS, page.length, "a block of the one surviving page");
    }
    float[] buf = new float[d];
    for (int slot = 0; slot < HeadStore.PAGE_TOKENS; slot++) {
      int p = store.position(slot);
      store.readKey(slot, buf, 0);
      assertArrayEquals(keys.get(p), buf, "key of position " + p + ", seed " + seed);
      store.readValue(slot, buf, 0);
      assertArrayEquals(values.get(p), buf, "value of position " + p + ", seed " + seed);
    }
  }

  @ParameterizedTest
  @ValueSource(strings = {"f32", "f16"})
  void aReservationIsHeldUntilUsedAndFreedSlotsComeFirst(String codecName) {
    int d = 16;
    HeadStore store = codec(codecName).newStore(d);
    long page = 16L * d * 2 * (codecName.equals("f32") ? 4 : 2);
    float[] z = new float[d];
    store.reserve(100); // 7 pages
    for (int t = 0; t < 20; t++) {
      store.append(z, 0, z, 0, t);
    }
    assertEquals(2, store.pageCount());
    assertEquals(7 * page, store.payloadBytes(), "the reservation's block is held");
    for (int t = 20; t < 100; t++) {
      store.append(z, 0, z, 0, t);
    }
    assertEquals(7, store.pageCount());
    assertEquals(7 * page, store.payloadBytes());
    for (int slot = 0; slot < 10; slot++) {
      store.evict(slot);
    }
    store.reserve(10); // fills freed slots: nothing to reserve
    for (int t = 100; t < 110; t++) {
      assertTrue(store.append(z, 0, z, 0, t) < 10, "a freed slot");
    }
    assertEquals(7 * page, store.payloadBytes());
    store.reserve(40); // 12 fresh slots left in page 6, then 28: two new pages, one block when reached
    assertEquals(7 * page, store.payloadBytes(), "nothing allocated before the appends reach it");
    for (int t = 110; t < 123; t++) { // 12 into page 6, the 13th opens page 7
      store.append(z, 0, z, 0, t);
    }
    assertEquals(8, store.pageCount());
    assertEquals(9 * page, store.payloadBytes(), "page 8 is held in page 7's block");
    store.compact(); // 113 tokens in 8 pages: releases nothing, the block stays for the appends to come
    assertEquals(9 * page, store.payloadBytes());
    for (int slot = 0; slot < 30; slot++) {
      store.evict(slot);
    }
    store.compact(); // 83 tokens: pages 6 and 7 released, and what was left of the reservation with them
    assertEquals(6, store.pageCount());
    assertEquals(6 * page, store.payloadBytes());
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> store.reserve(-1));
    assertTrue(e.getMessage().contains("tokens") && e.getMessage().contains("-1"), e.getMessage());
  }

  @org.junit.jupiter.api.Test
  void longReservationsTakeBlocksOfAtMostMaxBlockBytesEachAllocatedWhenReached() {
    int d = 128; // f32 pages of 16 KiB: 16 pages a block
    int len = 2 * d * HeadStore.PAGE_TOKENS, perBlock = PageBlocks.MAX_BLOCK_BYTES / (len * Float.BYTES);
    assertEquals(16, perBlock);
    HeadStore store = StorageCodec.f32().newStore(d);
    float[] z = new float[d];
    float[] buf = new float[len];
    store.reserve(1000); // 63 pages: 3 blocks of 16 and one of 15
    for (int t = 0; t < 17 * HeadStore.PAGE_TOKENS; t++) {
      store.append(z, 0, z, 0, t);
    }
    assertEquals(17, store.pageCount());
    assertEquals(32L * len * Float.BYTES, store.payloadBytes(), "the second block is held, the third not yet");
    for (int t = 17 * HeadStore.PAGE_TOKENS; t < 1000; t++) {
      store.append(z, 0, z, 0, t);
    }
    for (int page = 0; page < 63; page++) {
      float[] a = store.page(page, buf, Kernels.scalar());
      assertEquals((page < 48 ? 16 : 15) * len, a.length, "block of page " + page);
      assertEquals((page % 16) * len, store.pageOffset(page), "page " + page + " in its block");
    }
    assertEquals(63L * len * Float.BYTES, store.payloadBytes());
    for (int slot = 0; slot < 400; slot++) {
      store.evict(slot);
    }
    store.compact(); // 600 tokens: 38 pages, copied into blocks of 16, 16 and 6
    assertEquals(38, store.pageCount());
    for (int page = 0; page < 38; page++) {
      assertEquals((page < 32 ? 16 : 6) * len, store.page(page, buf, Kernels.scalar()).length, "block of page " + page);
    }
    assertEquals(38L * len * Float.BYTES, store.payloadBytes());
  }

  @org.junit.jupiter.api.Test
  void pageBoundsFollowEveryAppendEvictionAndCompaction() {
    int d = 8;
    HeadStore store = StorageCodec.f32().newStore(d);
    long seed = TestData.seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    float[] k = new float[d], v = new float[d];
    for (int op = 0; op < 2000; op++) {
      int r = rnd.nextInt(100);
      if (r < 65 || store.size() == 0) {
        store.append(k, 0, v, 0, rnd.nextInt(1_000_000)); // into a freed slot where there is one
      } else if (r < 97) {
        int slot;
        do {
          slot = rnd.nextInt(store.pageCount() * HeadStore.PAGE_TOKENS);
        } while (store.position(slot) == HeadStore.EMPTY);
        store.evict(slot);
      } else {
        store.compact();
      }
      for (int page = 0; page < store.pageCount(); page++) {
        int lo = HeadStore.EMPTY, hi = Integer.MIN_VALUE;
        for (int j = 0; j < HeadStore.PAGE_TOKENS; j++) {
          int pos = store.position(page * HeadStore.PAGE_TOKENS + j);
          lo = Math.min(lo, pos);
          hi = Math.max(hi, pos);
        }
        assertEquals(lo, store.pageMinPosition(page), "min of page " + page + " after operation " + op + ", seed " + seed);
        assertEquals(hi, store.pageMaxPosition(page), "max of page " + page + " after operation " + op + ", seed " + seed);
      }
    }
  }

  @ParameterizedTest
  @ValueSource(strings = {"f32", "f16"})
  void evictingAnEmptySlotIsRejected(String codecName) {
    HeadStore store = codec(codecName).newStore(4);
    float[] z = new float[4];
    int slot = store.append(z, 0, z, 0, 0);
    store.evict(slot);
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> store.evict(slot));
    assertTrue(e.getMessage().contains("slot"), e.getMessage());
    assertThrows(IllegalArgumentException.class, () -> store.evict(99));
  }

  /** A bad offset is refused before a slot is taken: the next append gets the slot it would have. */
  @ParameterizedTest
  @ValueSource(strings = {"f32", "f16"})
  void aBadOffsetIsRefusedAndTakesNoSlot(String codecName) {
    HeadStore store = codec(codecName).newStore(4);
    float[] z = new float[4];
    assertEquals(0, store.append(z, 0, z, 0, 0));
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> store.append(z, 1, z, 0, 1));
    assertTrue(e.getMessage().contains("k") && e.getMessage().contains("offset 1"), e.getMessage());
    e = assertThrows(IllegalArgumentException.class, () -> store.append(z, 0, z, -1, 1));
    assertTrue(e.getMessage().contains("vOff") && e.getMessage().contains("-1"), e.getMessage());
    assertThrows(IllegalArgumentException.class, () -> store.append(null, 0, z, 0, 1));
    assertEquals(1, store.size(), "nothing stored by the refused calls");
    assertEquals(1, store.append(z, 0, z, 0, 1), "the next slot is still free");
  }

  @org.junit.jupiter.api.Test
  void f16RejectsValuesOutsideItsRange() {
    HeadStore store = StorageCodec.f16().newStore(4);
    float[] big = {0f, 70000f, 0f, 0f};
    float[] z = new float[4];
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> store.append(big, 0, z, 0, 0));
    assertTrue(e.getMessage().contains("65504") && e.getMessage().contains("70000"), e.getMessage());
    assertEquals(0, store.size(), "nothing stored");
  }
}
