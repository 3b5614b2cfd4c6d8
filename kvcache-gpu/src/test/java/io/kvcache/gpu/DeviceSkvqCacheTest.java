package io.kvcache.gpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.codec.HeadStore;
import io.kvcache.core.AttentionShape;
import io.kvcache.gpu.cl.ClContext;
import io.kvcache.skvq.SkvqConfig;
import java.util.Arrays;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * The device's SKVQ decode against float64 attention over the cache the host stores hold (every slot
 * read back dequantized, or as its f16 value in the window): the kernels are exact up to f32 rounding,
 * the codec is lossy. Tolerance: 2e-5 absolute + 2e-5 relative per output element.
 */
class DeviceSkvqCacheTest {

  static final double TOL = 2e-5;

  /** Float64 decode attention over every slot of the layer's host stores. */
  static float[] reference(DeviceSkvqCache c, int layer, float[] q) {
    HeadStore[] stores = new HeadStore[c.shape().kvHeads()];
    for (int h = 0; h < stores.length; h++) {
      stores[h] = c.store(layer, h);
    }
    return Gpu.float64Decode(stores, c.shape(), q, Integer.MAX_VALUE - 1);
  }

  static void assertClose(float[] want, float[] got, String what) {
    for (int i = 0; i < want.length; i++) {
      double tol = TOL + TOL * Math.abs(want[i]);
      if (!(Math.abs(want[i] - got[i]) <= tol)) {
        throw new AssertionError(what + ": element " + i + " want " + want[i] + " got " + got[i] + " (tol " + tol + ")");
      }
    }
  }

  static float[] gaussian(Random rnd, int n, double outlierScale) {
    float[] a = new float[n];
    for (int i = 0; i < n; i++) {
      a[i] = (float) (rnd.nextGaussian() * (i % 13 == 0 ? outlierScale : 1.0));
    }
    return a;
  }

  /**
   * A prompt in two appends, then decode steps each appending one token (tokens cross from the window
   * into codes as they go), every decode checked against the reference. {@code kernel} "simt" forces the
   * portable pass (on PoCL it is the only one; on an NVIDIA card "auto" takes the tensor cores);
   * {@code stride} spaces the positions; {@code spc} is the tuning's splits per compute unit (64: many
   * short splits; the reduction's several blocks are {@code DeviceKVCacheTest}'s 625-split case).
   */
  @ParameterizedTest(name = "{0} {1} d={2} kv={3} g={4} groups={5} window={6} sinks={7} prompt={8} stride={9} spc={10}")
  @CsvSource({
      "lwjgl, auto, 64, 2, 4, 128, 32, 5, 300, 1, 4",
      "lwjgl, auto, 128, 2, 4, 128, 128, 5, 1000, 1, 4",
      "lwjgl, auto, 128, 1, 8, 32, 16, 0, 517, 1, 4",
      "lwjgl, auto, 32, 2, 1, 16, 20, 4, 77, 1, 4",
      "lwjgl, auto, 16, 1, 6, 128, 8, 1, 41, 1, 4",
      "lwjgl, auto, 64, 2, 4, 128, 32, 5, 1, 1, 4",
      "lwjgl, auto, 64, 2, 4, 128, 32, 5, 0, 1, 4",
      "lwjgl, auto, 64, 2, 4, 128, 0, 5, 100, 1, 4",
      "lwjgl, auto, 64, 2, 4, 128, 32, 16, 300, 3, 4",
      "lwjgl, auto, 16, 1, 4, 16, 16, 4, 5000, 1, 64",
      "lwjgl, simt, 64, 2, 4, 128, 32, 5, 300, 2, 4",
      "lwjgl, simt, 128, 1, 8, 32, 16, 0, 517, 1, 4",
      "jocl, auto, 64, 2, 4, 128, 32, 5, 300, 1, 4",
  })
  void decodeMatchesFloat64AttentionOverTheHostCache(String binding, String kernel, int d, int kvh, int g, int grp,
      int window, int sinks, int prompt, int stride, int spc) {
    AttentionShape shape = new AttentionShape(2, kvh * g, kvh, d);
    SkvqConfig cfg = SkvqConfig.paperDefault().withGroups(grp, grp).withWindow(window, sinks);
    long seed = Gpu.seed();
    Random rnd = new Random(seed);
    // Enough decode steps for the first tokens to leave the window even after a prompt of 0 or 1.
    int steps = Math.max(24, window + sinks + 40 - prompt), w = kvh * d;
    GpuTuning tuning = new GpuTuning(128, 0, 4, spc, GpuTuning.Prefill.AUTO);
    try (ClContext cl = Gpu.open(binding);
         DeviceSkvqCache c = withKernel(kernel, () -> new DeviceSkvqCache(cl, shape, prompt + steps, cfg, tuning))) {
      int layer = 1;
      float[] k = gaussian(rnd, prompt * w, 6), v = gaussian(rnd, prompt * w, 1);
      int[] pos = new int[prompt];
      for (int t = 0; t < prompt; t++) {
        pos[t] = t * stride;
      }
      int first = prompt / 3;
      c.append(layer, first, k, v, pos);
      c.append(layer, prompt - first, Arrays.copyOfRange(k, first * w, prompt * w),
          Arrays.copyOfRange(v, first * w, prompt * w), Arrays.copyOfRange(pos, first, prompt));
      float[] q = new float[shape.queryHeads() * d], out = new float[q.length];
      for (int step = 0; step < steps; step++) {
        if (step > 0 || prompt == 0) {
          c.append(layer, 1, gaussian(rnd, w, 6), gaussian(rnd, w, 1), new int[] {(prompt + step) * stride});
        }
        float[] qs = gaussian(rnd, q.length, 1);
        // Every third step asks from a position past the newest token: the same tokens are visible.
        int at = c.size(layer) == 0 ? 0 : (prompt + step) * stride + (step % 3 == 2 ? 5 : 0);
        c.decode(layer, qs, at, out);
        assertClose(reference(c, layer, qs), out, "step " + step + " (" + c.size(layer) + " tokens, "
            + c.quantizedTokens(layer) + " as codes), seed=" + seed);
        long[] pass = c.lastPassNanos();
        assertEquals(c.lastKernelNanos(), pass[0] + pass[1] + pass[2], "the passes add up to the decode's time");
        if (c.decodeKernel().equals("mma-f16")) {
          assertTrue(pass[0] > 0 && pass[1] == 0, "one launch for the window and the codes: " + Arrays.toString(pass));
        } else {
          assertEquals(c.quantizedTokens(layer) > 0, pass[0] > 0, "a code pass ran exactly when there were codes");
        }
      }
      assertTrue(c.quantizedTokens(layer) > 0, "the code pass ran");
      int held = c.size(layer);
      int full = Math.min(held, window + 15 + sinks);
      assertTrue(c.quantizedTokens(layer) >= held - full,
          "tokens past the window are codes: " + c.quantizedTokens(layer) + " of " + held);
      assertEquals(cl.computeCapability() >= 80 && kernel.equals("auto") ? "mma-f16" : "simt-f32", c.decodeKernel());
      assertEquals(0, c.size(0), "layer 0 untouched");
      c.decode(0, q, 0, out);
      assertTrue(Arrays.equals(new float[out.length], out), "an empty layer decodes to zeros");
    }
  }

  /** Builds with {@code -Dkvcache.gpu.skvqDecode=simt} set for "simt", restoring the property after. */
  static DeviceSkvqCache withKernel(String kernel, java.util.function.Supplier<DeviceSkvqCache> make) {
    String key = "kvcache.gpu.skvqDecode", before = System.getProperty(key);
    if (kernel.equals("simt")) {
      System.setProperty(key, "simt");
    }
    try {
      return make.get();
    } finally {
      if (before == null) {
        System.clearProperty(key);
      } else {
        System.setProperty(key, before);
      }
    }
  }

  @Test
  void argumentsOutsideWhatTheDeviceTakesAreRefusedWithTheirValue() {
    try (ClContext cl = Gpu.open("lwjgl")) {
      AttentionShape shape = new AttentionShape(1, 4, 1, 64);
      IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
          () -> new DeviceSkvqCache(cl, shape, 64, SkvqConfig.of(4, 4)));
      assertTrue(e.getMessage().contains("keyBits=4"), e.getMessage());
      e = assertThrows(IllegalArgumentException.class,
          () -> new DeviceSkvqCache(cl, new AttentionShape(1, 4, 1, 48), 64, SkvqConfig.paperDefault()));
      assertTrue(e.getMessage().contains("48"), e.getMessage());
      e = assertThrows(IllegalArgumentException.class,
          () -> new DeviceSkvqCache(cl, shape, 64, SkvqConfig.paperDefault().withGroups(8, 8)));
      assertTrue(e.getMessage().contains("keyGroup must be a multiple of 16") && e.getMessage().contains("got 8"),
          e.getMessage());
      e = assertThrows(IllegalArgumentException.class,
          () -> new DeviceSkvqCache(cl, shape, 64, SkvqConfig.paperDefault().withWindow(128, 17)));
      assertTrue(e.getMessage().contains("sinks must be <= 16") && e.getMessage().contains("got 17"), e.getMessage());
      DeviceSkvqCache c = new DeviceSkvqCache(cl, shape, 32, SkvqConfig.paperDefault());
      assertThrows(IndexOutOfBoundsException.class, () -> c.store(0, 1));
      float[] kv = new float[64];
      c.append(0, 1, kv, kv, new int[] {5});
      e = assertThrows(IllegalArgumentException.class, () -> c.append(0, 1, kv, kv, new int[] {5}));
      assertTrue(e.getMessage().contains("positions[0]=5"), e.getMessage());
      e = assertThrows(IllegalArgumentException.class, () -> c.decode(0, new float[256], 4, new float[256]));
      assertTrue(e.getMessage().contains("got 4"), e.getMessage());
      e = assertThrows(IllegalArgumentException.class,
          () -> c.decode(0, new float[256], Integer.MAX_VALUE, new float[256]));
      assertTrue(e.getMessage().contains("Integer.MAX_VALUE"), e.getMessage());
      e = assertThrows(IllegalArgumentException.class, () -> c.append(0, 1, kv, kv, new int[] {Integer.MAX_VALUE}));
      assertTrue(e.getMessage().contains("Integer.MAX_VALUE"), e.getMessage());
      float[] nan = new float[64];
      nan[3] = Float.NaN;
      e = assertThrows(IllegalArgumentException.class, () -> c.append(0, 1, nan, kv, new int[] {6}));
      assertTrue(e.getMessage().contains("index 3"), e.getMessage());
      assertEquals(1, c.size(0), "a refused append stores nothing");
      e = assertThrows(IllegalArgumentException.class, () -> c.append(0, 40, new float[40 * 64], new float[40 * 64],
          new int[40]));
      assertTrue(e.getMessage().contains("cannot append 40"), e.getMessage());
      c.close();
      assertThrows(IllegalStateException.class, () -> c.size(0));
    }
  }
}
