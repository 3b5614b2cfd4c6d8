package io.kvcache.reader;

import static org.junit.jupiter.api.Assertions.assertEquals;

import io.kvcache.codec.HeadStore;
import io.kvcache.codec.StorageCodec;
import io.kvcache.core.TestData;
import io.kvcache.kernel.AttentionKernels;
import io.kvcache.kernel.Kernels;
import io.kvcache.skvq.SkvqCodec;
import io.kvcache.skvq.SkvqConfig;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * {@link PagedAttention#weights} scores many query tokens in one pass over the pages; the weights it
 * adds must be those of one call per token, bit for bit (each slot adds the tokens in order), on every
 * storage path: floats, halves (read in place for one token, widened for more) and SKVQ codes.
 */
class AttentionWeightsTest {

  static HeadStore[] stores(int d) {
    return new HeadStore[] {StorageCodec.f32().newStore(d), StorageCodec.f16().newStore(d),
        SkvqCodec.of(SkvqConfig.paperDefault().withGroups(32, 32).withWindow(16, 4)).newStore(d)};
  }

  @Test
  void manyTokensInOnePassAddWhatOneTokenAtATimeAdds() {
    long seed = TestData.seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    // Groups of 1, 3 and 6 leave rows outside 4-row tiles (each token then gets its own pass); 4 and 8 fill them.
    for (int group : new int[] {1, 3, 4, 6, 8}) {
      for (AttentionKernels k : new AttentionKernels[] {Kernels.scalar(), Kernels.get()}) {
        HeadStore[] stores = stores(64);
        for (int si = 0; si < stores.length; si++) {
          check(rnd, stores[si], new String[] {"f32", "f16", "skvq"}[si] + " " + k.name() + " group " + group, k,
              group, seed);
        }
      }
    }
  }

  private static void check(SplittableRandom rnd, HeadStore store, String what, AttentionKernels k, int group,
      long seed) {
    int d = 64, n = 203;
    float[] kv = new float[2 * d];
    for (int p = 0; p < n; p++) {
      for (int i = 0; i < kv.length; i++) {
        kv[i] = (float) rnd.nextGaussian();
      }
      store.append(kv, 0, kv, d, p);
    }
    store.attentionDone(); // SKVQ quantizes what left its window now, not between the calls below
    int slots = store.pageCount() * HeadStore.PAGE_TOKENS;
    // 1, 8, 40 (more than one pass of 32) and 70 tokens; positions increasing, some inside one page.
    for (int tokens : new int[] {1, 8, 40, 70}) {
      int[] pos = new int[tokens];
      for (int t = 0; t < tokens; t++) {
        pos[t] = n - tokens + t - (t < tokens / 2 ? rnd.nextInt(2) * (tokens - t) : 0);
      }
      java.util.Arrays.sort(pos);
      float[] q = TestData.gaussian(rnd, tokens * group * d, 1);
      float[] all = new float[group * slots];
      float[] one = new float[group * slots];
      new PagedAttention(k, d).weights(store, tokens, group, q, 0, group * d, pos, 0, 0.125f, all, slots);
      PagedAttention single = new PagedAttention(k, d);
      for (int t = 0; t < tokens; t++) {
        single.weights(store, 1, group, q, t * group * d, group * d, pos, t, 0.125f, one, slots);
      }
      for (int i = 0; i < all.length; i++) {
        assertEquals(Float.floatToIntBits(one[i]), Float.floatToIntBits(all[i]),
            what + " tokens " + tokens + " slot " + i + " seed " + seed);
      }
    }
  }
}
