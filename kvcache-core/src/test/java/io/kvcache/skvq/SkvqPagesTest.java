package io.kvcache.skvq;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.codec.HeadStore;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * {@link SkvqPages}, the read access another engine mirrors: a quantized slot rebuilt from the page's
 * codes, scales, zero points and permutations equals what the store itself decodes, bit for bit.
 */
class SkvqPagesTest {

  @ParameterizedTest(name = "d={0} K{1}/V{2} groups {3}")
  @CsvSource({"64, 2, 1.5, 128", "128, 2, 1.5, 32", "40, 4, 2, 16", "16, 1.5, 4, 8"})
  void quantizedPagesRebuildTheStoresOwnDecoding(int d, double kBits, double vBits, int group) {
    SkvqConfig cfg = SkvqConfig.of(kBits, vBits).withGroups(group, group).withWindow(24, 3);
    HeadStore store = SkvqCodec.of(cfg).newStore(d);
    SkvqPages pages = (SkvqPages) store;
    assertTrue(!pages.calibrated(), "nothing quantized yet");
    Random rnd = new Random(d * 31L + group);
    int n = 150;
    float[] k = new float[d], v = new float[d];
    for (int t = 0; t < n; t++) {
      for (int c = 0; c < d; c++) {
        k[c] = (float) (rnd.nextGaussian() * (c % 7 == 0 ? 5 : 1));
        v[c] = (float) rnd.nextGaussian();
      }
      store.append(k, 0, v, 0, t);
    }
    store.attentionDone();
    assertTrue(pages.calibrated());
    int[] kp = pages.keyPermutation(), vp = pages.valuePermutation();
    int kg = (d + Math.min(group, d) - 1) / Math.min(group, d), vg = kg;
    int kGroup = Math.min(group, d), vGroup = kGroup;
    int[] kc = new int[d * 16], vc = new int[d * 16];
    float[] ks = new float[kg * 16], kz = new float[kg * 16], vs = new float[16 * vg], vz = new float[16 * vg];
    float[] want = new float[d];
    int quantized = 0;
    for (int page = 0; page < store.pageCount(); page++) {
      int mask = pages.quantizedSlots(page);
      pages.readQuantizedPage(page, kc, vc, ks, kz, vs, vz);
      for (int j = 0; j < 16; j++) {
        int slot = page * 16 + j;
        if ((mask & (1 << j)) == 0) {
          for (int c = 0; c < d; c++) {
            assertEquals(0, kc[c * 16 + j], "a slot that is not quantized reads as zeros");
          }
          continue;
        }
        quantized++;
        store.readKey(slot, want, 0);
        for (int c = 0; c < d; c++) {
          float got = kz[(c / kGroup) * 16 + j] + ks[(c / kGroup) * 16 + j] * kc[c * 16 + j];
          assertEquals(want[kp[c]], got, 0f, "key slot " + slot + " permuted channel " + c);
        }
        store.readValue(slot, want, 0);
        for (int c = 0; c < d; c++) {
          float got = vz[j * vg + c / vGroup] + vs[j * vg + c / vGroup] * vc[j * d + c];
          assertEquals(want[vp[c]], got, 0f, "value slot " + slot + " permuted channel " + c);
        }
      }
    }
    // Sinks (3) and the window (24 positions, up to 15 more on its oldest page) stay f16.
    assertTrue(quantized >= n - 3 - 24 - 15 && quantized <= n - 3 - 24, "quantized " + quantized);
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
        () -> pages.readQuantizedPage(store.pageCount(), kc, vc, ks, kz, vs, vz));
    assertTrue(e.getMessage().contains("page must be in [0, " + store.pageCount() + ")"), e.getMessage());
    e = assertThrows(IllegalArgumentException.class,
        () -> pages.readQuantizedPage(0, new int[3], vc, ks, kz, vs, vz));
    assertTrue(e.getMessage().contains("got 3"), e.getMessage());
  }

  /**
   * Quantizing a slot changes the page's key in place, so its version must move (RocketKV's reader
   * caches page bounds by version: stale bounds of the f16 keys no longer bound the codes); and a page
   * whose quantized slots are all evicted drops its quantized block from what it holds and counts.
   */
  @Test
  void quantizingMovesThePageVersionAndEvictedCodesAreReleased() {
    int d = 64;
    SkvqConfig cfg = SkvqConfig.of(2, 2).withWindow(16, 1);
    HeadStore store = SkvqCodec.of(cfg).newStore(d);
    SkvqPages pages = (SkvqPages) store;
    long seed = io.kvcache.core.TestData.seed();
    Random rnd = new Random(seed);
    float[] k = new float[d], v = new float[d];
    int n = 64;
    for (int t = 0; t < n; t++) {
      for (int c = 0; c < d; c++) {
        k[c] = (float) rnd.nextGaussian();
        v[c] = (float) rnd.nextGaussian();
      }
      store.append(k, 0, v, 0, t);
    }
    int[] before = new int[store.pageCount()];
    for (int p = 0; p < before.length; p++) {
      before[p] = store.pageVersion(p);
    }
    store.attentionDone(); // positions 1 .. 47 leave the window of 16 and are quantized
    for (int p = 0; p < before.length; p++) {
      boolean quantized = pages.quantizedSlots(p) != 0;
      assertEquals(quantized, store.pageVersion(p) != before[p], "page " + p + " quantized " + quantized
          + ": its version moves exactly when its slots were re-encoded, seed " + seed);
    }
    assertTrue(pages.quantizedSlots(1) == 0xFFFF, "page 1 (positions 16-31) is wholly quantized");
    long held = store.payloadBytes();
    for (int j = 0; j < 16; j++) {
      store.evict(16 + j);
    }
    store.attentionDone();
    assertEquals(0, pages.quantizedSlots(1), "no quantized slot left on page 1");
    assertTrue(store.payloadBytes() < held, "the evicted page's codes are no longer held: " + store.payloadBytes()
        + " of " + held);
    // The page is reused by later appends, in full precision, and reads back what was written.
    for (int c = 0; c < d; c++) {
      k[c] = c;
      v[c] = -c;
    }
    int slot = store.append(k, 0, v, 0, n);
    float[] back = new float[d];
    store.readKey(slot, back, 0);
    for (int c = 0; c < d; c++) {
      assertEquals(c, back[c], 0f, "key channel " + c);
    }
  }

  /** With no window and no sinks every slot is codes and no page keeps an f16 part: eviction still releases. */
  @Test
  void codesAreReleasedWhenNoPageHasAFullPrecisionPart() {
    int d = 32;
    HeadStore store = SkvqCodec.of(SkvqConfig.of(2, 2).withWindow(0, 0)).newStore(d);
    SkvqPages pages = (SkvqPages) store;
    long seed = io.kvcache.core.TestData.seed();
    Random rnd = new Random(seed);
    float[] k = new float[d], v = new float[d];
    for (int t = 0; t < 64; t++) {
      for (int c = 0; c < d; c++) {
        k[c] = (float) rnd.nextGaussian();
        v[c] = (float) rnd.nextGaussian();
      }
      store.append(k, 0, v, 0, t);
    }
    store.attentionDone();
    assertEquals(0xFFFF, pages.quantizedSlots(1), "page 1 is codes, seed " + seed);
    long held = store.payloadBytes();
    for (int j = 0; j < 16; j++) {
      store.evict(16 + j);
    }
    store.attentionDone();
    assertEquals(0, pages.quantizedSlots(1), "seed " + seed);
    assertTrue(store.payloadBytes() < held, store.payloadBytes() + " of " + held + ", seed " + seed);
  }
}
