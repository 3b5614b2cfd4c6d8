package io.kvcache.model;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.api.function.Executable;

/**
 * Broken files give a {@link ModelFormatException} naming the file, the tensor or key, the offset
 * and what was expected: never an OutOfMemoryError or a silently wrong model.
 */
class LoaderErrorsTest {

  static final Path TINY = Path.of("src/test/resources/tiny-llama");

  @TempDir
  Path tmp;

  static void assertMessage(Executable e, String... parts) {
    ModelFormatException ex = assertThrows(ModelFormatException.class, e);
    for (String p : parts) {
      assertTrue(ex.getMessage().contains(p), "message '" + ex.getMessage() + "' lacks '" + p + "'");
    }
  }

  /** A copy of the tiny Llama checkpoint whose safetensors bytes are replaced. */
  Path checkpointWith(byte[] safetensors) throws IOException {
    Path d = Files.createDirectories(tmp.resolve("ckpt"));
    Files.copy(TINY.resolve("config.json"), d.resolve("config.json"));
    Files.write(d.resolve("model.safetensors"), safetensors);
    return d;
  }

  /** A copy of the tiny Llama checkpoint whose config.json is {@code edit} applied to the original. */
  Path checkpointWithConfig(java.util.function.UnaryOperator<String> edit) throws IOException {
    Path d = Files.createDirectories(tmp.resolve("ckpt"));
    Files.copy(TINY.resolve("model.safetensors"), d.resolve("model.safetensors"),
        java.nio.file.StandardCopyOption.REPLACE_EXISTING);
    Files.writeString(d.resolve("config.json"), edit.apply(Files.readString(TINY.resolve("config.json"))));
    return d;
  }

  static byte[] safetensors(String header, int dataBytes) {
    byte[] h = header.getBytes(StandardCharsets.UTF_8);
    ByteBuffer b = ByteBuffer.allocate(8 + h.length + dataBytes).order(ByteOrder.LITTLE_ENDIAN);
    b.putLong(h.length).put(h);
    return b.array();
  }

  byte[] original() throws IOException {
    return Files.readAllBytes(TINY.resolve("model.safetensors"));
  }

  @Test
  void truncatedSafetensorsNamesTensorAndOffsets() throws IOException {
    byte[] o = original();
    Path d = checkpointWith(Arrays.copyOf(o, o.length - 100));
    assertMessage(() -> LlamaWeights.loadHuggingFace(d), "model.safetensors", "tensor ", "data_offsets",
        "truncated");
  }

  @Test
  void absurdHeaderLengthIsRejectedBeforeReading() throws IOException {
    byte[] o = original();
    ByteBuffer.wrap(o).order(ByteOrder.LITTLE_ENDIAN).putLong(0, Long.MAX_VALUE / 2);
    Path d = checkpointWith(o);
    assertMessage(() -> LlamaWeights.loadHuggingFace(d), "model.safetensors", "offset 0", "header length");
  }

  @Test
  void corruptJsonHeaderNamesOffset() throws IOException {
    Path d = checkpointWith(safetensors("{\"a\": {\"dtype\": \"F32\", ", 0));
    assertMessage(() -> LlamaWeights.loadHuggingFace(d), "model.safetensors", "malformed JSON at offset");
  }

  @Test
  void unknownDtypeNamesTensorAndExpectedTypes() throws IOException {
    Path d = checkpointWith(safetensors("{\"model.norm.weight\":{\"dtype\":\"I8\",\"shape\":[64],"
        + "\"data_offsets\":[0,64]}}", 64));
    assertMessage(() -> LlamaWeights.loadHuggingFace(d), "model.norm.weight", "dtype I8", "F32, F16 or BF16");
  }

  @Test
  void missingTensorIsNamed() throws IOException {
    Path d = checkpointWith(safetensors("{\"model.norm.weight\":{\"dtype\":\"F32\",\"shape\":[64],"
        + "\"data_offsets\":[0,256]}}", 256));
    assertMessage(() -> LlamaWeights.loadHuggingFace(d), "missing tensor model.embed_tokens.weight", "[260, 64]");
  }

  @Test
  void wrongShapeAgainstConfigIsNamed() throws IOException {
    Path d = Files.createDirectories(tmp.resolve("ckpt"));
    Files.copy(TINY.resolve("model.safetensors"), d.resolve("model.safetensors"));
    Files.writeString(d.resolve("config.json"), Files.readString(TINY.resolve("config.json"))
        .replace("\"intermediate_size\": 160", "\"intermediate_size\": 128"));
    assertMessage(() -> LlamaWeights.loadHuggingFace(d), "model.safetensors", "mlp.", "expected [128, 64]");
  }

  @Test
  void absurdShapeIsRejected() throws IOException {
    Path d = checkpointWith(safetensors("{\"x\":{\"dtype\":\"F32\",\"shape\":[2147483647,2147483647,4],"
        + "\"data_offsets\":[0,4]}}", 4));
    assertMessage(() -> LlamaWeights.loadHuggingFace(d), "tensor x", "absurd");
  }

  @Test
  void unsupportedArchitectureAndRopeTypeAreNamed() throws IOException {
    Path d = Files.createDirectories(tmp.resolve("ckpt"));
    Files.copy(TINY.resolve("model.safetensors"), d.resolve("model.safetensors"));
    String cfg = Files.readString(TINY.resolve("config.json"));
    Files.writeString(d.resolve("config.json"), cfg.replace("LlamaForCausalLM", "GPT2LMHeadModel"));
    assertMessage(() -> LlamaWeights.loadHuggingFace(d), "config.json", "GPT2LMHeadModel", "expected");
    Files.writeString(d.resolve("config.json"), cfg.replace("\"llama3\"", "\"yarn\""));
    assertMessage(() -> LlamaWeights.loadHuggingFace(d), "config.json", "yarn");
  }

  Path gguf() throws IOException {
    return TinyModels.write(tmp.resolve("m.gguf"), 7, 2, DType.F16);
  }

  @Test
  void ggufBadMagicAndVersionAreNamed() throws IOException {
    Path f = gguf();
    byte[] b = Files.readAllBytes(f);
    b[0] = 'X';
    Files.write(f, b);
    assertMessage(() -> LlamaWeights.loadGguf(f), "m.gguf", "offset 0", "magic");
    b[0] = 'G';
    b[4] = 2;
    Files.write(f, b);
    assertMessage(() -> LlamaWeights.loadGguf(f), "m.gguf", "offset 4", "version 2", "expected 3");
  }

  @Test
  void ggufTruncatedAnywhereGivesAFormatError() throws IOException {
    Path f = gguf();
    byte[] b = Files.readAllBytes(f);
    Path g = tmp.resolve("cut.gguf");
    for (int cut : new int[] {3, 20, 100, 400, 1500, b.length / 2, b.length - 1}) {
      Files.write(g, Arrays.copyOf(b, cut));
      assertMessage(() -> LlamaWeights.loadGguf(g), "cut.gguf", "offset");
    }
  }

  @Test
  void ggufUnknownTensorTypeNamesTensor() throws IOException {
    Path f = tmp.resolve("t.gguf");
    new GgufWriter().addTensor("w", DType.F32, 2, 4, new float[8]).write(f);
    byte[] b = Files.readAllBytes(f);
    // The tensor info ends with: type (u32) then offset (u64).
    int typeAt = indexOf(b, "w".getBytes(StandardCharsets.UTF_8), 40) + 1 + 4 + 16;
    ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN).putInt(typeAt, 2);
    Files.write(f, b);
    assertMessage(() -> GgufFile.read(f), "t.gguf", "tensor w", "ggml type 2", "expected");
  }

  @Test
  void ggufAbsurdCountsAreRejected() throws IOException {
    Path f = gguf();
    byte[] b = Files.readAllBytes(f);
    ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN).putLong(8, 1L << 50);
    Files.write(f, b);
    assertMessage(() -> LlamaWeights.loadGguf(f), "m.gguf", "offset 8", "absurd");
  }

  /** Each tensor is a memory mapping and the OS limits them: more than the cap is refused before any is made. */
  @Test
  void tooManyTensorsAreRefusedBeforeMapping() throws IOException {
    Path f = gguf();
    byte[] b = Files.readAllBytes(f);
    ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN).putLong(8, Safetensors.MAX_TENSORS + 1);
    Files.write(f, b);
    assertMessage(() -> LlamaWeights.loadGguf(f), "m.gguf", "offset 8", (Safetensors.MAX_TENSORS + 1) + " tensors",
        "at most " + Safetensors.MAX_TENSORS);
    StringBuilder header = new StringBuilder("{");
    for (int i = 0; i <= Safetensors.MAX_TENSORS; i++) {
      header.append(i == 0 ? "" : ",").append("\"t").append(i).append("\":{\"dtype\":\"F32\",\"shape\":[1],")
          .append("\"data_offsets\":[0,4]}");
    }
    header.append("}");
    byte[] h = header.toString().getBytes(StandardCharsets.UTF_8);
    ByteBuffer st = ByteBuffer.allocate(8 + h.length + 4).order(ByteOrder.LITTLE_ENDIAN);
    st.putLong(h.length).put(h).putFloat(1f);
    Path many = tmp.resolve("many.safetensors");
    Files.write(many, st.array());
    assertMessage(() -> Safetensors.read(many, new java.util.HashMap<>(), new java.util.HashMap<>()),
        "many.safetensors", (Safetensors.MAX_TENSORS + 1) + " tensors");
  }

  /** llama.cpp's rope_freqs are divisors of the base frequencies: zero, negative or infinite ones are refused. */
  @Test
  void ropeFrequencyDivisorsMustBePositiveAndFinite() throws IOException {
    Path f = tmp.resolve("rope.gguf");
    int half;
    try (LlamaWeights w = LlamaWeights.load(TINY)) {
      GgufWriter.writeLlama(w, f, DType.F32);
      half = w.config().headDim() / 2;
    }
    // Rewrite the file with its rope_freqs tensor (written for the llama3 rule, or added) all zeros.
    GgufFile g = GgufFile.read(f);
    GgufWriter again = new GgufWriter();
    for (var e : g.metadata().entrySet()) {
      if (e.getKey().equals("general.alignment")) {
        continue; // the writer writes its own
      }
      if (e.getValue() instanceof String v) {
        again.putString(e.getKey(), v);
      } else if (e.getValue() instanceof Long v) {
        again.putU32(e.getKey(), v.intValue());
      } else if (e.getValue() instanceof Double v) {
        again.putF32(e.getKey(), v.floatValue());
      }
    }
    boolean hadRope = false;
    for (var e : g.tensors().entrySet()) {
      Weight t = e.getValue();
      boolean rope = e.getKey().equals("rope_freqs.weight");
      hadRope |= rope;
      again.addTensor(e.getKey(), DType.F32, t.rows(), t.cols(), rope ? new float[t.rows() * t.cols()] : t.toFloats());
    }
    if (!hadRope) {
      again.addTensor("rope_freqs.weight", DType.F32, 1, half, new float[half]);
    }
    Path bad = tmp.resolve("bad-rope.gguf");
    again.write(bad);
    assertMessage(() -> LlamaWeights.loadGguf(bad), "bad-rope.gguf", "rope_freqs.weight element 0", "0.0",
        "positive finite divisor");
  }

  /** A chunk whose activations cannot fit one array is refused by name, not as a negative array size. */
  @Test
  void aChunkTooLargeForTheModelsActivationsIsRefused() {
    LlamaConfig wide = new LlamaConfig("wide", 64, 64, 65536, 1, 4, 2, 16, 1e-5f, 10000.0, null, false, true, false, 1,
        2, 4096);
    try (LlamaWeights w = RandomWeights.create(wide, 1)) {
      LlamaModel m = LlamaModel.of(w);
      IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
          () -> m.newSequence(io.kvcache.core.Strategies.full(), 65536));
      assertTrue(e.getMessage().contains("maxChunk") && e.getMessage().contains("65536 * 65536")
          && e.getMessage().contains("use maxChunk <= 32767"), e.getMessage());
      m.newSequence(io.kvcache.core.Strategies.full(), 1024).close();
    }
  }

  /** A key twice in a config.json or a safetensors header is refused: which value wins would be the reader's whim. */
  @Test
  void aKeyTwiceIsRefused() throws IOException {
    Path dir = tmp.resolve("dup");
    Files.createDirectories(dir);
    Files.writeString(dir.resolve("config.json"), "{\"num_hidden_layers\": 1, \"num_hidden_layers\": 2}");
    assertMessage(() -> LlamaWeights.loadHuggingFace(dir), "config.json", "\"num_hidden_layers\" appears again");
  }

  /** A config.json that is not UTF-8 names the file (it used to surface as a bare MalformedInputException). */
  @Test
  void aConfigThatIsNotUtf8IsNamed() throws IOException {
    Path dir = tmp.resolve("latin1");
    Files.createDirectories(dir);
    Files.write(dir.resolve("config.json"), new byte[] {'{', '"', (byte) 0xE9, '"', ':', '1', '}'});
    assertMessage(() -> LlamaWeights.loadHuggingFace(dir), "config.json", "not UTF-8");
  }

  /** A NaN or infinite logit would pick a meaningless token: generation stops, naming the token and step. */
  @Test
  void nonFiniteLogitsAreRefused() {
    Generator.checkFinite(new float[] {1f, -3f}, 0);
    IllegalStateException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalStateException.class,
        () -> Generator.checkFinite(new float[] {1f, Float.NaN, 2f}, 5));
    assertTrue(e.getMessage().contains("token 1 is NaN at generation step 5"), e.getMessage());
    e = org.junit.jupiter.api.Assertions.assertThrows(IllegalStateException.class,
        () -> Generator.checkFinite(new float[] {Float.POSITIVE_INFINITY}, 0));
    assertTrue(e.getMessage().contains("Infinity"), e.getMessage());
  }

  @Test
  void ggufMissingKeyAndTensorAreNamed() throws IOException {
    Path f = tmp.resolve("k.gguf");
    llama64().write(f);
    assertMessage(() -> LlamaWeights.loadGguf(f), "k.gguf", "missing key llama.attention.head_count");
    llama64().putU32("llama.attention.head_count", 4).putU32("llama.feed_forward_length", 96)
        .putU32("llama.block_count", 1).write(f);
    assertMessage(() -> LlamaWeights.loadGguf(f), "k.gguf", "missing tensor output_norm.weight");
  }

  @Test
  void gitLfsPointersAreNamedAsSuch() throws IOException {
    byte[] pointer = ("version https://git-lfs.github.com/spec/v1\noid sha256:"
        + "0".repeat(64) + "\nsize 1234567\n").getBytes(StandardCharsets.US_ASCII);
    Path d = checkpointWith(pointer);
    assertMessage(() -> LlamaWeights.loadHuggingFace(d), "model.safetensors", "Git LFS pointer", "git lfs pull");
    Path g = tmp.resolve("p.gguf");
    Files.write(g, pointer);
    assertMessage(() -> LlamaWeights.loadGguf(g), "p.gguf", "Git LFS pointer");
  }

  @Test
  void aTensorInTwoFilesOfACheckpointIsRefused() throws IOException {
    Path d = checkpointWith(original());
    Files.copy(d.resolve("model.safetensors"), d.resolve("model-00001-of-00001.safetensors"));
    assertMessage(() -> LlamaWeights.loadHuggingFace(d), "safetensors", "is also in");
  }

  @Test
  void slidingWindowBelowTheContextIsRefused() throws IOException {
    Path d = checkpointWithConfig(c -> c.replace("LlamaForCausalLM", "MistralForCausalLM")
        .replaceFirst("\\{", "{\"sliding_window\": 16, "));
    assertMessage(() -> LlamaWeights.loadHuggingFace(d), "config.json", "sliding_window is 16", "not supported");
    // A window of null, or as long as the context, changes nothing: accepted.
    Path ok = checkpointWithConfig(c -> c.replace("LlamaForCausalLM", "MistralForCausalLM")
        .replaceFirst("\\{", "{\"sliding_window\": null, "));
    LlamaWeights.loadHuggingFace(ok).close();
  }

  @Test
  void ggufDuplicateTensorsOversizedTensorsAndUnsupportedMetadataAreNamed() throws IOException {
    Path f = tmp.resolve("d.gguf");
    new GgufWriter().addTensor("w", DType.F32, 2, 4, new float[8]).addTensor("w", DType.F32, 2, 4, new float[8])
        .write(f);
    assertMessage(() -> GgufFile.read(f), "d.gguf", "tensor w appears twice");
    // Dimensions that pass one by one but whose byte size wraps past 2^63.
    new GgufWriter().addTensor("w", DType.F32, 2, 4, new float[8]).write(f);
    byte[] b = Files.readAllBytes(f);
    int dimsAt = indexOf(b, "w".getBytes(StandardCharsets.UTF_8), 40) + 1 + 4;
    ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN).putLong(dimsAt, Integer.MAX_VALUE).putLong(dimsAt + 8,
        Integer.MAX_VALUE);
    Files.write(f, b);
    assertMessage(() -> GgufFile.read(f), "d.gguf", "tensor w", "up to 2 GiB");
    Path k = tmp.resolve("k.gguf");
    new GgufWriter().putString("general.architecture", "llama").putString("llama.rope.scaling.type", "linear")
        .addTensor("token_embd.weight", DType.F32, 10, 64, new float[640]).write(k);
    assertMessage(() -> LlamaWeights.loadGguf(k), "k.gguf", "llama.rope.scaling.type", "linear");
    new GgufWriter().putString("general.architecture", "llama").putU32("llama.expert_count", 8)
        .addTensor("token_embd.weight", DType.F32, 10, 64, new float[640]).write(k);
    assertMessage(() -> LlamaWeights.loadGguf(k), "k.gguf", "llama.expert_count", "mixture-of-experts");
  }

  @Test
  void ggufHeadSizeComesFromKeyLengthAndPartialRotaryIsRefused() throws IOException {
    Path k = tmp.resolve("h.gguf");
    // Hidden 64 over 4 heads would be 16; rotary over 8 of them is partial.
    llama64().putU32("llama.attention.head_count", 4).putU32("llama.rope.dimension_count", 8).write(k);
    assertMessage(() -> LlamaWeights.loadGguf(k), "h.gguf", "llama.rope.dimension_count is 8", "head size 16",
        "part of the head");
    llama64().putU32("llama.attention.head_count", 4).putU32("llama.attention.key_length", 32)
        .putU32("llama.attention.value_length", 16).write(k);
    assertMessage(() -> LlamaWeights.loadGguf(k), "h.gguf", "llama.attention.value_length is 16", "key length 32");
    // A head size that is not hidden / heads (as in Mistral-Nemo) is read from key_length: the config says
    // 32 (rotary 32 matches), and loading goes on to the next thing this file lacks.
    llama64().putU32("llama.attention.head_count", 4).putU32("llama.attention.key_length", 32)
        .putU32("llama.rope.dimension_count", 32).write(k);
    assertMessage(() -> LlamaWeights.loadGguf(k), "h.gguf", "missing key llama.feed_forward_length");
  }

  /**
   * A head size other than hidden / heads (32 against 64 / 4): loaded from key_length, it runs, and
   * written back by {@link GgufWriter#writeLlama} and loaded again it gives the same logits (the writer
   * records the length; without it the reload would take 16 and refuse the weights' shapes).
   */
  @Test
  void aHeadSizeOtherThanHiddenOverHeadsLoadsRunsAndRoundTrips() throws IOException {
    long seed = TinyModels.seed();
    Path f = TinyModels.write(tmp.resolve("wide.gguf"), seed, 2, DType.F32, -1, 32);
    int[] tokens = {5, 17, 42, 99, 7};
    float[] first;
    try (LlamaWeights w = LlamaWeights.loadGguf(f)) {
      org.junit.jupiter.api.Assertions.assertEquals(32, w.config().headDim());
      first = lastLogits(w, tokens);
      GgufWriter.writeLlama(w, tmp.resolve("again.gguf"), DType.F32);
    }
    try (LlamaWeights w = LlamaWeights.loadGguf(tmp.resolve("again.gguf"))) {
      org.junit.jupiter.api.Assertions.assertEquals(32, w.config().headDim());
      org.junit.jupiter.api.Assertions.assertArrayEquals(first, lastLogits(w, tokens), "seed " + seed);
    }
    for (float x : first) {
      org.junit.jupiter.api.Assertions.assertTrue(Float.isFinite(x));
    }
  }

  /**
   * A GGUF's rope_freqs survive a second write: loaded from GGUF, the weights carry the llama3 rule as
   * frequencies and no rule in their config, and the writer used to test the config alone.
   */
  @Test
  void ropeFrequenciesSurviveAGgufRoundTrip() throws IOException {
    Path a = tmp.resolve("a.gguf"), b = tmp.resolve("b.gguf");
    float[] fromHf;
    try (LlamaWeights w = LlamaWeights.load(TINY)) {
      org.junit.jupiter.api.Assertions.assertNotNull(w.config().ropeScaling(), "the tiny model has a rope rule");
      fromHf = w.invFreq.clone();
      GgufWriter.writeLlama(w, a, DType.F32);
    }
    try (LlamaWeights w = LlamaWeights.loadGguf(a)) {
      org.junit.jupiter.api.Assertions.assertArrayEquals(fromHf, w.invFreq, 1e-12f, "first write");
      GgufWriter.writeLlama(w, b, DType.F32);
    }
    try (LlamaWeights w = LlamaWeights.loadGguf(b)) {
      org.junit.jupiter.api.Assertions.assertArrayEquals(fromHf, w.invFreq, 1e-12f, "second write");
    }
  }

  /** The writer pads its header to a multiple of 8 bytes, also when a name is not ASCII; it reads back. */
  @Test
  void aNonAsciiTensorNameIsPaddedInBytes() throws IOException {
    Path f = tmp.resolve("names.safetensors");
    new SafetensorsWriter().add("é", DType.F32, new int[] {2}, new float[] {1f, 2f}).write(f);
    long headerLength = ByteBuffer.wrap(Files.readAllBytes(f), 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
    org.junit.jupiter.api.Assertions.assertEquals(0, headerLength % 8, "header length " + headerLength);
    java.util.Map<String, Weight> read = new java.util.HashMap<>();
    Safetensors.read(f, read, new java.util.HashMap<>());
    org.junit.jupiter.api.Assertions.assertArrayEquals(new float[] {1f, 2f}, read.get("é").toFloats());
  }

  static float[] lastLogits(LlamaWeights w, int[] tokens) {
    float[] logits = new float[w.config().vocabSize()];
    try (LlamaModel.Sequence s = LlamaModel.of(w).newSequence(GenerationTest.F32, tokens.length)) {
      s.prefill(tokens, logits);
    }
    return logits;
  }

  /** A GGUF of the llama architecture with hidden size 64 and a token embedding, for a test's keys. */
  static GgufWriter llama64() {
    return new GgufWriter().putString("general.architecture", "llama").putU32("llama.embedding_length", 64)
        .addTensor("token_embd.weight", DType.F32, 10, 64, new float[640]);
  }

  static int indexOf(byte[] hay, byte[] needle, int from) {
    outer:
    for (int i = from; i <= hay.length - needle.length; i++) {
      for (int j = 0; j < needle.length; j++) {
        if (hay[i + j] != needle[j]) {
          continue outer;
        }
      }
      return i;
    }
    return -1;
  }
}
