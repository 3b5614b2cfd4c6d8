package io.kvcache.bench;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.core.KVCacheStrategy;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

/** The compare command end to end on a tiny workload, its output formats, and the preset grammar. */
class CompareCommandTest {

  static String run(String... args) {
    PrintStream old = System.out;
    ByteArrayOutputStream buf = new ByteArrayOutputStream();
    System.setOut(new PrintStream(buf, true, StandardCharsets.UTF_8));
    try {
      int rc = new CommandLine(new Main()).execute(Main.withDefaultCommand(args));
      assertEquals(0, rc, "exit code");
    } finally {
      System.setOut(old);
    }
    return buf.toString(StandardCharsets.UTF_8);
  }

  static final String[] TINY = {"--context", "96", "--decode", "3", "--shape", "1,4,1,16", "--chunk", "40",
      "--no-progress"};

  /** The tiny synthetic run without the embedded model's column. */
  static final String[] SYNTH = concat(TINY, "--no-model");

  @Test
  void csvHasOneRowPerPresetAndTheFullCacheIsExact() {
    String[] args = concat(SYNTH, "--format", "csv");
    String[] lines = run(args).strip().split("\n");
    assertEquals(1 + Presets.all().size(), lines.length, String.join("\n", lines));
    assertTrue(lines[0].startsWith("strategy,retained_per_head,kv_bytes"), lines[0]);
    String f32 = find(lines, "full-f32");
    String[] cells = f32.split(",");
    assertEquals(0.0, Double.parseDouble(cells[7]), 0.0, "full f32 vs the f32 reference: " + f32);
    String streaming = find(lines, "\"streamingLLM(4,20)\",");
    String[] rest = streaming.substring(streaming.indexOf("\",") + 2).split(","); // the name is quoted: it holds commas
    assertTrue(Double.parseDouble(rest[6]) > 0, "a window of 20 loses something: " + streaming);
    assertEquals(24, Integer.parseInt(rest[0]), "budget 96/4 tokens per head: " + streaming);
  }

  @Test
  void namedCombinationsAndJson() {
    String out = run(concat(SYNTH, "--format", "json", "-s", "f32+sinks(2,10)", "-s", "full-f16"));
    assertTrue(out.strip().startsWith("[") && out.strip().endsWith("]"), out);
    assertEquals(2, out.split("\"strategy\"").length - 1, out);
    assertTrue(out.contains("\"strategy\": \"f32+sinks(2,10)\", \"retainedPerHead\": 12"), out);
  }

  @Test
  void defaultCommandIsCompare() {
    assertArrayEquals(new String[] {"compare"}, Main.withDefaultCommand(new String[0]));
    assertArrayEquals(new String[] {"compare", "--context", "5"}, Main.withDefaultCommand(new String[] {"--context", "5"}));
    assertArrayEquals(new String[] {"jmh", "--include", "x"}, Main.withDefaultCommand(new String[] {"jmh", "--include", "x"}));
    assertArrayEquals(new String[] {"--help"}, Main.withDefaultCommand(new String[] {"--help"}));
  }

  @Test
  void chartIsWritten(@TempDir Path tmp) throws Exception {
    Path png = tmp.resolve("m.png");
    run(concat(SYNTH, "--chart", png.toString(), "-s", "full-f16", "-s", "streamingLLM"));
    byte[] head = Files.readAllBytes(png);
    assertTrue(head.length > 1000 && head[1] == 'P' && head[2] == 'N' && head[3] == 'G', "a PNG file");
  }

  @Test
  void aModelAddsBitsPerByteAndTheFullCacheMatchesItsF32Reference(@TempDir Path tmp) throws Exception {
    Path text = tmp.resolve("t.txt");
    StringBuilder sb = new StringBuilder();
    for (int i = 0; i < 40; i++) {
      sb.append("int x").append(i).append(" = ").append(i * 7 % 13).append(";\n");
    }
    Files.writeString(text, sb.toString());
    String model = Path.of("..", "kvcache-core", "src", "test", "resources", "tiny-llama").toString();
    String[] lines = run(concat(TINY, "--format", "csv", "--model", model, "--text", text.toString(), "-s", "full-f16",
        "-s", "f32+sinks(2,10)")).strip().split("\n");
    assertTrue(lines[0].endsWith(",bits_per_byte"), lines[0]);
    String f16 = find(lines, "full-f16");
    double bpb = Double.parseDouble(f16.substring(f16.lastIndexOf(',') + 1));
    assertTrue(bpb > 1 && bpb < 12, "a random byte-level model scores near log2(vocab) bits: " + f16);
    String window = find(lines, "\"f32+sinks(2,10)\"");
    assertTrue(Double.parseDouble(window.substring(window.lastIndexOf(',') + 1)) > 0, window);
  }

  @Test
  void needleTrialsAddAnAccuracyColumn(@TempDir Path tmp) throws Exception {
    Path text = tmp.resolve("t.txt");
    Files.writeString(text, "for (int i = 0; i < n; i++) { sum += a[i]; }\n".repeat(20));
    String model = Path.of("..", "kvcache-core", "src", "test", "resources", "tiny-llama").toString();
    String[] lines = run(concat(TINY, "--format", "csv", "--model", model, "--text", text.toString(), "-s", "full-f16",
        "--needle-trials", "2")).strip().split("\n");
    assertTrue(lines[0].endsWith(",bits_per_byte,needle_accuracy"), lines[0]);
    String row = find(lines, "full-f16");
    double acc = Double.parseDouble(row.substring(row.lastIndexOf(',') + 1));
    assertTrue(acc == 0.0 || acc == 0.5 || acc == 1.0, "two trials give 0, 1/2 or 1: " + row);
  }

  @Test
  void negativeLogLikelihoodIsTheSoftmaxCrossEntropy() {
    float[] logits = {1f, 2f, 3f, 1000f};
    double z = Math.exp(1 - 1000) + Math.exp(2 - 1000) + Math.exp(3 - 1000) + 1;
    assertEquals(Math.log(z), ModelQuality.negativeLogLikelihood(logits, 3), 1e-12);
    assertEquals(Math.log(z) + 997, ModelQuality.negativeLogLikelihood(logits, 2), 1e-9);
  }

  /** Runs through the project's error handler; returns stderr, asserting exit code 2 (invalid input). */
  static String refused(String... args) {
    PrintStream old = System.err;
    ByteArrayOutputStream buf = new ByteArrayOutputStream();
    System.setErr(new PrintStream(buf, true, StandardCharsets.UTF_8));
    try {
      int rc = Main.commandLine().execute(Main.withDefaultCommand(args));
      assertEquals(2, rc, "exit code of invalid input");
    } finally {
      System.setErr(old);
    }
    return buf.toString(StandardCharsets.UTF_8);
  }

  @Test
  void modelNeedsText() {
    String model = Path.of("..", "kvcache-core", "src", "test", "resources", "tiny-llama").toString();
    String err = refused(concat(TINY, "--model", model));
    assertTrue(err.contains("--model needs --text"), err);
  }

  @Test
  void conflictingAndOutOfRangeOptionsAreNamed() throws Exception {
    Path text = java.nio.file.Files.createTempFile("kvcache-text", ".txt");
    try {
      java.nio.file.Files.writeString(text, "print('hello')\n");
      String err = refused(concat(TINY, "--no-model", "--text", text.toString()));
      assertTrue(err.contains("--no-model cannot be combined with --model or --text"), err);
    } finally {
      java.nio.file.Files.deleteIfExists(text);
    }
    Path png = java.nio.file.Files.createTempFile("kvcache-speed", ".png");
    try {
      String err = refused(concat(SYNTH, "--speed-chart", png.toString(), "--contexts", "0"));
      assertTrue(err.contains("--contexts must be in [1,") && err.contains("got 0"), err);
    } finally {
      java.nio.file.Files.deleteIfExists(png);
    }
  }

  @Test
  void theTrainedModelIsTheDefaultAndScoresEveryStrategy() {
    String[] lines = run(concat(TINY, "--format", "csv")).strip().split("\n");
    assertTrue(lines[0].endsWith(",bits_per_byte"), lines[0]);
    assertEquals(1 + Presets.all().size(), lines.length, String.join("\n", lines));
    for (int i = 1; i < lines.length; i++) {
      double bits = Double.parseDouble(lines[i].substring(lines[i].lastIndexOf(',') + 1));
      // 96 bytes of held-out code as context, 3 scored: the trained model is far below 8 bits per byte.
      assertTrue(bits > 0 && bits < 6, lines[i]);
    }
  }

  @Test
  void unknownStrategyPartIsNamed() {
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Presets.resolve("f16+warp", 10));
    assertTrue(e.getMessage().contains("'warp'") && e.getMessage().contains("sinks(S,W)"), e.getMessage());
    KVCacheStrategy q = Presets.resolve("skvq(2,1.5,32)", 10);
    assertTrue(q.codec().name().contains("g32"), q.codec().name());
    KVCacheStrategy s = Presets.resolve("f32+sinks(4,60)", 10);
    assertEquals("f32", s.codec().name());
    assertEquals("sinks4+window60", s.retention().name());
    assertEquals(Presets.all().size(), Presets.resolveAll(List.of(), 64).size());
  }

  @Test
  void theNamesTheTablesPrintResolveBackToTheSameStrategies() {
    for (int budget : new int[] {64, 256, 1024}) {
      for (var preset : Presets.withSchedules().entrySet()) {
        String printed = preset.getValue().apply(budget).name();
        // Any budget argument: a printed name carries its own sizes.
        assertEquals(printed, Presets.resolveWithSchedules(printed, 77).name(), preset.getKey() + " at " + budget);
        if (Presets.all().containsKey(preset.getKey())) {
          assertEquals(printed, Presets.resolve(printed, 77).name(), preset.getKey() + " at " + budget);
        }
      }
    }
    assertEquals(Presets.resolve("snapKV", 64).name(), Presets.resolve("SNAPKV", 64).name());
    assertEquals(Presets.resolve("skvq-k2v1.5", 64).name(), Presets.resolve(" Skvq-K2V1.5 ", 64).name());
    // The schedules need a model run: compare does not take them, and says which presets it does take.
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Presets.resolve("fastKV", 64));
    assertTrue(e.getMessage().contains("kvCrush-h2o") && !e.getMessage().contains("swiftKV"), e.getMessage());
    assertTrue(Presets.resolveWithSchedules("FastKV", 64).name().startsWith("fastKV"));
  }

  @Test
  void theHelpOfCompareAndQualityNamesEveryPreset() {
    String compare = Main.commandLine().getSubcommands().get("compare").getUsageMessage();
    String quality = Main.commandLine().getSubcommands().get("quality").getUsageMessage();
    for (String name : Presets.withSchedules().keySet()) {
      if (Presets.all().containsKey(name)) {
        assertTrue(compare.contains(name), "compare --help lacks " + name + ":\n" + compare);
      }
      assertTrue(quality.contains(name), "quality --help lacks " + name + ":\n" + quality);
    }
  }

  @Test
  void combinationsChooseEachAxisOnceAndNameBadNumbers() {
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
        () -> Presets.resolve("sinks(4,1020)+keepAll", 10));
    assertTrue(e.getMessage().contains("retention is chosen twice"), e.getMessage());
    e = assertThrows(IllegalArgumentException.class, () -> Presets.resolve("f16+f32", 10));
    assertTrue(e.getMessage().contains("codec is chosen twice"), e.getMessage());
    e = assertThrows(IllegalArgumentException.class, () -> Presets.resolve("f32+", 10));
    assertTrue(e.getMessage().contains("unknown part ''"), e.getMessage());
    e = assertThrows(IllegalArgumentException.class, () -> Presets.resolve("sinks(4,99999999999)", 10));
    assertTrue(e.getMessage().contains("sinks(4,99999999999)") && e.getMessage().contains("out of range"),
        e.getMessage());
    KVCacheStrategy s = Presets.resolve("F32+Sinks(4,60)", 10);
    assertEquals("f32", s.codec().name());
    assertEquals("sinks4+window60", s.retention().name());
  }

  @Test
  void theBudgetedPoliciesComposeWithSkvqInTheGrammar() {
    assertEquals(io.kvcache.retention.SnapKV.of(96, 16, 7).name(),
        Presets.resolve("skvq+snapKV(96,16,7)", 10).retention().name());
    assertEquals(new io.kvcache.retention.H2O(48, 48).name(), Presets.resolve("skvq+h2o(48,48)", 10).retention().name());
    KVCacheStrategy c = Presets.resolve("skvq(2,1.5,32)+kvCrush(512)", 10);
    assertEquals(io.kvcache.kvcrush.KVCrush.builder(512).build().name(), c.retention().name());
    assertTrue(c.codec().name().contains("g32"), c.codec().name());
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
        () -> Presets.resolve("skvq+kvCrush(20)", 10));
    assertTrue(e.getMessage().contains("window"), e.getMessage()); // the policy's own check: 20 <= window 32
    e = assertThrows(IllegalArgumentException.class, () -> Presets.resolve("snapKV(96,16,7)+h2o(8,8)", 10));
    assertTrue(e.getMessage().contains("retention is chosen twice"), e.getMessage());
  }

  /** Options a user can get wrong fail at once with one line and a non-zero exit, before any work. */
  @Test
  void badOptionsFailBeforeTheRun(@TempDir Path tmp) {
    String[][] bad = {{"--format", "xml"}, {"--threads", "0"}, {"--budget", "1"}, {"--needle-trials", "-1"},
        {"--chart", tmp.resolve("no/such/dir/m.png").toString()}, {"--chart", tmp.resolve("m.pdf").toString()},
        {"--model", tmp.resolve("absent").toString(), "--text", tmp.resolve("absent.txt").toString()}};
    for (String[] b : bad) {
      java.io.StringWriter err = new java.io.StringWriter();
      CommandLine cl = Main.commandLine();
      cl.setErr(new java.io.PrintWriter(err, true));
      int rc = cl.execute(Main.withDefaultCommand(concat(TINY, b)));
      assertEquals(2, rc, String.join(" ", b) + ": " + err);
      assertTrue(err.toString().startsWith("compare: ") && err.toString().lines().count() == 1,
          String.join(" ", b) + ": " + err);
    }
  }

  @Test
  void badShapeIsRefusedWithTheExpectedForm() {
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> CompareCommand.parseShape("2,8,2"));
    assertTrue(e.getMessage().contains("layers,queryHeads,kvHeads,headDim"), e.getMessage());
  }

  static String find(String[] lines, String prefix) {
    for (String l : lines) {
      if (l.startsWith(prefix)) {
        return l;
      }
    }
    throw new AssertionError("no row starting with " + prefix);
  }

  static String[] concat(String[] a, String... b) {
    String[] r = new String[a.length + b.length];
    System.arraycopy(a, 0, r, 0, a.length);
    System.arraycopy(b, 0, r, a.length, b.length);
    return r;
  }
}
