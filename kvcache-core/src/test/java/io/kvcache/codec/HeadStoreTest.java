package io.kvcache.codec;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.kernel.AttentionKernels;
import io.kvcache.kernel.Kernels;
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
    SplittableRandom rnd = new SplittableRandom(42);
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
      assertTrue(slot < 7 * HeadStore.PAGE_TOKENS, "append reuses a freed slot, got " + slot);
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
      assertArrayEquals(keys.get(p), buf, "key of position " + p);
      store.readValue(slot, buf, 0);
      assertArrayEquals(values.get(p), buf, "value of position " + p);
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
    SplittableRandom rnd = new SplittableRandom(7);
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
      float[] ks = stored(codecName, k[t]), vs = stored(codecName, v[t]);
      for (int c = 0; c < d; c++) {
        assertEquals(ks[c], kT[c * HeadStore.PAGE_TOKENS + j], "key token " + t + " channel " + c);
        assertEquals(vs[c], vv[store.valuesOffset() + AttentionKernels.valueIndex(j, c, d, HeadStore.PAGE_TOKENS)],
            "value token " + t + " channel " + c);
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
  void evictingAnEmptySlotIsRejected(String codecName) {
    HeadStore store = codec(codecName).newStore(4);
    float[] z = new float[4];
    int slot = store.append(z, 0, z, 0, 0);
    store.evict(slot);
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> store.evict(slot));
    assertTrue(e.getMessage().contains("slot"), e.getMessage());
    assertThrows(IllegalArgumentException.class, () -> store.evict(99));
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
