package io.kvcache.bench;

import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.openjdk.jmh.results.BenchmarkResult;
import org.openjdk.jmh.results.IterationResult;
import org.openjdk.jmh.results.RunResult;
import org.openjdk.jmh.runner.Runner;
import org.openjdk.jmh.runner.options.ChainedOptionsBuilder;
import org.openjdk.jmh.runner.options.OptionsBuilder;
import org.openjdk.jmh.runner.options.TimeValue;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * Runs the JMH benchmarks and prints one table in the units each is bounded by: GB/s of K/V read
 * for decode (and its fraction of the memory bandwidth measured in the same run with the same
 * threads), GFLOP/s for prefill, and vector/scalar ratios. Medians over measurement iterations.
 */
@Command(name = "jmh", mixinStandardHelpOptions = true,
    description = "Runs the JMH benchmarks (decode, prefill, memory bandwidth) and prints a derived table.")
final class JmhCommand implements Runnable {

  @Option(names = "--include", defaultValue = "DecodeAttention|MemoryBandwidth|PrefillAttention",
      description = "Regex of benchmarks to run (default: ${DEFAULT-VALUE}).")
  String include;

  @Option(names = "--param", description = "JMH parameter override, name=v1,v2 (repeatable), e.g. context=32768,131072 with "
          + "--include \"bench\\.DecodeAttentionBenchmark\" (a parameter applies to every selected benchmark that has it).")
  List<String> params = new ArrayList<>();

  @Option(names = "--iterations", description = "Measurement iterations (default: each benchmark's own).")
  Integer iterations;

  @Option(names = "--warmups", description = "Warm-up iterations (default: each benchmark's own).")
  Integer warmups;

  @Option(names = "--jvm-arg", description = "Extra argument for the forked benchmark JVMs (repeatable), "
      + "e.g. -Dkvcache.attention.f16InPlace=false.")
  List<String> jvmArgs = new ArrayList<>();

  @Override
  public void run() {
    ChainedOptionsBuilder opt = new OptionsBuilder().include(include).shouldFailOnError(true);
    for (String p : params) {
      int eq = p.indexOf('=');
      if (eq < 1) {
        throw new IllegalArgumentException("--param must look like name=v1,v2, got '" + p + "'");
      }
      opt.param(p.substring(0, eq), p.substring(eq + 1).split(","));
    }
    if (iterations != null) {
      io.kvcache.core.Checks.inRange("--iterations", iterations, 1, 10_000);
      opt.measurementIterations(iterations);
    }
    if (warmups != null) {
      io.kvcache.core.Checks.inRange("--warmups", warmups, 0, 10_000);
      opt.warmupIterations(warmups);
    }
    if (!jvmArgs.isEmpty()) {
      // Prepended: JMH's runtime jvmArgsAppend would replace each benchmark's @Fork(jvmArgsAppend) (its
      // heap size, --add-modules, native access) instead of adding to it, as it did until 2026-11-27.
      opt.jvmArgsPrepend(jvmArgs.toArray(new String[0]));
    }
    opt.timeout(TimeValue.minutes(10));
    Collection<RunResult> results;
    try {
      results = new Runner(opt.build()).run();
    } catch (Exception e) {
      if (e instanceof org.openjdk.jmh.runner.NoBenchmarksException || String.valueOf(e).contains("No benchmarks to run")) {
        throw new IllegalArgumentException("--include '" + include + "' matches no benchmark (their names: docs/benchmarks.md)");
      }
      throw new IllegalStateException("JMH run failed", e);
    }
    print(results);
  }

  static double medianScore(RunResult r) {
    List<Double> scores = new ArrayList<>();
    for (BenchmarkResult b : r.getBenchmarkResults()) {
      for (IterationResult i : b.getIterationResults()) {
        scores.add(i.getPrimaryResult().getScore());
      }
    }
    double[] a = new double[scores.size()];
    for (int i = 0; i < a.length; i++) {
      a[i] = scores.get(i);
    }
    return Stats.median(a);
  }

  static void print(Collection<RunResult> results) {
    printKnown(results);
    // Every other benchmark: its parameters and the median of its measurement iterations.
    boolean header = false;
    for (RunResult r : results) {
      String name = r.getParams().getBenchmark();
      if (name.contains("DecodeAttentionBenchmark.decode") && !name.contains("Skvq")
          || name.endsWith("MemoryBandwidthBenchmark.read") || name.endsWith("PrefillAttentionBenchmark.prefill")) {
        continue;
      }
      if (!header) {
        System.out.println();
        System.out.println("other benchmarks (median of measurement iterations)");
        header = true;
      }
      StringBuilder params = new StringBuilder();
      for (String key : r.getParams().getParamsKeys()) {
        params.append(key).append('=').append(r.getParams().getParam(key)).append(' ');
      }
      System.out.printf(Locale.ROOT, "%-50s %-40s %14.1f %s%n", name.substring(name.lastIndexOf('.', name.lastIndexOf('.') - 1) + 1),
          params.toString().trim(), medianScore(r), r.getPrimaryResult().getScoreUnit());
    }
  }

  static void printKnown(Collection<RunResult> results) {
    Map<String, Double> bandwidth = new HashMap<>(); // threads -> GB/s
    Map<String, Double> decodeGbs = new HashMap<>();
    Map<String, Double> prefillGflops = new HashMap<>();
    for (RunResult r : results) {
      String name = r.getParams().getBenchmark();
      if (name.endsWith("MemoryBandwidthBenchmark.read")) {
        double us = medianScore(r);
        bandwidth.put(r.getParams().getParam("threads"), MemoryBandwidthBenchmark.BYTES / (us * 1e3));
      }
    }
    // Each table only where the run had its benchmarks (jmh --include may pick one).
    if (!bandwidth.isEmpty()) {
      System.out.println();
      System.out.println("memory read bandwidth (sum over 1 GiB)");
      System.out.printf(Locale.ROOT, "%-8s %10s%n", "threads", "GB/s");
      bandwidth.forEach((t, gbs) -> System.out.printf(Locale.ROOT, "%-8s %10.2f%n", t, gbs));
    }

    List<String[]> rows = new ArrayList<>();
    for (RunResult r : results) {
      String bench = r.getParams().getBenchmark();
      if (!bench.endsWith(".DecodeAttentionBenchmark.decode")) {
        continue; // SkvqDecodeAttentionBenchmark has its own parameters; it is listed below
      }
      int context = Integer.parseInt(r.getParams().getParam("context"));
      String codec = r.getParams().getParam("codec");
      String kernels = r.getParams().getParam("kernels");
      String threads = r.getParams().getParam("threads");
      double us = medianScore(r);
      double bytes = (double) context * 8 * 128 * 2 * (codec.equals("f32") ? 4 : 2);
      String fill = r.getParams().getParam("fill");
      if (fill != null && !fill.equals("prefill")) {
        codec += "/" + fill; // stores filled as decode appends: a row of their own
      }
      double gbs = bytes / (us * 1e3);
      decodeGbs.put(context + "/" + codec + "/" + kernels + "/" + threads, gbs);
      rows.add(new String[] {String.valueOf(context), codec, kernels, threads, String.valueOf(us)});
    }
    if (!rows.isEmpty()) {
      System.out.println();
      System.out.println("decode attention, one layer, 32 query / 8 KV heads, dim 128");
      System.out.printf(Locale.ROOT, "%-8s %-10s %-8s %-8s %12s %9s %10s %12s%n", "context", "codec", "kernels",
          "threads", "median us", "GB/s", "% of bw", "vs scalar");
    }
    for (String[] row : rows) {
      double gbs = decodeGbs.get(row[0] + "/" + row[1] + "/" + row[2] + "/" + row[3]);
      Double bw = bandwidth.get(row[3]);
      Double scalar = decodeGbs.get(row[0] + "/" + row[1] + "/scalar/" + row[3]);
      System.out.printf(Locale.ROOT, "%-8s %-10s %-8s %-8s %12.1f %9.2f %10s %12s%n", row[0], row[1], row[2], row[3],
          Double.parseDouble(row[4]), gbs, bw == null ? "-" : String.format(Locale.ROOT, "%.0f%%", 100 * gbs / bw),
          scalar == null ? "-" : String.format(Locale.ROOT, "%.2fx", gbs / scalar));
    }

    List<String[]> prows = new ArrayList<>();
    for (RunResult r : results) {
      if (!r.getParams().getBenchmark().endsWith("PrefillAttentionBenchmark.prefill")) {
        continue;
      }
      int context = Integer.parseInt(r.getParams().getParam("context"));
      String kernels = r.getParams().getParam("kernels");
      double ms = medianScore(r);
      prefillGflops.put(context + "/" + kernels, PrefillAttentionBenchmark.flops(context) / (ms * 1e6));
      prows.add(new String[] {String.valueOf(context), kernels, String.valueOf(ms)});
    }
    if (!prows.isEmpty()) {
      System.out.println();
      System.out.println("prefill attention, causal, one chunk, 4 query / 1 KV head, dim 128, f32, 1 thread");
      System.out.printf(Locale.ROOT, "%-8s %-8s %12s %10s %12s%n", "context", "kernels", "median ms", "GFLOP/s",
          "vs scalar");
    }
    for (String[] row : prows) {
      double gf = prefillGflops.get(row[0] + "/" + row[1]);
      Double scalar = prefillGflops.get(row[0] + "/scalar");
      System.out.printf(Locale.ROOT, "%-8s %-8s %12.1f %10.2f %12s%n", row[0], row[1], Double.parseDouble(row[2]), gf,
          scalar == null ? "-" : String.format(Locale.ROOT, "%.2fx", gf / scalar));
    }
  }
}
