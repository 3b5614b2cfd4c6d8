package io.kvcache.model;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.codec.StorageCodec;
import io.kvcache.core.KVCacheStrategy;
import io.kvcache.core.Strategies;
import io.kvcache.swiftkv.SwiftKVSchedule;
import java.io.IOException;
import java.nio.file.Path;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** SwiftKV's schedule on a tiny random model: neutral settings are the plain model; sharing holds one cache. */
class SwiftKVTest {

  @TempDir
  Path tmp;

  static KVCacheStrategy f32(KVCacheStrategy s) {
    return s.toBuilder().codec(StorageCodec.f32()).build();
  }

  @Test
  void skipAtDepthWithoutSharingIsThePlainModel() throws IOException {
    long seed = TinyModels.seed();
    try (LlamaWeights w = LlamaWeights.loadGguf(TinyModels.write(tmp.resolve("m.gguf"), seed, 4, DType.F32))) {
      int[] p = FastKVTest.prompt(new SplittableRandom(seed), 19);
      FastKVTest.Run plain = FastKVTest.run(w, Strategies.full(StorageCodec.f32()), p);
      FastKVTest.Run swift = FastKVTest.run(w, f32(Strategies.swiftKV(1.0, 1)), p);
      assertEquals(0.0, FastKVTest.relDiff(plain.logits(), swift.logits()), "seed=" + seed);
      assertEquals(0.0, FastKVTest.relDiff(plain.next(), swift.next()), "seed=" + seed);
    }
  }

  @Test
  void acrossKvGroupsOfOneKeepEveryLayersCacheAndGroupsOfTwoStoreOnce() throws IOException {
    long seed = TinyModels.seed();
    try (LlamaWeights w = LlamaWeights.loadGguf(TinyModels.write(tmp.resolve("m.gguf"), seed, 4, DType.F32))) {
      int[] p = FastKVTest.prompt(new SplittableRandom(seed), 23);
      FastKVTest.Run single = FastKVTest.run(w, f32(Strategies.swiftKV(0.5, 1)), p);
      FastKVTest.Run shared = FastKVTest.run(w, f32(Strategies.swiftKV(0.5, 2)), p);
      for (int l = 0; l < 4; l++) {
        assertEquals(24, single.stats().retained()[l][0], "every layer caches prompt + decode token, layer " + l);
      }
      // Skip from layer 2; layers 2 and 3 share layer 2's cache: layer 3 stores nothing.
      assertEquals(24, shared.stats().retained()[2][0]);
      assertEquals(0, shared.stats().retained()[3][0]);
      assertEquals(single.stats().payloadBytes() * 3 / 4, shared.stats().payloadBytes(), "a quarter of the KV saved");
      for (float x : shared.next()) {
        assertTrue(Float.isFinite(x), "seed=" + seed);
      }
    }
  }

  @Test
  void scheduleArithmetic() {
    SwiftKVSchedule s = new SwiftKVSchedule(0.5, 2);
    assertEquals(16, s.skipFromLayer(32));
    assertEquals(15, s.cacheLayer(15, 32));
    assertEquals(16, s.cacheLayer(17, 32));
    assertEquals(30, s.cacheLayer(31, 32));
    assertEquals(4, new SwiftKVSchedule(1.0, 3).skipFromLayer(4));
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> new SwiftKVSchedule(0, 2));
    assertTrue(e.getMessage().contains("skipFraction") && e.getMessage().contains("0.0"), e.getMessage());
    e = assertThrows(IllegalArgumentException.class, () -> new SwiftKVSchedule(0.5, 0));
    assertTrue(e.getMessage().contains("acrossGroup") && e.getMessage().contains("got 0"), e.getMessage());
  }
}
