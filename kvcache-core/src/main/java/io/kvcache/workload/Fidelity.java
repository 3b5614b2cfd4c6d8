package io.kvcache.workload;

import io.kvcache.codec.StorageCodec;
import io.kvcache.core.AttentionShape;
import io.kvcache.core.CacheStats;
import io.kvcache.core.Checks;
import io.kvcache.core.KVCache;
import io.kvcache.core.KVCacheStrategy;
import io.kvcache.core.Strategies;
import java.util.concurrent.Executor;

/**
 * Runs a strategy and the full cache on the same {@link SyntheticWorkload} and measures how far the
 * strategy's decode attention outputs are from the full cache's: the attention-output error every
 * method is judged by before a trained model is in the loop.
 *
 * <p>The reference (a full f32 cache) is computed once by {@link #reference} and can be compared
 * with any number of strategies.
 */
public final class Fidelity {

  private Fidelity() {}

  /**
   * The result of one comparison.
   *
   * @param strategy     the strategy's name
   * @param meanError    mean over decode steps, layers and query heads of {@code ||out - ref|| / ||ref||}
   *                     (L2 over the head's channels)
   * @param maxError     the largest such error
   * @param stats        the strategy's cache stats after the last decode step
   * @param prefillNanos wall time of the strategy's prefill, all layers, including {@code endPrefill}
   * @param decodeNanos  wall time of the strategy's decode steps, all layers
   */
  public record Result(String strategy, double meanError, double maxError, CacheStats stats, long prefillNanos,
      long decodeNanos) {}

  /**
   * The full f32 cache's decode outputs on a workload, to compare strategies against.
   *
   * @param workload the inputs
   * @param chunk    the prompt chunk length used
   * @param outputs  decode outputs, {@code [step][layer * queryWidth + ...]}
   */
  public record Reference(SyntheticWorkload workload, int chunk, float[][] outputs) {

    /**
     * Validates and copies: one output row of {@code layers * queryWidth} floats per decode step (a
     * missing reference would make every comparison report zero error).
     */
    public Reference {
      java.util.Objects.requireNonNull(workload, "workload");
      Checks.inRange("chunk", chunk, 1, Integer.MAX_VALUE);
      java.util.Objects.requireNonNull(outputs, "outputs");
      int steps = workload.spec().decodeTokens();
      int width = workload.shape().layers() * workload.shape().queryWidth();
      if (outputs.length != steps) {
        throw new IllegalArgumentException("outputs must hold one row per decode step (" + steps + "), got "
            + outputs.length);
      }
      float[][] copy = new float[steps][];
      for (int t = 0; t < steps; t++) {
        if (outputs[t] == null || outputs[t].length != width) {
          throw new IllegalArgumentException("outputs[" + t + "] must hold layers * queryWidth = " + width
              + " floats, got " + (outputs[t] == null ? "null" : outputs[t].length + ""));
        }
        copy[t] = outputs[t].clone();
      }
      outputs = copy;
    }

    /** @return a copy of the decode outputs */
    @Override
    public float[][] outputs() {
      float[][] copy = new float[outputs.length][];
      for (int t = 0; t < copy.length; t++) {
        copy[t] = outputs[t].clone();
      }
      return copy;
    }
  }

  /**
   * Runs the full f32 cache on the workload and keeps its decode outputs.
   *
   * @param workload the inputs; needs {@code decodeTokens >= 1}
   * @param chunk    prompt chunk length, {@code >= 1}
   * @return the reference
   */
  public static Reference reference(SyntheticWorkload workload, int chunk) {
    Run run = run(Strategies.full(StorageCodec.f32()), workload, chunk, null, null);
    return new Reference(workload, chunk, run.outputs);
  }

  /**
   * Compares a strategy with a reference computed on the same workload.
   *
   * @param strategy  the strategy under test
   * @param reference from {@link #reference}
   * @return the errors, stats and timings
   */
  public static Result compare(KVCacheStrategy strategy, Reference reference) {
    return compare(strategy, reference, null);
  }

  /**
   * Compares a strategy with a reference, the strategy's cache splitting KV heads on an executor.
   *
   * @param strategy  the strategy under test
   * @param reference from {@link #reference}
   * @param executor  for {@link KVCacheStrategy#newCache(AttentionShape, Executor)}, or null
   * @return the errors, stats and timings
   */
  public static Result compare(KVCacheStrategy strategy, Reference reference, Executor executor) {
    return run(strategy, reference.workload(), reference.chunk(), reference.outputs, executor).result;
  }

  /**
   * Convenience for one strategy: computes the reference, then compares.
   *
   * @param strategy the strategy under test
   * @param workload the inputs
   * @param chunk    prompt chunk length, {@code >= 1}
   * @return the errors and the strategy's stats
   */
  public static Result compare(KVCacheStrategy strategy, SyntheticWorkload workload, int chunk) {
    return compare(strategy, reference(workload, chunk));
  }

  private record Run(Result result, float[][] outputs) {}

  private static Run run(KVCacheStrategy strategy, SyntheticWorkload workload, int chunk, float[][] ref,
      Executor executor) {
    AttentionShape shape = workload.shape();
    WorkloadSpec spec = workload.spec();
    if (spec.decodeTokens() < 1) {
      throw new IllegalArgumentException("workload must have decodeTokens >= 1 to measure fidelity, got 0");
    }
    if (chunk < 1) {
      throw new IllegalArgumentException("chunk must be >= 1, got " + chunk);
    }
    int qw = shape.queryWidth(), kw = shape.kvWidth(), d = shape.headDim();
    int prompt = spec.promptTokens(), total = spec.totalTokens();
    float[][] outputs = new float[spec.decodeTokens()][shape.layers() * qw];
    double sum = 0, max = 0;
    long count = 0, prefillNs = 0, decodeNs = 0;
    CacheStats stats;
    try (KVCache cache = strategy.newCache(shape, executor)) {
      SyntheticWorkload.Layer[] layers = new SyntheticWorkload.Layer[shape.layers()];
      for (int l = 0; l < shape.layers(); l++) {
        layers[l] = workload.layer(l);
      }
      float[] out = new float[Math.min(chunk, prompt) * qw];
      for (int t = 0; t < prompt; t += chunk) {
        int c = Math.min(chunk, prompt - t);
        for (int l = 0; l < shape.layers(); l++) {
          SyntheticWorkload.Layer layer = layers[l];
          long t0 = System.nanoTime();
          cache.prefill(l, c, null, layer.q(), t * qw, layer.k(), t * kw, layer.v(), t * kw, out, 0);
          prefillNs += System.nanoTime() - t0;
        }
      }
      long t0 = System.nanoTime();
      cache.endPrefill();
      prefillNs += System.nanoTime() - t0;
      for (int t = prompt; t < total; t++) {
        float[] o = outputs[t - prompt];
        for (int l = 0; l < shape.layers(); l++) {
          SyntheticWorkload.Layer layer = layers[l];
          long t1 = System.nanoTime();
          cache.decode(l, layer.q(), t * qw, layer.k(), t * kw, layer.v(), t * kw, o, l * qw);
          decodeNs += System.nanoTime() - t1;
        }
        if (ref != null) {
          float[] r = ref[t - prompt];
          for (int l = 0; l < shape.layers(); l++) {
            for (int h = 0; h < shape.queryHeads(); h++) {
              int base = l * qw + h * d;
              double num = 0, den = 0;
              for (int c = 0; c < d; c++) {
                double diff = o[base + c] - r[base + c];
                num += diff * diff;
                den += (double) r[base + c] * r[base + c];
              }
              double e = Math.sqrt(num / Math.max(den, 1e-30));
              sum += e;
              max = Math.max(max, e);
              count++;
            }
          }
        }
      }
      stats = cache.stats();
    }
    Result result = new Result(strategy.name(), count == 0 ? 0 : sum / count, max, stats, prefillNs, decodeNs);
    return new Run(result, outputs);
  }
}
