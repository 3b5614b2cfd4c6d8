package io.kvcache.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.kvcrush.KVCrush;
import io.kvcache.rocketkv.SnapKVPlusPlus;
import java.util.IdentityHashMap;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.TreeMap;
import java.util.stream.Stream;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * What a budgeted cache holds must follow what it keeps, not what it once saw: two caches of one
 * strategy, one given a short prompt and one a long prompt (each as one chunk), compressed to the same
 * budget and then decoded alike, report the same stats; every array they hold (pages, positions, the
 * stores' bookkeeping, the policy's and reader's state) must then add up to the same bytes, give or take
 * the rounding of growable arrays. Memory left sized by the long prompt is held and never counted.
 */
class HeldMemoryTest {

  static final AttentionShape SHAPE = new AttentionShape(2, 8, 2, 64);

  static Stream<Arguments> budgeted() {
    return Stream.of(
        Arguments.of(Strategies.streamingLLM(4, 124)),
        Arguments.of(Strategies.snapKV(128, 16, 7)),
        Arguments.of(Strategies.h2o(64, 64)),
        Arguments.of(Strategies.kvCrush(128)),
        Arguments.of(Strategies.kvCrush(KVCrush.builder(128).importance(KVCrush.Importance.H2O).build())),
        Arguments.of(Strategies.rocketKV(64, SnapKVPlusPlus.of(128, 16), 0.25, 16)));
  }

  @ParameterizedTest
  @MethodSource("budgeted")
  void memoryHeldFollowsTheTokensKeptNotThePromptSeen(KVCacheStrategy strategy) {
    long seed = TestData.seed();
    int decode = 40;
    try (KVCache small = run(strategy, SHORT, decode, seed); KVCache large = run(strategy, LONG, decode, seed)) {
      compare(strategy, small, large, seed);
    }
  }

  private static final int SHORT = 512, LONG = 3072;

  private static void compare(KVCacheStrategy strategy, KVCache small, KVCache large, long seed) {
    CacheStats a = small.stats(), b = large.stats();
    assertEquals(a.bytesHeld(), b.bytesHeld(), strategy + ": same budget, same stats");
    Map<String, Long> ha = HeldBytes.reachable(small, new IdentityHashMap<>());
    Map<String, Long> hb = HeldBytes.reachable(large, new IdentityHashMap<>());
    Map<String, Long> diff = new TreeMap<>();
    long extra = 0;
    for (Map.Entry<String, Long> e : hb.entrySet()) {
      long d = e.getValue() - ha.getOrDefault(e.getKey(), 0L);
      if (d > 0) {
        diff.put(e.getKey(), d);
        extra += d;
      }
    }
    // Growable arrays may round up: allow 1% of what the stats count.
    assertTrue(extra <= b.bytesHeld() / 100, strategy + ": after a " + LONG + "-token prompt the cache holds " + extra
        + " bytes more than after a " + SHORT + "-token prompt, with the same stats (bytesHeld " + b.bytesHeld() + "): "
        + diff + ", seed " + seed);
  }

  /** A page index released by a compaction and opened again never repeats a version a reader may have cached. */
  @org.junit.jupiter.api.Test
  void aPageOpenedAgainAfterACompactionNeverRepeatsAVersion() {
    io.kvcache.codec.HeadStore s = io.kvcache.codec.StorageCodec.f16().newStore(8);
    float[] x = new float[8];
    int tokens = 64 * io.kvcache.codec.HeadStore.PAGE_TOKENS;
    for (int t = 0; t < tokens; t++) {
      s.append(x, 0, x, 0, t);
    }
    int[] before = new int[64];
    for (int p = 0; p < 64; p++) {
      before[p] = s.pageVersion(p);
    }
    for (int slot = 16; slot < tokens; slot++) {
      s.evict(slot);
    }
    s.compact();
    for (int t = tokens; s.pageCount() < 64; t++) {
      s.append(x, 0, x, 0, t);
    }
    for (int p = 1; p < 64; p++) {
      assertTrue(s.pageVersion(p) != before[p], "page " + p + " has version " + before[p] + " again");
    }
  }

  static KVCache run(KVCacheStrategy strategy, int prompt, int decode, long seed) {
    SplittableRandom rnd = new SplittableRandom(seed);
    KVCache cache = strategy.newCache(SHAPE);
    float[] q = TestData.gaussian(rnd, prompt * SHAPE.queryWidth(), 1);
    float[] k = TestData.gaussian(rnd, prompt * SHAPE.kvWidth(), 1);
    float[] v = TestData.gaussian(rnd, prompt * SHAPE.kvWidth(), 1);
    float[] out = new float[q.length];
    for (int layer = 0; layer < SHAPE.layers(); layer++) {
      cache.prefill(layer, prompt, null, q, 0, k, 0, v, 0, out, 0);
    }
    cache.endPrefill();
    for (int t = 0; t < decode; t++) {
      float[] dq = TestData.gaussian(rnd, SHAPE.queryWidth(), 1);
      float[] dk = TestData.gaussian(rnd, SHAPE.kvWidth(), 1);
      float[] dv = TestData.gaussian(rnd, SHAPE.kvWidth(), 1);
      for (int layer = 0; layer < SHAPE.layers(); layer++) {
        cache.decode(layer, dq, 0, dk, 0, dv, 0, new float[dq.length], 0);
      }
    }
    return cache;
  }
}
