package io.kvcache.bench;

import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.SortedSet;
import java.util.TreeMap;
import java.util.TreeSet;
import org.openjdk.jmh.results.BenchmarkResult;
import org.openjdk.jmh.results.IterationResult;
import org.openjdk.jmh.results.RunResult;
import org.openjdk.jmh.runner.BenchmarkList;
import org.openjdk.jmh.runner.BenchmarkListEntry;
import org.openjdk.jmh.runner.Runner;
import org.openjdk.jmh.runner.format.OutputFormatFactory;
import org.openjdk.jmh.runner.options.ChainedOptionsBuilder;
import org.openjdk.jmh.runner.options.OptionsBuilder;
import org.openjdk.jmh.runner.options.TimeValue;
import org.openjdk.jmh.runner.options.VerboseMode;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * Runs the JMH benchmarks and prints one table in the units each is bounded by: GB/s of K/V read
 * for decode (and its fraction of the memory bandwidth measured in the same run with the same
 * threads), GFLOP/s for prefill, and vector/scalar ratios. Medians over measurement iterations.
 */
@Command(name = "jmh", mixinStandardHelpOptions = true,
    description = "Runs the JMH benchmarks (decode over f16 and f32, SKVQ decode, prefill, memory bandwidth) and "
        + "prints a derived table. A benchmark that fails is named at the end (exit 1); the others' results still print.")
final class JmhCommand implements Runnable {

  /** Some benchmark runs failed; the tables of the others were printed. */
  static final class RunFailed extends RuntimeException {
    RunFailed(String message) {
      super(message);
    }
  }

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

  @Option(names = "--forks", description = "Forked JVMs per benchmark (default: each benchmark's own, 1).")
  Integer forks;

  @Option(names = "--time", description = "Seconds per warm-up and per measurement iteration (default: each "
      + "benchmark's own, 1).")
  Integer seconds;

  @Option(names = "--list", description = "List the benchmarks --include selects, with their parameters and values, "
      + "and exit.")
  boolean list;

  @Override
  public void run() {
    SortedSet<BenchmarkListEntry> selected = select(include);
    if (selected.isEmpty()) {
      throw new IllegalArgumentException("--include '" + include + "' matches no benchmark; they are: "
          + String.join(", ", names(select(".*"))));
    }
    Map<String, String[]> overrides = overrides(params, selected);
    if (list) {
      for (BenchmarkListEntry e : selected) {
        System.out.println(e.getUsername());
        for (Map.Entry<String, String[]> p : declared(e).entrySet()) {
          System.out.println("  " + p.getKey() + " = " + String.join(", ", p.getValue()));
        }
      }
      return;
    }
    // Not failing on error: one benchmark's failure (a parameter value its setup refuses) must not throw
    // away what the others measured; the runs that failed are named after the tables.
    ChainedOptionsBuilder opt = new OptionsBuilder().include(include).shouldFailOnError(false);
    overrides.forEach(opt::param);
    if (iterations != null) {
      io.kvcache.core.Checks.inRange("--iterations", iterations, 1, 10_000);
      opt.measurementIterations(iterations);
    }
    if (warmups != null) {
      io.kvcache.core.Checks.inRange("--warmups", warmups, 0, 10_000);
      opt.warmupIterations(warmups);
      if (warmups == 0) {
        System.err.println("jmh: --warmups 0 times code before the JIT has compiled it; the numbers are not the "
            + "kernels'");
      }
    }
    if (forks != null) {
      io.kvcache.core.Checks.inRange("--forks", forks, 1, 100);
      opt.forks(forks);
    }
    if (seconds != null) {
      io.kvcache.core.Checks.inRange("--time", seconds, 1, 3600);
      opt.warmupTime(TimeValue.seconds(seconds)).measurementTime(TimeValue.seconds(seconds));
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
      throw new IllegalStateException("JMH run failed", e);
    }
    print(results);
    List<String> failed = missing(selected, overrides, results);
    if (!failed.isEmpty()) {
      throw new RunFailed(failed.size() + " benchmark run(s) failed (JMH's output above has the exception): "
          + String.join("; ", failed));
    }
  }

  /** The benchmarks in the jar whose names {@code regex} finds, as JMH's runner selects them. */
  static SortedSet<BenchmarkListEntry> select(String regex) {
    return BenchmarkList.defaultList().find(OutputFormatFactory.createFormatInstance(System.out, VerboseMode.SILENT),
        List.of(regex), List.of());
  }

  private static List<String> names(Collection<BenchmarkListEntry> entries) {
    List<String> out = new ArrayList<>();
    for (BenchmarkListEntry e : entries) {
      out.add(e.getUsername());
    }
    return out;
  }

  /** A benchmark's parameters and their default values, sorted by name. */
  private static Map<String, String[]> declared(BenchmarkListEntry e) {
    Map<String, String[]> m = new TreeMap<>();
    if (e.getParams().hasValue()) {
      m.putAll(e.getParams().get());
    }
    return m;
  }

  /**
   * The {@code --param} overrides, each naming a parameter that some selected benchmark declares: JMH
   * would ignore a misspelt name and run every default value.
   */
  static Map<String, String[]> overrides(List<String> params, Collection<BenchmarkListEntry> selected) {
    Map<String, String[]> out = new LinkedHashMap<>();
    TreeSet<String> known = new TreeSet<>();
    for (BenchmarkListEntry e : selected) {
      known.addAll(declared(e).keySet());
    }
    for (String p : params) {
      int eq = p.indexOf('=');
      if (eq < 1 || eq == p.length() - 1) {
        throw new IllegalArgumentException("--param must look like name=v1,v2, got '" + p + "'");
      }
      String name = p.substring(0, eq);
      if (!known.contains(name)) {
        throw new IllegalArgumentException("--param " + name + ": no selected benchmark has it; they have "
            + (known.isEmpty() ? "no parameters" : String.join(", ", known)));
      }
      out.put(name, p.substring(eq + 1).split(","));
    }
    return out;
  }

  /** Each run the selection asked for and no result came back for: benchmark and parameters, sorted. */
  static List<String> missing(Collection<BenchmarkListEntry> selected, Map<String, String[]> overrides,
      Collection<RunResult> results) {
    TreeSet<String> seen = new TreeSet<>();
    for (RunResult r : results) {
      StringBuilder key = new StringBuilder(r.getParams().getBenchmark());
      for (String name : new TreeSet<>(r.getParams().getParamsKeys())) {
        key.append(' ').append(name).append('=').append(r.getParams().getParam(name));
      }
      seen.add(key.toString());
    }
    TreeSet<String> out = new TreeSet<>();
    for (BenchmarkListEntry e : selected) {
      List<String> keys = new ArrayList<>(List.of(e.getUsername()));
      for (Map.Entry<String, String[]> p : declared(e).entrySet()) {
        List<String> next = new ArrayList<>();
        for (String k : keys) {
          for (String v : overrides.getOrDefault(p.getKey(), p.getValue())) {
            next.add(k + ' ' + p.getKey() + '=' + v);
          }
        }
        keys = next;
      }
      for (String k : keys) {
        if (!seen.contains(k)) {
          out.add(k);
        }
      }
    }
    return new ArrayList<>(out);
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
