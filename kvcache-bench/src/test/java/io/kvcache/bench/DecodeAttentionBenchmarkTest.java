package io.kvcache.bench;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.codec.HeadStore;
import io.kvcache.codec.StorageCodec;
import io.kvcache.kernel.Kernels;
import io.kvcache.reader.PagedAttention;
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
  void decodeFilledStoresGiveWhatOneReservedBlockOfTheSameTokensGives() throws Exception {
    DecodeAttentionBenchmark b = bench("decode", "vector");
    b.setUp();
    float[] out;
    try {
      b.decode(BH);
      out = b.output().clone();
    } finally {
      b.tearDown();
    }
    // The same draws in the same order (fillAsDecode, then the query), into stores that hold them in
    // one reserved block each, read by the scalar reference kernels.
    int kvh = DecodeAttentionBenchmark.KV_HEADS, d = DecodeAttentionBenchmark.HEAD_DIM;
    int g = DecodeAttentionBenchmark.QUERY_HEADS / kvh;
    SplittableRandom rnd = new SplittableRandom(1);
    HeadStore[] ref = new HeadStore[kvh];
    for (int h = 0; h < kvh; h++) {
      ref[h] = StorageCodec.f16().newStore(d);
      ref[h].reserve(b.context);
    }
    float[] k = new float[d], v = new float[d];
    for (int t = 0; t < b.context; t++) {
      for (HeadStore s : ref) {
        for (int i = 0; i < d; i++) {
          k[i] = (float) rnd.nextGaussian();
          v[i] = (float) rnd.nextGaussian();
        }
        s.append(k, 0, v, 0, t);
      }
    }
    float[] q = new float[DecodeAttentionBenchmark.QUERY_HEADS * d];
    for (int i = 0; i < q.length; i++) {
      q[i] = (float) rnd.nextGaussian();
    }
    float[] expected = new float[q.length];
    float scale = (float) (1 / Math.sqrt(d));
    for (int h = 0; h < kvh; h++) {
      new PagedAttention(Kernels.scalar(), d).decode(ref[h], g, q, h * g * d, b.context, scale, expected, h * g * d);
    }
    double worst = 0, largest = 0;
    for (int j = 0; j < out.length; j++) {
      worst = Math.max(worst, Math.abs(out[j] - expected[j]));
      largest = Math.max(largest, Math.abs(expected[j]));
    }
    assertTrue(largest > 0, "an output that is all zeros would pass anything");
    assertTrue(worst <= 1e-5 * Math.max(1, largest), "merged pages, vector kernels vs one block, scalar: " + worst);
  }


  /**
   * Every thread count from 1 to 8 covers every KV head: the one-thread run writes every output, and
   * each other count gives the one-thread output.
   */
  @Test
  void everyThreadCountSplitsTheHeadsAndGivesTheOneThreadOutput() throws Exception {
    float[] one = null;
    for (int threads = 1; threads <= DecodeAttentionBenchmark.KV_HEADS; threads++) {
      DecodeAttentionBenchmark b = bench("prefill", "vector");
      b.threads = threads;
      b.setUp();
      try {
        java.util.Arrays.fill(b.output(), Float.NaN); // a head left out keeps NaN
        b.decode(BH);
        if (one == null) {
          one = b.output().clone();
          for (int i = 0; i < one.length; i++) {
            // assertArrayEquals counts NaN equal to NaN: the one-thread run must itself cover every head.
            assertTrue(Float.isFinite(one[i]), "one thread left output " + i + " unwritten");
          }
        }
        org.junit.jupiter.api.Assertions.assertArrayEquals(one, b.output(), "threads " + threads);
      } finally {
        b.tearDown();
      }
    }
  }

  @Test
  void unknownParametersAreRefusedByName() {
    DecodeAttentionBenchmark b = bench("prefill", "scaler");
    assertEquals("kernels must be scalar or vector, got \"scaler\"",
        assertThrows(IllegalArgumentException.class, b::setUp).getMessage());
    DecodeAttentionBenchmark c = bench("prefill", "vector");
    c.codec = "bf16";
    assertEquals("codec must be f16 or f32, got \"bf16\"", assertThrows(IllegalArgumentException.class, c::setUp).getMessage());
    DecodeAttentionBenchmark t = bench("prefill", "vector");
    t.threads = 16;
    assertTrue(assertThrows(IllegalArgumentException.class, t::setUp).getMessage().startsWith("threads must be in [1, 8]"));
  }

  @Test
  void anUnknownFillIsRefusedByName() {
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> bench("reserved", "vector").setUp());
    assertEquals("fill must be prefill or decode, got \"reserved\"", e.getMessage());
  }
}
