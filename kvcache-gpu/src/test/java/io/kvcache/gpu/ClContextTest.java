package io.kvcache.gpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.core.AttentionShape;
import io.kvcache.gpu.cl.ClBuffer;
import io.kvcache.gpu.cl.ClContext;
import io.kvcache.gpu.cl.ClException;
import io.kvcache.gpu.cl.ClKernel;
import io.kvcache.gpu.cl.OpenCl;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** The seam itself, through both bindings: caching, errors that name the call, release of everything. */
class ClContextTest {

  @ParameterizedTest
  @ValueSource(strings = {"lwjgl", "jocl"})
  void programsAreBuiltOncePerSourceAndOptions(String binding) {
    try (ClContext cl = Gpu.open(binding)) {
      String src = "__kernel void twice(__global float* x) { int i = get_global_id(0); x[i] = 2 * x[i]; }";
      Object a = cl.program("twice", src, "");
      Object b = cl.program("twice", src, "");
      assertEquals(a, b);
      assertEquals(1, cl.programsBuilt());
      cl.program("twice", src, "-DX=1");
      assertEquals(2, cl.programsBuilt());
      try (ClKernel k = cl.kernel(a, "twice"); ClBuffer buf = cl.buffer(4 * 64)) {
        float[] x = new float[64];
        for (int i = 0; i < x.length; i++) {
          x[i] = i;
        }
        cl.write(buf, 0, x);
        k.arg(0, buf).run(new long[] {64}, new long[] {16});
        float[] y = new float[64];
        cl.read(buf, 0, y);
        for (int i = 0; i < y.length; i++) {
          assertEquals(2f * i, y[i], 0f, "element " + i);
        }
      }
    }
  }

  /**
   * Small writes go through pinned staging without waiting: many of them, overlapping, of every element
   * type and more than one staging area's worth (so the area is reused after a wait), land in queue
   * order, last write wins; a kernel enqueued after a staged write sees it; a large write and read take
   * the direct path. Checked against a host copy written the same way.
   */
  @ParameterizedTest
  @ValueSource(strings = {"lwjgl", "jocl"})
  void stagedWritesLandInQueueOrder(String binding) {
    java.util.SplittableRandom rnd = new java.util.SplittableRandom(Gpu.seed());
    String src = "__kernel void twice(__global float* x) { int i = get_global_id(0); x[i] = 2 * x[i]; }";
    try (ClContext cl = Gpu.open(binding); ClBuffer f = cl.buffer(4 * 4096); ClBuffer n = cl.buffer(4 * 4096);
        ClBuffer h = cl.buffer(2 * 4096); ClKernel k = cl.kernel(cl.program("twice", src, ""), "twice")) {
      float[] fw = new float[4096];
      int[] nw = new int[4096];
      short[] hw = new short[4096];
      cl.write(f, 0, fw);
      cl.write(n, 0, nw);
      cl.write(h, 0, hw);
      long staged = 0;
      for (int i = 0; staged < 3L * 1024 * 1024; i++) { // three staging areas' worth, no read between
        int len = 1 + rnd.nextInt(1024), at = rnd.nextInt(4096 - len + 1);
        float[] x = new float[len];
        int[] y = new int[len];
        short[] z = new short[len];
        for (int j = 0; j < len; j++) {
          x[j] = (float) rnd.nextGaussian();
          y[j] = rnd.nextInt();
          z[j] = (short) rnd.nextInt();
        }
        cl.write(f, 4L * at, x);
        cl.write(n, 4L * at, y);
        cl.write(h, 2L * at, z);
        System.arraycopy(x, 0, fw, at, len);
        System.arraycopy(y, 0, nw, at, len);
        System.arraycopy(z, 0, hw, at, len);
        java.util.Arrays.fill(x, Float.NaN); // the caller may reuse its array at once
        if (i % 97 == 0) {
          k.arg(0, f).run(new long[] {4096}, new long[] {64}); // sees every write before it
          for (int j = 0; j < fw.length; j++) {
            fw[j] *= 2;
          }
        }
        staged += 10L * len;
      }
      float[] fr = new float[4096];
      int[] nr = new int[4096];
      cl.read(f, 0, fr);
      cl.read(n, 0, nr);
      assertTrue(java.util.Arrays.equals(fw, fr), "floats");
      assertTrue(java.util.Arrays.equals(nw, nr), "ints");
      // Halves: read back as the ints they pack into.
      int[] hr = new int[2048];
      cl.read(h, 0, hr);
      for (int j = 0; j < 2048; j++) {
        assertEquals((hw[2 * j] & 0xFFFF) | (hw[2 * j + 1] << 16), hr[j], "halves at " + 2 * j);
      }
    }
    try (ClContext cl = Gpu.open(binding); ClBuffer big = cl.buffer(4L * 200_000)) {
      float[] x = new float[200_000]; // 800 KB: past the staging limit, written and read from the array
      for (int j = 0; j < x.length; j++) {
        x[j] = (float) rnd.nextGaussian();
      }
      cl.write(big, 0, x);
      float[] y = new float[x.length];
      cl.read(big, 0, y);
      assertTrue(java.util.Arrays.equals(x, y), "large transfer");
    }
  }

  /**
   * The upload area is not reused while the queue still holds uploads that were staged in it: a kernel
   * that spins for a while holds the queue, then more than one area's worth of uploads to distinct
   * regions (the area fills mid-way) must all land. Reusing the area without waiting fails this on PoCL
   * too.
   */
  @ParameterizedTest
  @ValueSource(strings = {"lwjgl", "jocl"})
  void stagingWaitsForTheQueueBeforeReusingItsArea(String binding) {
    String src = "__kernel void spin(__global float* x, int n) { float a = x[0];"
        + " for (int i = 0; i < n; i++) { a = a * 0.999999f + 1e-6f; } x[0] = a; }";
    int region = 16384, regions = 24; // 64 KiB each, 1.5 MiB in all
    try (ClContext cl = Gpu.open(binding); ClBuffer slow = cl.buffer(4); ClBuffer big = cl.buffer(4L * region * regions);
        ClKernel spin = cl.kernel(cl.program("spin", src, ""), "spin")) {
      cl.write(slow, 0, new float[] {1f});
      spin.arg(0, slow).arg(1, 100_000_000).run(new long[] {1}, new long[] {1});
      float[] x = new float[region];
      for (int i = 0; i < regions; i++) {
        java.util.Arrays.fill(x, i + 1);
        cl.write(big, 4L * i * region, x);
      }
      float[] back = new float[region * regions];
      cl.read(big, 0, back);
      for (int i = 0; i < regions; i++) {
        for (int j = 0; j < region; j += 997) {
          assertEquals(i + 1f, back[i * region + j], 0f, "region " + i + " element " + j);
        }
      }
    }
  }

  /**
   * A context opened without profiling (the default) runs the caches with the same results and refuses
   * to report device times instead of reporting zero.
   */
  @ParameterizedTest
  @ValueSource(strings = {"lwjgl", "jocl"})
  void withoutProfilingResultsAreTheSameAndKernelTimesAreRefused(String binding) {
    Gpu.open(binding).close(); // skips where there is no OpenCL
    AttentionShape s = new AttentionShape(1, 8, 2, 64);
    int n = 700;
    java.util.SplittableRandom rnd = new java.util.SplittableRandom(Gpu.seed());
    float[] k = new float[n * 2 * 64], v = new float[k.length], q = new float[8 * 64];
    int[] pos = new int[n];
    for (int i = 0; i < k.length; i++) {
      k[i] = (float) rnd.nextGaussian();
      v[i] = (float) rnd.nextGaussian();
    }
    for (int i = 0; i < q.length; i++) {
      q[i] = (float) rnd.nextGaussian();
    }
    for (int t = 0; t < n; t++) {
      pos[t] = t;
    }
    float[][] out = new float[2][q.length];
    float[][] outQ = new float[2][q.length];
    for (int p = 0; p < 2; p++) {
      boolean profiling = p == 0;
      try (ClContext cl = OpenCl.open(binding, System.getProperty(OpenCl.PLATFORM_PROPERTY, ""),
          System.getProperty(OpenCl.DEVICE_PROPERTY, ""), profiling);
          DeviceKVCache dev = new DeviceKVCache(cl, s, n);
          DeviceSkvqCache skvq = new DeviceSkvqCache(cl, s, n, io.kvcache.skvq.SkvqConfig.paperDefault())) {
        assertEquals(profiling, cl.profiling());
        dev.append(0, n, k, v, pos);
        dev.decode(0, q, n - 1, out[p]);
        skvq.append(0, n, k, v, pos);
        skvq.decode(0, q, n - 1, outQ[p]);
        if (profiling) {
          assertTrue(dev.lastKernelNanos() > 0, "kernel time with profiling");
          assertTrue(skvq.lastKernelNanos() > 0, "SKVQ kernel time with profiling");
        } else {
          IllegalStateException e = assertThrows(IllegalStateException.class, dev::lastKernelNanos);
          assertTrue(e.getMessage().contains("profiling"), e.getMessage());
          e = assertThrows(IllegalStateException.class, skvq::lastKernelNanos);
          assertTrue(e.getMessage().contains("profiling"), e.getMessage());
          assertThrows(IllegalStateException.class, skvq::lastPassNanos);
          String src = "__kernel void nop(__global float* x) { }";
          try (ClBuffer b = cl.buffer(4); ClKernel kn = cl.kernel(cl.program("nop", src, ""), "nop");
              io.kvcache.gpu.cl.ClEvent ev = kn.arg(0, b).launch(new long[] {1}, new long[] {1})) {
            ev.await();
            e = assertThrows(IllegalStateException.class, ev::elapsedNanos);
            assertTrue(e.getMessage().contains("profiling") && e.getMessage().contains("nop"), e.getMessage());
          }
        }
      }
    }
    assertTrue(java.util.Arrays.equals(out[0], out[1]), "same outputs with and without profiling");
    assertTrue(java.util.Arrays.equals(outQ[0], outQ[1]), "same SKVQ outputs with and without profiling");
  }

  /**
   * After close, every call that would hand the driver a released queue, kernel or event throws
   * instead: the context's transfers and launches, a closed kernel's arguments, a closed event's wait.
   */
  /** An empty array is a transfer of nothing (OpenCL itself refuses zero bytes), and after close still refused. */
  @ParameterizedTest
  @ValueSource(strings = {"lwjgl", "jocl"})
  void emptyTransfersDoNothing(String binding) {
    ClContext cl = Gpu.open(binding);
    ClBuffer buf = cl.buffer(64);
    float[] x = {1, 2, 3, 4};
    cl.write(buf, 0, x);
    cl.write(buf, 0, new float[0]);
    cl.write(buf, 0, new short[0]);
    cl.write(buf, 0, new int[0]);
    cl.read(buf, 0, new float[0]);
    cl.read(buf, 0, new int[0]);
    float[] back = new float[4];
    cl.read(buf, 0, back);
    assertArrayEquals(x, back);
    buf.close();
    cl.close();
    assertThrows(IllegalStateException.class, () -> cl.write(buf, 0, new float[0]));
  }

  @ParameterizedTest
  @ValueSource(strings = {"lwjgl", "jocl"})
  void callsAfterCloseThrowInsteadOfReachingTheDriver(String binding) {
    String src = "__kernel void twice(__global float* x) { int i = get_global_id(0); x[i] = 2 * x[i]; }";
    ClContext cl = Gpu.open(binding);
    ClKernel k = cl.kernel(cl.program("twice", src, ""), "twice");
    ClBuffer buf = cl.buffer(4 * 16);
    float[] x = new float[16];
    io.kvcache.gpu.cl.ClEvent ev = k.arg(0, buf).launch(new long[] {16}, new long[] {16});
    ev.close();
    IllegalStateException e = assertThrows(IllegalStateException.class, ev::await);
    assertTrue(e.getMessage().contains("closed"), e.getMessage());
    assertThrows(IllegalStateException.class, ev::elapsedNanos);
    ClKernel other = cl.kernel(cl.program("twice", src, ""), "twice");
    other.close();
    e = assertThrows(IllegalStateException.class, () -> other.arg(0, 1));
    assertTrue(e.getMessage().contains("twice") && e.getMessage().contains("closed"), e.getMessage());
    cl.close();
    for (org.junit.jupiter.api.function.Executable call : new org.junit.jupiter.api.function.Executable[] {
        () -> cl.write(buf, 0, x), () -> cl.read(buf, 0, x), cl::finish, () -> k.arg(0, buf), () -> k.arg(1, 2f),
        () -> k.launch(new long[] {16}, new long[] {16})}) {
      e = assertThrows(IllegalStateException.class, call);
      assertTrue(e.getMessage().contains("closed"), e.getMessage());
    }
    k.close();
    buf.close();
  }

  @ParameterizedTest
  @ValueSource(strings = {"lwjgl", "jocl"})
  void badKernelSourceThrowsNamingTheCallTheCodeAndTheBuildLog(String binding) {
    try (ClContext cl = Gpu.open(binding)) {
      ClException e = assertThrows(ClException.class,
          () -> cl.program("broken.cl", "__kernel void f(__global float* x) { x[0] = undefined_name; }", ""));
      assertTrue(e.getMessage().startsWith("clBuildProgram(broken.cl"), e.getMessage());
      assertTrue(e.getMessage().contains("-11 CL_BUILD_PROGRAM_FAILURE"), e.getMessage());
      assertTrue(e.getMessage().contains("undefined_name"), "build log included: " + e.getMessage());
      assertEquals(-11, e.code());
      ClException k = assertThrows(ClException.class, () -> cl.kernel("/io/kvcache/gpu/attention.cl",
          "-DD=16 -DG=1 -DKVH=1 -DWG=128 -DCHUNK=1024", "no_such_kernel"));
      assertTrue(k.getMessage().contains("clCreateKernel(no_such_kernel)") && k.getMessage().contains("CL_INVALID_KERNEL_NAME"),
          k.getMessage());
    }
  }

  @ParameterizedTest
  @ValueSource(strings = {"lwjgl", "jocl"})
  void absentDeviceIsAClearExceptionAndUnknownBindingIsRefused(String binding) {
    String present;
    try (ClContext cl = Gpu.open(binding)) { // skips where there is no OpenCL
      present = cl.deviceName();
    }
    ClException e = assertThrows(ClException.class, () -> OpenCl.open(binding, "", "no-such-device-xyz"));
    assertTrue(e.getMessage().contains("no OpenCL device matches") && e.getMessage().contains("no-such-device-xyz"),
        e.getMessage());
    // It names what there is, so that the next try can match it.
    assertTrue(e.getMessage().contains("there are:") && e.getMessage().contains("\"" + present + "\""), e.getMessage());
    IllegalArgumentException b = assertThrows(IllegalArgumentException.class, () -> OpenCl.open("cuda", "", ""));
    assertTrue(b.getMessage().contains("kvcache.opencl") && b.getMessage().contains("cuda"), b.getMessage());
  }

  @Test
  void tryOpenFallsBackToEmptyWhenNoDeviceMatches() {
    String old = System.getProperty(OpenCl.DEVICE_PROPERTY);
    System.setProperty(OpenCl.DEVICE_PROPERTY, "no-such-device-xyz");
    try {
      assertTrue(OpenCl.tryOpen().isEmpty());
    } finally {
      if (old == null) {
        System.clearProperty(OpenCl.DEVICE_PROPERTY);
      } else {
        System.setProperty(OpenCl.DEVICE_PROPERTY, old);
      }
    }
  }

  /**
   * 200 caches (with top-k decoders) created, used and closed: every buffer, kernel and event the
   * context handed out is released again, and a cache left open is counted.
   */
  @ParameterizedTest
  @ValueSource(strings = {"lwjgl", "jocl"})
  void creatingAndClosingManyCachesReleasesEveryDeviceObject(String binding) {
    AttentionShape s = new AttentionShape(2, 8, 4, 64);
    try (ClContext cl = Gpu.open(binding)) {
      int baseline = cl.liveObjects();
      float[] kv = new float[40 * 4 * 64];
      int[] pos = new int[40];
      for (int t = 0; t < 40; t++) {
        pos[t] = t;
      }
      float[] q = new float[8 * 64], out = new float[8 * 64];
      for (int i = 0; i < 200; i++) {
        try (DeviceKVCache dev = new DeviceKVCache(cl, s, 4096);
            TopKDecoder t = new TopKDecoder(dev, new TopKDecoder.Config(32, 4, 16))) {
          dev.append(1, 40, kv, kv, pos);
          dev.decode(1, q, 39, out);
          t.decode(1, q, 39, out);
        }
      }
      assertEquals(baseline, cl.liveObjects(), "objects left after closing 200 caches");
      DeviceKVCache open = new DeviceKVCache(cl, s, 16);
      assertTrue(cl.liveObjects() > baseline, "an open cache holds device objects");
      open.close();
      open.close(); // idempotent
      assertEquals(baseline, cl.liveObjects());
      IllegalStateException e = assertThrows(IllegalStateException.class,
          () -> open.decode(0, new float[8 * 64], 0, new float[8 * 64]));
      assertTrue(e.getMessage().contains("closed"), e.getMessage());
      // A top-k decoder over a closed cache fails while summarising what the cache held, and releases
      // the buffers and kernels it had made by then.
      DeviceKVCache gone = new DeviceKVCache(cl, s, 64);
      gone.append(0, 40, kv, kv, pos);
      gone.close();
      assertThrows(IllegalStateException.class, () -> new TopKDecoder(gone, new TopKDecoder.Config(32, 4, 16)));
      assertEquals(baseline, cl.liveObjects(), "a failed TopKDecoder leaves nothing behind");
    }
  }

  @Test
  void cacheRejectsBadArgumentsNamingThem() {
    try (ClContext cl = Gpu.open("lwjgl")) {
      IllegalArgumentException d = assertThrows(IllegalArgumentException.class,
          () -> new DeviceKVCache(cl, new AttentionShape(1, 4, 4, 96), 16));
      assertTrue(d.getMessage().contains("headDim") && d.getMessage().contains("96"), d.getMessage());
      assertThrows(IllegalArgumentException.class, () -> new DeviceKVCache(cl, new AttentionShape(1, 4, 4, 64), 0));
      try (DeviceKVCache dev = new DeviceKVCache(cl, new AttentionShape(1, 4, 4, 64), 16)) {
        IllegalArgumentException full = assertThrows(IllegalArgumentException.class,
            () -> dev.append(0, 17, new float[17 * 256], new float[17 * 256], new int[17]));
        assertTrue(full.getMessage().contains("cannot append 17"), full.getMessage());
        assertEquals(0, dev.size(0), "a refused append leaves the cache as it was");
        float[] big = new float[256];
        big[7] = 70000f;
        IllegalArgumentException range = assertThrows(IllegalArgumentException.class,
            () -> dev.append(0, 1, big, new float[256], new int[1]));
        assertTrue(range.getMessage().contains("f16 range") && range.getMessage().contains("index 7"), range.getMessage());
        assertEquals(0, dev.size(0));
        // A NaN or infinite query is refused as the CPU cache refuses it (the kernels made NaN outputs).
        dev.append(0, 2, new float[2 * 256], new float[2 * 256], new int[] {0, 1});
        float[] q = new float[256], out = new float[256];
        q[5] = Float.NaN;
        IllegalArgumentException nan = assertThrows(IllegalArgumentException.class, () -> dev.decode(0, q, 1, out));
        assertTrue(nan.getMessage().contains("q must be finite") && nan.getMessage().contains("index 5"),
            nan.getMessage());
        q[5] = Float.POSITIVE_INFINITY;
        assertThrows(IllegalArgumentException.class, () -> dev.attend(0, 1, q, new int[] {1}, out));
        q[5] = 0f;
        dev.decode(0, q, 1, out);
        assertEquals(2, dev.size(0), "the cache still decodes after a refused query");
      }
      // Capacities past 2^30 tokens would overflow the page arithmetic: refused, naming the bound.
      IllegalArgumentException cap = assertThrows(IllegalArgumentException.class,
          () -> new DeviceKVCache(cl, new AttentionShape(1, 4, 4, 64), Integer.MAX_VALUE));
      assertTrue(cap.getMessage().contains("capacity") && cap.getMessage().contains("" + Integer.MAX_VALUE),
          cap.getMessage());
      assertThrows(IllegalArgumentException.class, () -> new TopKDecoder.Config(Integer.MAX_VALUE, 16, 0));
    }
  }
}
