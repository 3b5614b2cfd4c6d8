package io.kvcache.bench;

import io.kvcache.core.AttentionShape;
import io.kvcache.core.CacheStats;
import io.kvcache.core.KVCacheStrategy;
import io.kvcache.workload.Fidelity;
import io.kvcache.workload.SyntheticWorkload;
import io.kvcache.workload.WorkloadSpec;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * The main job: every strategy on one workload, memory, speed and fidelity side by side.
 *
 * <p>Fidelity is the attention-output error of each decode step against a full f32 cache on the same
 * inputs ({@link Fidelity}). The workload is the structured synthetic one ({@link SyntheticWorkload}):
 * attention sinks, local heads, needles at 10-85% depth, regions and outlier key channels.
 */
@Command(name = "compare", mixinStandardHelpOptions = true,
    description = "Runs every strategy (or the ones named) on a workload and prints memory, speed and fidelity.")
final class CompareCommand implements Runnable {

  @Option(names = "--context", defaultValue = "4096", description = "Prompt tokens (default: ${DEFAULT-VALUE}).")
  int context;

  @Option(names = "--decode", defaultValue = "32", description = "Decode tokens measured (default: ${DEFAULT-VALUE}).")
  int decode;

  @Option(names = "--budget", description = "Tokens kept per KV head by budgeted strategies, at least 8 (default: a "
      + "quarter of --context, at least 8).")
  Integer budget;

  @Option(names = "--shape", defaultValue = "2,8,2,128",
      description = "layers,queryHeads,kvHeads,headDim, or llama3-8b (default: ${DEFAULT-VALUE}: Llama-3-8B's GQA groups, fewer heads).")
  String shape;

  @Option(names = {"-s", "--strategy"}, description = "Repeatable; default: every preset. A preset sized by --budget "
      + "(full-f16, full-f32, streamingLLM, snapKV, h2o, kvCrush, kvCrush-h2o, rocketKV, skvq-k2v1.5, skvq-k4v4; any "
      + "case), a name the table prints (e.g. streamingLLM(4,1020)), or axes joined by +: codecs f16, f32, skvq, "
      + "skvq(KBITS,VBITS,GROUP); retention keepAll, sinks(S,W), snapKV(B,W,P), h2o(H,R), kvCrush(B); readers dense, "
      + "hybrid(K) (e.g. f32+sinks(4,1020)).")
  List<String> strategies = new ArrayList<>();

  @Option(names = "--chunk", defaultValue = "512", description = "Prompt chunk length (default: ${DEFAULT-VALUE}).")
  int chunk;

  @Option(names = "--threads", defaultValue = "1", description = "Threads per cache, splitting KV heads (default: ${DEFAULT-VALUE}).")
  int threads;

  @Option(names = "--seed", defaultValue = "42", description = "Workload seed (default: ${DEFAULT-VALUE}).")
  long seed;

  @Option(names = "--format", defaultValue = "table", description = "table, csv or json (default: ${DEFAULT-VALUE}).")
  String format;

  @Option(names = "--chart", description = "Write a PNG of memory vs fidelity here.")
  Path chart;

  @Option(names = "--speed-chart", description = "Write a PNG of decode time per token vs context here (runs every --contexts).")
  Path speedChart;

  @Option(names = "--contexts", split = ",", defaultValue = "1024,2048,4096",
      description = "Contexts for --speed-chart (default: ${DEFAULT-VALUE}).")
  int[] contexts;

  @Option(names = "--no-progress", description = "No progress bar on stderr.")
  boolean noProgress;

  @Option(names = "--model", description = "A byte-level model (HF directory or .gguf): adds bits per byte of --text "
      + "given a compressed context, and its increase over the full cache. Default: the project's trained model "
      + "kvcache-byte-4m and its held-out code, embedded in the jar.")
  Path model;

  @Option(names = "--text", description = "Text for --model: the first --context bytes are the context, the next "
      + "--decode bytes are scored.")
  Path text;

  @Option(names = "--no-model", description = "Synthetic attention only: no bits-per-byte column from a model.")
  boolean noModel;

  @Option(names = "--needle-trials", defaultValue = "0",
      description = "With --model: needle-retrieval trials per strategy (an identifier planted at 10-90%% depth of "
          + "--context bytes of --text, asked for at the end; exact match). Default: ${DEFAULT-VALUE} (off).")
  int needleTrials;

  /** One row of the table; {@code bitsPerByte} is NaN without a model. */
  record Row(String strategy, int retained, long bytes, double bitsPerValue, double ratio, double prefillMs,
      double decodeMsPerToken, double meanError, double maxError, double bitsPerByte, double needleAccuracy) {}

  @Override
  public void run() {
    // Everything a user can get wrong, before the bar is drawn and minutes of work start.
    String f = format.toLowerCase(Locale.ROOT);
    if (!f.equals("table") && !f.equals("csv") && !f.equals("json")) {
      throw new IllegalArgumentException("--format must be table, csv or json, got '" + format + "'");
    }
    io.kvcache.core.Checks.inRange("--context", context, 1, Integer.MAX_VALUE / 2);
    io.kvcache.core.Checks.inRange("--decode", decode, 1, Integer.MAX_VALUE / 2);
    io.kvcache.core.Checks.inRange("--chunk", chunk, 1, Integer.MAX_VALUE);
    io.kvcache.core.Checks.inRange("--threads", threads, 1, 1024);
    io.kvcache.core.Checks.inRange("--needle-trials", needleTrials, 0, Integer.MAX_VALUE);
    if (budget != null) {
      io.kvcache.core.Checks.inRange("--budget", budget, 8, Integer.MAX_VALUE);
    }
    OptionChecks.pngFile("--chart", chart);
    OptionChecks.pngFile("--speed-chart", speedChart);
    OptionChecks.inputFile("--model", model);
    OptionChecks.inputFile("--text", text);
    if (noModel && (model != null || text != null)) {
      throw new IllegalArgumentException("--no-model cannot be combined with --model or --text");
    }
    if (text != null && model == null) {
      throw new IllegalArgumentException("--text needs --model (the embedded model scores its own held-out code)");
    }
    if (speedChart != null) {
      for (int c : contexts) {
        io.kvcache.core.Checks.inRange("--contexts", c, 1, Integer.MAX_VALUE / 2);
      }
    }
    AttentionShape s = parseShape(shape);
    int b = budget != null ? budget : Math.max(8, context / 4);
    List<KVCacheStrategy> list = Presets.resolveAll(strategies, b);
    Progress progress = new Progress(list.size() + 1, !noProgress);
    progress.draw("reference (full f32)");
    ExecutorService pool = threads > 1 ? Executors.newFixedThreadPool(threads - 1) : null;
    io.kvcache.model.LlamaWeights weights = null;
    embedded = model == null && !noModel;
    try {
      if (model != null || embedded) {
        try {
          weights = loadModel();
        } catch (IOException e) {
          throw new IllegalArgumentException("cannot read --model or --text: " + e, e);
        }
        fullBitsPerByte = ModelQuality.bitsPerToken(loaded, io.kvcache.core.Strategies.full(
            io.kvcache.codec.StorageCodec.f32()), textTokens, Math.min(context, textTokens.length - 1), chunk);
      }
      List<Row> rows = measure(s, context, list, progress, pool);
      progress.finish();
      print(System.out, s, b, rows);
      if (chart != null) {
        Charts.memoryVsFidelity(chart, rows, "context " + context + ", budget " + b);
        System.err.println("wrote " + chart);
      }
      if (speedChart != null) {
        List<List<Row>> sweep = new ArrayList<>();
        Progress p2 = new Progress(contexts.length * (list.size() + 1), !noProgress);
        for (int c : contexts) {
          sweep.add(measure(s, c, Presets.resolveAll(strategies, Math.max(8, c / 4)), p2, pool));
        }
        p2.finish();
        Charts.speedVsContext(speedChart, contexts, sweep);
        System.err.println("wrote " + speedChart);
      }
    } catch (IOException e) {
      throw new IllegalStateException("cannot write chart: " + e.getMessage(), e);
    } finally {
      if (pool != null) {
        pool.shutdown();
      }
      if (weights != null) {
        weights.close();
      }
    }
  }

  private List<Row> measure(AttentionShape s, int ctx, List<KVCacheStrategy> list, Progress progress,
      ExecutorService pool) {
    SyntheticWorkload w = new SyntheticWorkload(s, WorkloadSpec.standard(ctx, decode, seed));
    Fidelity.Reference ref = Fidelity.reference(w, chunk);
    progress.step(list.isEmpty() ? "" : list.get(0).name());
    List<Row> rows = new ArrayList<>();
    // A short run of every strategy first, so the timed run measures compiled code, not the JIT.
    SyntheticWorkload small = new SyntheticWorkload(s, WorkloadSpec.standard(Math.min(ctx, 1024), decode, seed + 1));
    Fidelity.Reference warmRef = Fidelity.reference(small, chunk);
    for (KVCacheStrategy st : list) {
      Fidelity.compare(st, warmRef, pool);
    }
    for (int i = 0; i < list.size(); i++) {
      KVCacheStrategy st = list.get(i);
      Fidelity.Result r = Fidelity.compare(st, ref, pool);
      CacheStats cs = r.stats();
      int retained = 0;
      for (int l = 0; l < s.layers(); l++) {
        retained = Math.max(retained, cs.maxRetained(l));
      }
      rows.add(new Row(st.name(), retained, cs.bytesHeld(), cs.bitsPerValue(), cs.compressionRatio(),
          r.prefillNanos() / 1e6, r.decodeNanos() / 1e6 / decode, r.meanError(), r.maxError(), bitsPerByte(st, ctx),
          needles(st, ctx)));
      progress.step(i + 1 < list.size() ? list.get(i + 1).name() : "done");
    }
    return rows;
  }

  private io.kvcache.model.LlamaModel loaded;
  private double fullBitsPerByte = Double.NaN;
  private int[] textTokens;

  /** Bits per byte of the text's continuation through {@code st}; NaN without {@code --model}. */
  private double bitsPerByte(KVCacheStrategy st, int ctx) {
    if (!withModel()) {
      return Double.NaN;
    }
    return ModelQuality.bitsPerToken(loaded, st, textTokens, Math.min(ctx, textTokens.length - 1), chunk);
  }

  /** Needle accuracy through {@code st}; NaN without {@code --model} or trials. */
  private double needles(KVCacheStrategy st, int ctx) {
    if (!withModel() || needleTrials == 0) {
      return Double.NaN;
    }
    return ModelQuality.needleAccuracy(loaded, st, textBytes, ctx, needleTrials, seed);
  }

  private byte[] textBytes;

  /** Whether the table has the model's columns: a --model, or the embedded one. */
  private boolean withModel() {
    return model != null || embedded;
  }

  private boolean embedded;

  private io.kvcache.model.LlamaWeights loadModel() throws IOException {
    if (text == null && !embedded) {
      throw new IllegalArgumentException("--model needs --text (the bytes to score)");
    }
    io.kvcache.model.LlamaWeights w = io.kvcache.model.LlamaWeights.load(embedded ? EmbeddedModel.directory() : model);
    try {
      loaded = io.kvcache.model.LlamaModel.of(w);
      if (loaded.config().vocabSize() < io.kvcache.model.ByteTokenizer.VOCAB) {
        throw new IllegalArgumentException("--model must be byte-level (vocab >= "
            + io.kvcache.model.ByteTokenizer.VOCAB + "), got vocab " + loaded.config().vocabSize());
      }
      byte[] bytes = embedded ? EmbeddedModel.heldOutText() : java.nio.file.Files.readAllBytes(text);
      textBytes = bytes;
      int n = Math.min(bytes.length, context + decode);
      if (n < 2) {
        throw new IllegalArgumentException("--text must hold at least 2 bytes, got " + bytes.length);
      }
      textTokens = new int[n];
      for (int i = 0; i < n; i++) {
        textTokens[i] = bytes[i] & 0xFF;
      }
      return w;
    } catch (IOException | RuntimeException e) {
      w.close(); // the caller gets no weights to close
      throw e;
    }
  }

  static AttentionShape parseShape(String spec) {
    if (spec.equalsIgnoreCase("llama3-8b")) {
      return AttentionShape.llama3_8B();
    }
    String[] p = spec.split(",");
    if (p.length != 4) {
      throw new IllegalArgumentException("--shape must be layers,queryHeads,kvHeads,headDim or llama3-8b, got '" + spec + "'");
    }
    try {
      return new AttentionShape(Integer.parseInt(p[0].trim()), Integer.parseInt(p[1].trim()),
          Integer.parseInt(p[2].trim()), Integer.parseInt(p[3].trim()));
    } catch (NumberFormatException e) {
      throw new IllegalArgumentException("--shape must hold four integers, got '" + spec + "'", e);
    }
  }

  void print(PrintStream out, AttentionShape s, int b, List<Row> rows) {
    switch (format.toLowerCase(Locale.ROOT)) {
      case "csv" -> {
        out.println("strategy,retained_per_head,kv_bytes,bits_per_value,compression,prefill_ms,decode_ms_per_token,"
            + "error_mean,error_max" + (withModel() ? ",bits_per_byte" : "")
            + (withModel() && needleTrials > 0 ? ",needle_accuracy" : ""));
        for (Row r : rows) {
          out.printf(Locale.ROOT, "%s,%d,%d,%.3f,%.3f,%.1f,%.3f,%.6f,%.6f%s%n", csv(r.strategy()), r.retained(), r.bytes(),
              r.bitsPerValue(), r.ratio(), r.prefillMs(), r.decodeMsPerToken(), r.meanError(), r.maxError(),
              (withModel() ? String.format(Locale.ROOT, ",%.4f", r.bitsPerByte()) : "")
              + (withModel() && needleTrials > 0 ? String.format(Locale.ROOT, ",%.4f", r.needleAccuracy()) : ""));
        }
      }
      case "json" -> {
        out.print("[");
        for (int i = 0; i < rows.size(); i++) {
          Row r = rows.get(i);
          out.printf(Locale.ROOT, "%s%n  {\"strategy\": \"%s\", \"retainedPerHead\": %d, \"kvBytes\": %d, "
              + "\"bitsPerValue\": %.3f, \"compression\": %.3f, \"prefillMs\": %.1f, \"decodeMsPerToken\": %.3f, "
              + "\"errorMean\": %.6f, \"errorMax\": %.6f%s}", i == 0 ? "" : ",", json(r.strategy()), r.retained(),
              r.bytes(), r.bitsPerValue(), r.ratio(), r.prefillMs(), r.decodeMsPerToken(), r.meanError(), r.maxError(),
              (withModel() ? String.format(Locale.ROOT, ", \"bitsPerByte\": %.4f", r.bitsPerByte()) : "")
              + (withModel() && needleTrials > 0 ? String.format(Locale.ROOT, ", \"needleAccuracy\": %.4f",
              r.needleAccuracy()) : ""));
        }
        out.println("\n]");
      }
      case "table" -> {
        out.printf(Locale.ROOT, "kvcache compare: %d prompt + %d decode tokens, shape %d layers x %d q / %d kv heads x %d,"
            + " budget %d tokens/head, seed %d, kernels %s%n", context, decode, s.layers(), s.queryHeads(), s.kvHeads(),
            s.headDim(), b, seed, io.kvcache.kernel.Kernels.get().name());
        int w = 24;
        for (Row r : rows) {
          w = Math.max(w, r.strategy().length());
        }
        String name = "%-" + w + "s";
        out.printf(Locale.ROOT, name + " %9s %12s %9s %8s %11s %12s %11s %10s%s%n", "strategy", "retained", "KV bytes",
            "bits/val", "ratio", "prefill ms", "decode ms/t", "error mean", "error max",
            withModel() ? "   bits/byte  increase" + (needleTrials > 0 ? "  needles" : "") : "");
        double fullBpb = fullBitsPerByte;
        for (Row r : rows) {
          String q = !withModel() ? "" : String.format(Locale.ROOT, " %11.4f %+9.4f", r.bitsPerByte(),
              r.bitsPerByte() - fullBpb) + (needleTrials > 0 ? String.format(Locale.ROOT, " %7.0f%%",
              100 * r.needleAccuracy()) : "");
          out.printf(Locale.ROOT, name + " %9d %12d %9.2f %7.2fx %11.1f %12.3f %11.5f %10.5f%s%n", r.strategy(), r.retained(),
              r.bytes(), r.bitsPerValue(), r.ratio(), r.prefillMs(), r.decodeMsPerToken(), r.meanError(), r.maxError(), q);
        }
        out.println("retained: most tokens held by one KV head; ratio: vs a dense f16 cache of every token; error: "
            + "||out - full|| / ||full|| per decode step and head, vs a full f32 cache.");
        if (withModel()) {
          out.printf(Locale.ROOT, "bits/byte: %s on %d context + %d scored bytes of %s; increase over the full f32 cache"
              + " (%.4f).%n", embedded ? "the trained model kvcache-byte-4m (models/, embedded; --no-model: none)"
              : model, Math.min(context, textTokens.length - 1),
              textTokens.length - Math.min(context, textTokens.length - 1), embedded ? "its held-out code" : text,
              fullBitsPerByte);
        }
      }
      default -> throw new IllegalArgumentException("--format must be table, csv or json, got '" + format + "'");
    }
  }

  /** Quotes a CSV field that holds a comma or a quote (preset names do: snapKV(1024,32,7)). */
  static String csv(String s) {
    return s.contains(",") || s.contains("\"") ? "\"" + s.replace("\"", "\"\"") + "\"" : s;
  }

  private static String json(String s) {
    return s.replace("\\", "\\\\").replace("\"", "\\\"");
  }
}
