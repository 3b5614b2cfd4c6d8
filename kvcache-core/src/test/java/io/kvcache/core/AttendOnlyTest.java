package io.kvcache.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.codec.StorageCodec;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** {@link KVCache#attendPrefill} and {@link KVCache#attendDecode}: the attention of a store, storing nothing. */
class AttendOnlyTest {

  static float[] gaussian(SplittableRandom r, int n) {
    float[] a = new float[n];
    for (int i = 0; i < n; i++) {
      a[i] = (float) r.nextGaussian();
    }
    return a;
  }

  @Test
  void attendingWithTheSameQueriesReproducesTheAppendingCallsOutput() {
    long seed = TestData.seed();
    SplittableRandom r = new SplittableRandom(seed);
    AttentionShape shape = new AttentionShape(2, 4, 2, 16);
    try (KVCache c = Strategies.full(StorageCodec.f32()).newCache(shape)) {
      int t = 21;
      float[] q = gaussian(r, t * shape.queryWidth());
      float[] out = new float[q.length];
      c.prefill(0, t, q, gaussian(r, t * shape.kvWidth()), gaussian(r, t * shape.kvWidth()), out);
      float[] again = new float[q.length];
      int[] pos = new int[t];
      for (int i = 0; i < t; i++) {
        pos[i] = i;
      }
      long before = c.stats().tokensSeen()[0];
      c.attendPrefill(0, t, pos, q, 0, again, 0);
      assertArrayEquals(out, again, "seed=" + seed);
      assertArrayEquals(new long[] {before, 0}, c.stats().tokensSeen(), "seed=" + seed + ": nothing stored");
      IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
          () -> c.attendPrefill(0, 1, new int[] {t}, q, 0, again, 0));
      org.junit.jupiter.api.Assertions.assertTrue(e.getMessage().contains("positions"), e.getMessage());
      assertThrows(IllegalStateException.class, () -> c.attendDecode(1, q, 0, again, 0));

      float[] dq = gaussian(r, shape.queryWidth());
      float[] dout = new float[dq.length];
      c.decode(0, dq, gaussian(r, shape.kvWidth()), gaussian(r, shape.kvWidth()), dout);
      float[] dagain = new float[dq.length];
      c.attendDecode(0, dq, 0, dagain, 0);
      assertArrayEquals(dout, dagain, "seed=" + seed);
    }
  }

  /**
   * SKVQ quantizes what leaves its window after an attention. A layer sharing the cache (AcrossKV)
   * attends to the owner's chunk after the owner's prefill: it must see the chunk as the owner's queries
   * did, at full precision within the window, not as codes quantized in between (which moved the
   * outputs by 0.3-0.5 relative error before the step waited for the next append).
   */
  @org.junit.jupiter.params.ParameterizedTest(name = "{0}")
  @org.junit.jupiter.params.provider.ValueSource(strings = {"keep-all", "snapKV", "snapKV++", "kvCrush"})
  void aSharingLayerSeesTheStoreAsTheOwningLayerSawIt(String policy) {
    long seed = TestData.seed();
    SplittableRandom r = new SplittableRandom(seed);
    AttentionShape shape = new AttentionShape(1, 4, 2, 32);
    KVCacheStrategy s = Strategies.skvq(2, 2, 16);
    // Each compresses at the end of the prompt through its observation window, then decodes over what it kept.
    io.kvcache.retention.RetentionPolicy retention = switch (policy) {
      case "snapKV" -> io.kvcache.retention.SnapKV.of(100, 16, 3);
      case "snapKV++" -> io.kvcache.rocketkv.SnapKVPlusPlus.of(100, 16);
      case "kvCrush" -> io.kvcache.kvcrush.KVCrush.builder(100).window(16).build();
      default -> io.kvcache.retention.RetentionPolicy.keepAll();
    };
    assertTrue(retention.actsAtEndOfPrompt(), policy + " acts at the end of the prompt only");
    s = s.toBuilder().retention(retention).build();
    try (KVCache c = s.newCache(shape)) {
      for (int chunk = 0; chunk < 2; chunk++) { // the second chunk follows codes the first left behind
        int t = 96;
        float[] q = gaussian(r, t * shape.queryWidth());
        float[] out = new float[q.length];
        c.prefill(0, t, q, gaussian(r, t * shape.kvWidth()), gaussian(r, t * shape.kvWidth()), out);
        int[] pos = new int[t];
        for (int i = 0; i < t; i++) {
          pos[i] = chunk * t + i;
        }
        float[] again = new float[q.length];
        c.attendPrefill(0, t, pos, q, 0, again, 0);
        assertArrayEquals(out, again, policy + " chunk " + chunk + ", seed=" + seed);
      }
      for (int step = 0; step < 20; step++) {
        float[] dq = gaussian(r, shape.queryWidth());
        float[] dout = new float[dq.length];
        c.decode(0, dq, gaussian(r, shape.kvWidth()), gaussian(r, shape.kvWidth()), dout);
        float[] dagain = new float[dq.length];
        c.attendDecode(0, dq, 0, dagain, 0);
        assertArrayEquals(dout, dagain, policy + " decode step " + step + ", seed=" + seed);
      }
    }
  }
}
