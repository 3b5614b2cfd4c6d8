package io.kvcache.bench;

import io.kvcache.codec.HeadStore;
import io.kvcache.codec.StorageCodec;
import io.kvcache.core.AttentionShape;
import io.kvcache.gpu.DeviceKVCache;
import io.kvcache.gpu.DeviceSkvqCache;
import io.kvcache.gpu.GpuTuning;
import io.kvcache.gpu.OpenClProbe;
import io.kvcache.gpu.TopKDecoder;
import io.kvcache.gpu.cl.ClBuffer;
import io.kvcache.gpu.cl.ClContext;
import io.kvcache.gpu.cl.ClEvent;
import io.kvcache.gpu.cl.ClException;
import io.kvcache.gpu.cl.ClKernel;
import io.kvcache.gpu.cl.OpenCl;
import io.kvcache.kernel.Kernels;
import io.kvcache.reader.PagedAttention;
import io.kvcache.skvq.SkvqConfig;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Random;
import java.util.SplittableRandom;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * Reports the OpenCL runtime, checks the GPU kernels against the CPU scalar reference on the chosen
 * device, then times dense decode, top-k decode and causal prefill attention on it (device time from
 * profiling events, medians) and prints the table last. {@code sdpa_bench.py} runs PyTorch's SDPA on
 * the same shapes and prints it beside these figures (from the CSV written with {@code --csv}).
 */
@Command(name = "gpu", mixinStandardHelpOptions = true,
    description = "OpenCL probe, GPU kernels vs CPU reference, and the GPU attention timing table.")
final class GpuCommand implements Runnable {

  @Option(names = "--platform", defaultValue = "", description = "Substring of the OpenCL platform name, e.g. NVIDIA or Portable (PoCL) (default: any, GPU preferred).")
  String platform;

  @Option(names = "--device", defaultValue = "", description = "Substring of the device name (default: any).")
  String device;

  @Option(names = "--binding", defaultValue = "lwjgl", description = "OpenCL binding: lwjgl or jocl (default: ${DEFAULT-VALUE}).")
  String binding;

  @Option(names = "--probe-only", description = "Only report the OpenCL loader and drivers.")
  boolean probeOnly;

  @Option(names = "--check-only", description = "Only run the correctness checks.")
  boolean checkOnly;

  @Option(names = "--decode", split = ",", defaultValue = "4096,32768,131072", description = "Decode context lengths (default: ${DEFAULT-VALUE}, sized for a GPU; on PoCL try 4096).")
  List<Integer> decode;

  @Option(names = "--prefill", split = ",", defaultValue = "4096,16384,32768", description = "Prefill prompt lengths (default: ${DEFAULT-VALUE}, sized for a GPU: on PoCL "
      + "prefill grows with the square of the length, try 1024).")
  List<Integer> prefill;

  @Option(names = "--budget", defaultValue = "2048", description = "Top-k decode budget in tokens (default: ${DEFAULT-VALUE}).")
  int budget;

  @Option(names = "--channels", defaultValue = "32", description = "Top-k estimate channels per query head (default: ${DEFAULT-VALUE}).")
  int channels;

  @Option(names = "--reps", defaultValue = "20", description = "Timed decode repetitions, median shown (default: ${DEFAULT-VALUE}).")
  int reps;

  @Option(names = "--csv", description = "Also write the table as CSV here.")
  Path csv;

  @Option(names = "--sweep", split = ",", description = "Decode tunings to time beside the default, each "
      + "WORKGROUP:CHUNK:VECTOR (e.g. 128:512:8); checked against the CPU reference first.")
  List<String> sweep = new ArrayList<>();

  @Option(names = "--prefill-kernels", split = ",", defaultValue = "simt,mma", description = "Prefill kernels to "
      + "check and time: simt, mma (mma only where the device has tensor cores) (default: ${DEFAULT-VALUE}).")
  List<String> prefillKernels;

  /** Llama-3-8B-like attention: 32 query heads, 8 KV heads, dim 128. */
  static final int HQ = 32, KVH = 8, D = 128;

  @Override
  public void run() {
    OptionChecks.outputFile("--csv", csv);
    io.kvcache.core.Checks.inRange("--reps", reps, 1, 1_000_000);
    // The top-k rows always read the 64 most recent tokens: the budget must hold them.
    io.kvcache.core.Checks.inRange("--budget", budget, 64, 1 << 24);
    for (int n : decode) {
      io.kvcache.core.Checks.inRange("--decode", n, 1, 1 << 20);
    }
    for (int n : prefill) {
      io.kvcache.core.Checks.inRange("--prefill", n, 1, 1 << 20);
    }
    if (!binding.equalsIgnoreCase("lwjgl") && !binding.equalsIgnoreCase("jocl")) {
      throw new IllegalArgumentException("--binding must be lwjgl or jocl, got '" + binding + "'");
    }
    OpenClProbe probe = OpenClProbe.system();
    System.out.println(probe.describe());
    for (OpenClProbe.Driver d : probe.drivers()) {
      System.out.println("  " + d.icdFile() + " -> " + d.library());
    }
    if (probeOnly) {
      return;
    }
    if (!probe.usable()) {
      // The probe's line ends "using the CPU kernels", which is what the library does; this command has
      // nothing to run on the CPU, and scripts read the exit code.
      throw new IllegalArgumentException((checkOnly ? "--check-only: " : "") + "no usable OpenCL device, nothing was "
          + (checkOnly ? "checked" : "run") + " (--probe-only reports the loader and drivers)");
    }
    try (ClContext cl = open()) {
      System.out.printf("device: %s / %s via %s, %d compute units, %d KiB local memory%n", cl.platformName(),
          cl.deviceName(), cl.binding(), cl.computeUnits(), cl.localMemBytes() / 1024);
      GpuTuning base = GpuTuning.fromSystemProperties();
      List<GpuTuning> tunings = new ArrayList<>();
      tunings.add(base);
      for (String t : sweep) {
        String[] p = t.split(":");
        if (p.length != 3) {
          throw new IllegalArgumentException("--sweep entries are WORKGROUP:CHUNK:VECTOR, got \"" + t + "\"");
        }
        try {
          tunings.add(base.withDecode(Integer.parseInt(p[0].trim()), Integer.parseInt(p[1].trim()),
              Integer.parseInt(p[2].trim())));
        } catch (NumberFormatException e) {
          throw new IllegalArgumentException("--sweep entries are WORKGROUP:CHUNK:VECTOR integers, got \"" + t + "\"");
        }
      }
      List<GpuTuning.Prefill> kernels = new ArrayList<>();
      for (String k : prefillKernels) {
        GpuTuning.Prefill pk;
        try {
          pk = GpuTuning.Prefill.valueOf(k.trim().toUpperCase(Locale.ROOT));
        } catch (IllegalArgumentException e) {
          pk = null;
        }
        if (pk == null || pk == GpuTuning.Prefill.AUTO) {
          throw new IllegalArgumentException("--prefill-kernels takes simt and mma, got \"" + k + "\"");
        }
        if (pk == GpuTuning.Prefill.MMA && cl.computeCapability() < 80) {
          System.out.println("prefill mma: skipped, " + cl.deviceName() + " has no tensor cores reachable from OpenCL");
          continue;
        }
        kernels.add(pk);
      }
      System.out.printf("compute capability: %s%n", cl.computeCapability() == 0 ? "none reported"
          : cl.computeCapability() / 10 + "." + cl.computeCapability() % 10);
      boolean ok = check(cl, tunings, kernels, base);
      if (checkOnly) {
        if (!ok) {
          throw new IllegalStateException("GPU kernels disagree with the CPU reference");
        }
        return;
      }
      List<String[]> rows = new ArrayList<>();
      rows.add(emptyLaunchRow(cl));
      for (int n : decode) {
        rows.addAll(decodeRows(cl, n, base));
      }
      for (int n : sweep.isEmpty() ? List.<Integer>of() : decode) {
        for (GpuTuning t : tunings.subList(1, tunings.size())) {
          rows.add(sweepRow(cl, n, t));
        }
      }
      for (GpuTuning.Prefill pk : kernels) {
        for (int n : prefill) {
          rows.add(prefillRow(cl, n, base.withPrefill(pk)));
        }
      }
      String[] head = {"kernel", "tokens", "us", "GB/s", "TFLOP/s"};
      System.out.println();
      System.out.printf("GPU attention on %s (%s), %d q / %d kv heads, dim %d, f16 K/V, f32 arithmetic%n",
          cl.deviceName(), cl.binding(), HQ, KVH, D);
      System.out.printf("%-20s %8s %12s %10s %9s%n", (Object[]) head);
      for (String[] r : rows) {
        System.out.printf("%-20s %8s %12s %10s %9s%n", (Object[]) r);
      }
      if (csv != null) {
        try (PrintWriter w = new PrintWriter(Files.newBufferedWriter(csv))) {
          w.println(String.join(",", head));
          for (String[] r : rows) {
            w.println(String.join(",", r));
          }
        } catch (IOException e) {
          throw new java.io.UncheckedIOException(e);
        }
      }
    }
  }

  private static void fillRandom(SplittableRandom rnd, float[] x) {
    for (int i = 0; i < x.length; i++) {
      x[i] = (float) (rnd.nextDouble() * 2 - 1);
    }
  }

  /** Where {@link #fill} sends each block: layer 0 of a device cache. */
  interface Appender {
    void append(int tokens, float[] k, float[] v, int[] positions);
  }

  private static void fill(DeviceKVCache dev, int n, long seed) {
    fill(n, seed, (b, k, v, pos) -> dev.append(0, b, k, v, pos));
  }

  private static void fill(DeviceSkvqCache dev, int n, long seed) {
    fill(n, seed, (b, k, v, pos) -> dev.append(0, b, k, v, pos));
  }

  /**
   * Appends n random tokens (uniform in [-1, 1), the same for the same seed whatever the cache) in
   * blocks, so the host never holds the whole cache as floats.
   */
  static void fill(int n, long seed, Appender to) {
    SplittableRandom rnd = new SplittableRandom(seed);
    int block = 4096, w = KVH * D;
    float[] k = new float[block * w], v = new float[block * w];
    int[] pos = new int[block];
    for (int t0 = 0; t0 < n; t0 += block) {
      int b = Math.min(block, n - t0);
      fillRandom(rnd, k);
      fillRandom(rnd, v);
      for (int t = 0; t < b; t++) {
        pos[t] = t0 + t;
      }
      to.append(b, k, v, pos);
    }
  }

  private static String f(String fmt, double x) {
    return String.format(Locale.ROOT, fmt, x);
  }

  /** GB/s to three significant figures: PoCL's 0.2 GB/s must not print as 0 beside a GPU's 1892. */
  static String gbs(double x) {
    return x >= 100 ? f("%.0f", x) : x >= 10 ? f("%.1f", x) : f("%.2f", x);
  }

  private String[] sweepRow(ClContext cl, int n, GpuTuning t) {
    AttentionShape s = new AttentionShape(1, HQ, KVH, D);
    try (DeviceKVCache dev = new DeviceKVCache(cl, s, n, t)) {
      fill(dev, n, n);
      float[] q = new float[HQ * D], out = new float[HQ * D];
      fillRandom(new SplittableRandom(7), q);
      double[] us = new double[reps];
      for (int i = 0; i < 3; i++) {
        dev.decode(0, q, n - 1, out);
      }
      for (int i = 0; i < reps; i++) {
        dev.decode(0, q, n - 1, out);
        us[i] = dev.lastKernelNanos() / 1e3;
      }
      double bytes = 2.0 * n * KVH * D * 2, m = Stats.median(us);
      String name = "decode " + t.decodeWorkGroup() + ":" + t.decodeChunk() + ":" + t.decodeVector();
      return new String[] {name, "" + n, f("%.1f", m), gbs(bytes / m / 1e3), "-"};
    }
  }

  private List<String[]> decodeRows(ClContext cl, int n, GpuTuning t) {
    AttentionShape s = new AttentionShape(1, HQ, KVH, D);
    List<String[]> rows = new ArrayList<>();
    try (DeviceKVCache dev = new DeviceKVCache(cl, s, n, t);
        TopKDecoder topk = new TopKDecoder(dev, new TopKDecoder.Config(budget, channels, 64));
        DeviceSkvqCache skvq = new DeviceSkvqCache(cl, s, n, SkvqConfig.paperDefault(), t)) {
      fill(dev, n, n);
      fill(skvq, n, n);
      float[] q = new float[HQ * D], out = new float[HQ * D];
      fillRandom(new SplittableRandom(7), q);
      double[] dense = new double[reps], sparse = new double[reps], quant = new double[reps];
      double[] denseCall = new double[reps], quantCall = new double[reps];
      double[][] passes = new double[3][reps];
      // Enough calls for the JIT to compile the host side (the query's sums are a loop over every element):
      // with three, the "call" rows timed the interpreter (hundreds of microseconds, erratic).
      long until = System.nanoTime() + 2_000_000_000L; // slow devices (PoCL) stop after two seconds
      for (int i = 0; i < WARMUP_CALLS && System.nanoTime() < until; i++) {
        dev.decode(0, q, n - 1, out);
        topk.decode(0, q, n - 1, out);
        skvq.decode(0, q, n - 1, out);
      }
      // Interleaved, so that the device's clocks and the host's load treat the three alike.
      for (int i = 0; i < reps; i++) {
        long t0 = System.nanoTime();
        dev.decode(0, q, n - 1, out);
        denseCall[i] = (System.nanoTime() - t0) / 1e3;
        dense[i] = dev.lastKernelNanos() / 1e3;
        topk.decode(0, q, n - 1, out);
        sparse[i] = dev.lastKernelNanos() / 1e3;
        t0 = System.nanoTime();
        skvq.decode(0, q, n - 1, out);
        quantCall[i] = (System.nanoTime() - t0) / 1e3;
        quant[i] = skvq.lastKernelNanos() / 1e3;
        long[] pn = skvq.lastPassNanos();
        for (int k = 0; k < 3; k++) {
          passes[k][i] = pn[k] / 1e3;
        }
      }
      double bytes = 2.0 * n * KVH * D * 2;
      // What the code pass reads per token and KV head: 2-bit key and value codes (the ternary value codes
      // in 2-bit fields on the device) and one f16 scale and zero point per token for K and for V (groups
      // of 128); the f16 window beside it.
      double qbytes = (double) skvq.quantizedTokens(0) * KVH * (D / 4 + D / 4 + 8)
          + (double) (n - skvq.quantizedTokens(0)) * KVH * D * 4;
      double us = Stats.median(dense), usK = Stats.median(sparse), usQ = Stats.median(quant);
      if (skvq.decodeKernel().equals("mma-f16")) {
        System.out.printf(Locale.ROOT, "skvq %s at %d tokens (%d as codes), medians: codes and window (one launch) "
            + "%.1f us, reduce %.1f us%n", skvq.decodeKernel(), n, skvq.quantizedTokens(0), Stats.median(passes[0]),
            Stats.median(passes[2]));
      } else {
        System.out.printf(Locale.ROOT, "skvq %s at %d tokens (%d as codes), medians: codes %.1f us, window %.1f us, "
            + "reduce %.1f us%n", skvq.decodeKernel(), n, skvq.quantizedTokens(0), Stats.median(passes[0]),
            Stats.median(passes[1]), Stats.median(passes[2]));
      }
      rows.add(new String[] {"decode dense", "" + n, f("%.1f", us), gbs(bytes / us / 1e3), "-"});
      rows.add(new String[] {"decode top-" + budget, "" + n, f("%.1f", usK), gbs(bytes / usK / 1e3), "-"});
      rows.add(new String[] {"decode skvq " + skvq.decodeKernel(), "" + n, f("%.1f", usQ), gbs(qbytes / usQ / 1e3), "-"});
      rows.add(new String[] {"call dense", "" + n, f("%.1f", Stats.median(denseCall)), "-", "-"});
      rows.add(new String[] {"call skvq " + skvq.decodeKernel(), "" + n, f("%.1f", Stats.median(quantCall)), "-", "-"});
    }
    return rows;
  }

  /** Decode calls of each kind before the timed ones (at most two seconds of them). */
  static final int WARMUP_CALLS = 200;

  /** Opens the device the options name; a name that matches none is a bad argument (one line, exit 2). */
  private ClContext open() {
    try {
      // Profiling on: the table's figures are device times. The "call" rows therefore include a profiling
      // queue's host cost; `jmh --include GpuDecode` times the call on a queue without it.
      return OpenCl.open(binding, platform, device, true);
    } catch (ClException e) {
      if (e.getMessage().startsWith("no OpenCL device matches")) {
        throw new IllegalArgumentException("--platform / --device: " + e.getMessage());
      }
      throw e;
    }
  }

  /**
   * The device time of a launch that does nothing, over four work-groups per compute unit (what the
   * decode kernels aim for at the default tuning) of up to 128 work-items: the floor under every kernel's
   * time in the table, since each time is a profiling event around one launch. Median of 200.
   */
  private static String[] emptyLaunchRow(ClContext cl) {
    Object program = cl.program("bench:empty", "__kernel void empty(__global float* x) { }\n", "");
    try (ClBuffer b = cl.buffer(4); ClKernel k = cl.kernel(program, "empty")) {
      k.arg(0, b);
      int wg = Math.min(128, cl.maxWorkGroupSize());
      long items = 4L * cl.computeUnits() * wg;
      double[] us = new double[200];
      for (int i = 0; i < us.length; i++) {
        try (ClEvent e = k.launch(new long[] {items}, new long[] {wg})) {
          us[i] = e.elapsedNanos() / 1e3;
        }
      }
      return new String[] {"empty launch", "-", f("%.1f", Stats.median(us)), "-", "-"};
    }
  }

  private String[] prefillRow(ClContext cl, int n, GpuTuning tuning) {
    AttentionShape s = new AttentionShape(1, HQ, KVH, D);
    try (DeviceKVCache dev = new DeviceKVCache(cl, s, n, tuning)) {
      fill(dev, n, n + 1);
      float[] q = new float[n * HQ * D], out = new float[q.length];
      fillRandom(new SplittableRandom(11), q);
      int[] pos = new int[n];
      for (int t = 0; t < n; t++) {
        pos[t] = t;
      }
      int r = n <= 4096 ? 3 : 1;
      double[] t = new double[r];
      dev.attend(0, n, q, pos, out); // warm-up
      for (int i = 0; i < r; i++) {
        dev.attend(0, n, q, pos, out);
        t[i] = dev.lastKernelNanos() / 1e3;
      }
      double us = Stats.median(t);
      double flops = 4.0 * D * HQ * ((double) n * (n + 1) / 2);
      return new String[] {"prefill " + dev.prefillKernel(), "" + n, f("%.0f", us), "-", f("%.2f", flops / us / 1e6)};
    }
  }

  /**
   * The kernels against PagedAttention with the scalar kernels, on this device: dense and top-k decode at
   * every tuning, and every prefill kernel at several shapes (GQA 1, 4 and 8; head dims 32-128; one
   * token, odd lengths, and a second prompt chunk over a cache that already holds tokens). Prints the
   * largest error of each.
   */
  private boolean check(ClContext cl, List<GpuTuning> tunings, List<GpuTuning.Prefill> kernels, GpuTuning base) {
    boolean ok = true;
    Random rnd = new Random(20261125L);
    int n = 3001;
    AttentionShape s = new AttentionShape(1, HQ, KVH, D);
    Filled f = filled(s, n, rnd);
    float[] q = gaussian(rnd, HQ * D);
    float[] want = new float[q.length];
    PagedAttention ref = new PagedAttention(Kernels.scalar(), D);
    int g = s.groupSize();
    for (int h = 0; h < KVH; h++) {
      ref.decode(f.stores[h], g, q, h * g * D, n - 1, s.scale(), want, h * g * D);
    }
    for (GpuTuning t : tunings) {
      String name = t.decodeWorkGroup() + ":" + t.decodeChunk() + ":" + t.decodeVector();
      try (DeviceKVCache dev = new DeviceKVCache(cl, s, n, t);
          TopKDecoder topk = new TopKDecoder(dev, new TopKDecoder.Config(n + 16, channels, 64))) {
        dev.append(0, n, f.k, f.v, f.pos);
        float[] got = new float[q.length];
        dev.decode(0, q, n - 1, got);
        ok &= report("decode dense " + name + ", n=" + n, want, got);
        topk.decode(0, q, n - 1, got);
        ok &= report("decode top-k " + name + ", budget >= n", want, got);
      }
    }
    // SKVQ: the device's code pass against the CPU's fused SKVQ attention (scalar kernels) over the same
    // host stores, whose codes the device mirrors.
    try (DeviceSkvqCache dev = new DeviceSkvqCache(cl, s, n, SkvqConfig.paperDefault(), base)) {
      dev.append(0, n, f.k, f.v, f.pos);
      float[] got = new float[q.length], wantQ = new float[q.length];
      for (int h = 0; h < KVH; h++) {
        ref.decode(dev.store(0, h), g, q, h * g * D, n - 1, s.scale(), wantQ, h * g * D);
      }
      dev.decode(0, q, n - 1, got);
      ok &= report("decode skvq " + dev.decodeKernel() + ", n=" + n + " (" + dev.quantizedTokens(0) + " codes)", wantQ, got);
    }
    // {query heads, KV heads, head dim, cached tokens, prompt tokens}: the prompt's rows are the last ones.
    int[][] shapes = {{32, 8, 128, 333, 333}, {8, 8, 64, 1, 1}, {16, 2, 128, 1000, 1000}, {8, 1, 32, 77, 77},
        {32, 8, 128, 700, 129}, {4, 4, 128, 4099, 4099}};
    for (java.util.Iterator<GpuTuning.Prefill> it = kernels.iterator(); it.hasNext(); ) {
      GpuTuning.Prefill pk = it.next();
      try {
        ok &= checkPrefill(cl, pk, base, shapes, rnd);
      } catch (RuntimeException e) { // a kernel that does not build here is reported, not timed
        System.out.println("check prefill " + pk + " FAILED: " + e.getMessage());
        it.remove();
        ok = false;
      }
    }
    return ok;
  }

  private boolean checkPrefill(ClContext cl, GpuTuning.Prefill pk, GpuTuning base, int[][] shapes, Random rnd) {
    boolean ok = true;
    for (int[] sh : shapes) {
      AttentionShape ps = new AttentionShape(1, sh[0], sh[1], sh[2]);
      int total = sh[3], m = sh[4], pw = sh[0] * sh[2], pg = ps.groupSize();
      Filled pf = filled(ps, total, rnd);
      float[] pq = gaussian(rnd, m * pw);
      int[] qpos = java.util.Arrays.copyOfRange(pf.pos, total - m, total);
      float[] pwant = new float[pq.length], pgot = new float[pq.length];
      PagedAttention pref = new PagedAttention(Kernels.scalar(), sh[2]);
      for (int h = 0; h < sh[1]; h++) {
        pref.attend(pf.stores[h], m, pg, pq, h * pg * sh[2], pw, qpos, 0, ps.scale(), pwant, h * pg * sh[2], pw);
      }
      try (DeviceKVCache dev = new DeviceKVCache(cl, ps, total, base.withPrefill(pk))) {
        dev.append(0, total, pf.k, pf.v, pf.pos);
        dev.attend(0, m, pq, qpos, pgot);
        ok &= report("prefill " + dev.prefillKernel() + " " + sh[0] + "q/" + sh[1] + "kv d=" + sh[2] + " "
            + m + " rows over " + total, pwant, pgot);
      }
    }
    return ok;
  }

  /** Random K/V of n tokens at positions 0..n-1, with CPU f16 stores holding the same bits. */
  private record Filled(float[] k, float[] v, int[] pos, HeadStore[] stores) {}

  private static Filled filled(AttentionShape s, int n, Random rnd) {
    int w = s.kvHeads() * s.headDim(), d = s.headDim();
    float[] k = gaussian(rnd, n * w), v = gaussian(rnd, n * w);
    int[] pos = new int[n];
    for (int t = 0; t < n; t++) {
      pos[t] = t;
    }
    HeadStore[] stores = new HeadStore[s.kvHeads()];
    for (int h = 0; h < s.kvHeads(); h++) {
      stores[h] = StorageCodec.f16().newStore(d);
      for (int t = 0; t < n; t++) {
        stores[h].append(k, t * w + h * d, v, t * w + h * d, t);
      }
    }
    return new Filled(k, v, pos, stores);
  }

  private static float[] gaussian(Random rnd, int len) {
    float[] x = new float[len];
    for (int i = 0; i < len; i++) {
      x[i] = (float) rnd.nextGaussian();
    }
    return x;
  }

  private static boolean report(String what, float[] want, float[] got) {
    double maxErr = 0;
    boolean ok = true;
    for (int i = 0; i < want.length; i++) {
      double e = Math.abs(want[i] - got[i]);
      maxErr = Math.max(maxErr, Double.isNaN(e) ? Double.POSITIVE_INFINITY : e);
      ok &= e <= 2e-4 + 2e-4 * Math.abs(want[i]);
    }
    System.out.printf("check %-32s max |gpu - cpu| = %.2e  %s%n", what, maxErr, ok ? "PASS" : "FAIL (tol 2e-4 abs+rel)");
    return ok;
  }
}
