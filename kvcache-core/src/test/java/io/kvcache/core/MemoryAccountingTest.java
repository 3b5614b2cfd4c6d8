package io.kvcache.core;

import static org.junit.jupiter.api.Assertions.assertEquals;

import io.kvcache.codec.HeadStore;
import io.kvcache.codec.StorageCodec;
import io.kvcache.kvcrush.KVCrush;
import io.kvcache.skvq.SkvqCodec;
import io.kvcache.skvq.SkvqConfig;
import java.util.SplittableRandom;
import java.util.stream.Stream;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * CacheStats' bytes against the arrays the stores really hold, over random operation sequences: prefill
 * chunks of random sizes, rows appended without queries, decode steps, budgeted evictions and their
 * compactions, SKVQ window steps.
 */
class MemoryAccountingTest {

  static final AttentionShape SHAPE = new AttentionShape(2, 4, 2, 128);

  static Stream<Arguments> strategies() {
    StorageCodec f32 = StorageCodec.f32();
    StorageCodec skvq = SkvqCodec.of(SkvqConfig.paperDefault().withWindow(32, 3));
    return Stream.of(
        Arguments.of(Strategies.full()),
        Arguments.of(Strategies.full(f32)),
        Arguments.of(Strategies.skvq(SkvqConfig.paperDefault().withWindow(32, 3))),
        Arguments.of(Strategies.streamingLLM(4, 80)),
        Arguments.of(Strategies.streamingLLM(4, 80).toBuilder().codec(f32).build()),
        Arguments.of(Strategies.streamingLLM(4, 80).toBuilder().codec(skvq).build()),
        Arguments.of(Strategies.snapKV(160, 16, 7)),
        Arguments.of(Strategies.snapKV(160, 16, 7).toBuilder().codec(f32).build()),
        Arguments.of(Strategies.snapKV(160, 16, 7).toBuilder().codec(skvq).build()),
        Arguments.of(Strategies.h2o(64, 40)),
        Arguments.of(Strategies.h2o(64, 40).toBuilder().codec(f32).build()),
        Arguments.of(Strategies.h2o(64, 40).toBuilder().codec(skvq).build()),
        Arguments.of(Strategies.kvCrush(160)),
        Arguments.of(Strategies.kvCrush(KVCrush.builder(160).importance(KVCrush.Importance.H2O).build())),
        Arguments.of(Strategies.rocketKV(64)));
  }

  @ParameterizedTest
  @MethodSource("strategies")
  void statsCountExactlyWhatTheStoresHold(KVCacheStrategy strategy) {
    long seed = TestData.seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    for (int trial = 0; trial < 3; trial++) {
      KVCache cache = strategy.newCache(SHAPE);
      int prompt = 0;
      int chunks = 1 + rnd.nextInt(6);
      for (int c = 0; c < chunks; c++) {
        int n = 1 + (rnd.nextBoolean() ? rnd.nextInt(20) : rnd.nextInt(400));
        float[] q = TestData.gaussian(rnd, n * SHAPE.queryWidth(), 1);
        float[] k = TestData.gaussian(rnd, n * SHAPE.kvWidth(), 1);
        float[] v = TestData.gaussian(rnd, n * SHAPE.kvWidth(), 1);
        boolean append = rnd.nextInt(5) == 0;
        for (int layer = 0; layer < SHAPE.layers(); layer++) {
          if (append) {
            cache.append(layer, n, null, k, 0, v, 0);
          } else {
            cache.prefill(layer, n, null, q, 0, k, 0, v, 0, new float[q.length], 0);
          }
        }
        prompt += n;
        check(cache, strategy + " after chunk " + c + " (" + n + " tokens), seed " + seed);
      }
      if (rnd.nextBoolean()) {
        cache.endPrefill();
        check(cache, strategy + " after endPrefill, seed " + seed);
      }
      int steps = rnd.nextInt(160);
      for (int t = 0; t < steps; t++) {
        float[] q = TestData.gaussian(rnd, SHAPE.queryWidth(), 1);
        float[] k = TestData.gaussian(rnd, SHAPE.kvWidth(), 1);
        float[] v = TestData.gaussian(rnd, SHAPE.kvWidth(), 1);
        for (int layer = 0; layer < SHAPE.layers(); layer++) {
          cache.decode(layer, q, 0, k, 0, v, 0, new float[q.length], 0);
        }
        if (t % 7 == 0 || t == steps - 1) {
          check(cache, strategy + " after decode step " + t + " (prompt " + prompt + "), seed " + seed);
        }
      }
      cache.close();
    }
  }

  static void check(KVCache cache, String msg) {
    CacheStats st = cache.stats();
    long payload = 0, meta = 0;
    HeadStore[][] stores = HeldBytes.stores(cache);
    for (HeadStore[] layer : stores) {
      for (HeadStore s : layer) {
        long held = HeldBytes.payloadHeld(s);
        assertEquals(held, s.payloadBytes(), msg + ": payloadBytes of a " + s.getClass().getSimpleName()
            + " against the page arrays it holds");
        long extra = 0;
        if (s instanceof io.kvcache.skvq.SkvqPages p) {
          extra = (long) s.pageCount() * Short.BYTES + (p.calibrated() ? 2L * s.headDim() * 4 + 8 : 0);
        }
        assertEquals(HeldBytes.positionsHeld(s) + extra, s.metadataBytes(), msg + ": metadataBytes against the"
            + " position arrays held");
        payload += held;
        meta += s.metadataBytes();
      }
    }
    assertEquals(payload, st.payloadBytes(), msg + ": stats payload");
    assertEquals(meta, st.metadataBytes(), msg + ": stats metadata");
  }
}
