package io.kvcache.kvcrush;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.codec.HeadStore;
import io.kvcache.codec.StorageCodec;
import io.kvcache.core.AttentionShape;
import io.kvcache.core.KVCache;
import io.kvcache.core.KVCacheStrategy;
import io.kvcache.core.TestData;
import io.kvcache.retention.LayerAccess;
import io.kvcache.retention.RetentionPolicy;
import io.kvcache.retention.SnapKV;
import java.util.Arrays;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * The parts of KVCrush that follow the authors' implementations: the top-half signature bit, the
 * buckets and their representatives, the budget split, and candidates drawn only from what the
 * importance policy evicts.
 */
class KVCrushTest {

  static final AttentionShape SHAPE = new AttentionShape(2, 8, 2, 32);

  @Test
  void signatureBitMarksExactlyTheTopHalfOfTheHeadsScores() {
    long seed = TestData.seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    for (int n : new int[] {1, 2, 7, 64, 301}) {
      float[] score = new float[n + 3];
      for (int i = 0; i < score.length; i++) {
        // Coarse values so that ties occur, as they do after max pooling.
        score[i] = rnd.nextInt(8);
      }
      int words = 2, bit = 70; // a bit in the second word
      long[] sig = new long[n * words];
      KVCrush.setHalfBits(score, 3, n, bit, sig, words, new boolean[n], new long[n]);
      int set = 0;
      float minSet = Float.POSITIVE_INFINITY, maxUnset = Float.NEGATIVE_INFINITY;
      for (int i = 0; i < n; i++) {
        assertEquals(0L, sig[i * words], "only the asked bit is touched, seed " + seed);
        boolean on = (sig[i * words + 1] & (1L << (bit & 63))) != 0;
        set += on ? 1 : 0;
        if (on) {
          minSet = Math.min(minSet, score[3 + i]);
        } else {
          maxUnset = Math.max(maxUnset, score[3 + i]);
        }
      }
      assertEquals(n / 2, set, "exactly half of " + n + " tokens, seed " + seed);
      assertTrue(set == 0 || set == n || minSet >= maxUnset, "the set half scores highest, n " + n + " seed " + seed);
    }
  }

  /** The tokens the importance policy left out, sorted by Hamming distance to the anchor, then position. */
  static Integer[] candidatesByDistanceThenPosition(long[] sig, long anchor, boolean[] kept) {
    Integer[] cand = java.util.stream.IntStream.range(0, kept.length).filter(i -> !kept[i]).boxed()
        .toArray(Integer[]::new);
    Arrays.sort(cand, (a, b) -> {
      int da = Long.bitCount(sig[a] ^ anchor), db = Long.bitCount(sig[b] ^ anchor);
      return da != db ? Integer.compare(da, db) : Integer.compare(a, b);
    });
    return cand;
  }

  @Test
  void oneRepresentativePerBucketInDistanceThenPositionOrder() {
    long seed = TestData.seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    int n = 200, words = 1, reps = 17;
    long[] sig = new long[n];
    for (int i = 0; i < n; i++) {
      sig[i] = rnd.nextInt(16); // 4-bit signatures: many ties of distance
    }
    long[] anchor = {0b0101};
    boolean[] keep = new boolean[n];
    for (int i = 0; i < n; i++) {
      keep[i] = rnd.nextInt(4) == 0; // the importance policy's choice
    }
    boolean[] before = keep.clone();
    int kept = KVCrush.keepRepresentatives(sig, words, anchor, n, reps, null, keep, new long[n]);
    assertEquals(reps, kept, "one representative per bucket, seed " + seed);

    // Reference: candidates ordered by (distance, position), split into reps equal buckets.
    Integer[] cand = candidatesByDistanceThenPosition(sig, anchor[0], before);
    boolean[] expected = before.clone();
    for (int b = 0; b < reps; b++) {
      expected[cand[(int) ((long) b * cand.length / reps)]] = true;
    }
    assertArrayEquals(expected, keep, "first of each bucket, seed " + seed);
    for (int i = 0; i < n; i++) {
      assertTrue(!before[i] || keep[i], "the importance policy's tokens stay, seed " + seed);
    }

    // Fewer candidates than buckets: every candidate is kept.
    boolean[] few = new boolean[n];
    Arrays.fill(few, true);
    few[3] = few[50] = false;
    assertEquals(2, KVCrush.keepRepresentatives(sig, words, anchor, n, reps, null, few, new long[n]));
    assertTrue(few[3] && few[50]);
  }

  @Test
  void mostImportantRepresentativeIsTheBucketsHighestScoredToken() {
    long seed = TestData.seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    int n = 300, words = 1, reps = 23;
    long[] sig = new long[n];
    float[] score = new float[n];
    boolean[] keep = new boolean[n];
    for (int i = 0; i < n; i++) {
      sig[i] = rnd.nextInt(8);
      score[i] = rnd.nextInt(40); // integer scores: ties inside buckets
      keep[i] = rnd.nextInt(5) == 0;
    }
    long[] anchor = {0b011};
    boolean[] before = keep.clone();
    assertEquals(reps, KVCrush.keepRepresentatives(sig, words, anchor, n, reps, score, keep, new long[n]));

    Integer[] cand = candidatesByDistanceThenPosition(sig, anchor[0], before);
    boolean[] expected = before.clone();
    boolean differs = false;
    for (int b = 0; b < reps; b++) {
      int lo = (int) ((long) b * cand.length / reps), hi = (int) ((long) (b + 1) * cand.length / reps);
      int best = cand[lo];
      for (int e = lo + 1; e < hi; e++) {
        if (score[cand[e]] > score[best]) {
          best = cand[e]; // strictly greater: ties stay with the earlier token
        }
      }
      expected[best] = true;
      differs |= best != cand[lo];
    }
    assertTrue(differs, "the case must tell the two choices apart, seed " + seed);
    assertArrayEquals(expected, keep, "highest score of each bucket, ties to the first, seed " + seed);
  }

  @Test
  void representativeChoiceIsValidatedAndNamed() {
    KVCrush first = KVCrush.builder(512).build();
    KVCrush most = KVCrush.builder(512).representative(KVCrush.Representative.MOST_IMPORTANT).build();
    assertEquals(KVCrush.Representative.FIRST, first.representative());
    assertEquals(KVCrush.Representative.MOST_IMPORTANT, most.representative());
    assertEquals("kvCrush(512,snapkv,crush=120,random)", first.name());
    assertEquals("kvCrush(512,snapkv,crush=120,random,most-important)", most.name());
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
        () -> KVCrush.builder(512).representative(null));
    assertTrue(e.getMessage().contains("representative"), e.getMessage());
  }

  @Test
  void crushShareIsOfTheBudgetOutsideTheWindow() {
    assertEquals(120, KVCrush.builder(512).build().crushTokens()); // floor(0.25 * (512 - 32))
    assertEquals(48, KVCrush.builder(512).crushShare(0.1).build().crushTokens()); // floor(0.1 * 480)
    assertEquals(20, KVCrush.builder(96).window(16).build().crushTokens()); // floor(0.25 * 80)
    // H2O's recent tokens are part of its own budget: the share is of the whole budget.
    assertEquals(128, KVCrush.builder(512).importance(KVCrush.Importance.H2O).build().crushTokens());
  }

  @Test
  void meanAnchorIsTheMajorityBitOverEveryScoredToken() {
    int n = 5, words = 1;
    long[] sig = {0b011, 0b001, 0b001, 0b110, 0b100};
    long[] out = new long[1];
    KVCrush.anchorBits(KVCrush.Anchor.MEAN, 0, 0, 3, sig, words, n, out);
    assertEquals(0b001, out[0]); // bit 0: 3 of 5; bit 1: 2 of 5; bit 2: 2 of 5
    KVCrush.anchorBits(KVCrush.Anchor.MEAN, 0, 0, 3, sig, words, 4, out);
    // First four tokens: bit 0 in 3 of 4; bit 1 in exactly 2 of 4, not a majority (mean > 0.5).
    assertEquals(0b001, out[0], "a bit set in exactly half of the tokens is not a majority");
    KVCrush.anchorBits(KVCrush.Anchor.ALTERNATING, 0, 0, 3, sig, words, n, out);
    assertEquals(0b010, out[0]);
    long[] r1 = new long[1], r2 = new long[1];
    KVCrush.anchorBits(KVCrush.Anchor.RANDOM, 5, 1, 64, sig, words, n, r1);
    KVCrush.anchorBits(KVCrush.Anchor.RANDOM, 5, 1, 64, sig, words, n, r2);
    assertEquals(r1[0], r2[0], "the random anchor repeats for a seed and layer");
  }

  /**
   * On random inputs, every KV head holds SnapKV's own choice at the importance share (the window and
   * the top pooled tokens) plus exactly {@code crush} more tokens, all from what SnapKV evicts, and the
   * whole selection repeats run to run.
   */
  @Test
  void representativesComeOnlyFromTheTokensTheImportancePolicyEvicts() {
    long seed = TestData.seed();
    int prompt = 400, budget = 120, window = 16;
    KVCrush crush = KVCrush.builder(budget).window(window).build();
    int importance = budget - crush.crushTokens();
    Inputs in = Inputs.random(seed, prompt);
    int[][][] crushHeld = held(crush, in, prompt);
    int[][][] snapHeld = held(SnapKV.of(importance, window, 7), in, prompt);
    for (int layer = 0; layer < SHAPE.layers(); layer++) {
      for (int h = 0; h < SHAPE.kvHeads(); h++) {
        int[] c = crushHeld[layer][h], s = snapHeld[layer][h];
        String where = "layer " + layer + " head " + h + " seed " + seed;
        assertEquals(budget, c.length, where);
        for (int p : s) {
          assertTrue(Arrays.binarySearch(c, p) >= 0, "SnapKV's token " + p + " kept: " + where);
        }
        assertEquals(crush.crushTokens(), c.length - s.length, "representatives beyond SnapKV's set: " + where);
      }
    }
    assertTrue(Arrays.deepEquals(crushHeld, held(crush, in, prompt)), "deterministic, seed " + seed);
  }

  /**
   * The signature bit of a KV head comes from the group's aggregated score (as in the authors' vLLM
   * integration), so the order of the query heads inside a group cannot change what is kept; a
   * per-query-head signature would move bits against an asymmetric anchor (random, alternating).
   */
  @Test
  void selectionDependsOnTheGroupsScoreNotOnTheOrderOfItsQueryHeads() {
    long seed = TestData.seed();
    int prompt = 400, budget = 120, window = 16;
    int d = SHAPE.headDim(), qw = SHAPE.queryWidth(), g = SHAPE.groupSize();
    Inputs in = Inputs.random(seed, prompt);
    float[] swapped = in.q.clone();
    for (int t = 0; t < prompt; t++) {
      for (int h = 0; h < SHAPE.kvHeads(); h++) {
        // Swap the first two query heads of every group: a + b == b + a exactly, so the group's
        // mean score is bit-identical, while a per-query-head signature would swap two bits.
        System.arraycopy(in.q, t * qw + (h * g) * d, swapped, t * qw + (h * g + 1) * d, d);
        System.arraycopy(in.q, t * qw + (h * g + 1) * d, swapped, t * qw + (h * g) * d, d);
      }
    }
    Inputs sw = new Inputs(swapped, in.k, in.v);
    for (KVCrush.Anchor a : KVCrush.Anchor.values()) {
      KVCrush crush = KVCrush.builder(budget).window(window).anchor(a).build();
      assertTrue(Arrays.deepEquals(held(crush, in, prompt), held(crush, sw, prompt)), a + ", seed " + seed);
    }
  }

  /** Positions held per layer and KV head after {@code endPrefill}, sorted. */
  private static int[][][] held(RetentionPolicy policy, Inputs in, int prompt) {
    int[][][] out = new int[SHAPE.layers()][SHAPE.kvHeads()][];
    try (KVCache cache = KVCacheStrategy.builder().codec(StorageCodec.f32()).retention(new Capture(policy, out))
        .build().newCache(SHAPE)) {
      int qw = SHAPE.queryWidth(), kw = SHAPE.kvWidth(), chunk = 64;
      float[] o = new float[prompt * qw];
      for (int t = 0; t < prompt; t += chunk) {
        int c = Math.min(chunk, prompt - t);
        for (int layer = 0; layer < SHAPE.layers(); layer++) {
          cache.prefill(layer, c, null, in.q, t * qw, in.k, t * kw, in.v, t * kw, o, t * qw);
        }
      }
      cache.endPrefill();
    }
    return out;
  }

  /** Records the positions each KV head holds after the wrapped policy's {@code endPrefill}. */
  private record Capture(RetentionPolicy inner, int[][][] out) implements RetentionPolicy {
    @Override
    public String name() {
      return inner.name();
    }

    @Override
    public int observationWindow() {
      return inner.observationWindow();
    }

    @Override
    public State newState(AttentionShape shape) {
      State s = inner.newState(shape);
      return new State() {
        @Override
        public void afterAppend(LayerAccess layer, boolean decode) {
          s.afterAppend(layer, decode);
        }

        @Override
        public void endPrefill(LayerAccess layer) {
          s.endPrefill(layer);
          for (int h = 0; h < shape.kvHeads(); h++) {
            HeadStore st = layer.store(h);
            int[] pos = new int[st.size()];
            int n = 0;
            for (int slot = 0; slot < st.pageCount() * HeadStore.PAGE_TOKENS; slot++) {
              if (st.position(slot) != HeadStore.EMPTY) {
                pos[n++] = st.position(slot);
              }
            }
            Arrays.sort(pos);
            out[layer.layer()][h] = pos;
          }
        }
      };
    }
  }

  /** Random queries, keys and values shared by every layer. */
  private record Inputs(float[] q, float[] k, float[] v) {
    static Inputs random(long seed, int tokens) {
      SplittableRandom rnd = new SplittableRandom(seed);
      return new Inputs(TestData.gaussian(rnd, tokens * SHAPE.queryWidth(), 1),
          TestData.gaussian(rnd, tokens * SHAPE.kvWidth(), 1), TestData.gaussian(rnd, tokens * SHAPE.kvWidth(), 1));
    }
  }
}
