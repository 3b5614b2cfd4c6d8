package io.kvcache.skvq;

import io.kvcache.codec.HeadStore;
import io.kvcache.kernel.AttentionKernels;
import io.kvcache.kernel.Kernels;
import java.util.SplittableRandom;

/**
 * Not a test: the time SKVQ's value accumulation takes per 16-token page, in cache. One KV head of
 * 2,176 tokens at K2/V1.5 (2,048 quantized, the window in f16), GQA 4, head dim 128; it calls
 * {@link HeadStore.FusedPages#runAccumulate} over the 128 quantized pages in runs of 8, as decode does,
 * for {@code seconds} (default 5), and prints ns per page. Run from {@code kvcache-core} with {@code java
 * --add-modules jdk.incubator.vector -cp target/classes:target/test-classes
 * io.kvcache.skvq.SkvqAccumulateProbe [seconds]}; compare builds by alternating runs.
 */
public final class SkvqAccumulateProbe {

  private SkvqAccumulateProbe() {}

  /**
   * Runs the probe.
   *
   * @param args seconds to run (default 5)
   */
  public static void main(String[] args) {
    double seconds = args.length > 0 ? Double.parseDouble(args[0]) : 5;
    int d = 128, group = 4, tokens = 2048 + 128;
    AttentionKernels k = Kernels.get();
    SplittableRandom rnd = new SplittableRandom(3);
    HeadStore store = SkvqCodec.of(SkvqConfig.paperDefault()).newStore(d);
    float[] key = new float[d], value = new float[d];
    store.reserve(tokens);
    for (int t = 0; t < tokens; t++) {
      for (int c = 0; c < d; c++) {
        key[c] = (float) rnd.nextGaussian();
        value[c] = (float) rnd.nextGaussian();
      }
      store.append(key, 0, value, 0, t);
    }
    store.attentionDone(); // quantizes everything outside the window
    float[] q = new float[group * d];
    for (int i = 0; i < q.length; i++) {
      q[i] = (float) (rnd.nextGaussian() * 0.088);
    }
    HeadStore.FusedPages fused = (HeadStore.FusedPages) store;
    int run = 8, quantized = 2048 / HeadStore.PAGE_TOKENS, w = run * HeadStore.PAGE_TOKENS;
    float[] weights = new float[group * w];
    for (int i = 0; i < weights.length; i++) {
      weights[i] = (float) rnd.nextDouble() * 0.01f;
    }
    float[] o = new float[group * d];
    store.prepareQueries(q, 0, group, k);
    long end = System.nanoTime() + (long) (seconds * 1e9);
    long start = System.nanoTime(), pages = 0;
    while (System.nanoTime() < end) {
      for (int p = 0; p < quantized; p += run) {
        fused.runAccumulate(p, run, weights, 0, w, group, o, 0, k);
      }
      pages += quantized;
    }
    System.out.printf("%s: %.0f ns per page (%d pages; %g)%n", k.name(),
        (double) (System.nanoTime() - start) / pages, pages, o[1]);
  }
}
