package io.kvcache.bench;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.model.ByteTokenizer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

/** The quality harness end to end on a tiny model and on the embedded trained one, and its needles. */
class QualityCommandTest {

  static final String TINY_MODEL = Path.of("..", "kvcache-core", "src", "test", "resources", "tiny-llama").toString();

  static List<String[]> csv(String out) {
    List<String[]> rows = new ArrayList<>();
    for (String line : out.strip().split("\n")) {
      rows.add(line.split(",", -1));
    }
    return rows;
  }

  static String[] row(List<String[]> rows, String strategy, String budget) {
    for (String[] r : rows) {
      if (r[0].equals(strategy) && r[1].equals(budget)) {
        return r;
      }
    }
    throw new AssertionError("no row " + strategy + " at budget '" + budget + "'");
  }

  @Test
  void everyPresetAtEveryBudgetAndTheReferenceIsExact(@TempDir Path tmp) throws Exception {
    Path text = tmp.resolve("code.py");
    Files.writeString(text, "def add(a, b):\n    return a + b\n\nclass Point:\n    x: int = 0\n".repeat(40));
    String out = CompareCommandTest.run("quality", "--model", TINY_MODEL, "--text", text.toString(), "--context", "160",
        "--continuation", "24", "--windows", "2", "--needle-trials", "2", "--budgets", "32,64", "--threads", "2",
        "--chunk", "48", "--format", "csv", "--no-progress");
    List<String[]> rows = csv(out);
    assertEquals("strategy", rows.get(0)[0]);
    int cols = rows.get(0).length;
    for (String name : Presets.withSchedules().keySet()) {
      for (String b : Presets.budgeted(name) ? new String[] {"32", "64"} : new String[] {""}) {
        String[] r = row(rows, name, b);
        assertEquals(cols, r.length, name);
        int hits = Integer.parseInt(r[6]);
        int trials = Integer.parseInt(r[7]);
        assertEquals(name.equals("full-f32") ? 0 : 2, trials, name + " needle trials");
        assertTrue(hits >= 0 && hits <= trials, name);
        assertTrue(Double.parseDouble(r[4]) > 0, name + " bits per byte");
      }
    }
    String[] ref = row(rows, "full-f32", "");
    assertEquals(0.0, Double.parseDouble(ref[5]), 0.0, "the reference's increase over itself");
    for (int c = 9; c < cols; c++) {
      assertEquals(0.0, Double.parseDouble(ref[c]), 0.0, "the reference's error against itself");
    }
    assertEquals(1.0, Double.parseDouble(row(rows, "full-f16", "")[3]), 0.0, "f16 is the memory denominator");
    double f32 = Double.parseDouble(ref[3]);
    assertTrue(f32 > 1.9 && f32 <= 2.0, "f32 holds twice the values' bytes of f16 (the positions are shared): " + f32);
    String[] f16 = row(rows, "full-f16", "");
    for (int c = 9; c < cols; c++) {
      double e = Double.parseDouble(f16[c]);
      assertTrue(e > 0 && e < 5e-3, "f16 rounding alone: small but nonzero error, got " + e);
    }
    // A window of 160 tokens with 24 scored prefills 136; a 32-token budget must drop most of them.
    assertTrue(Double.parseDouble(row(rows, "streamingLLM", "32")[3]) < 0.5, "streamingLLM 32 holds < half");
    assertTrue(Double.parseDouble(row(rows, "streamingLLM", "32")[9]) > 0, "evicting changes attention");
  }

  @Test
  void axisCombinationsRunOnceAndSurviveTheCsvRoundTrip(@TempDir Path tmp) throws Exception {
    Path text = tmp.resolve("code.py");
    Files.writeString(text, "for i in range(10):\n    total += values[i] * 2\n".repeat(40));
    String spec = "f16+sinks(4,60)";
    String out = CompareCommandTest.run("quality", "--model", TINY_MODEL, "--text", text.toString(), "--context", "160",
        "--continuation", "24", "--windows", "1", "--needle-trials", "1", "--budgets", "32,64", "--threads", "1",
        "-s", spec, "--format", "csv", "--no-progress");
    List<String[]> rows = new ArrayList<>();
    for (String line : out.strip().split("\n")) {
      rows.add(QualityCommand.csvSplit(line));
    }
    String[] r = row(rows, spec, "");
    assertEquals(rows.get(0).length, r.length, "the quoted name keeps the columns in place");
    assertTrue(Double.parseDouble(r[3]) < 1.0, "64 of 136 prompt tokens held: less than f16's memory");
    Path csv = tmp.resolve("q.csv");
    Files.writeString(csv, out);
    Path png = tmp.resolve("q.png");
    String replot = CompareCommandTest.run("quality", "--replot", csv.toString(), "--chart", png.toString());
    assertTrue(replot.contains("(3 rows)"), replot);
    assertTrue(Files.size(png) > 1000, "a PNG was written");
    // A missing CSV, a chart in a missing directory and a bad number are named, with exit code 2.
    String err = CompareCommandTest.refused("quality", "--replot", tmp.resolve("none.csv").toString(), "--chart",
        png.toString());
    assertTrue(err.contains("--replot") && err.contains("none.csv: no such file"), err);
    err = CompareCommandTest.refused("quality", "--replot", csv.toString(), "--chart",
        tmp.resolve("no-dir").resolve("q.png").toString());
    assertTrue(err.contains("--chart"), err);
    Path bad = tmp.resolve("bad.csv");
    String[] lines = out.strip().split("\n");
    Files.writeString(bad, lines[0] + "\n" + lines[1].replaceFirst(",[0-9]+,", ",many,") + "\n");
    err = CompareCommandTest.refused("quality", "--replot", bad.toString(), "--chart", png.toString());
    assertTrue(err.contains("--replot " + bad + ": not a number"), err);
  }

  @Test
  void theEmbeddedTrainedModelPredictsCode() {
    String out = CompareCommandTest.run("quality", "-s", "full-f16", "--context", "384", "--continuation", "128",
        "--windows", "1", "--needle-trials", "0", "--threads", "1", "--format", "csv", "--no-progress");
    double bits = Double.parseDouble(row(csv(out), "full-f16", "")[4]);
    // Uniform guessing costs 8 bits per byte; the trained model reaches about 0.7 at 4K context.
    assertTrue(bits > 0.1 && bits < 2.0, "bits per byte of held-out code: " + bits);
  }

  @Test
  void needlePromptsPlantTheValueAtTheRequestedDepthAndAskAtTheEnd() {
    byte[] text = "import os\nx = 1\nprint(x)\n".repeat(200).getBytes(StandardCharsets.US_ASCII);
    for (int i = 0; i < 5; i++) {
      ModelQuality.Needle n = ModelQuality.needle(text, 1000, i, 5, 42);
      assertEquals(1000, n.prompt().length);
      assertEquals(ByteTokenizer.BOS, n.prompt()[0]);
      StringBuilder s = new StringBuilder();
      for (int t = 1; t < n.prompt().length; t++) {
        s.append((char) n.prompt()[t]);
      }
      String value = new String(n.answer(), 0, n.answer().length);
      String str = s.toString();
      int q = str.lastIndexOf('\n');
      String question = str.substring(q);
      assertTrue(question.matches("\nkey_[0-9a-f]{4} = \""), question);
      String assignment = question + value + "\"\n";
      int at = str.indexOf(assignment);
      assertTrue(at >= 0, "the assignment is in the context");
      assertTrue(at == 0 || str.charAt(at - 1) == '\n', "the assignment starts a line");
      double want = 0.1 + 0.8 * i / 4;
      assertEquals(want, (double) at / str.length(), 0.04, "depth of trial " + i);
      assertTrue(value.matches("[a-z]{8}"), value);
    }
    // Seeded: the same trial twice is the same prompt; another seed plants another value.
    org.junit.jupiter.api.Assertions.assertArrayEquals(ModelQuality.needle(text, 1000, 3, 5, 42).prompt(),
        ModelQuality.needle(text, 1000, 3, 5, 42).prompt());
    assertTrue(!java.util.Arrays.equals(ModelQuality.needle(text, 1000, 3, 5, 42).answer(),
        ModelQuality.needle(text, 1000, 3, 5, 43).answer()), "seed 43 plants another value");
  }

  /**
   * Runs a command that must be refused as the tool refuses it (the project's error handler): exit code
   * 2 and one line on stderr, no stack trace; returns that line.
   */
  static String failure(String... args) {
    PrintStreamCapture capture = new PrintStreamCapture();
    int rc;
    try {
      rc = Main.commandLine().execute(args);
    } finally {
      capture.close();
    }
    String err = capture.text();
    assertEquals(2, rc, "exit code of invalid input: " + String.join(" ", args) + "\n" + err);
    assertTrue(!err.contains("\tat "), "one line, not a stack trace:\n" + err);
    return err;
  }

  /** picocli prints an exception's trace through System.err: keep it out of the build log, for the check. */
  static final class PrintStreamCapture implements AutoCloseable {
    private final java.io.PrintStream old = System.err;
    private final java.io.ByteArrayOutputStream buf = new java.io.ByteArrayOutputStream();

    PrintStreamCapture() {
      System.setErr(new java.io.PrintStream(buf, true, StandardCharsets.UTF_8));
    }

    String text() {
      return buf.toString(StandardCharsets.UTF_8);
    }

    @Override
    public void close() {
      System.setErr(old);
    }
  }

  @Test
  void badArgumentsAreNamed() {
    String e = failure("quality", "--model", TINY_MODEL, "-s", "nope", "--no-progress");
    assertTrue(e.contains("strategy 'nope'") && e.contains("fastKV") && e.contains("sinks(S,W)"), e);
    assertEquals(e.indexOf("expected a preset"), e.lastIndexOf("expected a preset"), "one list of presets: " + e);
    e = failure("quality", "--continuation", "1", "--no-progress");
    assertTrue(e.contains("--continuation must be in"), e);
    e = failure("quality", "--budgets", "0", "--no-progress");
    assertTrue(e.contains("--budgets must be >= 8, got 0"), e);
    e = failure("quality", "--chart", "no/such/dir/q.png", "--no-progress");
    assertTrue(e.contains("--chart") && e.contains("does not exist"), e);
  }
}
