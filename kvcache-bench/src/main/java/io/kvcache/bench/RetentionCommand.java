package io.kvcache.bench;

import io.kvcache.core.AttentionShape;
import io.kvcache.core.KVCache;
import io.kvcache.core.KVCacheStrategy;
import io.kvcache.core.Strategies;
import io.kvcache.kvcrush.KVCrush;
import io.kvcache.workload.Fidelity;
import io.kvcache.workload.SyntheticWorkload;
import io.kvcache.workload.WorkloadSpec;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * The retention table: attention-output error of SnapKV, H2O and KVCrush at one budget on the
 * structured synthetic workloads, and the cost of KVCrush's selection against the prefill attention
 * of a long prompt, both in one run (one thread, in-process timing; the machine's noise is the
 * reader's to judge).
 */
@Command(name = "retention", mixinStandardHelpOptions = true,
    description = "Fidelity of SnapKV / H2O / KVCrush at a budget, and KVCrush's selection overhead at a long prompt.")
final class RetentionCommand implements Runnable {

  @Option(names = "--prompt", defaultValue = "2048", description = "Prompt tokens of the fidelity workloads.")
  int prompt = 2048;

  @Option(names = "--decode", defaultValue = "32", description = "Decode tokens of the fidelity workloads.")
  int decode = 32;

  @Option(names = "--budget-share", defaultValue = "0.25", description = "Budget as a share of the prompt.")
  double share = 0.25;

  @Option(names = "--seeds", defaultValue = "3", description = "Workloads (seeds) averaged; 0 skips the fidelity table.")
  int seeds = 3;

  @Option(names = "--first-seed", defaultValue = "1",
      description = "The first workload seed; seeds first-seed .. first-seed + seeds - 1 (a later range checks a "
          + "result on workloads it was not seen on).")
  int firstSeed = 1;

  @Option(names = "--overhead-prompt", defaultValue = "32768",
      description = "Prompt tokens for the overhead timing; 0 skips it.")
  int overheadPrompt = 32768;

  @Option(names = "--overhead-snapkv", defaultValue = "false",
      description = "Also time SnapKV's selection at the overhead prompt (doubles the run).")
  boolean overheadSnapKV;

  @Option(names = "--overhead-h2o", defaultValue = "false",
      description = "Also time KVCrush over H2O (most-important representatives) and the full cache, whose prefill "
          + "is the attention alone: H2O scores every prompt query during the prefill, KVCrush selects at its end.")
  boolean overheadH2O;

  @Override
  public void run() {
    // Checked here, by option name, rather than failing deep in a policy with its parameter's name.
    io.kvcache.core.Checks.inRange("--seeds", seeds, 0, 1_000_000);
    io.kvcache.core.Checks.inRange("--first-seed", firstSeed, 0, Integer.MAX_VALUE - 1_000_000);
    io.kvcache.core.Checks.inRange("--decode", decode, 1, 1 << 20);
    if (!(share > 0 && share <= 1)) {
      throw new IllegalArgumentException("--budget-share must be in (0, 1], got " + share);
    }
    if (seeds > 0) {
      io.kvcache.core.Checks.inRange("--prompt", prompt, 256, 1 << 24);
      long budget = Math.round(share * prompt);
      if (budget < 64) { // SnapKV's and KVCrush's window of 32, plus room to choose
        throw new IllegalArgumentException("--budget-share * --prompt must be at least 64 tokens, got " + budget
            + " (" + share + " * " + prompt + ")");
      }
    }
    if (overheadPrompt != 0) {
      io.kvcache.core.Checks.inRange("--overhead-prompt", overheadPrompt, 1024, 1 << 24);
    }
    if (seeds > 0) {
      fidelity();
    }
    if (overheadPrompt > 0) {
      overhead();
    }
  }

  private void fidelity() {
    AttentionShape shape = new AttentionShape(2, 8, 2, 64);
    int budget = (int) Math.round(share * prompt);
    List<KVCacheStrategy> strategies = new ArrayList<>();
    strategies.add(Strategies.streamingLLM(4, budget - 4));
    strategies.add(Strategies.snapKV(budget, 32, 7));
    strategies.add(Strategies.h2o(budget / 2, budget - budget / 2));
    for (KVCrush.Anchor a : KVCrush.Anchor.values()) {
      strategies.add(Strategies.kvCrush(KVCrush.builder(budget).anchor(a).build()));
    }
    strategies.add(Strategies.kvCrush(KVCrush.builder(budget).crushShare(0.5).build()));
    strategies.add(Strategies.kvCrush(KVCrush.builder(budget).crushShare(0.1).build()));
    strategies.add(Strategies.kvCrush(KVCrush.builder(budget).importance(KVCrush.Importance.H2O).build()));
    for (KVCrush.Importance imp : KVCrush.Importance.values()) {
      strategies.add(Strategies.kvCrush(KVCrush.builder(budget).importance(imp)
          .representative(KVCrush.Representative.MOST_IMPORTANT).build()));
    }
    System.out.printf(Locale.ROOT, "fidelity: shape %s, prompt %d, decode %d, budget %d (%.0f%%), %d seeds, "
        + "WorkloadSpec.standard, seeds %d-%d%n", shape, prompt, decode, budget, share * 100, seeds, firstSeed,
        firstSeed + seeds - 1);
    System.out.printf(Locale.ROOT, "%-54s %12s %12s %12s %12s %12s %12s%n", "strategy", "mean error", "seed sd",
        "seed median", "max error", "vs snapKV", "below snapKV");
    // SnapKV is the second strategy; every other is compared with it seed by seed (paired), because the
    // spread between seeds is larger than the differences between the policies.
    double[] snap = null;
    for (KVCacheStrategy s : strategies) {
      double[] e = new double[seeds];
      double mean = 0, max = 0;
      for (int i = 0; i < seeds; i++) {
        SyntheticWorkload w = new SyntheticWorkload(shape, WorkloadSpec.standard(prompt, decode, firstSeed + i));
        Fidelity.Result r = Fidelity.compare(s, w, 256);
        e[i] = r.meanError();
        mean += r.meanError() / seeds;
        max = Math.max(max, r.maxError());
      }
      double var = 0;
      for (double x : e) {
        var += (x - mean) * (x - mean);
      }
      double sd = seeds > 1 ? Math.sqrt(var / (seeds - 1)) : 0;
      double[] sorted = e.clone();
      java.util.Arrays.sort(sorted);
      double median = (sorted[(seeds - 1) / 2] + sorted[seeds / 2]) / 2;
      if (snap == null && s.name().startsWith("snapKV")) {
        snap = e;
      }
      String diff = "", below = "";
      if (snap != null && snap != e) {
        double d = 0;
        int wins = 0;
        for (int i = 0; i < seeds; i++) {
          d += (e[i] - snap[i]) / seeds;
          wins += e[i] < snap[i] ? 1 : 0;
        }
        diff = String.format(Locale.ROOT, "%+.4f", d);
        below = wins + "/" + seeds;
      }
      System.out.printf(Locale.ROOT, "%-54s %12.4f %12.4f %12.4f %12.4f %12s %12s%n", s.name(), mean, sd, median, max,
          diff, below);
    }
  }

  private void overhead() {
    // One layer, one KV head with a GQA group of 4 (a Llama-3 KV head), dim 128.
    AttentionShape shape = new AttentionShape(1, 4, 1, 128);
    List<KVCacheStrategy> list = new ArrayList<>();
    if (overheadSnapKV) {
      list.add(Strategies.snapKV(overheadPrompt / 4, 32, 7));
    }
    list.add(Strategies.kvCrush(overheadPrompt / 4));
    if (overheadH2O) {
      list.add(Strategies.full());
      list.add(Strategies.kvCrush(KVCrush.builder(overheadPrompt / 4).importance(KVCrush.Importance.H2O)
          .representative(KVCrush.Representative.MOST_IMPORTANT).build()));
    }
    // Warm-up on a short prompt so that the timed run measures compiled code, not the JIT.
    // A served model runs the selection once per layer and request, so it is warm; compile it first.
    AttentionShape warmShape = new AttentionShape(16, 4, 1, 128);
    for (int rep = 0; rep < 3; rep++) {
      for (KVCacheStrategy s : list) {
        timeOne(warmShape, s.toBuilder().retention(smallBudget(s.retention())).build(), 1024, false);
      }
    }
    System.out.printf(Locale.ROOT, "overhead: shape %s, prompt %d in chunks of 1024, budget %d (25%%), f16, after a"
        + " warm-up (3 x 16 layers x 1024 tokens)%n", shape, overheadPrompt, overheadPrompt / 4);
    System.out.printf(Locale.ROOT, "%-54s %14s %16s %10s%n", "strategy", "prefill ms", "endPrefill ms", "ratio");
    for (KVCacheStrategy s : list) {
      timeOne(shape, s, overheadPrompt, true);
    }
  }

  /** The same policy at a budget of 256, for the warm-up's 1024-token prompts. */
  private static io.kvcache.retention.RetentionPolicy smallBudget(io.kvcache.retention.RetentionPolicy r) {
    if (r instanceof KVCrush k) {
      return KVCrush.builder(256).importance(k.importance()).representative(k.representative()).build();
    }
    return r instanceof io.kvcache.retention.SnapKV ? io.kvcache.retention.SnapKV.of(256, 32, 7) : r;
  }

  private static void timeOne(AttentionShape shape, KVCacheStrategy s, int n, boolean print) {
    int chunk = 1024;
    SyntheticWorkload w = new SyntheticWorkload(shape, WorkloadSpec.standard(n, 0, 7));
    SyntheticWorkload.Layer L = w.layer(0);
    int qw = shape.queryWidth(), kw = shape.kvWidth();
    float[] out = new float[chunk * qw];
    long prefill = 0, end;
    try (KVCache cache = s.newCache(shape)) {
      for (int t = 0; t < n; t += chunk) {
        int c = Math.min(chunk, n - t);
        for (int layer = 0; layer < shape.layers(); layer++) {
          long t0 = System.nanoTime();
          cache.prefill(layer, c, null, L.q(), t * qw, L.k(), t * kw, L.v(), t * kw, out, 0);
          prefill += System.nanoTime() - t0;
        }
      }
      long t0 = System.nanoTime();
      cache.endPrefill();
      end = System.nanoTime() - t0;
    }
    if (print) {
      System.out.printf(Locale.ROOT, "%-54s %14.1f %16.2f %9.3f%%%n", s.name(), prefill / 1e6, end / 1e6,
          100.0 * end / prefill);
    }
  }
}
