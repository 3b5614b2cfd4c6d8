package io.kvcache.codec;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.core.TestData;
import io.kvcache.kernel.AttentionKernels;
import io.kvcache.kernel.Kernels;
import io.kvcache.reader.PagedAttention;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * f16 decode reads the halves in place; every other tile widens a page first. A tile that widens must
 * give exactly the floats that attention over an f32 store holding the same (widened) values gives:
 * same products, same order. A tile read in place has the same products but takes one softmax step per
 * group of up to 8 pages ({@link HeadStore.FusedPages#runPages}) where the f32 store takes one per page,
 * so it must agree to rounding: within 1e-5 of the output's largest magnitude. Seeded from
 * {@code -Dkvcache.test.seed} when given.
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

  static void assertSameBits(float[] expected, float[] actual, String what) {
    for (int i = 0; i < expected.length; i++) {
      int at = i;
      assertEquals(Float.floatToRawIntBits(expected[i]), Float.floatToRawIntBits(actual[i]),
          () -> what + " element " + at + ": " + actual[at] + " vs " + expected[at]);
    }
  }

  /** Every element within 1e-5 of the largest magnitude in {@code expected}. */
  static void assertWithinRounding(float[] expected, float[] actual, String what) {
    float scale = 0f;
    for (float x : expected) {
      scale = Math.max(scale, Math.abs(x));
    }
    for (int i = 0; i < expected.length; i++) {
      int at = i;
      assertEquals(expected[i], actual[i], 1e-5 * scale, () -> what + " element " + at);
    }
  }

  /** The same tokens in an f16 store and an f32 store; values spread over many binades, subnormals included. */
  static HeadStore[] stores(SplittableRandom rnd, int d, int tokens) {
    HeadStore halves = StorageCodec.f16().newStore(d);
    HeadStore floats = StorageCodec.f32().newStore(d);
    float[] key = new float[d], value = new float[d];
    for (int t = 0; t < tokens; t++) {
      for (int c = 0; c < d; c++) {
        double scale = Math.pow(2, rnd.nextInt(-20, 12));
        key[c] = roundTrip(rnd.nextGaussian() * scale);
        value[c] = roundTrip(rnd.nextGaussian() * scale);
      }
      halves.append(key, 0, value, 0, t);
      floats.append(key, 0, value, 0, t);
    }
    return new HeadStore[] {halves, floats};
  }

  @Test
  void decodeInPlaceOrWidenedEqualsAttentionOverF32Storage() {
    long seed = TestData.seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    float scale = 0.125f;
    for (AttentionKernels k : kernels()) {
      for (int d : new int[] {64, 128}) {
        for (int tokens : new int[] {1, 7, 100, 1000}) {
          HeadStore[] s = stores(rnd, d, tokens);
          F16Codec.Store halves = (F16Codec.Store) s[0];
          PagedAttention onHalves = new PagedAttention(k, d);
          PagedAttention onFloats = new PagedAttention(k, d);
          for (int group : new int[] {1, 4, 8, 16, 32}) {
            for (boolean huge : new boolean[] {false, true}) {
              float[] q = new float[group * d];
              for (int i = 0; i < q.length; i++) {
                q[i] = (float) rnd.nextGaussian();
              }
              if (huge) {
                // 125000 once scaled: past 2^16, where the in-place factor would overflow to infinity.
                q[rnd.nextInt(q.length)] = 1e6f;
              }
              float[] o1 = new float[q.length], o2 = new float[q.length];
              onFloats.decode(s[1], group, q, 0, tokens - 1, scale, o1, 0);
              onHalves.decode(halves, group, q, 0, tokens - 1, scale, o2, 0);
              String what = k.name() + " d=" + d + " tokens=" + tokens + " group=" + group + " huge=" + huge
                  + " (seed " + seed + ")";
              boolean inPlace = group <= k.halfPageMaxRows() && !huge;
              assertEquals(inPlace, halves.fusedPage(0), "path taken: " + what);
              if (inPlace) {
                assertWithinRounding(o1, o2, what);
              } else {
                assertSameBits(o1, o2, what);
              }
            }
          }
        }
      }
    }
  }

  @Test
  void smallPrefillTilesAndAttentionWeightsEqualTheF32Path() {
    long seed = TestData.seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    int d = 64, tokens = 70, group = 4, accStride = 80;
    for (AttentionKernels k : kernels()) {
      HeadStore[] s = stores(rnd, d, tokens);
      PagedAttention onHalves = new PagedAttention(k, d);
      PagedAttention onFloats = new PagedAttention(k, d);
      // Query tokens inside the last page, masked within it: one token (4 rows, read in place) and three
      // (12 rows, widened).
      for (int[] positions : new int[][] {{66}, {66, 67, 69}}) {
        float[] q = new float[positions.length * group * d];
        for (int i = 0; i < q.length; i++) {
          q[i] = (float) rnd.nextGaussian();
        }
        float[] o1 = new float[q.length], o2 = new float[q.length];
        onFloats.attend(s[1], positions.length, group, q, 0, group * d, positions, 0, 0.125f, o1, 0, group * d);
        onHalves.attend(s[0], positions.length, group, q, 0, group * d, positions, 0, 0.125f, o2, 0, group * d);
        String what = k.name() + " tile of " + positions.length * group + " rows (seed " + seed + ")";
        assertEquals(positions.length * group <= k.halfPageMaxRows(), s[0].fusedPage(0), "path: " + what);
        assertSameBits(o1, o2, what);

        // Weights take every token's rows at once, as attention does: in place for one token, widened for three.
        float[] w1 = new float[group * accStride], w2 = new float[group * accStride];
        onFloats.weights(s[1], positions.length, group, q, 0, group * d, positions, 0, 0.125f, w1, accStride);
        onHalves.weights(s[0], positions.length, group, q, 0, group * d, positions, 0, 0.125f, w2, accStride);
        assertEquals(positions.length * group <= k.halfPageMaxRows(), s[0].fusedPage(0), "weights path: " + what);
        assertSameBits(w1, w2, "attention weights, " + what);
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
    store.prepareQueries(q, 0, k.halfPageMaxRows() + 1, k);
    assertFalse(store.fusedPage(0), "a tile of more than " + k.halfPageMaxRows() + " rows widens the page");
    q[5] = 0x1p16f;
    store.prepareQueries(q, 0, 4, k);
    assertFalse(store.fusedPage(0), "a query of 2^16 would overflow once scaled");
    q[5] = Float.NaN;
    store.prepareQueries(q, 0, 4, k);
    assertFalse(store.fusedPage(0), "NaN queries take the widened path");
    q[5] = Math.nextDown(0x1p16f);
    store.prepareQueries(q, 0, 4, k);
    assertTrue(store.fusedPage(0), "the largest float below 2^16 is scaled without overflow");
  }
}
