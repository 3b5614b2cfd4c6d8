package io.kvcache.bench;

import io.kvcache.core.CacheStats;
import io.kvcache.core.KVCacheStrategy;
import io.kvcache.core.Strategies;
import io.kvcache.fastkv.TokenSelectivePropagation;
import io.kvcache.kernel.Kernels;
import io.kvcache.model.LlamaConfig;
import io.kvcache.model.LlamaModel;
import io.kvcache.model.LlamaWeights;
import io.kvcache.model.MatrixKernels;
import io.kvcache.model.RandomWeights;
import java.io.PrintStream;
import java.lang.management.ManagementFactory;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * Time to first token of the reference decoder under prefill schedules: the full schedule, FastKV's
 * token-selective propagation and SwiftKV's SingleInputKV + AcrossKV, on a random-weight model of a
 * named shape (issues #7 and #8 set their bars with it).
 *
 * <p>Per strategy and repetition, on a fresh sequence: <b>prefill</b> is
 * {@link LlamaModel.Sequence#prefill} of the whole prompt, which ends with the last prompt token's
 * logits; <b>TTFT</b> adds choosing the first token from them (greedy) and the cache's end of prompt
 * ({@code endPrefill}, where a retention policy such as FastKV's GQA-aware compression runs), all a
 * server does before it can return the first token and decode on. Every strategy runs once on a short
 * prompt first (untimed, so the timed runs measure compiled code); the repetitions then go round the
 * strategies in turn, so drift on a shared machine touches them alike, and medians are reported.
 * Beside the wall-clock prefill time, the process's CPU time over the prefill: on a machine shared
 * with other work it varies far less than the wall clock, since time spent waiting for a core is not
 * counted.
 */
@Command(name = "prefill", mixinStandardHelpOptions = true,
    description = "Times prefill and time to first token of the reference decoder on a random-weight model under "
        + "prefill schedules (full, FastKV, SwiftKV), with KV bytes after the prompt.")
final class PrefillCommand implements Runnable {

  /** FastKV's defaults as {@link Strategies#fastKV(int)} sets them: half the layers see every row, window 8, pool 7. */
  static final double TSP_FULL_SHARE = 0.5;
  static final int TSP_WINDOW = 8;
  static final int TSP_POOL = 7;

  /** Tokens of the untimed run of each strategy before the timed ones. */
  static final int WARMUP_TOKENS = 64;

  /** The strategies measured when none is named, after the full schedule. */
  static final List<String> DEFAULT_STRATEGIES = List.of("full", "fastKV", "swiftKV(0.5,2)", "swiftKV(0.5,1)");

  @Option(names = "--shape", defaultValue = "llama-3.2-1b",
      description = "Model shape: llama-3.2-1b or tiny (default: ${DEFAULT-VALUE}).")
  String shape;

  @Option(names = "--prompt", paramLabel = "<prompt>", description = "Prompt tokens (default: 8192, or the shape's longest prompt if shorter).")
  Integer promptOption;

  int prompt; // --prompt, or its default for the shape

  @Option(names = {"-s", "--strategy"}, description = "full, fastKV (TSP rate 20%%), fastKV(RATE), fastKV(RATE,SHARE), swiftKV(SKIP,GROUP), "
      + "or a compare preset or combination; repeatable. Default: full, fastKV, swiftKV(0.5,2), swiftKV(0.5,1). "
      + "The full schedule is always measured: the ratios are against it.")
  List<String> strategies = new ArrayList<>();

  @Option(names = "--budget", defaultValue = "2048",
      description = "KV budget per KV head of FastKV and other budgeted presets (default: ${DEFAULT-VALUE}).")
  int budget;

  @Option(names = "--threads",
      description = "Threads for the matrix products and KV heads (default: the machine's cores).")
  Integer threads;

  @Option(names = "--chunk", defaultValue = "512",
      description = "Prompt tokens run together (default: ${DEFAULT-VALUE}).")
  int chunk;

  @Option(names = "--repeats", defaultValue = "3", description = "Timed runs per strategy; medians shown "
      + "(default: ${DEFAULT-VALUE}).")
  int repeats;

  @Option(names = "--seed", defaultValue = "42",
      description = "Seed of the weights and the prompt (default: ${DEFAULT-VALUE}).")
  long seed;

  @Option(names = "--format", defaultValue = "table", description = "table, csv or json (default: ${DEFAULT-VALUE}).")
  String format;

  @Option(names = "--no-progress", description = "No progress bar on stderr.")
  boolean noProgress;

  /**
   * One strategy's medians and ratios against the full schedule of the same run.
   *
   * @param strategy      the strategy's name
   * @param prefillMs     median prefill milliseconds
   * @param cpuMs         median CPU milliseconds of the process (all threads) over the prefill; NaN
   *                      where the JVM does not report it
   * @param ttftMs        median time to first token, milliseconds
   * @param kvBytes       K/V payload bytes after the prompt
   * @param heldBytes     payload plus the cache's bookkeeping
   * @param prefillVsFull prefill time over the full schedule's
   * @param cpuVsFull     prefill CPU time over the full schedule's
   * @param flop          the prefill's matrix and attention FLOPs as the decoder counts them
   * @param flopVsFull    those FLOPs over the full schedule's
   * @param ttftVsFull    TTFT over the full schedule's
   * @param kvVsFull      K/V payload over the full schedule's
   */
  record Row(String strategy, double prefillMs, double cpuMs, double ttftMs, long kvBytes, long heldBytes,
      double prefillVsFull, double cpuVsFull, long flop, double flopVsFull, double ttftVsFull, double kvVsFull) {

    /** @return the full schedule's TTFT over this one's: how many times faster the first token comes */
    double speedup() {
      return 1 / ttftVsFull;
    }

    /** @return prompt tokens per second of prefill */
    double tokensPerSecond(int promptTokens) {
      return promptTokens / (prefillMs / 1e3);
    }
  }

  /** What one timed run saw. */
  private record Sample(long prefillNanos, long cpuNanos, long ttftNanos, long flops, CacheStats stats) {}

  /** Keeps the chosen first tokens live, so that the choice is not optimised away. */
  private long tokenSink;

  @Override
  public void run() {
    LlamaConfig config;
    try {
      config = RandomWeights.shape(shape);
    } catch (IllegalArgumentException e) {
      throw new IllegalArgumentException("--" + e.getMessage(), e);
    }
    int t = threads != null ? threads : Runtime.getRuntime().availableProcessors();
    prompt = promptOption != null ? promptOption : Math.min(8192, config.maxPositions());
    checkOptions(config, t);
    List<KVCacheStrategy> list = strategies(strategies, budget);
    int[] tokens = promptTokens(config, prompt, seed);
    Progress progress = new Progress(1 + list.size() * (1 + repeats), !noProgress);
    progress.draw("random weights " + config.architecture());
    Instant started = Instant.now().truncatedTo(ChronoUnit.SECONDS);
    double load = ManagementFactory.getOperatingSystemMXBean().getSystemLoadAverage();
    LlamaWeights weights = RandomWeights.create(config, seed);
    ExecutorService pool = t > 1 ? Executors.newFixedThreadPool(t - 1) : null;
    try {
      LlamaModel model = new LlamaModel(weights, MatrixKernels.get(), pool, t);
      int[] warm = Arrays.copyOf(tokens, Math.min(tokens.length, WARMUP_TOKENS));
      for (KVCacheStrategy s : list) {
        progress.step("warm-up " + s.name());
        once(model, s, warm);
      }
      long[][] prefill = new long[list.size()][repeats];
      long[][] cpu = new long[list.size()][repeats];
      long[][] ttft = new long[list.size()][repeats];
      CacheStats[] stats = new CacheStats[list.size()];
      long[] flops = new long[list.size()];
      for (int r = 0; r < repeats; r++) {
        for (int i = 0; i < list.size(); i++) {
          progress.step(list.get(i).name() + " " + (r + 1) + "/" + repeats);
          Sample s = once(model, list.get(i), tokens);
          prefill[i][r] = s.prefillNanos();
          cpu[i][r] = s.cpuNanos();
          ttft[i][r] = s.ttftNanos();
          stats[i] = s.stats();
          flops[i] = s.flops();
        }
      }
      progress.finish();
      List<Row> rows = rows(list, prefill, cpu, ttft, flops, stats);
      print(System.out, config, t, started, load, rows);
    } finally {
      if (pool != null) {
        pool.shutdown();
      }
      weights.close();
    }
  }

  private void checkOptions(LlamaConfig config, int t) {
    if (prompt < 2 || prompt > config.maxPositions()) {
      throw new IllegalArgumentException("--prompt must be in [2, " + config.maxPositions() + "] for shape "
          + config.architecture() + ", got " + prompt);
    }
    if (chunk < 1 || chunk > 65536) {
      throw new IllegalArgumentException("--chunk must be in [1, 65536], got " + chunk);
    }
    if (repeats < 1 || repeats > 1000) {
      throw new IllegalArgumentException("--repeats must be in [1, 1000], got " + repeats);
    }
    if (t < 1 || t > 1024) {
      throw new IllegalArgumentException("--threads must be in [1, 1024], got " + t);
    }
    if (budget < 1) {
      throw new IllegalArgumentException("--budget must be >= 1 token per KV head, got " + budget);
    }
    long need = RandomWeights.bytes(config);
    long limit = directMemoryLimit();
    if (limit > 0 && need > limit) {
      throw new IllegalArgumentException("--shape " + config.architecture() + " needs " + size(need) + " of direct "
          + "memory for its weights and this JVM allows " + size(limit) + "; start it with -XX:MaxDirectMemorySize="
          + (need / (1L << 30) + 2) + "g (java passes it on to the relaunched JVM)");
    }
    String f = format.toLowerCase(Locale.ROOT);
    if (!f.equals("table") && !f.equals("csv") && !f.equals("json")) {
      throw new IllegalArgumentException("--format must be table, csv or json, got '" + format + "'");
    }
  }

  /**
   * The JVM's direct-memory limit: {@code -XX:MaxDirectMemorySize}, or the maximum heap size when it
   * is not set (HotSpot's rule); 0 when the JVM does not say.
   */
  static long directMemoryLimit() {
    try {
      com.sun.management.HotSpotDiagnosticMXBean hs =
          ManagementFactory.getPlatformMXBean(com.sun.management.HotSpotDiagnosticMXBean.class);
      long set = Long.parseLong(hs.getVMOption("MaxDirectMemorySize").getValue());
      return set > 0 ? set : Runtime.getRuntime().maxMemory();
    } catch (RuntimeException e) {
      // Not HotSpot: allocation will tell.
      return 0;
    }
  }

  /** A fresh sequence, the prompt, the first token and the end of prompt, timed. */
  private Sample once(LlamaModel model, KVCacheStrategy s, int[] tokens) {
    float[] logits = new float[model.config().vocabSize()];
    // A collection now rather than inside the timed run: FastKV's prefill allocates hidden states
    // for the whole prompt.
    System.gc();
    try (LlamaModel.Sequence seq = model.newSequence(s, chunk)) {
      long c0 = processCpuNanos();
      long t0 = System.nanoTime();
      seq.prefill(tokens, logits);
      long t1 = System.nanoTime();
      long c1 = processCpuNanos();
      tokenSink += argmax(logits);
      seq.cache().endPrefill();
      long t2 = System.nanoTime();
      long f = 0;
      for (long x : seq.prefillFlops()) {
        f += x;
      }
      return new Sample(t1 - t0, c0 < 0 || c1 < 0 ? -1 : c1 - c0, t2 - t0, f, seq.cache().stats());
    }
  }

  /** CPU nanoseconds of every thread of this process so far; -1 where the JVM does not say. */
  static long processCpuNanos() {
    if (ManagementFactory.getOperatingSystemMXBean() instanceof com.sun.management.OperatingSystemMXBean os) {
      return os.getProcessCpuTime();
    }
    return -1;
  }

  static int argmax(float[] a) {
    int best = 0;
    for (int i = 1; i < a.length; i++) {
      if (a[i] > a[best]) {
        best = i;
      }
    }
    return best;
  }

  /**
   * The prompt: ids uniform over the vocabulary, seeded.
   *
   * @param config the model's config
   * @param n      tokens
   * @param seed   the seed
   * @return the ids
   */
  static int[] promptTokens(LlamaConfig config, int n, long seed) {
    SplittableRandom r = new SplittableRandom(seed ^ 0x5DEECE66DL);
    int[] t = new int[n];
    for (int i = 0; i < n; i++) {
      t[i] = r.nextInt(config.vocabSize());
    }
    return t;
  }

  /**
   * Resolves the strategies, the full schedule first (added when not named; named twice, kept once).
   *
   * @param specs  names as given to {@code -s}; empty for the defaults
   * @param budget KV budget per KV head
   * @return the strategies, the full schedule first
   */
  static List<KVCacheStrategy> strategies(List<String> specs, int budget) {
    List<KVCacheStrategy> out = new ArrayList<>();
    out.add(Strategies.full());
    for (String spec : specs == null || specs.isEmpty() ? DEFAULT_STRATEGIES : specs) {
      KVCacheStrategy s = resolve(spec, budget);
      if (out.stream().noneMatch(o -> o.name().equals(s.name()))) {
        out.add(s);
      }
    }
    return out;
  }

  private static final Pattern FAST = Pattern.compile("fastkv\\(([^,()]+)\\)");
  private static final Pattern FAST_AT = Pattern.compile("fastkv\\(([^,()]+),([^,()]+)\\)");
  private static final Pattern SWIFT = Pattern.compile("swiftkv\\(([^,()]+),([^,()]+)\\)");

  /**
   * One strategy by name.
   *
   * @param spec   {@code full}, {@code fastKV}, {@code fastKV(RATE)}, {@code fastKV(RATE,SHARE)} (SHARE: the
   *               share of layers that run every prompt row), {@code swiftKV},
   *               {@code swiftKV(SKIP,GROUP)}, or a compare preset or combination
   * @param budget KV budget per KV head
   * @return the strategy
   * @throws IllegalArgumentException naming the spec and the accepted forms
   */
  static KVCacheStrategy resolve(String spec, int budget) {
    String s = spec.replace(" ", "").toLowerCase(Locale.ROOT);
    try {
      if (s.equals("full")) {
        return Strategies.full();
      }
      if (s.equals("fastkv")) {
        return Strategies.fastKV(budget);
      }
      if (s.equals("swiftkv")) {
        return Strategies.swiftKV(0.5, 2);
      }
      Matcher f = FAST.matcher(s);
      if (f.matches()) {
        double rate = Double.parseDouble(f.group(1));
        return Strategies.fastKV(TokenSelectivePropagation.ofRate(TSP_FULL_SHARE, rate, TSP_WINDOW, TSP_POOL), budget,
            TSP_WINDOW, TSP_POOL);
      }
      Matcher fa = FAST_AT.matcher(s);
      if (fa.matches()) {
        double rate = Double.parseDouble(fa.group(1));
        double share = Double.parseDouble(fa.group(2));
        return Strategies.fastKV(TokenSelectivePropagation.ofRate(share, rate, TSP_WINDOW, TSP_POOL), budget,
            TSP_WINDOW, TSP_POOL);
      }
      Matcher w = SWIFT.matcher(s);
      if (w.matches()) {
        return Strategies.swiftKV(Double.parseDouble(w.group(1)), Integer.parseInt(w.group(2)));
      }
      return Presets.resolve(spec, budget);
    } catch (IllegalArgumentException e) {
      // Also a NumberFormatException: its message names the text that is not a number.
      String m = e.getMessage();
      String prefix = "strategy '" + spec + "': ";
      throw new IllegalArgumentException(prefix + (m.startsWith(prefix) ? m.substring(prefix.length()) : m)
          + " (accepted: full, fastKV, "
          + "fastKV(RATE) with RATE in (0, 1], fastKV(RATE,SHARE) with SHARE in (0, 1] the share of layers that run every prompt row, swiftKV, swiftKV(SKIP,GROUP) with SKIP in (0, 1] and GROUP >= 1, or a "
          + "compare preset or combination)", e);
    }
  }

  static List<Row> rows(List<KVCacheStrategy> list, long[][] prefill, long[][] cpu, long[][] ttft, long[] flops,
      CacheStats[] stats) {
    List<Row> rows = new ArrayList<>();
    double fullPrefill = median(prefill[0]);
    double fullCpu = median(cpu[0]);
    double fullTtft = median(ttft[0]);
    long fullKv = stats[0].payloadBytes();
    for (int i = 0; i < list.size(); i++) {
      double p = median(prefill[i]);
      double c = median(cpu[i]);
      double t = median(ttft[i]);
      long kv = stats[i].payloadBytes();
      rows.add(new Row(list.get(i).name(), p / 1e6, c / 1e6, t / 1e6, kv, stats[i].bytesHeld(), p / fullPrefill,
          c / fullCpu, flops[i], (double) flops[i] / flops[0], t / fullTtft, (double) kv / fullKv));
    }
    return rows;
  }

  /** The median; NaN when any sample is missing (-1): a median of the samples that exist would mislead. */
  private static double median(long[] nanos) {
    double[] d = new double[nanos.length];
    for (int i = 0; i < d.length; i++) {
      if (nanos[i] < 0) {
        return Double.NaN;
      }
      d[i] = nanos[i];
    }
    return Stats.median(d);
  }

  /** A number for JSON, where NaN (a CPU time the JVM did not report) is not a value: {@code null}. */
  private static String jsonNumber(double x, int decimals) {
    return Double.isFinite(x) ? String.format(Locale.ROOT, "%." + decimals + "f", x) : "null";
  }

  void print(PrintStream out, LlamaConfig c, int t, Instant started, double load, List<Row> rows) {
    String jdk = Runtime.version() + " (" + System.getProperty("java.vendor") + ")";
    int cores = Runtime.getRuntime().availableProcessors();
    switch (format.toLowerCase(Locale.ROOT)) {
      case "csv" -> {
        out.println("strategy,prefill_ms,prefill_vs_full,prefill_cpu_ms,prefill_cpu_vs_full,prefill_flop,"
            + "prefill_flop_vs_full,ttft_ms,ttft_vs_full,ttft_speedup,prompt_tokens_per_s,kv_bytes,kv_vs_full,"
            + "held_bytes");
        for (Row r : rows) {
          out.printf(Locale.ROOT, "%s,%.1f,%.4f,%.1f,%.4f,%d,%.6f,%.1f,%.4f,%.4f,%.1f,%d,%.6f,%d%n",
              csv(r.strategy()), r.prefillMs(), r.prefillVsFull(), r.cpuMs(), r.cpuVsFull(), r.flop(),
              r.flopVsFull(), r.ttftMs(), r.ttftVsFull(), r.speedup(), r.tokensPerSecond(prompt), r.kvBytes(),
              r.kvVsFull(), r.heldBytes());
        }
      }
      case "json" -> {
        out.printf(Locale.ROOT, "{\"shape\": \"%s\", \"promptTokens\": %d, \"chunk\": %d, \"repeats\": %d, "
            + "\"seed\": %d, \"budget\": %d,%n \"machine\": {\"cores\": %d, \"threads\": %d, \"jdk\": \"%s\", "
            + "\"matrixKernels\": \"%s\", \"attentionKernels\": \"%s\", \"loadAverage\": %.2f, \"started\": \"%s\"},%n"
            + " \"rows\": [", json(c.architecture()), prompt, chunk, repeats, seed, budget, cores, t, json(jdk),
            json(MatrixKernels.get().name()), json(Kernels.get().name()), load, started);
        for (int i = 0; i < rows.size(); i++) {
          Row r = rows.get(i);
          out.printf(Locale.ROOT, "%s%n  {\"strategy\": \"%s\", \"prefillMs\": %.1f, \"prefillVsFull\": %.4f, "
              + "\"prefillCpuMs\": %s, \"prefillCpuVsFull\": %s, \"prefillFlop\": %d, "
              + "\"prefillFlopVsFull\": %.6f, \"ttftMs\": %.1f, \"ttftVsFull\": %.4f, \"ttftSpeedup\": %.4f, "
              + "\"promptTokensPerSecond\": %.1f, \"kvBytes\": %d, \"kvVsFull\": %.6f, \"heldBytes\": %d}",
              i == 0 ? "" : ",", json(r.strategy()), r.prefillMs(), r.prefillVsFull(), jsonNumber(r.cpuMs(), 1),
              jsonNumber(r.cpuVsFull(), 4),
              r.flop(), r.flopVsFull(), r.ttftMs(), r.ttftVsFull(), r.speedup(), r.tokensPerSecond(prompt),
              r.kvBytes(), r.kvVsFull(), r.heldBytes());
        }
        out.println("\n]}");
      }
      default -> {
        out.printf(Locale.ROOT, "kvcache prefill: shape %s (%d layers, hidden %d, %d q / %d kv heads x %d, MLP %d, "
            + "vocab %d, f16 random weights, %s), prompt %d random tokens, chunk %d, seed %d, FastKV budget %d, "
            + "median of %d%n", c.architecture(), c.layers(), c.hidden(), c.heads(), c.kvHeads(), c.headDim(),
            c.intermediate(), c.vocabSize(), size(RandomWeights.bytes(c)), prompt, chunk, seed, budget, repeats);
        out.printf(Locale.ROOT, "machine: %d cores, %d threads used, JDK %s, %s, matrix kernels %s, attention kernels "
            + "%s, load average %.2f at start, %s%n", cores, t, jdk, System.getProperty("os.arch"),
            MatrixKernels.get().name(), Kernels.get().name(), load, started);
        out.printf(Locale.ROOT, "%-34s %11s %8s %11s %8s %9s %8s %11s %8s %8s %12s %14s %8s%n", "strategy",
            "prefill ms", "vs full", "CPU ms", "vs full", "GFLOP", "vs full", "TTFT ms", "vs full", "speedup",
            "prompt tok/s", "KV bytes", "vs full");
        for (Row r : rows) {
          out.printf(Locale.ROOT, "%-34s %11.1f %7.3fx %11.1f %7.3fx %9.1f %7.3fx %11.1f %7.3fx %7.2fx %12.1f %14d "
              + "%7.4fx%n", r.strategy(), r.prefillMs(), r.prefillVsFull(), r.cpuMs(), r.cpuVsFull(),
              r.flop() / 1e9, r.flopVsFull(), r.ttftMs(), r.ttftVsFull(), r.speedup(), r.tokensPerSecond(prompt),
              r.kvBytes(), r.kvVsFull());
        }
        out.println("prefill: the decoder's prefill of the prompt, ending with the last prompt token's logits; CPU: "
            + "the process's CPU time over the prefill, all threads; GFLOP: the decoder's count of the prefill's "
            + "matrix and attention FLOPs; TTFT: prefill + choosing the first token + the cache's end of prompt "
            + "(retention); vs full: over the full schedule's, this run; speedup: full TTFT / TTFT; KV bytes: K/V "
            + "payload after the prompt.");
      }
    }
  }

  private static String size(long bytes) {
    return bytes >= 100_000_000 ? String.format(Locale.ROOT, "%.2f GB", bytes / 1e9)
        : String.format(Locale.ROOT, "%.2f MB", bytes / 1e6);
  }

  private static String csv(String s) {
    return s.contains(",") || s.contains("\"") ? "\"" + s.replace("\"", "\"\"") + "\"" : s;
  }

  private static String json(String s) {
    return s.replace("\\", "\\\\").replace("\"", "\\\"");
  }
}
