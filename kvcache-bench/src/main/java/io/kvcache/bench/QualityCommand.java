package io.kvcache.bench;

import io.kvcache.codec.StorageCodec;
import io.kvcache.core.KVCacheStrategy;
import io.kvcache.core.Strategies;
import io.kvcache.model.ByteTokenizer;
import io.kvcache.model.LlamaModel;
import io.kvcache.model.LlamaWeights;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.function.IntFunction;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * End-to-end quality of every strategy on a trained byte-level model (by default the project's own,
 * embedded in the jar), at several memory budgets:
 * <ol>
 *   <li>bits per byte of held-out code: a {@code --context}-token window whose last
 *       {@code --continuation} bytes are teacher-forced through decode after the rest was prefilled
 *       (and compressed), and the increase over the full f32 cache;</li>
 *   <li>needle retrieval: exact-match accuracy of the greedy answer over {@code --needle-trials}
 *       trials at depths 10-90% ({@link ModelQuality#needle});</li>
 *   <li>per-layer attention-output error: the relative L2 distance between each layer's attention
 *       output under the strategy and under the full f32 cache, over the teacher-forced decode steps
 *       (errors of earlier layers propagate, as they do in use).</li>
 * </ol>
 * Every trial is independent, so trials run in parallel on {@code --threads} single-threaded models
 * sharing the memory-mapped weights.
 */
@Command(name = "quality", mixinStandardHelpOptions = true,
    description = "End-to-end quality of every strategy on a trained byte-level model (default: the project's own): "
        + "bits per byte of held-out code and its increase over the full cache, needle-retrieval accuracy, and "
        + "per-layer attention-output error, at several budgets.")
final class QualityCommand implements Callable<Integer> {

  @Option(names = "--model", description = "A byte-level model (HF directory or .gguf); default: the embedded "
      + "kvcache-byte-4m.")
  Path model;

  @Option(names = "--text", description = "Held-out text to score and to plant needles in; default: the embedded "
      + "held-out code.")
  Path text;

  @Option(names = {"-s", "--strategy"}, description = "Presets to run (repeatable); default: all of "
      + "full-f16, full-f32, streamingLLM, snapKV, h2o, kvCrush, kvCrush-h2o, rocketKV, skvq-k2v1.5, skvq-k4v4, fastKV, "
      + "swiftKV, swiftKV-single (any case). Printed names and axis combinations as in compare (e.g. "
      + "skvq+sinks(4,1020)) run once, unbudgeted. "
      + "full-f32 (the reference) and full-f16 (the memory ratios' denominator) always run.")
  List<String> strategies;

  @Option(names = "--budgets", split = ",", defaultValue = "256,512,1024",
      description = "Token budgets per KV head for budgeted presets (default: ${DEFAULT-VALUE}).")
  int[] budgets;

  @Option(names = "--context", defaultValue = "4096",
      description = "Tokens per window and per needle prompt, BOS included (default: ${DEFAULT-VALUE}).")
  int context;

  @Option(names = "--continuation", defaultValue = "256",
      description = "Tokens of each window scored after the prefilled part (default: ${DEFAULT-VALUE}).")
  int continuation;

  @Option(names = "--windows", defaultValue = "8",
      description = "Held-out windows per strategy (default: ${DEFAULT-VALUE}).")
  int windows;

  @Option(names = "--needle-trials", defaultValue = "100",
      description = "Needle trials per strategy and budget, depths 10-90%% (default: ${DEFAULT-VALUE}; 0 skips).")
  int needleTrials;

  @Option(names = "--threads", description = "Trials run at once (default: available processors).")
  int threads = Runtime.getRuntime().availableProcessors();

  @Option(names = "--chunk", defaultValue = "1024", description = "Prefill chunk length (default: ${DEFAULT-VALUE}).")
  int chunk;

  @Option(names = "--seed", defaultValue = "1",
      description = "Seed of windows and needles (default: ${DEFAULT-VALUE}).")
  long seed;

  @Option(names = "--format", defaultValue = "table", description = "table, csv or json (default: ${DEFAULT-VALUE}).")
  String format;

  @Option(names = "--chart", description = "Write a PNG: needle accuracy and bits-per-byte increase against KV memory.")
  Path chart;

  @Option(names = "--no-progress", description = "No progress bar on stderr.")
  boolean noProgress;

  @Option(names = "--replot", description = "Runs nothing: reads a CSV this command wrote (one or more, e.g. from "
      + "machines without a display stack) and draws --chart from it.")
  List<Path> replot;

  /**
   * One row: a strategy at a budget.
   *
   * @param strategy    preset name
   * @param budget      tokens per KV head, or -1 for unbudgeted presets
   * @param kvBytes     bytes the cache holds after the prompt of the first window
   * @param kvRatio     {@code kvBytes} over the full f16 cache's, same window
   * @param bitsPerByte mean over windows
   * @param increase    {@code bitsPerByte} minus the full f32 cache's
   * @param needleHits  trials answered exactly
   * @param needleTrials trials run
   * @param layerError  mean relative L2 error of each layer's attention output vs the full f32 cache
   */
  record Row(String strategy, int budget, long kvBytes, double kvRatio, double bitsPerByte, double increase,
      int needleHits, int needleTrials, double[] layerError) {

    /** @return the share of needles answered, NaN without trials */
    double needleAccuracy() {
      return needleTrials == 0 ? Double.NaN : (double) needleHits / needleTrials;
    }
  }

  /** What one window run gives back. */
  private record WindowResult(double nats, int scored, long kvBytes, float[][] attention, double[] layerError) {}

  @Override
  public Integer call() throws Exception {
    if (replot != null && !replot.isEmpty()) {
      return replot();
    }
    validate();
    Path dir = model != null ? model : EmbeddedModel.directory();
    byte[] bytes = text != null ? Files.readAllBytes(text) : EmbeddedModel.heldOutText();
    if (bytes.length < context) {
      throw new IllegalArgumentException("--text must hold at least --context = " + context + " bytes, got "
          + bytes.length);
    }
    Map<String, IntFunction<KVCacheStrategy>> presets = Presets.withSchedules();
    List<String> names = new ArrayList<>();
    for (String n : strategies == null || strategies.isEmpty() ? presets.keySet() : strategies) {
      String key = Presets.presetKey(n, presets);
      names.add(key != null ? key : n);
    }
    for (String n : names) {
      if (!presets.containsKey(n)) {
        // A printed name or an axis combination such as skvq+sinks(4,1020): it carries its own sizes, so it
        // takes no budget. Resolving it once refuses a bad one, with the accepted forms, before any work.
        Presets.resolveWithSchedules(n, 1);
        presets.put(n, b -> Presets.resolveWithSchedules(n, b));
      }
    }
    List<String> cellNames = new ArrayList<>();
    List<Integer> cellBudgets = new ArrayList<>();
    cellNames.add("full-f32");
    cellBudgets.add(-1);
    if (!names.contains("full-f16")) {
      cellNames.add("full-f16");   // the memory ratios' denominator
      cellBudgets.add(-1);
    }
    for (String n : names) {
      if (n.equals("full-f32")) {
        continue;
      }
      if (Presets.budgeted(n) && Presets.withSchedules().containsKey(n)) {
        for (int b : budgets) {
          cellNames.add(n);
          cellBudgets.add(b);
        }
      } else {
        cellNames.add(n);
        cellBudgets.add(-1);
      }
    }
    int cells = cellNames.size();
    int[][] windowTokens = windows(bytes);
    ModelQuality.Needle[] needles = new ModelQuality.Needle[needleTrials];
    for (int i = 0; i < needleTrials; i++) {
      needles[i] = ModelQuality.needle(bytes, context, i, needleTrials, seed);
    }

    try (LlamaWeights weights = LlamaWeights.load(dir)) {
      LlamaModel m = LlamaModel.of(weights);
      if (m.config().vocabSize() < ByteTokenizer.VOCAB) {
        throw new IllegalArgumentException("--model must be byte-level (vocab >= " + ByteTokenizer.VOCAB + "), got "
            + m.config().vocabSize());
      }
      Progress progress = new Progress(windows * cells + needleTrials * (cells - 1), !noProgress);
      ExecutorService pool = Executors.newFixedThreadPool(threads, r -> {
        Thread t = new Thread(r, "quality");
        t.setDaemon(true);
        return t;
      });
      try {
        // The reference first: every other window run compares its attention outputs with it.
        List<Future<WindowResult>> ref = new ArrayList<>();
        for (int w = 0; w < windows; w++) {
          int[] tokens = windowTokens[w];
          ref.add(pool.submit(() -> {
            WindowResult r = runWindow(m, Strategies.full(StorageCodec.f32()), tokens, null);
            progress.step("full-f32");
            return r;
          }));
        }
        float[][][] refAttention = new float[windows][][];
        for (int w = 0; w < windows; w++) {
          refAttention[w] = get(ref.get(w)).attention();
        }
        List<List<Future<WindowResult>>> windowRuns = new ArrayList<>();
        List<List<Future<Boolean>>> needleRuns = new ArrayList<>();
        for (int c = 0; c < cells; c++) {
          String name = cellNames.get(c);
          int budget = Math.max(cellBudgets.get(c), 1);
          IntFunction<KVCacheStrategy> preset = presets.get(name);
          List<Future<WindowResult>> wr = new ArrayList<>();
          List<Future<Boolean>> nr = new ArrayList<>();
          if (c == 0) {
            for (Future<WindowResult> f : ref) {
              wr.add(f);
            }
          } else {
            for (int w = 0; w < windows; w++) {
              int[] tokens = windowTokens[w];
              float[][] reference = refAttention[w];
              // A fresh strategy per run: policies may keep per-cache state.
              wr.add(pool.submit(() -> {
                WindowResult r = runWindow(m, preset.apply(budget), tokens, reference);
                progress.step(name);
                return r;
              }));
            }
          }
          if (!name.equals("full-f32")) {
            for (ModelQuality.Needle n : needles) {
              nr.add(pool.submit(() -> {
                boolean hit = ModelQuality.needleHit(m, preset.apply(budget), n, chunk);
                progress.step(name);
                return hit;
              }));
            }
          }
          windowRuns.add(wr);
          needleRuns.add(nr);
        }
        List<Row> rows = new ArrayList<>();
        double refBits = Double.NaN;
        long f16Bytes = 0;
        int layers = m.config().layers();
        for (int c = 0; c < cells; c++) {
          double nats = 0;
          int scored = 0;
          double[] err = new double[layers];
          long kv = 0;
          for (int w = 0; w < windows; w++) {
            WindowResult r = get(windowRuns.get(c).get(w));
            nats += r.nats();
            scored += r.scored();
            if (w == 0) {
              kv = r.kvBytes();
            }
            for (int l = 0; l < layers; l++) {
              err[l] += (c == 0 ? 0 : r.layerError()[l]) / windows;
            }
          }
          int hits = 0;
          for (Future<Boolean> f : needleRuns.get(c)) {
            hits += get(f) ? 1 : 0;
          }
          double bits = nats / scored / Math.log(2);
          if (c == 0) {
            refBits = bits;
          }
          if (cellNames.get(c).equals("full-f16")) {
            f16Bytes = kv;
          }
          rows.add(new Row(cellNames.get(c), cellBudgets.get(c), kv, Double.NaN, bits, bits - refBits, hits,
              needleRuns.get(c).size(), err));
        }
        progress.finish();
        List<Row> out = new ArrayList<>();
        for (Row r : rows) {
          if (r.strategy().equals("full-f32") || r.strategy().equals("full-f16") || names.contains(r.strategy())) {
            out.add(new Row(r.strategy(), r.budget(), r.kvBytes(), (double) r.kvBytes() / f16Bytes, r.bitsPerByte(),
                r.increase(), r.needleHits(), r.needleTrials(), r.layerError()));
          }
        }
        print(System.out, out, m, dir);
        if (chart != null) {
          Charts.quality(chart, out, String.format(Locale.ROOT, "%s, %d tokens, %d trials",
              modelName(dir), context, needleTrials));
          System.out.println("chart: " + chart);
        }
      } finally {
        pool.shutdownNow();
      }
    }
    return 0;
  }

  /** Reads rows back from CSV files of this command (the reference row once) and draws the chart. */
  private int replot() throws IOException {
    if (chart == null) {
      throw new IllegalArgumentException("--replot needs --chart (the PNG to write)");
    }
    OptionChecks.pngFile("--chart", chart);
    for (Path f : replot) {
      OptionChecks.inputFile("--replot", f);
    }
    List<Row> rows = new ArrayList<>();
    java.util.Set<String> seen = new java.util.HashSet<>();
    for (Path f : replot) {
      List<String> lines = Files.readAllLines(f);
      if (lines.isEmpty() || !lines.get(0).startsWith("strategy,budget,kv_bytes,")) {
        throw new IllegalArgumentException("--replot " + f + ": expected a CSV written by 'quality --format csv'");
      }
      for (String line : lines.subList(1, lines.size())) {
        String[] c = csvSplit(line);
        if (c.length < 10 || !seen.add(c[0] + "@" + c[1])) {
          continue;
        }
        try {
          double[] err = new double[c.length - 9];
          for (int l = 0; l < err.length; l++) {
            err[l] = Double.parseDouble(c[9 + l]);
          }
          rows.add(new Row(c[0], c[1].isEmpty() ? -1 : Integer.parseInt(c[1]), Long.parseLong(c[2]),
              Double.parseDouble(c[3]), Double.parseDouble(c[4]), Double.parseDouble(c[5]), Integer.parseInt(c[6]),
              Integer.parseInt(c[7]), err));
        } catch (NumberFormatException e) {
          throw new IllegalArgumentException("--replot " + f + ": not a number in the row '" + line + "' ("
              + e.getMessage() + ")");
        }
      }
    }
    Charts.quality(chart, rows, replot.get(0).getFileName().toString());
    System.out.println("chart: " + chart + " (" + rows.size() + " rows)");
    return 0;
  }

  /** Splits a line this command wrote: only the first field (the strategy) may be quoted. */
  static String[] csvSplit(String line) {
    if (!line.startsWith("\"")) {
      return line.split(",", -1);
    }
    StringBuilder first = new StringBuilder();
    int i = 1;
    while (i < line.length()) {
      char ch = line.charAt(i);
      if (ch == '"' && i + 1 < line.length() && line.charAt(i + 1) == '"') {
        first.append('"');
        i += 2;
      } else if (ch == '"') {
        break;
      } else {
        first.append(ch);
        i++;
      }
    }
    String rest = i + 2 <= line.length() ? line.substring(i + 2) : "";
    String[] tail = rest.split(",", -1);
    String[] out = new String[tail.length + 1];
    out[0] = first.toString();
    System.arraycopy(tail, 0, out, 1, tail.length);
    return out;
  }

  private void validate() {
    if (context < 64 || context > 65536) {
      throw new IllegalArgumentException("--context must be in [64, 65536], got " + context);
    }
    if (continuation < 2 || continuation >= context - 1) {
      throw new IllegalArgumentException("--continuation must be in [2, context - 1), got " + continuation);
    }
    if (windows < 1) {
      throw new IllegalArgumentException("--windows must be >= 1, got " + windows);
    }
    if (needleTrials < 0) {
      throw new IllegalArgumentException("--needle-trials must be >= 0, got " + needleTrials);
    }
    if (threads < 1 || threads > 1024) {
      throw new IllegalArgumentException("--threads must be in [1, 1024], got " + threads);
    }
    if (chunk < 1 || chunk > 65536) {
      throw new IllegalArgumentException("--chunk must be in [1, 65536], got " + chunk);
    }
    if (budgets == null || budgets.length == 0) {
      throw new IllegalArgumentException("--budgets must name at least one budget");
    }
    OptionChecks.pngFile("--chart", chart);
    OptionChecks.inputFile("--model", model);
    OptionChecks.inputFile("--text", text);
    for (int b : budgets) {
      // 8: the smallest budget every preset takes (streamingLLM keeps 4 sinks, kvCrush a window).
      if (b < 8) {
        throw new IllegalArgumentException("--budgets must be >= 8, got " + b);
      }
    }
    format = format.toLowerCase(java.util.Locale.ROOT); // as compare and prefill take it
    if (!format.equals("table") && !format.equals("csv") && !format.equals("json")) {
      throw new IllegalArgumentException("--format must be table, csv or json, got '" + format + "'");
    }
  }

  /** Seeded windows of held-out text, each BOS then {@code context - 1} bytes. */
  private int[][] windows(byte[] bytes) {
    SplittableRandom rnd = new SplittableRandom(seed);
    int[][] out = new int[windows][context];
    for (int w = 0; w < windows; w++) {
      int start = rnd.nextInt(bytes.length - context + 2);
      out[w][0] = ByteTokenizer.BOS;
      for (int i = 1; i < context; i++) {
        out[w][i] = bytes[start + i - 1] & 0xFF;
      }
    }
    return out;
  }

  /**
   * Prefills all but the last {@code continuation} tokens, then teacher-forces the rest, summing
   * each next token's negative log-likelihood. With a reference, measures each layer's attention
   * error against it; without one, records the attention outputs.
   */
  private WindowResult runWindow(LlamaModel m, KVCacheStrategy s, int[] tokens, float[][] reference) {
    int vocab = m.config().vocabSize();
    int layers = m.config().layers();
    int qw = m.config().qWidth();
    int prompt = tokens.length - continuation;
    float[] logits = new float[vocab];
    float[] att = new float[layers * qw];
    float[][] record = reference == null ? new float[continuation - 1][] : null;
    double[] err = new double[layers];
    double nats = 0;
    long kv = 0;
    try (LlamaModel.Sequence seq = m.newSequence(s, chunk)) {
      seq.prefill(java.util.Arrays.copyOf(tokens, prompt), logits);
      for (int i = prompt; i < tokens.length; i++) {
        nats += ModelQuality.negativeLogLikelihood(logits, tokens[i]);
        if (i + 1 < tokens.length) {
          int step = i - prompt;
          seq.decode(tokens[i], logits, att);
          if (step == 0) {
            kv = seq.cache().stats().bytesHeld();
          }
          if (reference == null) {
            record[step] = att.clone();
          } else {
            float[] r = reference[step];
            for (int l = 0; l < layers; l++) {
              double num = 0;
              double den = 0;
              for (int j = l * qw; j < (l + 1) * qw; j++) {
                double d = att[j] - r[j];
                num += d * d;
                den += (double) r[j] * r[j];
              }
              err[l] += Math.sqrt(num / Math.max(den, 1e-30)) / (continuation - 1);
            }
          }
        }
      }
    }
    return new WindowResult(nats, continuation, kv, record, err);
  }

  private String modelName(Path dir) {
    return model == null ? "kvcache-byte-4m (embedded)" : dir.getFileName().toString();
  }

  private static <T> T get(Future<T> f) throws Exception {
    try {
      return f.get();
    } catch (ExecutionException e) {
      if (e.getCause() instanceof Exception ex) {
        throw ex;
      }
      throw e;
    }
  }

  private void print(PrintStream out, List<Row> rows, LlamaModel m, Path dir) throws IOException {
    int layers = m.config().layers();
    switch (format) {
      case "csv" -> {
        StringBuilder h = new StringBuilder("strategy,budget,kv_bytes,kv_ratio_vs_f16,bits_per_byte,increase,"
            + "needle_hits,"
            + "needle_trials,needle_accuracy");
        for (int l = 0; l < layers; l++) {
          h.append(",attention_error_l").append(l);
        }
        out.println(h);
        for (Row r : rows) {
          StringBuilder b = new StringBuilder(String.format(Locale.ROOT, "%s,%s,%d,%.4f,%.4f,%.4f,%d,%d,%.4f",
              CompareCommand.csv(r.strategy()), r.budget() < 0 ? "" : Integer.toString(r.budget()), r.kvBytes(), r.kvRatio(),
              r.bitsPerByte(), r.increase(), r.needleHits(), r.needleTrials(), r.needleAccuracy()));
          for (double e : r.layerError()) {
            b.append(String.format(Locale.ROOT, ",%.5f", e));
          }
          out.println(b);
        }
      }
      case "json" -> {
        out.println("[");
        for (int i = 0; i < rows.size(); i++) {
          Row r = rows.get(i);
          StringBuilder e = new StringBuilder();
          for (int l = 0; l < layers; l++) {
            e.append(l == 0 ? "" : ", ").append(String.format(Locale.ROOT, "%.5f", r.layerError()[l]));
          }
          out.printf(Locale.ROOT, "  {\"strategy\": \"%s\", \"budget\": %s, \"kvBytes\": %d, \"kvRatioVsF16\": %.4f, "
                  + "\"bitsPerByte\": %.4f, \"increase\": %.4f, \"needleHits\": %d, \"needleTrials\": %d, "
                  + "\"attentionErrorPerLayer\": [%s]}%s%n",
              r.strategy(), r.budget() < 0 ? "null" : Integer.toString(r.budget()), r.kvBytes(), r.kvRatio(),
              r.bitsPerByte(), r.increase(), r.needleHits(), r.needleTrials(), e, i + 1 < rows.size() ? "," : "");
        }
        out.println("]");
      }
      default -> {
        out.printf(Locale.ROOT, "model %s (%d layers, %d q / %d KV heads x %d), %d windows of %d tokens "
                + "(last %d scored), "
                + "%d needle trials, seed %d, %d threads%n", modelName(dir), layers, m.config().heads(),
            m.config().kvHeads(), m.config().headDim(), windows, context, continuation, needleTrials, seed, threads);
        StringBuilder h = new StringBuilder(String.format(Locale.ROOT, "%-16s %6s %12s %7s %9s %9s %9s",
            "strategy", "budget", "KV bytes", "vs f16", "bits/byte", "increase", "needles"));
        for (int l = 0; l < layers; l++) {
          h.append(String.format(Locale.ROOT, " %8s", "err L" + l));
        }
        out.println(h);
        for (Row r : rows) {
          StringBuilder b = new StringBuilder(String.format(Locale.ROOT, "%-16s %6s %12d %7.3f %9.4f %+9.4f %9s",
              r.strategy(), r.budget() < 0 ? "-" : Integer.toString(r.budget()), r.kvBytes(), r.kvRatio(),
              r.bitsPerByte(), r.increase(), r.needleTrials() == 0 ? "-" : r.needleHits() + "/" + r.needleTrials()));
          for (double e : r.layerError()) {
            b.append(String.format(Locale.ROOT, " %8.4f", e));
          }
          out.println(b);
        }
      }
    }
  }
}
