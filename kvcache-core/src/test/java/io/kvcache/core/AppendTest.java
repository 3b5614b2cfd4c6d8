package io.kvcache.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.codec.StorageCodec;
import io.kvcache.kvcrush.KVCrush;
import io.kvcache.retention.H2O;
import io.kvcache.retention.RetentionPolicy;
import io.kvcache.retention.SnapKV;
import io.kvcache.rocketkv.SnapKVPlusPlus;
import io.kvcache.skvq.SkvqCodec;
import io.kvcache.skvq.SkvqConfig;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * {@link KVCache#append}: rows stored without attention. Appending the rows that have no query and
 * prefilling the rest must leave the cache a prefill of every row leaves, to the bit, wherever the
 * retention policy does not score the appended rows by their own queries.
 */
class AppendTest {

  // Head dim 64 so that SKVQ's groups and its full-precision window are both exercised.
  static final AttentionShape SHAPE = new AttentionShape(2, 8, 2, 64);
  static final int PROMPT = 150;
  /** Rows with queries at the end of the prompt: at least every observation window below. */
  static final int QUERIED = 8;

  static StorageCodec skvq() {
    SkvqConfig c = SkvqConfig.of(2.0, 2.0);
    return SkvqCodec.of(c.withWindow(16, c.sinks()));
  }

  static Stream<Arguments> strategies() {
    StorageCodec[] codecs = {StorageCodec.f32(), StorageCodec.f16(), skvq()};
    String[] codecNames = {"f32", "f16", "skvq"};
    RetentionPolicy[] policies = {
        RetentionPolicy.keepAll(),
        RetentionPolicy.sinksAndWindow(4, 40),
        // The window is QUERIED rows long, so both caches end the prompt with the same window queries.
        SnapKV.of(60, QUERIED, 3),
        SnapKVPlusPlus.of(60, QUERIED),
        KVCrush.builder(60).window(QUERIED).pool(3).build(),
        // Budget above everything stored: H2O's scores then decide nothing.
        new H2O(100, 100),
    };
    List<Arguments> out = new ArrayList<>();
    for (int c = 0; c < codecs.length; c++) {
      for (RetentionPolicy p : policies) {
        out.add(Arguments.of(codecNames[c] + "/" + p.name(),
            KVCacheStrategy.builder().codec(codecs[c]).retention(p).build()));
      }
    }
    return out.stream();
  }

  static float[] gaussian(SplittableRandom r, int n) {
    float[] a = new float[n];
    for (int i = 0; i < n; i++) {
      a[i] = (float) r.nextGaussian();
    }
    return a;
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("strategies")
  void appendThenDecodeEqualsPrefillThenDecode(String name, KVCacheStrategy strategy) {
    long seed = TestData.seed();
    SplittableRandom r = new SplittableRandom(seed);
    int qw = SHAPE.queryWidth(), kw = SHAPE.kvWidth();
    int layers = SHAPE.layers();
    float[][] q = new float[layers][], k = new float[layers][], v = new float[layers][];
    for (int l = 0; l < layers; l++) {
      q[l] = gaussian(r, PROMPT * qw);
      k[l] = gaussian(r, PROMPT * kw);
      v[l] = gaussian(r, PROMPT * kw);
    }
    int skipped = PROMPT - QUERIED;
    String msg = name + " seed=" + seed;
    try (KVCache full = strategy.newCache(SHAPE); KVCache app = strategy.newCache(SHAPE)) {
      float[] outFull = new float[QUERIED * qw];
      float[] outApp = new float[QUERIED * qw];
      float[] scratch = new float[PROMPT * qw];
      for (int l = 0; l < layers; l++) {
        // The same uneven chunks on both sides (a codec or policy may act per chunk), explicit positions
        // on one side.
        for (int s = 0; s < skipped; s += 37) {
          int c = Math.min(37, skipped - s);
          full.prefill(l, c, null, q[l], s * qw, k[l], s * kw, v[l], s * kw, scratch, 0);
        }
        for (int s = 0; s < skipped; s += 37) {
          int c = Math.min(37, skipped - s);
          int[] pos = new int[c];
          for (int t = 0; t < c; t++) {
            pos[t] = s + t;
          }
          app.append(l, c, pos, k[l], s * kw, v[l], s * kw);
        }
        full.prefill(l, QUERIED, null, q[l], skipped * qw, k[l], skipped * kw, v[l], skipped * kw, outFull, 0);
        app.prefill(l, QUERIED, null, q[l], skipped * qw, k[l], skipped * kw, v[l], skipped * kw, outApp, 0);
        assertArrayEquals(outFull, outApp, msg + ": the queried rows' attention, layer " + l);
      }
      assertStatsEqual(full.stats(), app.stats(), msg + " after the prompt");
      float[] df = new float[qw], da = new float[qw];
      for (int step = 0; step < 5; step++) {
        for (int l = 0; l < layers; l++) {
          float[] dq = gaussian(r, qw), dk = gaussian(r, kw), dv = gaussian(r, kw);
          full.decode(l, dq, dk, dv, df);
          app.decode(l, dq, dk, dv, da);
          assertArrayEquals(df, da, msg + ": decode step " + step + ", layer " + l);
        }
      }
      assertStatsEqual(full.stats(), app.stats(), msg + " after decode");
    }
  }

  static void assertStatsEqual(CacheStats a, CacheStats b, String msg) {
    assertArrayEquals(a.tokensSeen(), b.tokensSeen(), msg + ": tokens seen");
    for (int l = 0; l < a.retained().length; l++) {
      assertArrayEquals(a.retained()[l], b.retained()[l], msg + ": retained, layer " + l);
    }
    assertEquals(a.payloadBytes(), b.payloadBytes(), msg + ": payload bytes");
    assertEquals(a.bytesHeld(), b.bytesHeld(), msg + ": bytes held");
  }

  @Test
  void queryScoredPoliciesScoreWithTheRowsThatHaveQueries() {
    // H2O adds each prefill chunk's attention weights to its scores; appended rows add none, and the
    // policy must not fail asking for them.
    long seed = TestData.seed();
    SplittableRandom r = new SplittableRandom(seed);
    int kw = SHAPE.kvWidth(), qw = SHAPE.queryWidth();
    try (KVCache c = KVCacheStrategy.builder().retention(new H2O(10, 10)).build().newCache(SHAPE)) {
      for (int l = 0; l < SHAPE.layers(); l++) {
        c.append(l, 40, gaussian(r, 40 * kw), gaussian(r, 40 * kw));
        c.prefill(l, 1, gaussian(r, qw), gaussian(r, kw), gaussian(r, kw), new float[qw]);
      }
      for (int[] perHead : c.stats().retained()) {
        for (int n : perHead) {
          assertEquals(20, n, "seed=" + seed + ": H2O keeps heavy + recent = 20 of the 41 rows");
        }
      }
    }
  }

  /** A cache without a store-only path: the interface's default falls back to a zero-query prefill. */
  static KVCache withoutAppend(KVCache inner) {
    return new KVCache() {
      @Override
      public AttentionShape shape() {
        return inner.shape();
      }

      @Override
      public void prefill(int layer, int tokens, int[] positions, float[] q, int qOff, float[] k, int kOff, float[] v,
          int vOff, float[] out, int outOff) {
        inner.prefill(layer, tokens, positions, q, qOff, k, kOff, v, vOff, out, outOff);
      }

      @Override
      public void endPrefill() {
        inner.endPrefill();
      }

      @Override
      public void decode(int layer, float[] q, int qOff, float[] k, int kOff, float[] v, int vOff, float[] out,
          int outOff) {
        inner.decode(layer, q, qOff, k, kOff, v, vOff, out, outOff);
      }

      @Override
      public void attendPrefill(int layer, int tokens, int[] positions, float[] q, int qOff, float[] out, int outOff) {
        inner.attendPrefill(layer, tokens, positions, q, qOff, out, outOff);
      }

      @Override
      public void attendDecode(int layer, float[] q, int qOff, float[] out, int outOff) {
        inner.attendDecode(layer, q, qOff, out, outOff);
      }

      @Override
      public CacheStats stats() {
        return inner.stats();
      }

      @Override
      public void close() {
        inner.close();
      }
    };
  }

  @Test
  void theDefaultFallsBackToAPrefillThatStoresTheSameRows() {
    long seed = TestData.seed();
    SplittableRandom r = new SplittableRandom(seed);
    int kw = SHAPE.kvWidth(), qw = SHAPE.queryWidth();
    float[] k = gaussian(r, 30 * kw), v = gaussian(r, 30 * kw);
    KVCacheStrategy s = Strategies.full(StorageCodec.f32());
    try (KVCache direct = s.newCache(SHAPE); KVCache fallback = withoutAppend(s.newCache(SHAPE))) {
      direct.append(0, 30, k, v);
      fallback.append(0, 30, k, v);
      assertThrows(IllegalArgumentException.class, () -> fallback.append(0, 0, k, v));
      assertThrows(IllegalArgumentException.class, () -> fallback.append(0, 31, k, v));
      float[] dq = gaussian(r, qw), dk = gaussian(r, kw), dv = gaussian(r, kw);
      float[] a = new float[qw], b = new float[qw];
      direct.decode(0, dq, dk, dv, a);
      fallback.decode(0, dq, dk, dv, b);
      assertArrayEquals(a, b, "seed=" + seed);
    }
  }

  static void assertRejects(Class<? extends RuntimeException> type, String names, Runnable call) {
    RuntimeException e = assertThrows(type, call::run);
    assertTrue(e.getMessage().contains(names), "expected the message to name " + names + ": " + e.getMessage());
  }

  @Test
  void badArgumentsAreNamedAndLeaveTheCacheAsItWas() {
    long seed = TestData.seed();
    SplittableRandom r = new SplittableRandom(seed);
    int kw = SHAPE.kvWidth();
    float[] k = gaussian(r, 4 * kw), v = gaussian(r, 4 * kw);
    KVCache c = Strategies.full().newCache(SHAPE);
    assertRejects(IllegalArgumentException.class, "k must hold", () -> c.append(0, 4, null, k, 1, v, 0));
    assertRejects(IllegalArgumentException.class, "v must hold", () -> c.append(0, 4, v, new float[kw]));
    assertRejects(IllegalArgumentException.class, "k must not be null", () -> c.append(0, 1, null, v));
    assertRejects(IllegalArgumentException.class, "layer", () -> c.append(-1, 4, k, v));
    assertRejects(IllegalArgumentException.class, "layer", () -> c.append(SHAPE.layers(), 4, k, v));
    assertRejects(IllegalArgumentException.class, "tokens", () -> c.append(0, 0, k, v));
    float[] nanK = k.clone();
    nanK[kw + 3] = Float.NaN;
    assertRejects(IllegalArgumentException.class, "k must be finite", () -> c.append(0, 4, nanK, v));
    float[] infV = v.clone();
    infV[2 * kw] = Float.POSITIVE_INFINITY;
    assertRejects(IllegalArgumentException.class, "v must be finite", () -> c.append(0, 4, k, infV));
    assertRejects(IllegalArgumentException.class, "positions", () -> c.append(0, 2, new int[] {3, 3}, k, 0, v, 0));
    assertRejects(IllegalArgumentException.class, "positions", () -> c.append(0, 2, new int[] {0}, k, 0, v, 0));
    assertArrayEquals(new long[] {0, 0}, c.stats().tokensSeen(), "seed=" + seed + ": nothing stored");
    c.append(0, 4, new int[] {2, 5, 6, 9}, k, 0, v, 0);
    assertRejects(IllegalArgumentException.class, "positions", () -> c.append(0, 1, new int[] {9}, k, 0, v, 0));
    assertArrayEquals(new long[] {4, 0}, c.stats().tokensSeen(), "seed=" + seed);
    c.endPrefill();
    assertRejects(IllegalStateException.class, "endPrefill", () -> c.append(1, 4, k, v));
    c.close();
    assertRejects(IllegalStateException.class, "closed", () -> c.append(0, 4, k, v));
  }
}
