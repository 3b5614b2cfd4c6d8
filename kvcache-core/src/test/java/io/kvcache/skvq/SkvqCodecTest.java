package io.kvcache.skvq;

import io.kvcache.kernel.Kernels;

import io.kvcache.kernel.AttentionKernels;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.codec.HeadStore;
import io.kvcache.codec.StorageCodec;
import io.kvcache.core.AttentionShape;
import io.kvcache.workload.SyntheticWorkload;
import io.kvcache.workload.WorkloadSpec;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** The codec's storage: packing, the round-trip bound, the window rule, reordering and byte accounting. */
class SkvqCodecTest {

  static final double[] WIDTHS = {1, 1.5, 2, 4, 8};
  static final int P = HeadStore.PAGE_TOKENS;

  static long seed() {
    String fixed = System.getProperty("kvcache.test.seed");
    return fixed != null ? Long.parseLong(fixed) : System.nanoTime();
  }

  @Test
  void ternaryByteDecodesEveryDigitOfEveryValue() {
    for (int v = 0; v < 243; v++) {
      int[] t = {v / 81 % 3, v / 27 % 3, v / 9 % 3, v / 3 % 3, v % 3};
      byte q = Ternary.encode(t[0], t[1], t[2], t[3], t[4]);
      for (int i = 0; i < 5; i++) {
        assertEquals(t[i], Ternary.digit(q, i), "value " + v + " digit " + i);
        byte r = Ternary.withDigit(q, i, (t[i] + 1) % 3);
        for (int k = 0; k < 5; k++) {
          assertEquals(k == i ? (t[i] + 1) % 3 : t[k], Ternary.digit(r, k), "value " + v + " set digit " + i);
        }
      }
    }
  }

  /** Every code of a page written at random, then read back: no neighbour, group or row boundary clobbers another. */
  @Test
  void packedCodesRoundTripAtEveryBoundaryAndOddHeadDims() {
    long seed = seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    for (double kb : WIDTHS) {
      for (double vb : WIDTHS) {
        for (int d : new int[] {1, 3, 7, 8, 37, 64, 130}) {
          Layout lay = new Layout(d, SkvqConfig.of(kb, vb).withGroups(5, 3));
          Layout.QPage p = lay.newPage();
          int[][] k = new int[d][P], v = new int[P][d];
          for (int pass = 0; pass < 2; pass++) { // the second pass overwrites non-zero codes
            for (int c = 0; c < d; c++) {
              for (int j = 0; j < P; j++) {
                k[c][j] = rnd.nextInt(lay.kb.levels + 1);
                v[j][c] = rnd.nextInt(lay.vb.levels + 1);
                lay.setKCode(p, c, j, k[c][j]);
                lay.setVCode(p, j, c, v[j][c]);
              }
            }
            for (int c = 0; c < d; c++) {
              for (int j = 0; j < P; j++) {
                String where = "seed " + seed + " k" + kb + " v" + vb + " d=" + d + " c=" + c + " j=" + j;
                assertEquals(k[c][j], lay.kCode(p, c, j), where);
                assertEquals(v[j][c], lay.vCode(p, j, c), where);
              }
            }
          }
        }
      }
    }
  }

  /**
   * With clipping off, every quantized value is within half a step of its f16 input; the step is
   * bounded by the group's range over the code's levels (plus f16 rounding of scale and zero point).
   */
  @Test
  void roundTripIsWithinHalfAStepForEveryWidth() {
    long seed = seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    for (double bits : WIDTHS) {
      for (int d : new int[] {7, 37, 128}) {
        for (int group : new int[] {4, 32, 128}) {
          SkvqConfig cfg = SkvqConfig.of(bits, bits).withGroups(group, group).withWindow(0, 0).withClip(1.0)
              .withReorder(false);
          HeadStore store = SkvqCodec.of(cfg).newStore(d);
          int n = 3 * P + 5;
          float[][] k = new float[n][d], v = new float[n][d];
          for (int t = 0; t < n; t++) {
            for (int c = 0; c < d; c++) {
              k[t][c] = f16((float) (rnd.nextGaussian() * 3 + (c % 5 == 0 ? 10 : 0)));
              v[t][c] = f16((float) rnd.nextGaussian());
            }
            store.append(k[t], 0, v[t], 0, t);
          }
          store.attentionDone();
          Bits b = Bits.of("bits", bits);
          float[] back = new float[d];
          int quantized = 0;
          for (int t = 0; t < n; t++) {
            if (!((SkvqStore) store).quantized(t)) {
              continue;
            }
            quantized++;
            store.readKey(t, back, 0);
            checkHalfStep(k[t], back, Math.min(group, d), b.levels, "seed " + seed + " K bits=" + bits + " d=" + d
                + " g=" + group + " t=" + t);
            store.readValue(t, back, 0);
            checkHalfStep(v[t], back, Math.min(group, d), b.levels, "seed " + seed + " V bits=" + bits + " d=" + d
                + " g=" + group + " t=" + t);
          }
          // Window 0: every token is older than the newest 0 positions, so all are quantized.
          assertEquals(n, quantized, "quantized tokens, bits=" + bits);
        }
      }
    }
  }

  private static void checkHalfStep(float[] x, float[] back, int group, int levels, String where) {
    for (int g0 = 0; g0 < x.length; g0 += group) {
      int e = Math.min(x.length, g0 + group);
      float min = Float.POSITIVE_INFINITY, max = Float.NEGATIVE_INFINITY;
      for (int c = g0; c < e; c++) {
        min = Math.min(min, x[c]);
        max = Math.max(max, x[c]);
      }
      double f16Slack = Math.max(Math.abs(min), Math.abs(max)) * Math.pow(2, -10);
      double step = (max - min + f16Slack) / levels * (1 + Math.pow(2, -10)) + 1e-7;
      for (int c = g0; c < e; c++) {
        double err = Math.abs(x[c] - back[c]);
        assertTrue(err <= step / 2 + 1e-6 * (1 + Math.abs(x[c])), where + " c=" + c + ": error " + err
            + " > half step " + step / 2);
      }
    }
  }

  /**
   * The window rule: after attention, exactly the pages whose every token is older than the newest
   * {@code window} positions are quantized, except sinks; the window and sinks read back bit-exact (f16).
   */
  @Test
  void windowAndSinksStayExactAndOnlyWholePagesLeave() {
    long seed = seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    int d = 40, window = 40, sinks = 5; // d = 40: two full value blocks and a narrower one
    SkvqConfig cfg = SkvqConfig.paperDefault().withWindow(window, sinks);
    SkvqStore store = (SkvqStore) SkvqCodec.of(cfg).newStore(d);
    float[][] k = new float[300][d], v = new float[300][d];
    float[] back = new float[d];
    for (int t = 0; t < 300; t++) {
      for (int c = 0; c < d; c++) {
        k[t][c] = f16((float) rnd.nextGaussian());
        v[t][c] = f16((float) rnd.nextGaussian());
      }
      store.append(k[t], 0, v[t], 0, t);
      if (t % 7 == 0 || t == 299) {
        store.attentionDone();
        long windowStart = (long) t - window + 1;
        for (int s = 0; s <= t; s++) {
          int page = s / P;
          int pageMax = Math.min(t, page * P + P - 1);
          boolean left = pageMax < windowStart && s >= sinks;
          assertEquals(left, store.quantized(s), "seed " + seed + " after t=" + t + " slot " + s);
          if (!left) {
            store.readKey(s, back, 0);
            assertArrayEquals(k[s], back, "key of " + s);
            store.readValue(s, back, 0);
            assertArrayEquals(v[s], back, "value of " + s);
          }
        }
      }
    }
    // The whole-page view (window, sink and dequantized slots alike) in the float page's layout.
    float[] buf = new float[2 * d * P], kk = new float[d], vv = new float[d];
    for (int page = 0; page < store.pageCount(); page++) {
      float[] got = store.page(page, buf, Kernels.get());
      for (int j = 0; j < P && page * P + j < 300; j++) {
        store.readKey(page * P + j, kk, 0);
        store.readValue(page * P + j, vv, 0);
        for (int c = 0; c < d; c++) {
          assertEquals(kk[c], got[c * P + j], "page " + page + " key " + j + "," + c);
          assertEquals(vv[c], got[store.valuesOffset() + AttentionKernels.valueIndex(j, c, d, P)],
              "page " + page + " value " + j + "," + c);
        }
      }
    }
  }

  /**
   * On keys with outlier channels, reordering never gives more error than natural order (the identity is
   * one of calibration's candidates, and calibration scores them on these very rows: at most
   * {@link Quant#MAX_CALIBRATION_ROWS} tokens, all of which it reads; with more, it samples them and the
   * guarantee holds on the sample only — a 600-token version of this test failed for seed
   * 57018731876183); on the fixed workload of seed 5, whose outlier channels are spread over several
   * groups, it gives much less.
   */
  @Test
  void reorderingNeverIncreasesErrorOnOutlierChannels() {
    int n = Quant.MAX_CALIBRATION_ROWS;
    for (long seed : new long[] {5, 57018731876183L, seed(), seed() + 1, seed() + 2}) {
      AttentionShape shape = new AttentionShape(1, 1, 1, 128);
      WorkloadSpec spec = new WorkloadSpec(n, 0, seed, 0, 0.0, 0, new double[] {0.5}, 4, 6);
      float[] k = new SyntheticWorkload(shape, spec).layer(0).k();
      for (double bits : new double[] {2, 4}) {
        for (int group : new int[] {16, 32, 64}) {
          SkvqConfig cfg = SkvqConfig.of(bits, bits).withGroups(group, group).withWindow(0, 0);
          double with = keyError(cfg.withReorder(true), k, n);
          double without = keyError(cfg.withReorder(false), k, n);
          String where = "seed " + seed + " bits=" + bits + " g=" + group + ": reordered " + with + " vs " + without;
          assertTrue(with <= without, where);
          if (seed == 5) {
            assertTrue(with < 0.9 * without, where + " (reordering should help on this workload)");
          }
        }
      }
    }
  }

  private static double keyError(SkvqConfig cfg, float[] k, int n) {
    int d = k.length / n;
    SkvqStore store = (SkvqStore) SkvqCodec.of(cfg).newStore(d);
    float[] zero = new float[d], back = new float[d];
    float[] row = new float[d];
    for (int t = 0; t < n; t++) {
      for (int c = 0; c < d; c++) {
        row[c] = f16(k[t * d + c]);
      }
      store.append(row, 0, zero, 0, t);
    }
    store.attentionDone();
    double err = 0;
    for (int t = 0; t < n; t++) {
      if (store.quantized(t)) {
        store.readKey(t, back, 0);
        for (int c = 0; c < d; c++) {
          double e = back[c] - f16(k[t * d + c]);
          err += e * e;
        }
      }
    }
    return err;
  }

  /**
   * Bytes held, to the byte, at head dim 128, K2/V1.5, groups 128, window 128, 5 sinks, and the memory
   * bar: at 32K tokens the store holds at most 0.14 of what an f16 store holds.
   */
  @Test
  void bytesHeldMatchTheLayoutToTheByteAndMeetTheMemoryBar() {
    int d = 128, n = 32768;
    HeadStore q = SkvqCodec.of(SkvqConfig.paperDefault()).newStore(d);
    HeadStore f16 = StorageCodec.f16().newStore(d);
    SplittableRandom rnd = new SplittableRandom(seed());
    float[] k = new float[d], v = new float[d];
    for (int t = 0; t < n; t++) {
      for (int c = 0; c < d; c++) {
        k[c] = (float) rnd.nextGaussian();
        v[c] = (float) rnd.nextGaussian();
      }
      q.append(k, 0, v, 0, t);
      f16.append(k, 0, v, 0, t);
      if (t % 1024 == 1023) {
        q.attentionDone();
      }
    }
    q.attentionDone();
    int pages = n / P;
    // Pages 0..2039 left the window (2040 * 16 = 32640 = 32768 - 128); page 0 keeps its 5 sinks in f16.
    long kCodes = P * d * 2 / 8;                      // 512
    long vCodes = (long) ((P * d / 8 + 4) / 5) * 8;   // 52 runs of 8 bytes = 416
    long scales = 2L * 2 * P * 2;                     // K and V, scale and zero, f16: 128
    long qPage = kCodes + vCodes + scales;            // 1056
    long fullPage = 2L * d * P * 2;                   // 8192
    long expectedPayload = 2040 * qPage + (8 + 1) * fullPage;
    assertEquals(expectedPayload, q.payloadBytes(), "payload");
    long expectedMeta = (long) pages * P * 4 + pages * 2L + 2L * d * 4 + 8;
    assertEquals(expectedMeta, q.metadataBytes(), "metadata");
    double held = q.payloadBytes() + q.metadataBytes();
    double f16Held = f16.payloadBytes() + f16.metadataBytes();
    double ratio = held / f16Held;
    System.out.printf("SKVQ K2/V1.5 g128 w128 at %d tokens: %.2f bytes/token held (payload %.2f) vs f16 %.2f"
        + " (payload %.2f): ratio %.4f (payload ratio %.4f)%n", n, held / n, q.payloadBytes() / (double) n,
        f16Held / n, f16.payloadBytes() / (double) n, ratio, q.payloadBytes() / (double) f16.payloadBytes());
    assertTrue(ratio <= 0.14, "ratio " + ratio);
  }

  @Test
  void rejectsValuesBeyondTheF16ScaleRangeAndBadSettings() {
    HeadStore s = SkvqCodec.of(SkvqConfig.paperDefault()).newStore(4);
    float[] ok = new float[4];
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
        () -> s.append(new float[] {0, 40000f, 0, 0}, 0, ok, 0, 0));
    assertTrue(e.getMessage().contains("k must be finite"), e.getMessage());
    assertEquals(0, s.size());
    e = assertThrows(IllegalArgumentException.class, () -> SkvqConfig.of(3, 2));
    assertTrue(e.getMessage().contains("keyBits") && e.getMessage().contains("3.0"), e.getMessage());
    e = assertThrows(IllegalArgumentException.class, () -> SkvqConfig.paperDefault().withClip(0.3));
    assertTrue(e.getMessage().contains("clip"), e.getMessage());
    e = assertThrows(IllegalArgumentException.class, () -> SkvqConfig.paperDefault().withGroups(0, 8));
    assertTrue(e.getMessage().contains("keyGroup"), e.getMessage());
    assertFalse(SkvqConfig.paperDefault().name().isEmpty());
  }

  static float f16(float x) {
    return Float.float16ToFloat(Float.floatToFloat16(x));
  }

  @org.junit.jupiter.api.Test
  void nullArgumentsAreRefusedByName() {
    IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
        () -> SkvqCodec.of(null));
    org.junit.jupiter.api.Assertions.assertTrue(e.getMessage().contains("config"), e.getMessage());
    SkvqCodec codec = SkvqCodec.of(SkvqConfig.paperDefault());
    e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
        () -> codec.withCalibration(null, new float[4], 1));
    org.junit.jupiter.api.Assertions.assertTrue(e.getMessage().contains("keys and values must not be null"),
        e.getMessage());
  }
}
