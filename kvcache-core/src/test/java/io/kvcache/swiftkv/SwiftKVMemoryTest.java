package io.kvcache.swiftkv;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.core.AttentionShape;
import io.kvcache.core.CacheStats;
import io.kvcache.core.KVCacheStrategy;
import io.kvcache.core.Strategies;
import io.kvcache.skvq.SkvqCodec;
import org.junit.jupiter.api.Test;

/**
 * AcrossKV's saving to the byte, alone and over SKVQ storage, filling caches as the decoder does
 * ({@link SwiftKVMemoryProbe#fill}) on an 8-layer model with Llama-3.2-1B's KV heads and head dim.
 */
class SwiftKVMemoryTest {

  static final AttentionShape SHAPE = new AttentionShape(8, 8, 8, 64);
  static final int PROMPT = 700;

  @Test
  void skipAtHalfDepthWithPairsHoldsThreeQuartersOfThePlainCacheToTheByte() {
    CacheStats plain = SwiftKVMemoryProbe.fill(Strategies.full(), SHAPE, PROMPT, 1);
    CacheStats swift = SwiftKVMemoryProbe.fill(Strategies.swiftKV(0.5, 2), SHAPE, PROMPT, 2);
    assertEquals(plain.payloadBytes() * 3, swift.payloadBytes() * 4, "payload");
    assertEquals(plain.bytesHeld() * 3, swift.bytesHeld() * 4, "payload + metadata");
    for (int l = 0; l < 8; l++) {
      int want = l >= 4 && l % 2 == 1 ? 0 : PROMPT;
      assertEquals(want, swift.retained()[l][0], "layer " + l);
    }
    CacheStats single = SwiftKVMemoryProbe.fill(Strategies.swiftKV(0.5, 1), SHAPE, PROMPT, 3);
    assertEquals(plain.bytesHeld(), single.bytesHeld(), "groups of 1 keep every layer's cache");
  }

  @Test
  void acrossKvComposesWithSkvqStorage() {
    KVCacheStrategy skvq = Strategies.skvq();
    KVCacheStrategy both = Strategies.swiftKV(0.5, 2, skvq.codec());
    assertTrue(both.codec() instanceof SkvqCodec && both.schedule() instanceof SwiftKVSchedule, both.name());
    assertEquals("swiftKV(0.5,2)+skvq-k2-v1.5-g128-w128", both.name());
    // Four layers and 400 tokens keep SKVQ's calibration short; past the 128-token window codes are stored.
    AttentionShape shape = new AttentionShape(4, 8, 8, 64);
    CacheStats plainF16 = SwiftKVMemoryProbe.fill(Strategies.full(), shape, 400, 4);
    CacheStats plainSkvq = SwiftKVMemoryProbe.fill(skvq, shape, 400, 5);
    CacheStats swiftSkvq = SwiftKVMemoryProbe.fill(both, shape, 400, 6);
    assertEquals(plainSkvq.payloadBytes() * 3, swiftSkvq.payloadBytes() * 4, "AcrossKV saves a quarter of SKVQ's bytes");
    assertEquals(plainSkvq.bytesHeld() * 3, swiftSkvq.bytesHeld() * 4);
    assertEquals(0, swiftSkvq.retained()[3][0], "a sharing layer stores nothing");
    // Codes, not f16 (which would be 3/4 of the plain f16 payload): half is a loose bound at 400
    // tokens, where the 128-token f16 window and 5 sinks are a third of the prompt.
    assertTrue(swiftSkvq.payloadBytes() * 2 < plainF16.payloadBytes(), swiftSkvq.payloadBytes() + " vs "
        + plainF16.payloadBytes());
  }
}
