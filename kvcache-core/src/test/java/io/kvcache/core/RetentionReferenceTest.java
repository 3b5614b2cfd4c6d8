package io.kvcache.core;

import static org.junit.jupiter.api.Assertions.assertEquals;

import io.kvcache.codec.StorageCodec;
import io.kvcache.retention.H2O;
import io.kvcache.retention.SnapKV;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import java.util.TreeSet;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * SnapKV and H2O against double-precision references written from the method descriptions: which tokens
 * each KV head holds (SnapKV, after the prompt) or attends to (H2O, at every decode step), for GQA groups
 * of 1 to 8, prompts in one chunk or many, and positions that start late or skip. H2O's reference takes
 * the library's decode order (evict, then attend; see {@link H2O}); the paper adds the step's own row
 * before it evicts, and {@code evictFirst = false} builds that order for comparison.
 */
class RetentionReferenceTest {

  static double[] softmaxRow(AttentionShape sh, float[] q, int qt, int head, float[] k, List<Integer> keys) {
    int d = sh.headDim(), kvh = head / sh.groupSize();
    double[] s = new double[keys.size()];
    double max = Double.NEGATIVE_INFINITY;
    for (int i = 0; i < s.length; i++) {
      double dot = 0;
      for (int c = 0; c < d; c++) {
        dot += (double) q[qt * sh.queryWidth() + head * d + c] * k[keys.get(i) * sh.kvWidth() + kvh * d + c];
      }
      s[i] = dot / Math.sqrt(d);
      max = Math.max(max, s[i]);
    }
    double sum = 0;
    for (int i = 0; i < s.length; i++) {
      s[i] = Math.exp(s[i] - max);
      sum += s[i];
    }
    for (int i = 0; i < s.length; i++) {
      s[i] /= sum;
    }
    return s;
  }

  static int[] positions(String mode, int n) {
    int[] p = new int[n];
    for (int t = 0; t < n; t++) {
      p[t] = switch (mode) {
        case "late" -> 1000 + t;
        case "gaps" -> 3 * t + (t % 2);
        default -> t;
      };
    }
    return p;
  }

  static void prefill(KVCache cache, AttentionShape sh, int[] pos, int prompt, int chunk, float[] q, float[] k,
      float[] v, boolean explicit) {
    int qw = sh.queryWidth(), kw = sh.kvWidth();
    float[] out = new float[prompt * qw];
    for (int t = 0; t < prompt; t += chunk) {
      int c = Math.min(chunk, prompt - t);
      int[] p = explicit ? Arrays.copyOfRange(pos, t, t + c) : null;
      for (int layer = 0; layer < sh.layers(); layer++) {
        cache.prefill(layer, c, p, q, t * qw, k, t * kw, v, t * kw, out, t * qw);
      }
    }
  }

  @ParameterizedTest(name = "group={0} chunk={1} positions={2}")
  @CsvSource({"1, 300, dense", "4, 300, dense", "8, 300, dense", "4, 37, dense", "8, 37, late", "1, 64, gaps",
      "4, 300, gaps", "2, 50, late"})
  void snapKVMatchesTheSpec(int group, int chunk, String mode) {
    long seed = TestData.seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    AttentionShape sh = new AttentionShape(1, 2 * group, 2, 16);
    int prompt = 300, budget = 64, window = 16, pool = 7;
    int qw = sh.queryWidth(), kw = sh.kvWidth();
    float[] q = TestData.gaussian(rnd, prompt * qw, 1);
    float[] k = TestData.gaussian(rnd, prompt * kw, 1);
    float[] v = TestData.gaussian(rnd, prompt * kw, 1);
    int[] pos = positions(mode, prompt);
    RetentionPoliciesTest.Recorder rec = new RetentionPoliciesTest.Recorder(SnapKV.of(budget, window, pool));
    try (KVCache cache = KVCacheStrategy.builder().codec(StorageCodec.f32()).retention(rec).build().newCache(sh)) {
      prefill(cache, sh, pos, prompt, chunk, q, k, v, !mode.equals("dense"));
      cache.endPrefill();
    }
    int prefix = prompt - window;
    for (int h = 0; h < sh.kvHeads(); h++) {
      double[] agg = new double[prefix];
      for (int g = 0; g < group; g++) {
        double[] s = new double[prefix];
        for (int i = prefix; i < prompt; i++) {
          List<Integer> keys = new ArrayList<>();
          for (int j = 0; j <= i; j++) {
            keys.add(j);
          }
          double[] a = softmaxRow(sh, q, i, h * group + g, k, keys);
          for (int j = 0; j < prefix; j++) {
            s[j] += a[j];
          }
        }
        for (int j = 0; j < prefix; j++) {
          double m = Double.NEGATIVE_INFINITY;
          for (int jj = Math.max(0, j - pool / 2); jj <= Math.min(prefix - 1, j + pool / 2); jj++) {
            m = Math.max(m, s[jj]);
          }
          agg[j] += m / group;
        }
      }
      Integer[] idx = new Integer[prefix];
      for (int j = 0; j < prefix; j++) {
        idx[j] = j;
      }
      Arrays.sort(idx, (a, b) -> agg[a] != agg[b] ? Double.compare(agg[b], agg[a]) : Integer.compare(a, b));
      TreeSet<Integer> expected = new TreeSet<>();
      for (int i = 0; i < budget - window; i++) {
        expected.add(pos[idx[i]]);
      }
      for (int t = prefix; t < prompt; t++) {
        expected.add(pos[t]);
      }
      int[] exp = expected.stream().mapToInt(Integer::intValue).toArray();
      double margin = agg[idx[budget - window - 1]] - agg[idx[budget - window]];
      assertEquals(Arrays.toString(exp), Arrays.toString(rec.held[0][h]),
          "head " + h + " boundary margin " + margin + " seed " + seed);
    }
  }

  /**
   * H2O reference: scores are the accumulated attention (summed over the group) of every query run so
   * far; after each prefill chunk and each decode step the lowest-scored tokens outside the recent
   * ones go until heavy + recent remain. evictFirst: decode evicts before the step's attention (the
   * implementation's order); otherwise the step attends to the new token and what was kept, adds its
   * row, then evicts (the paper's order).
   */
  static List<int[]> h2oReference(AttentionShape sh, float[] q, float[] k, int prompt, int chunk, int total,
      int heavy, int recent, boolean evictFirst) {
    int group = sh.groupSize();
    List<int[]> heldPerStep = new ArrayList<>(); // per decode step: what each KV head attends to, head-major
    List<List<Integer>> S = new ArrayList<>();
    List<double[]> score = new ArrayList<>();
    for (int h = 0; h < sh.kvHeads(); h++) {
      S.add(new ArrayList<>());
      score.add(new double[total]);
    }
    for (int h = 0; h < sh.kvHeads(); h++) {
      List<Integer> set = S.get(h);
      double[] sc = score.get(h);
      for (int t0 = 0; t0 < prompt; t0 += chunk) {
        int c = Math.min(chunk, prompt - t0);
        for (int t = t0; t < t0 + c; t++) {
          set.add(t);
        }
        for (int t = t0; t < t0 + c; t++) {
          List<Integer> keys = new ArrayList<>();
          for (int j : set) {
            if (j <= t) {
              keys.add(j);
            }
          }
          for (int g = 0; g < group; g++) {
            double[] a = softmaxRow(sh, q, t, h * group + g, k, keys);
            for (int i = 0; i < keys.size(); i++) {
              sc[keys.get(i)] += a[i];
            }
          }
        }
        enforce(set, sc, heavy, recent);
      }
    }
    for (int t = prompt; t < total; t++) {
      List<Integer> attended = new ArrayList<>();
      for (int h = 0; h < sh.kvHeads(); h++) {
        List<Integer> set = S.get(h);
        double[] sc = score.get(h);
        set.add(t);
        if (evictFirst) {
          enforce(set, sc, heavy, recent);
        }
        List<Integer> keys = new ArrayList<>(set);
        attended.addAll(keys);
        for (int g = 0; g < group; g++) {
          double[] a = softmaxRow(sh, q, t, h * group + g, k, keys);
          for (int i = 0; i < keys.size(); i++) {
            sc[keys.get(i)] += a[i];
          }
        }
        if (!evictFirst) {
          enforce(set, sc, heavy, recent);
        }
      }
      heldPerStep.add(attended.stream().mapToInt(Integer::intValue).toArray());
    }
    return heldPerStep;
  }

  static void enforce(List<Integer> set, double[] sc, int heavy, int recent) {
    if (set.size() <= heavy + recent) {
      return;
    }
    int older = set.size() - recent;
    List<Integer> cand = new ArrayList<>(set.subList(0, older));
    cand.sort((a, b) -> sc[a] != sc[b] ? Double.compare(sc[b], sc[a]) : Integer.compare(a, b));
    TreeSet<Integer> keep = new TreeSet<>(cand.subList(0, heavy));
    keep.addAll(set.subList(older, set.size()));
    set.clear();
    set.addAll(keep);
  }

  @ParameterizedTest(name = "group={0} chunk={1} evictFirst={2}")
  @CsvSource({"1, 200, true, dense", "4, 200, true, dense", "8, 200, true, dense", "4, 50, true, late",
      "8, 33, true, gaps", "2, 20, true, dense"})
  void h2oMatchesTheReference(int group, int chunk, boolean evictFirst, String mode) {
    long seed = TestData.seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    AttentionShape sh = new AttentionShape(1, 2 * group, 2, 16);
    int prompt = 200, decode = 400, total = prompt + decode, heavy = 24, recent = 16;
    int qw = sh.queryWidth(), kw = sh.kvWidth();
    float[] q = TestData.gaussian(rnd, total * qw, 1.5);
    float[] k = TestData.gaussian(rnd, total * kw, 1.5);
    float[] v = TestData.gaussian(rnd, total * kw, 1);
    List<int[]> ref = h2oReference(sh, q, k, prompt, chunk, total, heavy, recent, evictFirst);
    RetentionPoliciesTest.Recorder rec = new RetentionPoliciesTest.Recorder(new H2O(heavy, recent));
    try (KVCache cache = KVCacheStrategy.builder().codec(StorageCodec.f32()).retention(rec).build().newCache(sh)) {
      prefill(cache, sh, positions(mode, total), prompt, chunk, q, k, v, !mode.equals("dense"));
      float[] out = new float[qw];
      for (int t = prompt; t < total; t++) {
        cache.decode(0, q, t * qw, k, t * kw, v, t * kw, out, 0);
        int[] pos = positions(mode, total);
        for (int i = prompt; i < total; i++) {
          pos[i] = pos[prompt - 1] + i - prompt + 1;
        }
        int[] got = Arrays.stream(rec.held[0]).flatMapToInt(Arrays::stream).toArray();
        int[] refPos = Arrays.stream(ref.get(t - prompt)).map(i -> pos[i]).toArray();
        for (int[] layerHeld : cache.stats().retained()) {
          for (int held : layerHeld) {
            assertEquals(heavy + recent, held, "held after decode t=" + t);
          }
        }
        assertEquals(Arrays.toString(refPos), Arrays.toString(got), "attended at decode t=" + t + " seed " + seed);
      }
    }
  }
}
