package io.kvcache.model;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.codec.StorageCodec;
import io.kvcache.core.KVCacheStrategy;
import io.kvcache.core.Strategies;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * SwiftKV checkpoints in Snowflake's released layout, written by {@link CheckpointWriter} from a
 * random 4-layer model and read back by {@link LlamaWeights#loadHuggingFace}: the config sets the
 * schedule, the {@code _swiftkv} tensors are the ones used, inconsistent configs are refused.
 */
class SwiftKVCheckpointTest {

  @TempDir
  Path tmp;

  /**
   * How closely runs that should compute the same thing must agree (relative): the comparisons here
   * pair models loaded through different paths (the released layout against the base model), which
   * these tests do not require to round alike.
   */
  static final double SAME = 1e-5;

  static final String P2 = "model.layers.2.self_attn.";
  static final String P3 = "model.layers.3.self_attn.";

  LlamaWeights base(long seed) throws IOException {
    return LlamaWeights.loadGguf(TinyModels.write(tmp.resolve("base-" + seed + ".gguf"), seed, 4, DType.F32));
  }

  static KVCacheStrategy f32(KVCacheStrategy s) {
    return s.toBuilder().codec(StorageCodec.f32()).build();
  }

  static KVCacheStrategy scheduleOf(LlamaWeights w) {
    return f32(Strategies.swiftKV(w.swiftKV().orElseThrow().schedule(), StorageCodec.f32()));
  }

  Path write(CheckpointWriter cw, String name) throws IOException {
    Path d = tmp.resolve(name);
    cw.write(d);
    return d;
  }

  static void editConfig(Path dir, String from, String to) throws IOException {
    Path f = dir.resolve("config.json");
    String s = Files.readString(f, StandardCharsets.UTF_8);
    assertTrue(s.contains(from), "config.json must contain " + from);
    Files.writeString(f, s.replace(from, to), StandardCharsets.UTF_8);
  }

  static float bf16(float f) {
    return Float.intBitsToFloat(GgufWriter.bf16Bits(f) << 16);
  }

  static float[] perturbed(SplittableRandom r, int n) {
    return TinyModels.gaussian(r, n, 0.3, 0);
  }

  @Test
  void releasedLayoutCarriesTheSwiftKvTensorsAndTheConfigSetsTheSchedule() throws IOException {
    long seed = TinyModels.seed();
    try (LlamaWeights b = base(seed)) {
      CheckpointWriter cw = CheckpointWriter.swiftKV(b, new SwiftKVConfig(2, 2));
      assertTrue(cw.tensorNames().contains("model.norm_swiftkv.weight"));
      assertTrue(cw.tensorNames().contains(P2 + "q_proj_swiftkv.weight"));
      assertTrue(cw.tensorNames().contains(P3 + "q_proj_swiftkv.weight"));
      assertTrue(cw.tensorNames().contains(P2 + "k_proj_swiftkv.weight"));
      assertTrue(cw.tensorNames().contains(P2 + "v_proj_swiftkv.weight"));
      assertFalse(cw.tensorNames().contains(P3 + "k_proj_swiftkv.weight"), "layer 3 shares layer 2's projection");
      assertFalse(cw.tensorNames().contains("model.layers.1.self_attn.q_proj_swiftkv.weight"));
      Path d = write(cw, "swift");
      String cfg = Files.readString(d.resolve("config.json"));
      assertTrue(cfg.contains("\"LlamaSwiftKVForCausalLM\"") && cfg.contains("\"swiftkv\": true")
          && cfg.contains("\"num_key_value_layers\": 2") && cfg.contains("\"key_value_group_size\": 2"), cfg);
      try (LlamaWeights w = LlamaWeights.loadHuggingFace(d)) {
        assertEquals(new SwiftKVConfig(2, 2), w.swiftKV().orElseThrow());
        assertEquals(2, w.swiftKV().get().schedule().skipFromLayer(4));
        assertEquals(2, w.swiftKV().get().schedule().cacheLayer(3, 4));
        assertEquals("LlamaSwiftKVForCausalLM", w.config().architecture());
        FastKVTest.Run r = FastKVTest.run(w, scheduleOf(w), FastKVTest.prompt(new SplittableRandom(seed), 21));
        assertEquals(22, r.stats().retained()[2][0], "seed=" + seed);
        assertEquals(0, r.stats().retained()[3][0], "seed=" + seed + ": layer 3 shares layer 2's cache");
        for (float x : r.next()) {
          assertTrue(Float.isFinite(x), "seed=" + seed);
        }
      }
      // Released checkpoints are bf16: the _swiftkv tensors load in that dtype, element for element.
      Path bf = write(CheckpointWriter.swiftKV(b, new SwiftKVConfig(2, 2)).dtype(DType.BF16), "bf16");
      try (LlamaWeights w = LlamaWeights.loadHuggingFace(bf)) {
        Weight k = w.layers[2].wk;
        assertEquals(DType.BF16, k.type());
        // GGUF keeps RoPE pairs adjacent: Hugging Face row 5 of a 16-wide head (first half, pair 5) is
        // GGUF row 10, row 13 (second half, pair 5) is GGUF row 11.
        assertEquals(bf16(b.layers[2].wk.get(10, 7)), k.get(5, 7));
        assertEquals(bf16(b.layers[2].wk.get(11, 7)), k.get(13, 7));
        assertEquals(bf16(b.layers[2].wv.get(5, 7)), w.layers[2].wv.get(5, 7));
      }
    }
  }

  @Test
  void swiftKvTensorsEqualToThePlainOnesGiveThePlainModelUnderSwiftKV() throws IOException {
    // With one K/V-projecting layer past the skip point (4 layers, skip 2, groups of 2), the plain
    // model under swiftKV(0.5, 2) computes exactly what the checkpoint whose _swiftkv tensors are the
    // base's own does: same norm (layer 2's input norm), same projections, for every token.
    long seed = TinyModels.seed();
    try (LlamaWeights b = base(seed)) {
      Path plainDir = write(CheckpointWriter.plain(b), "plain");
      Path swiftDir = write(CheckpointWriter.swiftKV(b, new SwiftKVConfig(2, 2)), "swift");
      int[] p = FastKVTest.prompt(new SplittableRandom(seed), 25);
      try (LlamaWeights plain = LlamaWeights.loadHuggingFace(plainDir);
          LlamaWeights swift = LlamaWeights.loadHuggingFace(swiftDir)) {
        assertTrue(plain.swiftKV().isEmpty());
        FastKVTest.Run a = FastKVTest.run(plain, f32(Strategies.swiftKV(0.5, 2)), p);
        FastKVTest.Run c = FastKVTest.run(swift, scheduleOf(swift), p);
        assertTrue(FastKVTest.relDiff(a.logits(), c.logits()) <= SAME, "prefill, seed=" + seed);
        assertTrue(FastKVTest.relDiff(a.next(), c.next()) <= SAME, "decode, seed=" + seed);
        assertEquals(a.stats().payloadBytes(), c.stats().payloadBytes());
        // The plain model run plainly differs: the check above compares two SwiftKV computations.
        FastKVTest.Run full = FastKVTest.run(plain, Strategies.full(StorageCodec.f32()), p);
        assertTrue(FastKVTest.relDiff(full.logits(), c.logits()) > 1e-4, "seed=" + seed);
        // Skipping the later layers for prompt tokens is exact for a SwiftKV model: running every
        // layer for every token (no skipping) gives the same logits.
        FastKVTest.Run noSkip = FastKVTest.run(swift, Strategies.full(StorageCodec.f32()), p);
        assertTrue(FastKVTest.relDiff(noSkip.logits(), c.logits()) <= SAME, "seed=" + seed);
        assertTrue(FastKVTest.relDiff(noSkip.next(), c.next()) <= SAME, "seed=" + seed);
      }
    }
  }

  @Test
  void everySwiftKvTensorIsUsed() throws IOException {
    long seed = TinyModels.seed();
    SplittableRandom r = new SplittableRandom(seed);
    try (LlamaWeights b = base(seed)) {
      int[] p = FastKVTest.prompt(new SplittableRandom(seed), 19);
      float[] same;
      try (LlamaWeights w = LlamaWeights.loadHuggingFace(write(CheckpointWriter.swiftKV(b, new SwiftKVConfig(2, 2)),
          "same"))) {
        same = FastKVTest.run(w, scheduleOf(w), p).logits();
      }
      String[] names = {"model.norm_swiftkv.weight", P2 + "q_proj_swiftkv.weight", P3 + "q_proj_swiftkv.weight",
          P2 + "k_proj_swiftkv.weight", P2 + "v_proj_swiftkv.weight"};
      int[] sizes = {64, 64 * 64, 64 * 64, 32 * 64, 32 * 64};
      for (int i = 0; i < names.length; i++) {
        CheckpointWriter cw = CheckpointWriter.swiftKV(b, new SwiftKVConfig(2, 2));
        cw.tensor(names[i], perturbed(r, sizes[i]));
        try (LlamaWeights w = LlamaWeights.loadHuggingFace(write(cw, "diff" + i))) {
          float[] got = FastKVTest.run(w, scheduleOf(w), p).logits();
          assertTrue(FastKVTest.relDiff(same, got) > 1e-4, names[i] + " must change the logits, seed=" + seed);
        }
      }
      // The base model's own q/k/v projections of the SwiftKV layers are not used.
      CheckpointWriter cw = CheckpointWriter.swiftKV(b, new SwiftKVConfig(2, 2));
      cw.tensor(P2 + "k_proj.weight", perturbed(r, 32 * 64)).tensor(P3 + "q_proj.weight", perturbed(r, 64 * 64));
      try (LlamaWeights w = LlamaWeights.loadHuggingFace(write(cw, "unused"))) {
        assertTrue(FastKVTest.relDiff(same, FastKVTest.run(w, scheduleOf(w), p).logits()) <= SAME, "seed=" + seed);
      }
    }
  }

  @Test
  void skipLayerAtDepthOrSwiftKvOffIsThePlainModel() throws IOException {
    long seed = TinyModels.seed();
    try (LlamaWeights b = base(seed)) {
      int[] p = FastKVTest.prompt(new SplittableRandom(seed), 17);
      float[] plainLogits;
      try (LlamaWeights plain = LlamaWeights.loadHuggingFace(write(CheckpointWriter.plain(b), "plain"))) {
        plainLogits = FastKVTest.run(plain, Strategies.full(StorageCodec.f32()), p).logits();
      }
      Path atDepth = write(CheckpointWriter.plain(b), "depth");
      editConfig(atDepth, "\"max_position_embeddings\"",
          "\"swiftkv\": true, \"num_key_value_layers\": 4, \"key_value_group_size\": 1, \"max_position_embeddings\"");
      try (LlamaWeights w = LlamaWeights.loadHuggingFace(atDepth)) {
        assertTrue(w.swiftKV().isEmpty(), "no layer past num_key_value_layers = depth");
        assertTrue(FastKVTest.relDiff(plainLogits,
            FastKVTest.run(w, f32(Strategies.swiftKV(1.0, 1)), p).logits()) <= SAME, "seed=" + seed);
      }
      Path off = write(CheckpointWriter.swiftKV(b, new SwiftKVConfig(2, 1)), "off");
      editConfig(off, "\"swiftkv\": true", "\"swiftkv\": false");
      try (LlamaWeights w = LlamaWeights.loadHuggingFace(off)) {
        assertTrue(w.swiftKV().isEmpty(), "swiftkv: false runs the base model, as the modelling code does");
        assertTrue(FastKVTest.relDiff(plainLogits,
            FastKVTest.run(w, Strategies.full(StorageCodec.f32()), p).logits()) <= SAME, "seed=" + seed);
      }
    }
  }

  static void assertMessage(Path dir, String... parts) {
    ModelFormatException e = assertThrows(ModelFormatException.class, () -> LlamaWeights.loadHuggingFace(dir));
    for (String s : parts) {
      assertTrue(e.getMessage().contains(s), "message '" + e.getMessage() + "' must contain '" + s + "'");
    }
  }

  @Test
  void inconsistentConfigsAndMissingTensorsAreNamed() throws IOException {
    try (LlamaWeights b = base(5)) {
      String key = "\"num_key_value_layers\": 2";
      Path d = write(CheckpointWriter.swiftKV(b, new SwiftKVConfig(2, 2)), "a");
      editConfig(d, key, "\"num_key_value_layers\": 5");
      assertMessage(d, "config.json", "num_key_value_layers = 5", "num_hidden_layers = 4");
      editConfig(d, "\"num_key_value_layers\": 5", "\"num_key_value_layers\": 0");
      assertMessage(d, "num_key_value_layers = 0", "expected 1 to");
      editConfig(d, "\"num_key_value_layers\": 0", "\"num_key_value_layers\": 1");
      assertMessage(d, "key_value_group_size = 2", "must divide", "3");
      editConfig(d, "\"num_key_value_layers\": 1", "\"num_key_value_layers\": 2, \"kv_sharing_map\": {\"3\": 2}");
      assertMessage(d, "kv_sharing_map", "not supported");
      editConfig(d, ", \"kv_sharing_map\": {\"3\": 2}", "");
      editConfig(d, "\"swiftkv\": true", "\"swiftkv\": \"yes\"");
      assertMessage(d, "key swiftkv", "true or false", "yes");
      editConfig(d, "\"swiftkv\": \"yes\"", "\"swiftkv\": true");
      // Groups of 1 need layer 3's own K/V projection, which a groups-of-2 checkpoint lacks.
      editConfig(d, "\"key_value_group_size\": 2", "\"key_value_group_size\": 1");
      assertMessage(d, "missing tensor " + P3 + "k_proj_swiftkv.weight", "expected [32, 64]", "swiftkv: true");
      editConfig(d, "\"key_value_group_size\": 1", "\"key_value_group_size\": 2");
      try (LlamaWeights w = LlamaWeights.loadHuggingFace(d)) {
        assertTrue(w.swiftKV().isPresent(), "restored config loads");
      }
    }
  }

  @Test
  void aScheduleAgainstTheCheckpointIsRefused() throws IOException {
    try (LlamaWeights b = base(7);
        LlamaWeights w = LlamaWeights.loadHuggingFace(write(CheckpointWriter.swiftKV(b, new SwiftKVConfig(2, 1)),
            "s"))) {
      LlamaModel m = LlamaModel.of(w);
      IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
          () -> m.newSequence(Strategies.swiftKV(0.25, 1), 4));
      assertTrue(e.getMessage().contains("skips from layer 1") && e.getMessage().contains("num_key_value_layers = 2"),
          e.getMessage());
      e = assertThrows(IllegalArgumentException.class, () -> m.newSequence(Strategies.swiftKV(0.5, 2), 4));
      assertTrue(e.getMessage().contains("layer 3 read layer 2") && e.getMessage().contains("key_value_group_size = 1"),
          e.getMessage());
      m.newSequence(Strategies.swiftKV(0.5, 1), 4).close();
      m.newSequence(Strategies.full(), 4).close();
    }
  }
}
