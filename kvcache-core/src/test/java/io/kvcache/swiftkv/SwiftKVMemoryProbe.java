package io.kvcache.swiftkv;

import io.kvcache.core.AttentionShape;
import io.kvcache.core.CacheStats;
import io.kvcache.core.KVCache;
import io.kvcache.core.KVCacheStrategy;
import io.kvcache.core.Strategies;
import io.kvcache.schedule.PrefillSchedule;
import java.util.SplittableRandom;

/**
 * Not a test: the KV bytes a SwiftKV prefill leaves in the cache for a Llama-3.2-1B-shaped model
 * (16 layers, 8 KV heads, head dim 64) at a 4096-token prompt, against the plain model's, without a
 * forward pass. It drives the {@link KVCache} API per layer exactly as the reference decoder does
 * under the strategy's schedule: every prompt row but the last is appended to the layers below the
 * skip layer and to each AcrossKV group's owner past it; the last row runs every layer (owners
 * append it, sharing layers only read). Keys and values are random; bytes do not depend on them.
 * Run with {@code java --add-modules jdk.incubator.vector -cp target/classes:target/test-classes
 * io.kvcache.swiftkv.SwiftKVMemoryProbe [queryHeads] [prompt]}.
 */
public final class SwiftKVMemoryProbe {

  private SwiftKVMemoryProbe() {}

  /**
   * Fills one cache as the decoder would under {@code s}'s schedule.
   *
   * @param s      the strategy
   * @param shape  the attention shape
   * @param prompt prompt tokens
   * @param seed   random seed of the keys and values
   * @return the cache's statistics at the end of the prompt
   */
  public static CacheStats fill(KVCacheStrategy s, AttentionShape shape, int prompt, long seed) {
    int layers = shape.layers();
    PrefillSchedule sch = s.schedule();
    int skip = sch.skipFromLayer(layers);
    int chunk = 256;
    int qw = shape.queryWidth();
    int kw = shape.kvWidth();
    float[] q = new float[chunk * qw];
    float[] k = new float[chunk * kw];
    float[] v = new float[chunk * kw];
    float[] out = new float[chunk * qw];
    int[] pos = new int[chunk];
    SplittableRandom r = new SplittableRandom(seed);
    try (KVCache cache = s.newCache(shape)) {
      int n = skip < layers ? prompt - 1 : prompt;
      for (int start = 0; start < n; start += chunk) {
        int c = Math.min(chunk, n - start);
        for (int t = 0; t < c; t++) {
          pos[t] = start + t;
        }
        for (int l = 0; l < layers; l++) {
          boolean runs = l < skip;
          boolean owns = sch.cacheLayer(l, layers) == l;
          if (!runs && !owns) {
            continue;
          }
          fillRandom(r, q, c * qw, runs);
          fillRandom(r, k, c * kw, true);
          fillRandom(r, v, c * kw, true);
          if (owns) {
            cache.prefill(l, c, pos, q, 0, k, 0, v, 0, out, 0);
          } else {
            cache.attendPrefill(sch.cacheLayer(l, layers), c, pos, q, 0, out, 0);
          }
        }
      }
      if (n < prompt) {
        pos[0] = n;
        for (int l = 0; l < layers; l++) {
          fillRandom(r, q, qw, true);
          fillRandom(r, k, kw, true);
          fillRandom(r, v, kw, true);
          int owner = sch.cacheLayer(l, layers);
          if (owner == l) {
            cache.prefill(l, 1, pos, q, 0, k, 0, v, 0, out, 0);
          } else {
            cache.attendPrefill(owner, 1, pos, q, 0, out, 0);
          }
        }
      }
      return cache.stats();
    }
  }

  private static void fillRandom(SplittableRandom r, float[] a, int n, boolean random) {
    for (int i = 0; i < n; i++) {
      a[i] = random ? (float) (r.nextDouble() * 2 - 1) : 0f;
    }
  }

  /**
   * Prints the bytes and ratios.
   *
   * @param args optional query heads (default 32) and prompt length (default 4096)
   */
  public static void main(String[] args) {
    int heads = args.length > 0 ? Integer.parseInt(args[0]) : 32;
    int prompt = args.length > 1 ? Integer.parseInt(args[1]) : 4096;
    AttentionShape shape = new AttentionShape(16, heads, 8, 64);
    KVCacheStrategy plain = Strategies.full();
    KVCacheStrategy swift = Strategies.swiftKV(0.5, 2);
    KVCacheStrategy swiftSkvq = Strategies.swiftKV(0.5, 2, Strategies.skvq().codec());
    long t0 = System.nanoTime();
    CacheStats p = fill(plain, shape, prompt, 1);
    CacheStats s = fill(swift, shape, prompt, 2);
    CacheStats q = fill(swiftSkvq, shape, prompt, 3);
    System.out.printf("shape %s, prompt %d tokens (%.1f s)%n", shape, prompt, (System.nanoTime() - t0) / 1e9);
    for (CacheStats c : new CacheStats[] {p, s, q}) {
      System.out.printf("%-40s payload %,d B  metadata %,d B  held %,d B  payload/plain %.6f  held/plain %.6f%n",
          c.strategy(), c.payloadBytes(), c.metadataBytes(), c.bytesHeld(),
          (double) c.payloadBytes() / p.payloadBytes(), (double) c.bytesHeld() / p.bytesHeld());
    }
  }
}
