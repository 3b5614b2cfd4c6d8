package io.kvcache.bench;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.codec.HeadStore;
import io.kvcache.codec.StorageCodec;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.openjdk.jmh.infra.Blackhole;

/** The decode benchmark's two ways of filling its stores, run outside JMH on a short context. */
class DecodeAttentionBenchmarkTest {

  private static final Blackhole BH =
      new Blackhole("Today's password is swordfish. I understand instantiating Blackholes directly is dangerous.");

  private static DecodeAttentionBenchmark bench(String fill, String kernels) {
    DecodeAttentionBenchmark b = new DecodeAttentionBenchmark();
    b.context = 300;
    b.codec = "f16";
    b.kernels = kernels;
    b.threads = 1;
    b.fill = fill;
    return b;
  }

  @Test
  void fillingAsDecodeAppendsEveryPositionToEveryHeadAndMergesThePages() {
    HeadStore[] stores = new HeadStore[3];
    for (int h = 0; h < stores.length; h++) {
      stores[h] = StorageCodec.f32().newStore(16);
    }
    RandomStores.fillAsDecode(stores, 200, new SplittableRandom(1));
    int len = 2 * 16 * HeadStore.PAGE_TOKENS;
    for (HeadStore s : stores) {
      assertEquals(200, s.size());
      for (int slot = 0; slot < 200; slot++) {
        assertEquals(slot, s.position(slot));
      }
      for (int page = 0; page < 8; page++) { // 13 pages: the first eight merged into one block
        assertEquals(8 * len, s.page(page, null, null).length, "page " + page);
        assertEquals(page * len, s.pageOffset(page));
      }
    }
  }

  @Test
  void decodeFilledStoresGiveTheScalarKernelsAnswer() throws Exception {
    float[][] outs = new float[2][];
    String[] kernels = {"vector", "scalar"};
    for (int i = 0; i < 2; i++) {
      DecodeAttentionBenchmark b = bench("decode", kernels[i]);
      b.setUp();
      try {
        b.decode(BH);
        outs[i] = b.output().clone();
      } finally {
        b.tearDown();
      }
    }
    double worst = 0, largest = 0;
    for (int j = 0; j < outs[0].length; j++) {
      assertTrue(Float.isFinite(outs[0][j]));
      worst = Math.max(worst, Math.abs(outs[0][j] - outs[1][j]));
      largest = Math.max(largest, Math.abs(outs[1][j]));
    }
    assertTrue(largest > 0, "an output that is all zeros would pass anything");
    assertTrue(worst <= 1e-5 * Math.max(1, largest), "vector vs scalar: " + worst);
  }

  @Test
  void anUnknownFillIsRefusedByName() {
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> bench("reserved", "vector").setUp());
    assertEquals("fill must be prefill or decode, got \"reserved\"", e.getMessage());
  }
}
