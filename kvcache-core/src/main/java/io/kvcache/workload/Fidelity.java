package io.kvcache.workload;

import io.kvcache.core.AttentionShape;
import io.kvcache.core.CacheStats;
import io.kvcache.core.KVCache;
import io.kvcache.core.KVCacheStrategy;
import io.kvcache.core.Strategies;

/**
 * Runs a strategy and the full cache on the same {@link SyntheticWorkload} and measures how far the
 * strategy's decode attention outputs are from the full cache's: the attention-output error every
 * method is judged by before a trained model is in the loop.
 */
public final class Fidelity {

  private Fidelity() {}

  /**
   * The result of one comparison.
   *
   * @param strategy       the strategy's name
   * @param meanError      mean over decode steps, layers and query heads of
   *                       {@code ||out - ref|| / ||ref||} (L2 over the head's channels)
   * @param maxError       the largest such error
   * @param stats          the strategy's cache stats after the last decode step
   * @param prefillNanos   wall time of the strategy's prefill (all layers)
   * @param decodeNanos    wall time of the strategy's decode steps (all layers)
   */
  public record Result(String strategy, double meanError, double maxError, CacheStats stats, long prefillNanos,
      long decodeNanos) {}

  /**
   * Prefills the prompt in chunks, ends the prompt, then decodes the workload's decode tokens, with
   * {@code strategy} and with the full f32 cache, and compares the decode outputs.
   *
   * @param strategy the strategy under test
   * @param workload the inputs
   * @param chunk    prompt chunk length, {@code >= 1}
   * @return the errors and the strategy's stats
   */
  public static Result compare(KVCacheStrategy strategy, SyntheticWorkload workload, int chunk) {
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
    double sum = 0, max = 0;
    long count = 0, prefillNs = 0, decodeNs = 0;
    CacheStats stats;
    try (KVCache test = strategy.newCache(shape);
        KVCache ref = Strategies.full(io.kvcache.codec.StorageCodec.f32()).newCache(shape)) {
      SyntheticWorkload.Layer[] layers = new SyntheticWorkload.Layer[shape.layers()];
      for (int l = 0; l < shape.layers(); l++) {
        layers[l] = workload.layer(l);
      }
      float[] outT = new float[Math.min(chunk, prompt) * qw];
      float[] outR = new float[outT.length];
      for (int t = 0; t < prompt; t += chunk) {
        int c = Math.min(chunk, prompt - t);
        for (int l = 0; l < shape.layers(); l++) {
          SyntheticWorkload.Layer L = layers[l];
          long t0 = System.nanoTime();
          test.prefill(l, c, null, L.q(), t * qw, L.k(), t * kw, L.v(), t * kw, outT, 0);
          prefillNs += System.nanoTime() - t0;
          ref.prefill(l, c, null, L.q(), t * qw, L.k(), t * kw, L.v(), t * kw, outR, 0);
        }
      }
      long t0 = System.nanoTime();
      test.endPrefill();
      prefillNs += System.nanoTime() - t0;
      ref.endPrefill();
      float[] oT = new float[qw], oR = new float[qw];
      for (int t = prompt; t < total; t++) {
        for (int l = 0; l < shape.layers(); l++) {
          SyntheticWorkload.Layer L = layers[l];
          long t1 = System.nanoTime();
          test.decode(l, L.q(), t * qw, L.k(), t * kw, L.v(), t * kw, oT, 0);
          decodeNs += System.nanoTime() - t1;
          ref.decode(l, L.q(), t * qw, L.k(), t * kw, L.v(), t * kw, oR, 0);
          for (int h = 0; h < shape.queryHeads(); h++) {
            double num = 0, den = 0;
            for (int c = 0; c < d; c++) {
              double diff = oT[h * d + c] - oR[h * d + c];
              num += diff * diff;
              den += (double) oR[h * d + c] * oR[h * d + c];
            }
            double e = Math.sqrt(num / Math.max(den, 1e-30));
            sum += e;
            max = Math.max(max, e);
            count++;
          }
        }
      }
      stats = test.stats();
    }
    return new Result(strategy.name(), sum / count, max, stats, prefillNs, decodeNs);
  }
}
