package io.kvcache.model;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.codec.StorageCodec;
import io.kvcache.core.CacheStats;
import io.kvcache.core.KVCacheStrategy;
import io.kvcache.schedule.PrefillSchedule;
import java.io.IOException;
import java.nio.file.Path;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The decoder honours the prefill schedule's hooks; with neutral settings it is the full decoder. */
class ScheduleHooksTest {

  @TempDir
  Path tmp;

  static PrefillSchedule tsp(int layer, int keep) {
    return new PrefillSchedule() {
      public String name() {
        return "tsp(" + layer + "," + keep + ")";
      }

      public int selectionLayer(int layers) {
        return layer;
      }

      public int rowsKept(int promptTokens) {
        return Math.min(keep, promptTokens);
      }
    };
  }

  static PrefillSchedule skip(int from) {
    return new PrefillSchedule() {
      public String name() {
        return "skip(" + from + ")";
      }

      public int skipFromLayer(int layers) {
        return from;
      }
    };
  }

  static KVCacheStrategy with(PrefillSchedule s) {
    return KVCacheStrategy.builder().name(s.name()).codec(StorageCodec.f32()).schedule(s).build();
  }

  record Run(float[] logits, CacheStats stats, float[] next) {}

  static Run run(LlamaWeights w, PrefillSchedule s, int[] prompt) {
    float[] logits = new float[w.config().vocabSize()];
    float[] next = new float[w.config().vocabSize()];
    try (LlamaModel.Sequence seq = LlamaModel.of(w).newSequence(with(s), 5)) {
      seq.prefill(prompt, logits);
      CacheStats st = seq.cache().stats();
      // A token fixed by the prompt, not the argmax: two runs whose logits differ by rounding could
      // take different tokens on a near-tie, and their decode logits would then differ by far more.
      seq.decode(FastKVTest.decodeToken(prompt), next);
      return new Run(logits, st, next);
    }
  }

  static double maxDiff(float[] a, float[] b) {
    double m = 0;
    for (int i = 0; i < a.length; i++) {
      m = Math.max(m, Math.abs(a[i] - b[i]));
    }
    return m;
  }

  static double maxAbs(float[] a) {
    double m = 0;
    for (float x : a) {
      m = Math.max(m, Math.abs(x));
    }
    return m;
  }

  int[] prompt(SplittableRandom r, int n) {
    int[] p = new int[n];
    for (int i = 0; i < n; i++) {
      p[i] = r.nextInt(300);
    }
    return p;
  }

  @Test
  void selectionKeepingEveryRowEqualsTheFullDecoder() throws IOException {
    long seed = TinyModels.seed();
    SplittableRandom r = new SplittableRandom(seed);
    try (LlamaWeights w = LlamaWeights.loadGguf(TinyModels.write(tmp.resolve("m.gguf"), seed, 4, DType.F32))) {
      int[] p = prompt(r, 23);
      Run full = run(w, PrefillSchedule.full(), p);
      Run all = run(w, tsp(1, 23), p);
      assertTrue(maxDiff(full.logits, all.logits) <= 1e-5 * maxAbs(full.logits), "seed=" + seed);
      assertTrue(maxDiff(full.next, all.next) <= 1e-5 * maxAbs(full.next), "seed=" + seed);
    }
  }

  @Test
  void selectionPropagatesOnlyTheKeptRowsPastTheSelectionLayer() throws IOException {
    long seed = TinyModels.seed();
    SplittableRandom r = new SplittableRandom(seed);
    try (LlamaWeights w = LlamaWeights.loadGguf(TinyModels.write(tmp.resolve("m.gguf"), seed, 4, DType.F32))) {
      int[] p = prompt(r, 40);
      Run full = run(w, PrefillSchedule.full(), p);
      Run sel = run(w, tsp(1, 12), p);
      for (int l = 0; l < 4; l++) {
        for (int h = 0; h < 2; h++) {
          assertEquals(l <= 1 ? 40 : 12, sel.stats.retained()[l][h], "seed=" + seed + " layer " + l + " head " + h);
        }
      }
      assertTrue(maxDiff(full.logits, sel.logits) > 0, "seed=" + seed + ": dropping rows must change the output");
      for (float x : sel.next) {
        assertTrue(Float.isFinite(x), "seed=" + seed);
      }
    }
  }

  @Test
  void singleInputKvRunsLaterLayersOnlyForTheLastPromptToken() throws IOException {
    long seed = TinyModels.seed();
    SplittableRandom r = new SplittableRandom(seed);
    try (LlamaWeights w = LlamaWeights.loadGguf(TinyModels.write(tmp.resolve("m.gguf"), seed, 4, DType.F32))) {
      int[] p = prompt(r, 17);
      Run full = run(w, PrefillSchedule.full(), p);
      Run none = run(w, skip(4), p);
      assertEquals(0.0, maxDiff(full.logits, none.logits), "seed=" + seed + ": skip layer = depth is the full decoder");
      Run skipped = run(w, skip(2), p);
      for (int l = 0; l < 4; l++) {
        assertEquals(17, skipped.stats.retained()[l][0], "seed=" + seed + ": every layer caches every prompt token");
      }
      assertTrue(maxDiff(full.logits, skipped.logits) > 0, "seed=" + seed + ": K/V from an earlier state differ");
      // SingleInputKV rewires the later layers' K/V for every token, so skipping them for the prompt
      // loses nothing: feeding the prompt one token at a time (each running every layer) ends with the
      // same logits as the skipping prefill.
      float[] stepped = new float[w.config().vocabSize()];
      try (LlamaModel.Sequence seq = LlamaModel.of(w).newSequence(with(skip(2)), 5)) {
        seq.prefill(new int[] {p[0]}, stepped);
        for (int i = 1; i < p.length; i++) {
          seq.decode(p[i], stepped);
        }
      }
      assertTrue(maxDiff(skipped.logits, stepped) <= 1e-5 * maxAbs(skipped.logits), "seed=" + seed);
    }
  }

  @Test
  void singleInputKvUsesTheSkipLayersOwnNormAndProjections() throws IOException {
    // With skip = L-1, the last layer's prompt K/V come from the state leaving layer L-2, which is
    // that layer's real input: through its own input norm and K/V projections they are exactly the
    // full decoder's, and the prompt rows' outputs of the last layer feed nothing but their logits.
    // Any other norm or projection, or a state from another layer, breaks the equality.
    long seed = TinyModels.seed();
    SplittableRandom r = new SplittableRandom(seed);
    try (LlamaWeights w = LlamaWeights.loadGguf(TinyModels.write(tmp.resolve("m.gguf"), seed, 3, DType.F32))) {
      int[] p = prompt(r, 15);
      Run full = run(w, PrefillSchedule.full(), p);
      Run skipped = run(w, skip(2), p);
      assertTrue(maxDiff(full.logits, skipped.logits) <= 1e-5 * maxAbs(full.logits), "seed=" + seed);
    }
  }

  static PrefillSchedule across(int from) {
    return new PrefillSchedule() {
      public String name() {
        return "across(" + from + ")";
      }

      public int cacheLayer(int layer, int layers) {
        return layer >= from ? from + (layer - from) / 2 * 2 : layer;
      }
    };
  }

  @Test
  void acrossKvLayersReadTheirGroupOwnersCacheAndStoreNothing() throws IOException {
    // Layer 2 adds nothing to the residual and layer 3 has its norm and K/V projections, so both
    // compute the same K/V: sharing layer 2's cache must then give the full decoder's logits, in
    // prefill (several chunks) and in decode.
    long seed = TinyModels.seed();
    SplittableRandom r = new SplittableRandom(seed);
    try (LlamaWeights w = LlamaWeights.loadGguf(TinyModels.write(tmp.resolve("m.gguf"), seed, 4, DType.F32, 2))) {
      int[] p = prompt(r, 13);
      Run full = run(w, PrefillSchedule.full(), p);
      Run shared = run(w, across(2), p);
      assertTrue(maxDiff(full.logits, shared.logits) <= 1e-5 * maxAbs(full.logits), "seed=" + seed + " prefill");
      assertTrue(maxDiff(full.next, shared.next) <= 1e-5 * maxAbs(full.next), "seed=" + seed + " decode");
      assertEquals(13, shared.stats.retained()[2][0], "seed=" + seed);
      assertEquals(0, shared.stats.retained()[3][0], "seed=" + seed + ": a sharing layer stores nothing");
    }
    try (LlamaWeights w = LlamaWeights.loadGguf(TinyModels.write(tmp.resolve("n.gguf"), seed, 4, DType.F32))) {
      int[] p = prompt(r, 13);
      Run full = run(w, PrefillSchedule.full(), p);
      Run shared = run(w, across(2), p);
      assertTrue(maxDiff(full.logits, shared.logits) > 0, "seed=" + seed + ": other layers' K/V differ");
    }
  }

  @Test
  void unsupportedHookCombinationsAreRejected() throws IOException {
    try (LlamaWeights w = LlamaWeights.loadGguf(TinyModels.write(tmp.resolve("m.gguf"), 3, 4, DType.F32))) {
      PrefillSchedule later = new PrefillSchedule() {
        public String name() {
          return "later";
        }

        public int cacheLayer(int layer, int layers) {
          return layer == 1 ? 2 : layer;
        }
      };
      IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
          () -> LlamaModel.of(w).newSequence(with(later), 4));
      assertTrue(e.getMessage().contains("cacheLayer(1) = 2"), e.getMessage());
      PrefillSchedule both = new PrefillSchedule() {
        public String name() {
          return "both";
        }

        public int selectionLayer(int layers) {
          return 1;
        }

        public int skipFromLayer(int layers) {
          return 2;
        }
      };
      assertThrows(IllegalArgumentException.class, () -> LlamaModel.of(w).newSequence(with(both), 4));
    }
  }
}
