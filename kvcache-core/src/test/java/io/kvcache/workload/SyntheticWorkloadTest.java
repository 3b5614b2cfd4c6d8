package io.kvcache.workload;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.codec.StorageCodec;
import io.kvcache.core.AttentionShape;
import io.kvcache.core.Strategies;
import java.util.Arrays;
import org.junit.jupiter.api.Test;

/** The synthetic workloads have the structure they claim, and fidelity measures what it says. */
class SyntheticWorkloadTest {

  static final AttentionShape SHAPE = new AttentionShape(2, 8, 2, 64);

  @Test
  void sameSpecSameArraysOtherSeedOtherArrays() {
    SyntheticWorkload a = new SyntheticWorkload(SHAPE, WorkloadSpec.standard(300, 4, 11));
    SyntheticWorkload b = new SyntheticWorkload(SHAPE, WorkloadSpec.standard(300, 4, 11));
    SyntheticWorkload c = new SyntheticWorkload(SHAPE, WorkloadSpec.standard(300, 4, 12));
    assertArrayEquals(a.layer(1).k(), b.layer(1).k());
    assertArrayEquals(a.layer(1).q(), b.layer(1).q());
    assertFalse(Arrays.equals(a.layer(1).k(), c.layer(1).k()));
    assertFalse(Arrays.equals(a.layer(0).v(), a.layer(1).v()), "layers differ");
  }

  /** Attention weights of query token {@code t}, query head {@code head}, over tokens 0..t, float64. */
  static double[] weights(SyntheticWorkload.Layer l, int t, int head) {
    int d = SHAPE.headDim(), qw = SHAPE.queryWidth(), kw = SHAPE.kvWidth();
    int kvh = head / SHAPE.groupSize();
    double[] s = new double[t + 1];
    double max = Double.NEGATIVE_INFINITY;
    for (int j = 0; j <= t; j++) {
      double dot = 0;
      for (int c = 0; c < d; c++) {
        dot += (double) l.q()[t * qw + head * d + c] * l.k()[j * kw + kvh * d + c];
      }
      s[j] = dot / Math.sqrt(d);
      max = Math.max(max, s[j]);
    }
    double sum = 0;
    for (int j = 0; j <= t; j++) {
      s[j] = Math.exp(s[j] - max);
      sum += s[j];
    }
    for (int j = 0; j <= t; j++) {
      s[j] /= sum;
    }
    return s;
  }

  @Test
  void decodeQueriesFindTheNeedlesAndPromptQueriesTheSinks() {
    SyntheticWorkload w = new SyntheticWorkload(SHAPE, WorkloadSpec.standard(1000, 2, 5));
    SyntheticWorkload.Layer l = w.layer(0);
    for (int head : new int[] {0, 4}) { // one query head of the local KV head 0, one of KV head 1
      double[] p = weights(l, 1000, head);
      double uniform = 1.0 / p.length;
      for (int np : w.needlePositions()) {
        assertTrue(p[np] > 20 * uniform, "head " + head + ": needle at " + np + " gets " + p[np]);
      }
      double[] prompt = weights(l, 700, head);
      for (int s = 0; s < w.spec().sinks(); s++) {
        assertTrue(prompt[s] > 5.0 / prompt.length, "head " + head + ": sink " + s + " gets " + prompt[s]);
      }
    }
  }

  @Test
  void localHeadsFavourRecentTokens() {
    SyntheticWorkload w = new SyntheticWorkload(SHAPE, WorkloadSpec.standard(1000, 2, 6));
    SyntheticWorkload.Layer l = w.layer(0);
    double[] local = weights(l, 700, 0);  // KV head 0 is local (a quarter of 2 heads rounds to 1)
    double[] global = weights(l, 700, 4); // KV head 1 is not
    double localRecent = 0, globalRecent = 0;
    for (int j = 700 - 32; j <= 700; j++) {
      localRecent += local[j];
      globalRecent += global[j];
    }
    assertTrue(localRecent > 2 * globalRecent, "recent mass local " + localRecent + " vs global " + globalRecent);
  }

  /**
   * The harness itself: it measures zero for the reference strategy (the full f32 cache, run again: a
   * determinism check, not an accuracy check; the kernels' accuracy against float64 is
   * AttentionAccuracyTest's), f16's rounding for the f16 cache, and a large error for a window that
   * misses the needles.
   */
  @Test
  void harnessMeasuresZeroForTheReferenceRoundingForF16AndTheNeedlesStreamingLoses() {
    SyntheticWorkload w = new SyntheticWorkload(SHAPE, WorkloadSpec.standard(600, 8, 9));
    Fidelity.Result f32 = Fidelity.compare(Strategies.full(StorageCodec.f32()), w, 128);
    Fidelity.Result f16 = Fidelity.compare(Strategies.full(), w, 128);
    Fidelity.Result stream = Fidelity.compare(Strategies.streamingLLM(4, 64), w, 128);
    assertTrue(f32.meanError() < 1e-5, "the reference strategy run twice: " + f32.meanError());
    assertTrue(f16.meanError() < 2e-3, "f16 rounding only: " + f16.meanError());
    assertTrue(stream.meanError() > 0.1, "a 68-token window misses the needles: " + stream.meanError());
    assertEquals(68, stream.stats().maxRetained(0));
  }

  @Test
  void specRejectsBadRanges() {
    IllegalArgumentException z = assertThrows(IllegalArgumentException.class,
        () -> new WorkloadSpec(0, 1, 1, 0, 0, 0, new double[0], 1, 0));
    assertTrue(z.getMessage().contains("promptTokens") && z.getMessage().contains("got 0"), z.getMessage());
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
        () -> new WorkloadSpec(10, 1, 1, 0, 1.5, 0, new double[0], 1, 0));
    assertTrue(e.getMessage().contains("localHeadShare") && e.getMessage().contains("1.5"), e.getMessage());
    z = assertThrows(IllegalArgumentException.class,
        () -> new WorkloadSpec(10, 1, 1, 0, 0, 1, new double[] {1.0}, 1, 0));
    assertTrue(z.getMessage().contains("needleDepths") && z.getMessage().contains("got 1.0"), z.getMessage());
    e = assertThrows(IllegalArgumentException.class, () -> new WorkloadSpec(10, 1, 1, 0, 0, 0, null, 1, 0));
    assertTrue(e.getMessage().contains("needleDepths"), e.getMessage());
  }

  @Test
  void specsCompareByContent() {
    assertEquals(WorkloadSpec.standard(10, 1, 1), WorkloadSpec.standard(10, 1, 1));
    assertEquals(WorkloadSpec.standard(10, 1, 1).hashCode(), WorkloadSpec.standard(10, 1, 1).hashCode());
    org.junit.jupiter.api.Assertions.assertNotEquals(WorkloadSpec.standard(10, 1, 1), WorkloadSpec.standard(10, 1, 2));
    assertTrue(WorkloadSpec.standard(10, 1, 1).toString().contains("needleDepths=[0.1, 0.35, 0.6, 0.85]"));
  }
}
