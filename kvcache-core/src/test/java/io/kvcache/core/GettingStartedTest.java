package io.kvcache.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import io.kvcache.codec.StorageCodec;
import io.kvcache.retention.RetentionPolicy;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * The loops of README's quick example and docs/getting-started.md, with their arrays declared, at a
 * smaller shape: what a reader copies must run and mean what the docs say.
 */
class GettingStartedTest {

  static final AttentionShape SHAPE = new AttentionShape(4, 8, 2, 64); // layers, q heads, kv heads, dim

  /** Prompt chunks of {@code tokens} and one decode token per layer, as the docs' loop runs them. */
  static float[][] run(KVCacheStrategy strategy, int tokens, long seed) {
    SplittableRandom rnd = new SplittableRandom(seed);
    int layers = SHAPE.layers(), qw = SHAPE.queryWidth(), kw = SHAPE.kvWidth();
    float[][] q = new float[layers][], k = new float[layers][], v = new float[layers][];
    float[][] q1 = new float[layers][], k1 = new float[layers][], v1 = new float[layers][];
    for (int l = 0; l < layers; l++) {
      q[l] = TestData.gaussian(rnd, tokens * qw, 1);
      k[l] = TestData.gaussian(rnd, tokens * kw, 1);
      v[l] = TestData.gaussian(rnd, tokens * kw, 1);
      q1[l] = TestData.gaussian(rnd, qw, 1);
      k1[l] = TestData.gaussian(rnd, kw, 1);
      v1[l] = TestData.gaussian(rnd, kw, 1);
    }
    float[][] attnOut = new float[layers][tokens * qw];
    float[][] attnOut1 = new float[layers][qw];
    try (KVCache cache = strategy.newCache(SHAPE)) {
      for (int l = 0; l < SHAPE.layers(); l++) {
        cache.prefill(l, tokens, q[l], k[l], v[l], attnOut[l]);
      }
      cache.endPrefill();
      for (int l = 0; l < SHAPE.layers(); l++) {
        cache.decode(l, q1[l], k1[l], v1[l], attnOut1[l]);
      }
      CacheStats stats = cache.stats();
      assertEquals(tokens + 1, stats.tokensSeen()[SHAPE.layers() - 1]);
    }
    return attnOut1;
  }

  @Test
  void streamingLlmWithEveryTokenInItsWindowIsTheFullCache() {
    int tokens = 100;
    float[][] full = run(Strategies.full(), tokens, 11);
    float[][] streaming = run(Strategies.streamingLLM(4, 2048), tokens, 11);
    for (int l = 0; l < SHAPE.layers(); l++) {
      assertArrayEquals(full[l], streaming[l], "layer " + l);
    }
  }

  @Test
  void theBuilderExampleHoldsSinksAndWindow() {
    KVCacheStrategy s = KVCacheStrategy.builder()
        .codec(StorageCodec.f32())
        .retention(RetentionPolicy.sinksAndWindow(4, 1024))
        .build();
    SplittableRandom rnd = new SplittableRandom(12);
    int tokens = 1500;
    try (KVCache cache = s.newCache(SHAPE)) {
      for (int l = 0; l < SHAPE.layers(); l++) {
        cache.prefill(l, tokens, TestData.gaussian(rnd, tokens * SHAPE.queryWidth(), 1),
            TestData.gaussian(rnd, tokens * SHAPE.kvWidth(), 1), TestData.gaussian(rnd, tokens * SHAPE.kvWidth(), 1),
            new float[tokens * SHAPE.queryWidth()]);
      }
      cache.endPrefill();
      assertEquals(4 + 1024, cache.stats().retained()[0][0]);
      assertEquals(SHAPE.layers() * SHAPE.kvHeads() * (4 + 1024L), cache.stats().totalRetained());
    }
  }
}
