package io.kvcache.codec;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.kernel.AttentionKernels;
import io.kvcache.kernel.Kernels;
import io.kvcache.reader.PagedAttention;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * f16 decode reads the halves in place; every other tile widens a page first. Both must give exactly
 * the floats that attention over an f32 store holding the same (widened) values gives: same products,
 * same order, whichever path a tile takes.
 */
class F16InPlaceAttentionTest {

  static List<AttentionKernels> kernels() {
    List<AttentionKernels> ks = new ArrayList<>();
    ks.add(Kernels.scalar());
    if (Kernels.vectorAvailable()) {
      ks.add(Kernels.vector());
    }
    return ks;
  }

  static float roundTrip(double x) {
    return Float.float16ToFloat(Float.floatToFloat16((float) x));
  }

  @Test
  void inPlaceAndWidenedPathsEqualAttentionOverF32Storage() {
    long seed = System.nanoTime();
    SplittableRandom rnd = new SplittableRandom(seed);
    int d = 64;
    for (AttentionKernels k : kernels()) {
      for (int tokens : new int[] {1, 7, 100, 1000}) {
        HeadStore halves = StorageCodec.f16().newStore(d);
        HeadStore floats = StorageCodec.f32().newStore(d);
        float[] key = new float[d], value = new float[d];
        for (int t = 0; t < tokens; t++) {
          for (int c = 0; c < d; c++) {
            // Gaussian with a wide spread of scales, so small (subnormal) and large halves occur.
            double scale = Math.pow(2, rnd.nextInt(-20, 12));
            key[c] = roundTrip(rnd.nextGaussian() * scale);
            value[c] = roundTrip(rnd.nextGaussian() * scale);
          }
          halves.append(key, 0, value, 0, t);
          floats.append(key, 0, value, 0, t);
        }
        PagedAttention onHalves = new PagedAttention(k, d);
        PagedAttention onFloats = new PagedAttention(k, d);
        for (int group : new int[] {1, 4, 8, 16, 32}) {
          for (boolean huge : new boolean[] {false, true}) {
            float[] q = new float[group * d];
            for (int i = 0; i < q.length; i++) {
              q[i] = (float) rnd.nextGaussian();
            }
            if (huge) {
              q[rnd.nextInt(q.length)] = 70000f; // beyond 2^16: the in-place scaling would overflow
            }
            float[] o1 = new float[q.length], o2 = new float[q.length];
            onFloats.decode(floats, group, q, 0, tokens - 1, 0.125f, o1, 0);
            onHalves.decode(halves, group, q, 0, tokens - 1, 0.125f, o2, 0);
            for (int i = 0; i < q.length; i++) {
              int at = i;
              assertEquals(Float.floatToRawIntBits(o1[i]), Float.floatToRawIntBits(o2[i]),
                  () -> k.name() + " tokens=" + tokens + " group=" + group + " huge=" + huge + " element " + at
                      + ": " + o2[at] + " vs " + o1[at] + " (seed " + seed + ")");
            }
          }
        }
      }
    }
  }

  @Test
  void decodeTilesReadInPlaceOthersDoNot() {
    int d = 32;
    F16Codec.Store store = (F16Codec.Store) StorageCodec.f16().newStore(d);
    float[] kv = new float[d];
    store.append(kv, 0, kv, 0, 0);
    AttentionKernels k = Kernels.scalar();
    float[] q = new float[64 * d];
    store.prepareQueries(q, 0, 4, k);
    assertTrue(store.fusedPage(0), "a decode tile of 4 heads reads in place");
    store.prepareQueries(q, 0, F16Codec.Store.FUSED_MAX_ROWS + 1, k);
    assertFalse(store.fusedPage(0), "a tile of more than " + F16Codec.Store.FUSED_MAX_ROWS + " rows widens the page");
    q[5] = 0x1p16f;
    store.prepareQueries(q, 0, 4, k);
    assertFalse(store.fusedPage(0), "a query of 2^16 would overflow once scaled");
    q[5] = Float.NaN;
    store.prepareQueries(q, 0, 4, k);
    assertFalse(store.fusedPage(0), "NaN queries take the widened path");
    q[5] = 0x1p16f - 8; // largest float below 2^16
    store.prepareQueries(q, 0, 4, k);
    assertTrue(store.fusedPage(0));
  }
}
