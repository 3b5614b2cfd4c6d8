package io.kvcache.gpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;

import io.kvcache.codec.StorageCodec;
import io.kvcache.core.AttentionBackend;
import io.kvcache.core.AttentionShape;
import io.kvcache.core.KVCache;
import io.kvcache.core.KVCacheStrategy;
import io.kvcache.core.Strategies;
import io.kvcache.gpu.cl.ClContext;
import io.kvcache.gpu.cl.OpenCl;
import io.kvcache.kernel.Kernels;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** A strategy configured with the GPU backend gives the CPU strategy's outputs through the same API. */
class GpuAttentionBackendTest {

  static float[] gaussian(Random rnd, int n) {
    float[] x = new float[n];
    for (int i = 0; i < n; i++) {
      x[i] = (float) rnd.nextGaussian();
    }
    return x;
  }

  @ParameterizedTest(name = "{0}, top-k budget {1}")
  @CsvSource({"lwjgl, 0", "jocl, 0", "lwjgl, 4096"})
  void gpuStrategyMatchesCpuStrategyOverPrefillAndDecode(String binding, int budget) {
    long seed = Gpu.seed();
    Random rnd = new Random(seed);
    AttentionShape s = new AttentionShape(2, 8, 2, 64);
    int prompt = 50, steps = 5;
    KVCacheStrategy cpu = KVCacheStrategy.builder().kernels(Kernels.scalar()).build();
    try (GpuAttentionBackend gpu = new GpuAttentionBackend(Gpu.open(binding), 1024,
            budget > 0 ? new TopKDecoder.Config(budget, 8, 16) : null);
        KVCache a = cpu.newCache(s);
        KVCache b = cpu.toBuilder().backend(gpu).build().newCache(s)) {
      assertInstanceOf(GpuKVCache.class, b);
      for (int layer = 0; layer < 2; layer++) {
        float[] q = gaussian(rnd, prompt * s.queryWidth()), k = gaussian(rnd, prompt * s.kvWidth()),
            v = gaussian(rnd, prompt * s.kvWidth());
        float[] oa = new float[q.length], ob = new float[q.length];
        a.prefill(layer, prompt, q, k, v, oa);
        b.prefill(layer, prompt, q, k, v, ob);
        DeviceKVCacheTest.assertClose(oa, ob, binding + " prefill layer " + layer + " seed=" + seed);
      }
      for (int step = 0; step < steps; step++) {
        for (int layer = 0; layer < 2; layer++) {
          float[] q = gaussian(rnd, s.queryWidth()), k = gaussian(rnd, s.kvWidth()), v = gaussian(rnd, s.kvWidth());
          float[] oa = new float[q.length], ob = new float[q.length];
          a.decode(layer, q, k, v, oa);
          b.decode(layer, q, k, v, ob);
          DeviceKVCacheTest.assertClose(oa, ob, binding + " decode step " + step + " seed=" + seed);
        }
      }
      assertEquals(a.stats().totalRetained(), b.stats().totalRetained());
      // The device holds every layer's keys and values at capacity from the start, as f16, and counts so.
      int capacityTokens = 1024; // the backend's, a whole number of 16-token pages
      assertEquals(2L * s.layers() * capacityTokens * s.kvWidth() * 2, b.stats().payloadBytes());
      // Positions, 4 bytes a slot; with top-k decode, also its page summaries (two f16 rows per page).
      long summaries = budget > 0 ? 2L * s.layers() * (capacityTokens / 16) * s.kvWidth() * 2 : 0;
      assertTrue(b.stats().metadataBytes() >= 4L * s.layers() * capacityTokens + summaries,
          b.stats().metadataBytes() + " bytes of metadata");
      assertTrue(b.stats().payloadBytes() >= a.stats().payloadBytes());
      assertThrows(IllegalStateException.class, b::endPrefill);
    }
  }

  /**
   * Caches of one backend share its OpenCL context: used from four threads at once, each still gives the
   * CPU cache's outputs for its own inputs (without the lock, their uploads share pinned staging memory).
   */
  @Test
  void cachesOfOneBackendMayBeUsedFromSeveralThreads() throws Exception {
    long seed = Gpu.seed();
    AttentionShape s = new AttentionShape(1, 8, 2, 64);
    int prompt = 40, steps = 20, threads = 4;
    KVCacheStrategy cpu = KVCacheStrategy.builder().kernels(Kernels.scalar()).build();
    try (GpuAttentionBackend gpu = new GpuAttentionBackend(Gpu.open("lwjgl"), 1024, null)) {
      KVCacheStrategy onGpu = cpu.toBuilder().backend(gpu).build();
      java.util.concurrent.ExecutorService pool = java.util.concurrent.Executors.newFixedThreadPool(threads);
      try {
        java.util.List<java.util.concurrent.Future<?>> runs = new java.util.ArrayList<>();
        for (int i = 0; i < threads; i++) {
          long mine = seed + i;
          runs.add(pool.submit(() -> {
            Random rnd = new Random(mine);
            try (KVCache a = cpu.newCache(s); KVCache b = onGpu.newCache(s)) {
              float[] q = gaussian(rnd, prompt * s.queryWidth()), k = gaussian(rnd, prompt * s.kvWidth()),
                  v = gaussian(rnd, prompt * s.kvWidth());
              float[] oa = new float[q.length], ob = new float[q.length];
              a.prefill(0, prompt, q, k, v, oa);
              b.prefill(0, prompt, q, k, v, ob);
              DeviceKVCacheTest.assertClose(oa, ob, "prefill seed=" + mine);
              for (int step = 0; step < steps; step++) {
                float[] q1 = gaussian(rnd, s.queryWidth()), k1 = gaussian(rnd, s.kvWidth()), v1 = gaussian(rnd, s.kvWidth());
                float[] da = new float[q1.length], db = new float[q1.length];
                a.decode(0, q1, k1, v1, da);
                b.decode(0, q1, k1, v1, db);
                DeviceKVCacheTest.assertClose(da, db, "decode step " + step + " seed=" + mine);
              }
            }
            return null;
          }));
        }
        for (java.util.concurrent.Future<?> f : runs) {
          f.get();
        }
      } finally {
        pool.shutdownNow();
      }
    }
  }

  /** A decode the device would refuse (a value beyond f16) is refused before it ends the prompt. */
  @Test
  void aRefusedDecodeLeavesThePromptOpen() {
    AttentionShape s = new AttentionShape(1, 8, 2, 64);
    try (GpuAttentionBackend gpu = new GpuAttentionBackend(Gpu.open("lwjgl"), 64, null);
        KVCache b = KVCacheStrategy.builder().backend(gpu).build().newCache(s)) {
      Random rnd = new Random(1);
      float[] q = gaussian(rnd, s.queryWidth()), k = gaussian(rnd, s.kvWidth()), v = gaussian(rnd, s.kvWidth());
      float[] out = new float[q.length];
      b.prefill(0, 1, q, k, v, out);
      k[3] = 1e6f;
      IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> b.decode(0, q, k, v, out));
      assertTrue(e.getMessage().contains("65504") && e.getMessage().contains("1000000"), e.getMessage());
      assertEquals(1, b.stats().totalRetained() / s.kvHeads(), "nothing stored");
      k[3] = 0f;
      // Integer.MAX_VALUE is the kernels' mark of an empty slot: refused as a position.
      e = assertThrows(IllegalArgumentException.class,
          () -> b.prefill(0, 1, new int[] {Integer.MAX_VALUE}, q, 0, k, 0, v, 0, out, 0));
      assertTrue(e.getMessage().contains("2147483647"), e.getMessage());
      assertEquals(1, b.stats().totalRetained() / s.kvHeads(), "still nothing stored");
      b.endPrefill(); // still open
    }
  }

  /**
   * SwiftKV with AcrossKV end to end on the device: a random-weight 4-layer model (layers 2 and 3 share
   * one cache) gives the CPU cache's logits over a prompt and decode steps, the same tokens greedily.
   */
  @Test
  void swiftKVWithAcrossKVRunsTheModelOnTheDevice() {
    io.kvcache.model.LlamaConfig config = io.kvcache.model.RandomWeights.shape("tiny");
    KVCacheStrategy cpu = io.kvcache.core.Strategies.swiftKV(0.5, 2).toBuilder().kernels(Kernels.scalar()).build();
    try (io.kvcache.model.LlamaWeights w = io.kvcache.model.RandomWeights.create(config, 11);
        GpuAttentionBackend gpu = new GpuAttentionBackend(Gpu.open("lwjgl"), 256, null)) {
      KVCacheStrategy dev = cpu.toBuilder().backend(gpu).build();
      io.kvcache.model.LlamaModel m = io.kvcache.model.LlamaModel.of(w);
      try (KVCache probe = dev.newCache(config.shape())) {
        assertInstanceOf(GpuKVCache.class, probe, "the device serves AcrossKV");
      }
      long seed = Gpu.seed();
      Random rnd = new Random(seed);
      int[] prompt = new int[37];
      for (int i = 0; i < prompt.length; i++) {
        prompt[i] = 3 + rnd.nextInt(config.vocabSize() - 3);
      }
      float[] la = new float[config.vocabSize()], lb = new float[config.vocabSize()];
      try (io.kvcache.model.LlamaModel.Sequence a = m.newSequence(cpu, 16);
          io.kvcache.model.LlamaModel.Sequence b = m.newSequence(dev, 16)) {
        a.prefill(prompt, la);
        b.prefill(prompt, lb);
        assertLogitsClose(la, lb, "prefill, seed=" + seed);
        for (int step = 0; step < 6; step++) {
          int next = argmax(la);
          assertEquals(next, argmax(lb), "greedy token at step " + step + ", seed=" + seed);
          a.decode(next, la);
          b.decode(next, lb);
          assertLogitsClose(la, lb, "decode step " + step + ", seed=" + seed);
        }
      }
    }
  }

  private static void assertLogitsClose(float[] want, float[] got, String what) {
    double scale = 0, worst = 0;
    for (int i = 0; i < want.length; i++) {
      scale = Math.max(scale, Math.abs(want[i]));
      worst = Math.max(worst, Math.abs(want[i] - got[i]));
    }
    assertTrue(scale > 0, "logits are not all zero");
    // f16 storage on both sides; the device adds in another order: float rounding through 4 layers.
    assertTrue(worst <= 1e-3 * scale, what + ": max |cpu - gpu| = " + worst + " of " + scale);
  }

  private static int argmax(float[] x) {
    int best = 0;
    for (int i = 1; i < x.length; i++) {
      if (x[i] > x[best]) {
        best = i;
      }
    }
    return best;
  }

  /** AcrossKV's read-only calls: attending to a stored layer without storing matches the CPU cache. */
  @Test
  void readOnlyAttentionMatchesTheCpuCache() {
    long seed = Gpu.seed();
    Random rnd = new Random(seed);
    AttentionShape s = new AttentionShape(1, 8, 2, 64);
    int prompt = 40;
    KVCacheStrategy cpu = KVCacheStrategy.builder().kernels(Kernels.scalar()).build();
    try (GpuAttentionBackend gpu = new GpuAttentionBackend(Gpu.open("lwjgl"), 1024, null);
        KVCache a = cpu.newCache(s);
        KVCache b = cpu.toBuilder().backend(gpu).build().newCache(s)) {
      float[] q = gaussian(rnd, prompt * s.queryWidth()), k = gaussian(rnd, prompt * s.kvWidth()),
          v = gaussian(rnd, prompt * s.kvWidth());
      float[] oa = new float[q.length], ob = new float[q.length];
      a.prefill(0, prompt, q, k, v, oa);
      b.prefill(0, prompt, q, k, v, ob);
      io.kvcache.core.CacheStats before = b.stats();
      int[] pos = {3, 17, 39};
      float[] q2 = gaussian(rnd, pos.length * s.queryWidth());
      float[] ra = new float[q2.length], rb = new float[q2.length];
      a.attendPrefill(0, pos.length, pos, q2, 0, ra, 0);
      b.attendPrefill(0, pos.length, pos, q2, 0, rb, 0);
      DeviceKVCacheTest.assertClose(ra, rb, "attendPrefill seed=" + seed);
      float[] q3 = gaussian(rnd, s.queryWidth());
      float[] da = new float[q3.length], db = new float[q3.length];
      a.attendDecode(0, q3, 0, da, 0);
      b.attendDecode(0, q3, 0, db, 0);
      DeviceKVCacheTest.assertClose(da, db, "attendDecode seed=" + seed);
      assertEquals(before, b.stats(), "read-only calls store nothing");
      assertEquals(a.stats().totalRetained(), b.stats().totalRetained());
      assertThrows(IllegalArgumentException.class, () -> b.attendPrefill(0, 1, new int[] {40}, q2, 0, rb, 0),
          "a position past the stored ones");
    }
  }

  @Test
  void cachesOfAClosedBackendRefuseEveryCall() {
    AttentionShape s = new AttentionShape(1, 4, 4, 64);
    GpuAttentionBackend gpu = new GpuAttentionBackend(Gpu.open("lwjgl"), 64, null);
    KVCache c = KVCacheStrategy.builder().backend(gpu).build().newCache(s);
    assertInstanceOf(GpuKVCache.class, c);
    float[] q = new float[s.queryWidth()], kv = new float[s.kvWidth()], out = new float[s.queryWidth()];
    c.decode(0, q, kv, kv, out);
    gpu.close();
    IllegalStateException e = assertThrows(IllegalStateException.class, () -> c.decode(0, q, kv, kv, out));
    assertTrue(e.getMessage().contains("closed"), e.getMessage());
    c.close();
  }

  @Test
  void aDeclinedStrategyIsLoggedOncePerReasonNotPerCache() {
    try (GpuAttentionBackend gpu = new GpuAttentionBackend(Gpu.open("lwjgl"), 64, null)) {
      KVCacheStrategy snap = io.kvcache.core.Strategies.snapKV(32, 8, 3).toBuilder().backend(gpu).build();
      KVCacheStrategy f32 = KVCacheStrategy.builder().codec(StorageCodec.f32()).backend(gpu).build();
      for (int i = 0; i < 5; i++) { // a server makes a cache per request
        snap.newCache(new AttentionShape(1, 4, 4, 64)).close();
        f32.newCache(new AttentionShape(1, 4, 4, 64)).close();
      }
      assertEquals(2, gpu.declinesLogged(), "one line per strategy and reason");
    }
  }

  @Test
  void unsupportedStrategyRunsOnTheCpu() {
    try (GpuAttentionBackend gpu = new GpuAttentionBackend(Gpu.open("lwjgl"), 64, null)) {
      KVCacheStrategy f32 = KVCacheStrategy.builder().codec(StorageCodec.f32()).backend(gpu).build();
      try (KVCache c = f32.newCache(new AttentionShape(1, 4, 4, 64))) {
        assertFalse(c instanceof GpuKVCache, "f32 storage is not served by the device");
      }
      KVCacheStrategy across = io.kvcache.core.Strategies.swiftKV(0.5, 2).toBuilder().backend(gpu).build();
      try (KVCache c = across.newCache(new AttentionShape(4, 4, 4, 64))) {
        assertTrue(c instanceof GpuKVCache, "layers sharing a cache (AcrossKV) use read-only attention, which it has");
      }
      KVCacheStrategy skipOnly = io.kvcache.core.Strategies.swiftKV(0.5, 1).toBuilder().backend(gpu).build();
      try (KVCache c = skipOnly.newCache(new AttentionShape(4, 4, 4, 64))) {
        assertTrue(c instanceof GpuKVCache, "SingleInputKV alone needs nothing the device lacks");
      }
      // A policy of the user's that calls itself "keep-all" but is not the library's keep-all: the
      // device must not stand in for it.
      io.kvcache.retention.RetentionPolicy impostor = new io.kvcache.retention.RetentionPolicy() {
        @Override
        public String name() {
          return io.kvcache.retention.RetentionPolicy.keepAll().name();
        }

        @Override
        public State newState(AttentionShape shape) {
          return io.kvcache.retention.RetentionPolicy.sinksAndWindow(1, 16).newState(shape);
        }
      };
      KVCacheStrategy named = KVCacheStrategy.builder().retention(impostor).backend(gpu).build();
      try (KVCache c = named.newCache(new AttentionShape(1, 4, 4, 64))) {
        assertFalse(c instanceof GpuKVCache, "a retention policy is matched by identity, not by its name");
      }
    }
  }

  @Test
  void theDocsLoopReleasesTheDeviceWhenTheBackendCloses() {
    AttentionShape s = new AttentionShape(1, 4, 4, 64);
    float[] q = new float[s.queryWidth()], kv = new float[s.kvWidth()], out = new float[s.queryWidth()];
    ClContext cl;
    // As docs/gpu.md writes it: the backend through its interface, in try-with-resources.
    try (AttentionBackend gpu = GpuAttentionBackend.createOrCpu(64, null)) {
      assertInstanceOf(GpuAttentionBackend.class, gpu, "these tests run where OpenCL is (PoCL in CI)");
      cl = ((GpuAttentionBackend) gpu).context();
      KVCacheStrategy st = Strategies.full().toBuilder().backend(gpu).build();
      try (KVCache c = st.newCache(s)) {
        assertInstanceOf(GpuKVCache.class, c);
        c.decode(0, q, kv, kv, out);
      }
    }
    IllegalStateException e = assertThrows(IllegalStateException.class, cl::finish);
    assertTrue(e.getMessage().contains("closed"), e.getMessage());
  }

  @Test
  void noMatchingDeviceGivesTheCpuBackend() {
    String old = System.getProperty(OpenCl.DEVICE_PROPERTY);
    System.setProperty(OpenCl.DEVICE_PROPERTY, "no-such-device-xyz");
    try {
      assertSame(AttentionBackend.cpu(), GpuAttentionBackend.createOrCpu(64, null));
      assertEquals("cpu", AttentionBackend.cpu().name());
    } finally {
      if (old == null) {
        System.clearProperty(OpenCl.DEVICE_PROPERTY);
      } else {
        System.setProperty(OpenCl.DEVICE_PROPERTY, old);
      }
    }
  }
}
