package io.kvcache.skvq;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.codec.HeadStore;
import io.kvcache.core.AttentionShape;
import io.kvcache.core.KVCache;
import io.kvcache.core.KVCacheStrategy;
import io.kvcache.core.Strategies;
import io.kvcache.kernel.AttentionKernels;
import io.kvcache.kernel.Kernels;
import io.kvcache.reader.PagedAttention;
import io.kvcache.retention.LayerAccess;
import io.kvcache.retention.RetentionPolicy;
import io.kvcache.workload.Fidelity;
import io.kvcache.workload.SyntheticWorkload;
import io.kvcache.workload.WorkloadSpec;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.stream.Stream;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Attention over SKVQ storage. The codec is lossy, the kernels are not: decode attention over the codes
 * must equal float64 attention over the dequantized cache (what {@code readKey}/{@code readValue} give)
 * within 1e-5 (row error, max |out - ref| over the magnitude the float sums round against, max over
 * channels of sum_j p_j |v_j|: an output that averages to near zero would otherwise shrink the bound),
 * on both kernel paths.
 */
class SkvqAttentionTest {

  static final double KERNEL_TOLERANCE = 1e-5;
  static final int P = HeadStore.PAGE_TOKENS;

  static Stream<Arguments> cases() {
    List<Arguments> cases = new ArrayList<>();
    for (String kernels : new String[] {"scalar", "vector"}) {
      for (double[] bits : new double[][] {{2, 1.5}, {1.5, 2}, {1, 1}, {4, 4}, {8, 8}}) {
        for (int d : new int[] {64, 36}) {
          for (int g : new int[] {1, 4, 6, 8}) {
            cases.add(Arguments.of(kernels, bits[0], bits[1], d, g, 32, 150));
          }
        }
      }
      cases.add(Arguments.of(kernels, 2.0, 1.5, 128, 4, 128, 150));
      cases.add(Arguments.of(kernels, 2.0, 1.5, 128, 4, 24, 150));
      // GQA 1 / 4 / 8 at head dim 128, and prompts of 1 token (nothing leaves the window), an odd length
      // and a long one.
      cases.add(Arguments.of(kernels, 2.0, 1.5, 128, 1, 128, 1));
      cases.add(Arguments.of(kernels, 2.0, 1.5, 128, 8, 128, 150));
      cases.add(Arguments.of(kernels, 2.0, 1.5, 128, 4, 128, 1001));
      cases.add(Arguments.of(kernels, 2.0, 1.5, 128, 8, 128, 4001));
      cases.add(Arguments.of(kernels, 1.0, 1.0, 64, 8, 32, 1001));
    }
    return cases.stream();
  }

  @ParameterizedTest(name = "{0} K{1} V{2} d={3} G={4} group={5} prompt={6}")
  @MethodSource("cases")
  void fusedDecodeMatchesFloat64OverTheDequantizedCache(String kernelName, double kBits, double vBits, int d, int g,
      int group, int prompt) {
    AttentionKernels kernels = kernels(kernelName);
    long seed = SkvqCodecTest.seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    SkvqConfig cfg = SkvqConfig.of(kBits, vBits).withGroups(group, group).withWindow(20, 3);
    HeadStore store = SkvqCodec.of(cfg).newStore(d);
    PagedAttention pa = new PagedAttention(kernels, d);
    float scale = (float) (1 / Math.sqrt(d));
    float[] k = new float[d], v = new float[d];
    float[] q = new float[g * d], out = new float[g * d];
    for (int t = 0; t < prompt; t++) {
      fill(rnd, k, v, d);
      store.append(k, 0, v, 0, t);
    }
    pa.decode(store, g, randomQ(rnd, g * d), 0, prompt - 1, scale, out, 0); // prefill's attention: quantizes
    for (int t = prompt; t < prompt + 20; t++) {
      fill(rnd, k, v, d);
      store.append(k, 0, v, 0, t);
      q = randomQ(rnd, g * d);
      double[][] ref = reference(store, q, g, d, t);
      pa.decode(store, g, q, 0, t, scale, out, 0);
      for (int h = 0; h < g; h++) {
        double err = rowError(out, h * d, ref[h]);
        assertTrue(err <= KERNEL_TOLERANCE, "seed " + seed + " t=" + t + " head " + h + ": error " + err);
      }
    }
    if (prompt > 2 * P) {
      assertTrue(((SkvqStore) store).quantized(P), "tokens left the window");
    }
  }

  /**
   * Stores share their thread's query-tile scratch: a store of another shape (head dim, widths, groups
   * with a real value permutation, more rows) attending in between changes nothing in a store's output.
   */
  @Test
  void storesOfOtherShapesSharingTheThreadsScratchChangeNothing() {
    long seed = SkvqCodecTest.seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    HeadStore a = SkvqCodec.of(SkvqConfig.of(2, 1.5).withWindow(16, 2)).newStore(128);
    HeadStore b = SkvqCodec.of(SkvqConfig.of(4, 4).withGroups(16, 16).withWindow(16, 2)).newStore(64);
    for (int t = 0; t < 300; t++) {
      float[] k = new float[128], v = new float[128];
      fill(rnd, k, v, 128);
      a.append(k, 0, v, 0, t);
      float[] kb = new float[64], vb = new float[64];
      fill(rnd, kb, vb, 64);
      b.append(kb, 0, vb, 0, t);
    }
    a.attentionDone();
    b.attentionDone();
    for (String kernelName : new String[] {"scalar", "vector"}) {
      AttentionKernels kernels = kernels(kernelName);
      PagedAttention pa = new PagedAttention(kernels, 128), pb = new PagedAttention(kernels, 64);
      float[] qa = randomQ(rnd, 4 * 128), qb = randomQ(rnd, 8 * 64);
      float[] first = new float[4 * 128], again = new float[4 * 128], outB = new float[8 * 64];
      pa.decode(a, 4, qa, 0, 299, 0.1f, first, 0);
      pb.decode(b, 8, qb, 0, 299, 0.1f, outB, 0);
      pa.decode(a, 4, qa, 0, 299, 0.1f, again, 0);
      org.junit.jupiter.api.Assertions.assertArrayEquals(first, again, kernelName + ", seed " + seed);
      boolean any = false;
      for (float x : outB) {
        any |= x != 0f;
      }
      assertTrue(any, "the other store attended");
    }
  }

  /** The vector kernels against the scalar reference, on the same store: same outputs within float rounding. */
  @Test
  void vectorFusedKernelsMatchScalarReference() {
    Assumptions.assumeTrue(Kernels.vectorAvailable(), "needs jdk.incubator.vector");
    long seed = SkvqCodecTest.seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    // Head dim 72: 9 chunks of 8 values (one left after pairs) and 29 runs of base-3 bytes (one left
    // after pairs when the vector kernel unpacks them), beside 128's 16 chunks and 52 runs.
    for (double[] bits : new double[][] {{2, 1.5}, {1.5, 2}, {1, 4}, {4, 1}}) {
      for (int[] dg : new int[][] {{128, 128}, {128, 32}, {128, 8}, {72, 72}, {72, 24}}) {
        int d = dg[0], group = dg[1];
        SkvqConfig cfg = SkvqConfig.of(bits[0], bits[1]).withGroups(group, group).withWindow(0, 0);
        SkvqStore store = (SkvqStore) SkvqCodec.of(cfg).newStore(d);
        float[] k = new float[d], v = new float[d];
        for (int t = 0; t < 64; t++) {
          fill(rnd, k, v, d);
          store.append(k, 0, v, 0, t);
        }
        store.attentionDone();
        boolean vectorPath = SkvqCodec.fused(Kernels.vector(), store.layout()) instanceof VectorFusedKernels;
        // SKVQ's vector kernels need 256-bit vectors; with 128-bit ones (NEON, or -XX:MaxVectorSize=16)
        // codes decode in the scalar kernels, which the other tests cover.
        if (!Kernels.vector().name().equals("vector-128")) {
          assertTrue(vectorPath, "vector path on " + Kernels.vector().name());
        }
        Assumptions.assumeTrue(vectorPath, "SKVQ's vector kernels need 256-bit vectors");
        // The two sum d products in different orders (and the vector one factors out the scale):
        // float rounding bounded by d * max|q| * max|k| * 2^-23 per score, times a margin.
        float maxK = 0f;
        float[] buf = new float[d];
        for (int t = 0; t < 64; t++) {
          store.readKey(t, buf, 0);
          for (float x : buf) {
            maxK = Math.max(maxK, Math.abs(x));
          }
        }
        for (int rows : new int[] {1, 4, 7}) {
          float[] q = randomQ(rnd, rows * d);
          float[] sS = new float[rows * P], sV = new float[rows * P];
          float[] w = randomQ(rnd, rows * P);
          float[] oS = new float[rows * d], oV = new float[rows * d];
          for (int page = 0; page < 4; page++) {
            store.prepareQueries(q, 0, rows, Kernels.scalar());
            store.pageScores(page, rows, sS, 0, P, Kernels.scalar());
            store.pageAccumulate(page, w, 0, P, rows, oS, 0, Kernels.scalar());
            store.prepareQueries(q, 0, rows, Kernels.vector());
            store.pageScores(page, rows, sV, 0, P, Kernels.vector());
            store.pageAccumulate(page, w, 0, P, rows, oV, 0, Kernels.vector());
            String where = "seed " + seed + " K" + bits[0] + " V" + bits[1] + " group " + group + " rows " + rows;
            for (int i = 0; i < sS.length; i++) {
              assertEquals(sS[i], sV[i], 8 * d * maxAbs(q) * maxK * 0x1p-23, where + " score " + i);
            }
            for (int i = 0; i < oS.length; i++) {
              assertEquals(oS[i], oV[i], 1e-4 * (1 + Math.abs(oS[i])), where + " output " + i);
            }
          }
        }
      }
    }
  }

  /**
   * While every token is inside the window (and sinks), SKVQ is the f16 cache, output for output: the
   * same bits in prefill; in decode to rounding (1e-5 relative, the f32 kernel tolerance; 1e-6 failed
   * on a seed at 1.3e-6), since the f16 store takes one softmax step per group of up to 8 pages and
   * SKVQ's window one per page.
   */
  @Test
  void windowOnlyAttentionEqualsTheFullF16Cache() {
    AttentionShape shape = new AttentionShape(2, 8, 2, 64);
    long seed = SkvqCodecTest.seed();
    SyntheticWorkload w = new SyntheticWorkload(shape, WorkloadSpec.standard(100, 20, seed));
    for (AttentionKernels kernels : kernelsAvailable()) {
      KVCacheStrategy skvq = Strategies.skvq(2, 1.5, 128).toBuilder().kernels(kernels).build();
      KVCacheStrategy f16 = Strategies.full().toBuilder().kernels(kernels).build();
      try (KVCache a = skvq.newCache(shape); KVCache b = f16.newCache(shape)) {
        int qw = shape.queryWidth(), kw = shape.kvWidth();
        float[] oa = new float[100 * qw], ob = new float[100 * qw];
        SyntheticWorkload.Layer[] layers = {w.layer(0), w.layer(1)};
        for (int l = 0; l < 2; l++) {
          SyntheticWorkload.Layer L = layers[l];
          a.prefill(l, 100, null, L.q(), 0, L.k(), 0, L.v(), 0, oa, 0);
          b.prefill(l, 100, null, L.q(), 0, L.k(), 0, L.v(), 0, ob, 0);
          assertArrayEquals(ob, oa, "prefill layer " + l + " " + kernels.name() + " seed " + seed);
        }
        for (int t = 100; t < 120; t++) {
          for (int l = 0; l < 2; l++) {
            SyntheticWorkload.Layer L = layers[l];
            a.decode(l, L.q(), t * qw, L.k(), t * kw, L.v(), t * kw, oa, 0);
            b.decode(l, L.q(), t * qw, L.k(), t * kw, L.v(), t * kw, ob, 0);
            for (int i = 0; i < qw; i++) {
              assertEquals(ob[i], oa[i], 1e-5 * (1 + Math.abs(ob[i])),
                  "decode t=" + t + " layer " + l + " " + kernels.name() + " seed " + seed);
            }
          }
        }
        assertEquals(b.stats().payloadBytes(), a.stats().payloadBytes(), "nothing quantized yet");
      }
    }
  }

  /**
   * Under StreamingLLM retention (sinks + a window longer than SKVQ's), evicted slots are reused and
   * compaction moves tokens between quantized and full-precision pages: attention still equals float64
   * attention over the dequantized cache, and exactly sinks + window tokens are held.
   */
  @Test
  void composesWithSinksAndWindowRetention() {
    long seed = SkvqCodecTest.seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    int d = 64, g = 4, sinks = 4, keep = 200;
    AttentionShape shape = new AttentionShape(1, g, 1, d);
    for (AttentionKernels kernels : kernelsAvailable()) {
      SkvqConfig cfg = SkvqConfig.paperDefault().withGroups(32, 32).withWindow(48, 5);
      HeadStore store = SkvqCodec.of(cfg).newStore(d);
      RetentionPolicy.State policy = RetentionPolicy.sinksAndWindow(sinks, keep).newState(shape);
      PagedAttention pa = new PagedAttention(kernels, d);
      float scale = (float) (1 / Math.sqrt(d));
      float[] k = new float[d], v = new float[d], out = new float[g * d];
      int[] next = {0};
      LayerAccess access = access(shape, store, next);
      boolean sawMixed = false;
      for (int t = 0; t < 900; t++) {
        fill(rnd, k, v, d);
        store.append(k, 0, v, 0, t);
        next[0] = t + 1;
        policy.afterAppend(access, true);
        float[] q = randomQ(rnd, g * d);
        if (t % 5 == 0 || t > 880) {
          double[][] ref = reference(store, q, g, d, t);
          pa.decode(store, g, q, 0, t, scale, out, 0);
          for (int h = 0; h < g; h++) {
            double err = rowError(out, h * d, ref[h]);
            assertTrue(err <= KERNEL_TOLERANCE, "seed " + seed + " " + kernels.name() + " t=" + t + ": " + err);
          }
        } else {
          pa.decode(store, g, q, 0, t, scale, out, 0);
        }
        sawMixed |= mixedPages((SkvqStore) store) > 0;
      }
      assertEquals(sinks + keep, store.size(), "tokens held");
      assertTrue(sawMixed, "the run must exercise pages holding both quantized and full-precision tokens");
    }
  }

  /** Attention-output error against the full f32 cache on structured inputs with outlier key channels: falls as bits grow. */
  @Test
  void fidelityImprovesWithBits() {
    AttentionShape shape = new AttentionShape(2, 8, 2, 128);
    SyntheticWorkload w = new SyntheticWorkload(shape, WorkloadSpec.standard(1024, 16, 7));
    double[][] bits = {{2, 1.5}, {4, 4}, {8, 8}};
    double[] err = new double[bits.length];
    for (int i = 0; i < bits.length; i++) {
      Fidelity.Result r = Fidelity.compare(Strategies.skvq(bits[i][0], bits[i][1], 128), w, 256);
      err[i] = r.meanError();
      System.out.printf("fidelity %-26s mean error %.5f max %.5f bits/value %.3f compression %.2fx%n", r.strategy(),
          r.meanError(), r.maxError(), r.stats().bitsPerValue(), r.stats().compressionRatio());
    }
    Fidelity.Result f16 = Fidelity.compare(Strategies.full(), w, 256);
    System.out.printf("fidelity %-26s mean error %.5f%n", f16.strategy(), f16.meanError());
    Fidelity.Result g32 = Fidelity.compare(Strategies.skvq(SkvqConfig.paperDefault().withGroups(32, 32)), w, 256);
    System.out.printf("fidelity %-26s mean error %.5f max %.5f bits/value %.3f compression %.2fx%n", g32.strategy(),
        g32.meanError(), g32.maxError(), g32.stats().bitsPerValue(), g32.stats().compressionRatio());
    assertTrue(err[0] > err[1] && err[1] > err[2], "error must fall with bits: " + java.util.Arrays.toString(err));
    assertTrue(err[2] < 0.05, "8-bit codes should be close to full: " + err[2]);
    assertTrue(f16.meanError() < err[2], "f16 is closer than 8-bit codes");
    assertTrue(g32.meanError() < err[0], "groups of 32 with reordering beat groups of 128 at K2/V1.5");
  }

  // ---- helpers -------------------------------------------------------------------------------------

  static int mixedPages(SkvqStore s) {
    int n = 0;
    for (int p = 0; p < s.pageCount(); p++) {
      boolean q = false, f = false;
      for (int j = 0; j < P; j++) {
        if (s.position(p * P + j) != HeadStore.EMPTY) {
          if (s.quantized(p * P + j)) {
            q = true;
          } else {
            f = true;
          }
        }
      }
      n += q && f ? 1 : 0;
    }
    return n;
  }

  static LayerAccess access(AttentionShape shape, HeadStore store, int[] next) {
    return new LayerAccess() {
      @Override
      public int layer() {
        return 0;
      }

      @Override
      public AttentionShape shape() {
        return shape;
      }

      @Override
      public HeadStore store(int kvHead) {
        return store;
      }

      @Override
      public int nextPosition() {
        return next[0];
      }

      @Override
      public int windowTokens() {
        return 0;
      }

      @Override
      public void windowWeights(int kvHead, float[] acc, int accStride) {}
    };
  }

  /** Float64 attention of each of the g rows over every live slot visible at {@code pos}, dequantized. */
  static double[][] reference(HeadStore store, float[] q, int g, int d, int pos) {
    int slots = store.pageCount() * P;
    List<double[]> ks = new ArrayList<>(), vs = new ArrayList<>();
    float[] buf = new float[d];
    for (int s = 0; s < slots; s++) {
      int p = store.position(s);
      if (p == HeadStore.EMPTY || p > pos) {
        continue;
      }
      store.readKey(s, buf, 0);
      double[] kk = new double[d];
      for (int c = 0; c < d; c++) {
        kk[c] = buf[c];
      }
      store.readValue(s, buf, 0);
      double[] vv = new double[d];
      for (int c = 0; c < d; c++) {
        vv[c] = buf[c];
      }
      ks.add(kk);
      vs.add(vv);
    }
    // out[h][d] holds the row's magnitude, max over channels of sum_j p_j |v_j| (see rowError).
    double[][] out = new double[g][d + 1];
    double scale = 1 / Math.sqrt(d);
    for (int h = 0; h < g; h++) {
      double[] sc = new double[ks.size()];
      double max = Double.NEGATIVE_INFINITY;
      for (int i = 0; i < sc.length; i++) {
        double dot = 0;
        for (int c = 0; c < d; c++) {
          dot += (double) q[h * d + c] * ks.get(i)[c];
        }
        sc[i] = dot * scale;
        max = Math.max(max, sc[i]);
      }
      double sum = 0;
      for (int i = 0; i < sc.length; i++) {
        sc[i] = Math.exp(sc[i] - max);
        sum += sc[i];
      }
      double[] abs = new double[d];
      for (int i = 0; i < sc.length; i++) {
        for (int c = 0; c < d; c++) {
          out[h][c] += sc[i] / sum * vs.get(i)[c];
          abs[c] += sc[i] / sum * Math.abs(vs.get(i)[c]);
        }
      }
      for (int c = 0; c < d; c++) {
        out[h][d] = Math.max(out[h][d], abs[c]);
      }
    }
    return out;
  }

  /** {@code ref} from {@link #reference}: the row's channels, then its magnitude. */
  static double rowError(float[] out, int off, double[] ref) {
    int d = ref.length - 1;
    double num = 0, den = Math.max(1e-30, ref[d]);
    for (int c = 0; c < d; c++) {
      num = Math.max(num, Math.abs(out[off + c] - ref[c]));
    }
    return num / den;
  }

  static float maxAbs(float[] a) {
    float m = 0f;
    for (float x : a) {
      m = Math.max(m, Math.abs(x));
    }
    return m;
  }

  static void fill(SplittableRandom rnd, float[] k, float[] v, int d) {
    for (int c = 0; c < d; c++) {
      k[c] = (float) (rnd.nextGaussian() * (c % 9 == 0 ? 6 : 1) + (c % 9 == 0 ? 4 : 0));
      v[c] = (float) rnd.nextGaussian();
    }
  }

  static float[] randomQ(SplittableRandom rnd, int n) {
    float[] q = new float[n];
    for (int i = 0; i < n; i++) {
      q[i] = (float) rnd.nextGaussian();
    }
    return q;
  }

  static AttentionKernels kernels(String name) {
    if (name.equals("vector")) {
      Assumptions.assumeTrue(Kernels.vectorAvailable(), "needs jdk.incubator.vector");
      return Kernels.vector();
    }
    return Kernels.scalar();
  }

  static List<AttentionKernels> kernelsAvailable() {
    List<AttentionKernels> l = new ArrayList<>();
    l.add(Kernels.scalar());
    if (Kernels.vectorAvailable()) {
      l.add(Kernels.vector());
    }
    return l;
  }
}
