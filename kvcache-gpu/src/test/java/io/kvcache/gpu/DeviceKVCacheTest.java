package io.kvcache.gpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.codec.HeadStore;
import io.kvcache.codec.StorageCodec;
import io.kvcache.core.AttentionShape;
import io.kvcache.gpu.cl.ClContext;
import io.kvcache.kernel.Kernels;
import io.kvcache.reader.PagedAttention;
import java.util.Arrays;
import java.util.Random;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * The device kernels against the CPU scalar reference ({@link PagedAttention} with
 * {@code Kernels.scalar()} over f16 stores holding the same bits), through both bindings.
 * Tolerance: 2e-4 absolute + 2e-4 relative per output element; both sides compute in f32 from the
 * same f16 inputs and differ only in summation order.
 */
class DeviceKVCacheTest {

  static final float TOL = 2e-4f;

  /** Random K/V for {@code n} tokens, appended to both the device cache and per-head CPU stores. */
  record Filled(float[] k, float[] v, HeadStore[] stores) {}

  static Filled fill(DeviceKVCache dev, AttentionShape s, int layer, int n, Random rnd) {
    int w = s.kvHeads() * s.headDim();
    float[] k = new float[n * w], v = new float[n * w];
    for (int i = 0; i < k.length; i++) {
      k[i] = (float) rnd.nextGaussian();
      v[i] = (float) rnd.nextGaussian();
    }
    int[] pos = new int[n];
    for (int t = 0; t < n; t++) {
      pos[t] = t;
    }
    // Two appends, so that a top-k decoder's incremental page summaries are exercised.
    int first = n / 3;
    dev.append(layer, first, k, v, pos);
    dev.append(layer, n - first, Arrays.copyOfRange(k, first * w, n * w), Arrays.copyOfRange(v, first * w, n * w),
        Arrays.copyOfRange(pos, first, n));
    HeadStore[] stores = new HeadStore[s.kvHeads()];
    for (int h = 0; h < s.kvHeads(); h++) {
      stores[h] = StorageCodec.f16().newStore(s.headDim());
      for (int t = 0; t < n; t++) {
        stores[h].append(k, t * w + h * s.headDim(), v, t * w + h * s.headDim(), t);
      }
    }
    return new Filled(k, v, stores);
  }

  static void assertClose(float[] want, float[] got, String what) {
    for (int i = 0; i < want.length; i++) {
      float tol = TOL + TOL * Math.abs(want[i]);
      if (!(Math.abs(want[i] - got[i]) <= tol)) {
        throw new AssertionError(what + ": element " + i + " want " + want[i] + " got " + got[i] + " (tol " + tol + ")");
      }
    }
  }

  /** The portable prefill's local memory, counted from attention.cl's arrays: over OpenCL's promised 32 KiB at 128. */
  @org.junit.jupiter.api.Test
  void portablePrefillLocalMemoryIsCountedFromTheKernel() {
    // Qs 32 x 132 + Ks 128 x 16 + Vs 16 x 128 + S 32 x 16 + alpha, lsum, mrow 3 x 32 floats; kpos 16 + rowpos 32 ints.
    assertEquals(4L * (32 * 132 + 2 * 128 * 16 + 32 * 16 + 3 * 32) + 4L * (16 + 32),
        DeviceKVCache.portablePrefillLocalBytes(128));
    assertEquals(35_904L, DeviceKVCache.portablePrefillLocalBytes(128));
    assertTrue(DeviceKVCache.portablePrefillLocalBytes(64) <= 32 * 1024, "head dim 64 fits every device");
  }

  @ParameterizedTest(name = "{0}: {1}q/{2}kv heads, d={3}, n={4}")
  @CsvSource({
      "lwjgl, 4, 4, 64, 0", "lwjgl, 4, 1, 32, 1", "lwjgl, 8, 2, 64, 37", "lwjgl, 32, 8, 128, 3001",
      "lwjgl, 8, 1, 128, 513", "lwjgl, 16, 2, 64, 1000",
      "jocl, 4, 4, 64, 0", "jocl, 4, 1, 32, 1", "jocl, 8, 2, 64, 37", "jocl, 32, 8, 128, 3001",
      "jocl, 8, 1, 128, 513"})
  void decodeMatchesCpuScalarReference(String binding, int hq, int kvh, int d, int n) {
    decodeAgainstReference(binding, hq, kvh, d, n, GpuTuning.defaults());
  }

  /**
   * Every decode launch shape the tuning allows computes the same attention. (40000 tokens in chunks of
   * 64 are 625 splits: decode_reduce walks them in two blocks of its work-group of at most 512.)
   */
  @ParameterizedTest(name = "{0}: {1}q/{2}kv d={3} n={4}, work-group {5}, chunk {6}, vector {7}")
  @CsvSource({
      "lwjgl, 32, 8, 128, 3001, 128, 128, 8", "lwjgl, 32, 8, 128, 3001, 256, 512, 8",
      "lwjgl, 4, 1, 16, 40000, 32, 64, 8",
      "lwjgl, 4, 1, 32, 700, 32, 64, 8", "lwjgl, 8, 2, 64, 1000, 64, 192, 4", "lwjgl, 4, 4, 16, 37, 32, 32, 8",
      "jocl, 32, 8, 128, 3001, 128, 256, 8", "jocl, 4, 1, 32, 700, 64, 128, 4"})
  void everyDecodeTuningMatchesReference(String binding, int hq, int kvh, int d, int n, int wg, int chunk, int vw) {
    decodeAgainstReference(binding, hq, kvh, d, n, GpuTuning.defaults().withDecode(wg, chunk, vw));
  }

  private static void decodeAgainstReference(String binding, int hq, int kvh, int d, int n, GpuTuning tuning) {
    long seed = Gpu.seed();
    Random rnd = new Random(seed);
    AttentionShape s = new AttentionShape(2, hq, kvh, d);
    try (ClContext cl = Gpu.open(binding); DeviceKVCache dev = new DeviceKVCache(cl, s, Math.max(1, n + 1), tuning)) {
      Filled f = fill(dev, s, 1, n, rnd);
      float[] q = new float[hq * d];
      for (int i = 0; i < q.length; i++) {
        q[i] = (float) rnd.nextGaussian();
      }
      int qpos = Math.max(0, n - 1);
      float[] got = new float[q.length];
      dev.decode(1, q, qpos, got);
      float[] want = new float[q.length];
      PagedAttention ref = new PagedAttention(Kernels.scalar(), d);
      for (int h = 0; h < kvh; h++) {
        ref.decode(f.stores()[h], s.groupSize(), q, h * s.groupSize() * d, qpos, s.scale(), want, h * s.groupSize() * d);
      }
      assertClose(want, got, binding + " decode " + tuning + " seed=" + seed);
      assertClose(Gpu.float64Decode(f.stores(), s, q, qpos), got, binding + " decode against float64, " + tuning
          + " seed=" + seed);
      assertEquals(n, dev.size(1));
      assertEquals(0, dev.size(0));
    }
  }

  @ParameterizedTest(name = "{0}: {1}q/{2}kv heads, d={3}, prompt {4}")
  @CsvSource({
      "lwjgl, 4, 4, 64, 1", "lwjgl, 4, 2, 32, 45", "lwjgl, 8, 2, 128, 129", "lwjgl, 6, 2, 64, 700",
      "lwjgl, 8, 1, 64, 301",
      "jocl, 4, 4, 64, 1", "jocl, 4, 2, 32, 45", "jocl, 8, 2, 128, 129", "jocl, 6, 2, 64, 700",
      "jocl, 8, 1, 64, 301"})
  void prefillMatchesCpuScalarReference(String binding, int hq, int kvh, int d, int n) {
    long seed = Gpu.seed();
    Random rnd = new Random(seed);
    AttentionShape s = new AttentionShape(1, hq, kvh, d);
    try (ClContext cl = Gpu.open(binding); DeviceKVCache dev = new DeviceKVCache(cl, s, n)) {
      Filled f = fill(dev, s, 0, n, rnd);
      int w = hq * d;
      float[] q = new float[n * w];
      for (int i = 0; i < q.length; i++) {
        q[i] = (float) rnd.nextGaussian();
      }
      int[] pos = new int[n];
      for (int t = 0; t < n; t++) {
        pos[t] = t;
      }
      float[] got = new float[n * w];
      dev.attend(0, n, q, pos, got);
      float[] want = new float[n * w];
      PagedAttention ref = new PagedAttention(Kernels.scalar(), d);
      int g = s.groupSize();
      for (int h = 0; h < kvh; h++) {
        ref.attend(f.stores()[h], n, g, q, h * g * d, w, pos, 0, s.scale(), want, h * g * d, w);
      }
      assertClose(want, got, binding + " prefill seed=" + seed);
      // Row t is decode attention of query t at position t: the float64 reference, causal by position.
      for (int t = 0; t < n; t += Math.max(1, n / 17)) {
        float[] row = Gpu.float64Decode(f.stores(), s, Arrays.copyOfRange(q, t * w, (t + 1) * w), t);
        assertClose(row, Arrays.copyOfRange(got, t * w, (t + 1) * w), binding + " prefill row " + t
            + " against float64, seed=" + seed);
      }
      assertTrue(dev.lastKernelNanos() > 0, "profiling events report device time");
    }
  }

  @org.junit.jupiter.api.Test
  void tensorCorePrefillIsRefusedWhereTheDeviceHasNone() {
    try (ClContext cl = Gpu.open("lwjgl")) {
      org.junit.jupiter.api.Assumptions.assumeTrue(cl.computeCapability() < 80, "this device has tensor cores");
      AttentionShape s = new AttentionShape(1, 4, 1, 64);
      IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
          () -> new DeviceKVCache(cl, s, 16, GpuTuning.defaults().withPrefill(GpuTuning.Prefill.MMA)));
      assertTrue(e.getMessage().contains("compute capability 8.0"), e.getMessage());
      try (DeviceKVCache auto = new DeviceKVCache(cl, s, 16, GpuTuning.defaults())) {
        assertEquals("simt-f32", auto.prefillKernel(), "AUTO falls back to the portable kernel");
      }
    }
  }
}
