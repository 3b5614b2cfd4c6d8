package io.kvcache.bench;

import io.kvcache.codec.HeadStore;
import java.util.SplittableRandom;

/** Fills the stores the decode benchmarks read: Gaussian keys and values, appended as a prefill would. */
final class RandomStores {

  /**
   * Tokens per prefill chunk: each chunk's pages are reserved together, as {@code PagedKVCache} does for
   * a prefill or append call, so they lie in blocks of memory.
   */
  static final int PREFILL_CHUNK = 2048;

  private RandomStores() {}

  /**
   * Appends {@code tokens} tokens at positions {@code 0 .. tokens - 1}, each key then value channel by
   * channel from {@code rnd}, in reserved chunks of {@link #PREFILL_CHUNK}.
   *
   * @param store  the store to fill
   * @param tokens tokens to append
   * @param rnd    the source of the values
   */
  static void fill(HeadStore store, int tokens, SplittableRandom rnd) {
    int d = store.headDim();
    float[] k = new float[d], v = new float[d];
    for (int t = 0; t < tokens; t++) {
      if (t % PREFILL_CHUNK == 0) {
        store.reserve(Math.min(PREFILL_CHUNK, tokens - t));
      }
      draw(k, v, rnd);
      store.append(k, 0, v, 0, t);
    }
  }

  /**
   * Appends {@code tokens} tokens at positions {@code 0 .. tokens - 1} to every store, one token per
   * store in turn and without a reservation, as decode appends a generation's tokens to a layer's KV
   * heads.
   *
   * @param stores the stores to fill, of one head dimension
   * @param tokens tokens to append to each
   * @param rnd    the source of the values
   */
  static void fillAsDecode(HeadStore[] stores, int tokens, SplittableRandom rnd) {
    int d = stores[0].headDim();
    float[] k = new float[d], v = new float[d];
    for (int t = 0; t < tokens; t++) {
      for (HeadStore store : stores) {
        draw(k, v, rnd);
        store.append(k, 0, v, 0, t);
      }
    }
  }

  /** One token: key and value channel by channel, each key element then its value's. */
  private static void draw(float[] k, float[] v, SplittableRandom rnd) {
    for (int i = 0; i < k.length; i++) {
      k[i] = (float) rnd.nextGaussian();
      v[i] = (float) rnd.nextGaussian();
    }
  }
}
