package io.kvcache.bench;

import io.kvcache.codec.HeadStore;
import io.kvcache.codec.StorageCodec;
import io.kvcache.core.AttentionShape;
import io.kvcache.gpu.DeviceKVCache;
import io.kvcache.gpu.OpenClProbe;
import io.kvcache.gpu.TopKDecoder;
import io.kvcache.gpu.cl.ClContext;
import io.kvcache.gpu.cl.OpenCl;
import io.kvcache.kernel.Kernels;
import io.kvcache.reader.PagedAttention;
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

  @Option(names = "--platform", defaultValue = "", description = "Substring of the OpenCL platform name (default: any, GPU preferred).")
  String platform;

  @Option(names = "--device", defaultValue = "", description = "Substring of the device name.")
  String device;

  @Option(names = "--binding", defaultValue = "lwjgl", description = "lwjgl or jocl.")
  String binding;

  @Option(names = "--probe-only", description = "Only report the OpenCL loader and drivers.")
  boolean probeOnly;

  @Option(names = "--check-only", description = "Only run the correctness checks.")
  boolean checkOnly;

  @Option(names = "--decode", split = ",", defaultValue = "4096,32768,131072", description = "Decode context lengths.")
  List<Integer> decode;

  @Option(names = "--prefill", split = ",", defaultValue = "4096,16384,32768", description = "Prefill prompt lengths.")
  List<Integer> prefill;

  @Option(names = "--budget", defaultValue = "2048", description = "Top-k decode budget in tokens.")
  int budget;

  @Option(names = "--channels", defaultValue = "32", description = "Top-k estimate channels per query head.")
  int channels;

  @Option(names = "--reps", defaultValue = "20", description = "Timed decode repetitions (median shown).")
  int reps;

  @Option(names = "--csv", description = "Also write the table as CSV here.")
  Path csv;

  /** Llama-3-8B-like attention: 32 query heads, 8 KV heads, dim 128. */
  static final int HQ = 32, KVH = 8, D = 128;

  @Override
  public void run() {
    OpenClProbe probe = OpenClProbe.system();
    System.out.println(probe.describe());
    for (OpenClProbe.Driver d : probe.drivers()) {
      System.out.println("  " + d.icdFile() + " -> " + d.library());
    }
    if (probeOnly || !probe.usable()) {
      return;
    }
    try (ClContext cl = OpenCl.open(binding, platform, device)) {
      System.out.printf("device: %s / %s via %s, %d compute units, %d KiB local memory%n", cl.platformName(),
          cl.deviceName(), cl.binding(), cl.computeUnits(), cl.localMemBytes() / 1024);
      boolean ok = check(cl);
      if (checkOnly) {
        if (!ok) {
          throw new IllegalStateException("GPU kernels disagree with the CPU reference");
        }
        return;
      }
      List<String[]> rows = new ArrayList<>();
      for (int n : decode) {
        rows.addAll(decodeRows(cl, n));
      }
      for (int n : prefill) {
        rows.add(prefillRow(cl, n));
      }
      String[] head = {"kernel", "tokens", "us", "GB/s", "TFLOP/s"};
      System.out.println();
      System.out.printf("GPU attention on %s (%s), %d q / %d kv heads, dim %d, f16 K/V, f32 arithmetic%n",
          cl.deviceName(), cl.binding(), HQ, KVH, D);
      System.out.printf("%-16s %8s %12s %10s %9s%n", (Object[]) head);
      for (String[] r : rows) {
        System.out.printf("%-16s %8s %12s %10s %9s%n", (Object[]) r);
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

  /** Appends n random tokens in blocks, so the host never holds the whole cache as floats. */
  private static void fill(DeviceKVCache dev, int n, long seed) {
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
      dev.append(0, b, k, v, pos);
    }
  }

  private static String f(String fmt, double x) {
    return String.format(Locale.ROOT, fmt, x);
  }

  private List<String[]> decodeRows(ClContext cl, int n) {
    AttentionShape s = new AttentionShape(1, HQ, KVH, D);
    List<String[]> rows = new ArrayList<>();
    try (DeviceKVCache dev = new DeviceKVCache(cl, s, n);
        TopKDecoder topk = new TopKDecoder(dev, new TopKDecoder.Config(budget, channels, 64))) {
      fill(dev, n, n);
      float[] q = new float[HQ * D], out = new float[HQ * D];
      fillRandom(new SplittableRandom(7), q);
      double[] dense = new double[reps], sparse = new double[reps];
      for (int i = 0; i < 3; i++) {
        dev.decode(0, q, n - 1, out);
        topk.decode(0, q, n - 1, out);
      }
      for (int i = 0; i < reps; i++) {
        dev.decode(0, q, n - 1, out);
        dense[i] = dev.lastKernelNanos() / 1e3;
        topk.decode(0, q, n - 1, out);
        sparse[i] = dev.lastKernelNanos() / 1e3;
      }
      double bytes = 2.0 * n * KVH * D * 2;
      double us = Stats.median(dense), usK = Stats.median(sparse);
      rows.add(new String[] {"decode dense", "" + n, f("%.1f", us), f("%.0f", bytes / us / 1e3), "-"});
      rows.add(new String[] {"decode top-" + budget, "" + n, f("%.1f", usK), f("%.0f", bytes / usK / 1e3), "-"});
    }
    return rows;
  }

  private String[] prefillRow(ClContext cl, int n) {
    AttentionShape s = new AttentionShape(1, HQ, KVH, D);
    try (DeviceKVCache dev = new DeviceKVCache(cl, s, n)) {
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
      return new String[] {"prefill causal", "" + n, f("%.0f", us), "-", f("%.2f", flops / us / 1e6)};
    }
  }

  /** The kernels against PagedAttention with the scalar kernels, on this device; prints max errors. */
  private boolean check(ClContext cl) {
    boolean ok = true;
    long seed = 20261125L;
    Random rnd = new Random(seed);
    int n = 3001, pn = 333;
    AttentionShape s = new AttentionShape(1, HQ, KVH, D);
    int w = KVH * D, g = s.groupSize();
    float[] k = new float[n * w], v = new float[n * w];
    for (int i = 0; i < k.length; i++) {
      k[i] = (float) rnd.nextGaussian();
      v[i] = (float) rnd.nextGaussian();
    }
    int[] pos = new int[n];
    for (int t = 0; t < n; t++) {
      pos[t] = t;
    }
    HeadStore[] stores = new HeadStore[KVH];
    for (int h = 0; h < KVH; h++) {
      stores[h] = StorageCodec.f16().newStore(D);
      for (int t = 0; t < n; t++) {
        stores[h].append(k, t * w + h * D, v, t * w + h * D, t);
      }
    }
    PagedAttention ref = new PagedAttention(Kernels.scalar(), D);
    float[] q = new float[HQ * D];
    for (int i = 0; i < q.length; i++) {
      q[i] = (float) rnd.nextGaussian();
    }
    float[] want = new float[q.length];
    for (int h = 0; h < KVH; h++) {
      ref.decode(stores[h], g, q, h * g * D, n - 1, s.scale(), want, h * g * D);
    }
    try (DeviceKVCache dev = new DeviceKVCache(cl, s, n);
        TopKDecoder topk = new TopKDecoder(dev, new TopKDecoder.Config(n + 16, channels, 64))) {
      dev.append(0, n, k, v, pos);
      float[] got = new float[q.length];
      dev.decode(0, q, n - 1, got);
      ok &= report("decode dense, n=" + n, want, got);
      topk.decode(0, q, n - 1, got);
      ok &= report("decode top-k, budget >= n=" + n, want, got);
    }
    // Prefill of the first pn tokens with fresh queries.
    float[] pq = new float[pn * HQ * D];
    for (int i = 0; i < pq.length; i++) {
      pq[i] = (float) rnd.nextGaussian();
    }
    float[] pwant = new float[pq.length], pgot = new float[pq.length];
    HeadStore[] ps = new HeadStore[KVH];
    for (int h = 0; h < KVH; h++) {
      ps[h] = StorageCodec.f16().newStore(D);
      for (int t = 0; t < pn; t++) {
        ps[h].append(k, t * w + h * D, v, t * w + h * D, t);
      }
      ref.attend(ps[h], pn, g, pq, h * g * D, HQ * D, pos, 0, s.scale(), pwant, h * g * D, HQ * D);
    }
    try (DeviceKVCache dev = new DeviceKVCache(cl, s, pn)) {
      dev.append(0, pn, k, v, pos);
      dev.attend(0, pn, pq, pos, pgot);
      ok &= report("prefill causal, n=" + pn, pwant, pgot);
    }
    return ok;
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
