package io.kvcache.bench;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.core.KVCacheStrategy;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import picocli.CommandLine;

/** The prefill command on the tiny shape: every row, ratios against the full schedule, formats, bad arguments. */
class PrefillCommandTest {

  /**
   * The prefill command on the tiny shape with a 200-token prompt; {@code options} are option-value
   * pairs that replace the defaults here or add to them ({@code -s} may repeat).
   */
  static String[] tiny(String... options) {
    Map<String, String> o = new LinkedHashMap<>(Map.of("--shape", "tiny", "--prompt", "200", "--chunk", "48",
        "--repeats", "3", "--threads", "2", "--budget", "64"));
    List<String> args = new ArrayList<>(List.of("prefill", "--no-progress"));
    for (int i = 0; i < options.length; i += 2) {
      if (options[i].equals("-s")) {
        args.add("-s");
        args.add(options[i + 1]);
      } else {
        o.put(options[i], options[i + 1]);
      }
    }
    o.forEach((k, v) -> {
      args.add(k);
      args.add(v);
    });
    return args.toArray(String[]::new);
  }

  record Result(int exitCode, String out, String err) {}

  static Result run(String... args) {
    PrintStream oldOut = System.out;
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    ByteArrayOutputStream err = new ByteArrayOutputStream();
    System.setOut(new PrintStream(out, true, StandardCharsets.UTF_8));
    try {
      CommandLine cl = Main.commandLine();
      cl.setErr(new java.io.PrintWriter(err, true, StandardCharsets.UTF_8));
      int rc = cl.execute(args);
      return new Result(rc, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
    } finally {
      System.setOut(oldOut);
    }
  }

  /** Rows of the CSV by strategy, each a map from column name to cell. */
  static Map<String, Map<String, String>> csvRows(String csv) {
    String[] lines = csv.strip().split("\n");
    String[] header = lines[0].split(",");
    Map<String, Map<String, String>> rows = new LinkedHashMap<>();
    for (int i = 1; i < lines.length; i++) {
      // Strategy names hold commas, so they come quoted; the other cells never do.
      String l = lines[i];
      String name = l.startsWith("\"") ? l.substring(1, l.indexOf("\",")) : l.substring(0, l.indexOf(','));
      String[] rest = l.substring(l.startsWith("\"") ? l.indexOf("\",") + 2 : l.indexOf(',') + 1).split(",");
      assertEquals(header.length - 1, rest.length, l);
      Map<String, String> row = new LinkedHashMap<>();
      for (int c = 0; c < rest.length; c++) {
        row.put(header[c + 1], rest[c]);
      }
      rows.put(name, row);
    }
    return rows;
  }

  static double num(Map<String, String> row, String column) {
    return Double.parseDouble(row.get(column));
  }

  @Test
  void fastKVTakesTheShareOfLayersThatSeeEveryRow() {
    io.kvcache.core.KVCacheStrategy d = PrefillCommand.resolve("fastKV", 2048);
    io.kvcache.core.KVCacheStrategy at = PrefillCommand.resolve("fastKV(0.2,0.5625)", 2048);
    assertEquals(7, d.schedule().selectionLayer(16), "the preset: layers 0-7, half of 16, see every row");
    assertEquals(8, at.schedule().selectionLayer(16), "9 of 16 layers see every row");
    assertEquals(d.schedule().rowsKept(8192), at.schedule().rowsKept(8192), "the same 20% rate");
  }

  @Test
  void csvHasEveryDefaultRowWithRatiosAgainstTheFullSchedule() {
    Result r = run(tiny("--format", "csv"));
    assertEquals(0, r.exitCode(), r.err());
    String header = r.out().strip().split("\n")[0];
    assertEquals("strategy,prefill_ms,prefill_vs_full,prefill_cpu_ms,prefill_cpu_vs_full,prefill_flop,"
        + "prefill_flop_vs_full,ttft_ms,ttft_vs_full,ttft_speedup,prompt_tokens_per_s,kv_bytes,kv_vs_full,held_bytes",
        header);
    Map<String, Map<String, String>> rows = csvRows(r.out());
    assertEquals(List.of("full-f16", "fastKV(tsp(full=0.5,20.0%),64)", "swiftKV(0.5,2)", "swiftKV(0.5,1)"),
        new ArrayList<>(rows.keySet()), r.out());
    Map<String, String> full = rows.get("full-f16");
    assertEquals(1.0, num(full, "prefill_vs_full"), 0.0, "full prefill vs itself");
    assertEquals(1.0, num(full, "prefill_cpu_vs_full"), 0.0, "full CPU vs itself");
    assertEquals(1.0, num(full, "ttft_vs_full"), 0.0, "full TTFT vs itself");
    double fullPrefill = num(full, "prefill_ms");
    double fullCpu = num(full, "prefill_cpu_ms");
    double fullTtft = num(full, "ttft_ms");
    long fullKv = Long.parseLong(full.get("kv_bytes"));
    // 200 prompt tokens x 4 layers x 2 KV heads x 16 dims x K and V x 2 bytes, rounded up to whole pages.
    assertTrue(fullKv >= 200L * 4 * 2 * 16 * 2 * 2, "full KV bytes " + fullKv);
    for (Map.Entry<String, Map<String, String>> e : rows.entrySet()) {
      Map<String, String> c = e.getValue();
      String k = e.getKey();
      double prefill = num(c, "prefill_ms");
      double cpu = num(c, "prefill_cpu_ms");
      double ttft = num(c, "ttft_ms");
      assertTrue(prefill > 0 && ttft >= prefill, k + ": TTFT includes the prefill");
      assertTrue(cpu > 0, k + ": the prefill used CPU time");
      // The printed ratios are of the unrounded medians; the printed times are rounded to 0.1 ms.
      assertEquals(prefill / fullPrefill, num(c, "prefill_vs_full"), rounding(prefill, fullPrefill), k);
      assertEquals(cpu / fullCpu, num(c, "prefill_cpu_vs_full"), rounding(cpu, fullCpu), k);
      assertEquals(ttft / fullTtft, num(c, "ttft_vs_full"), rounding(ttft, fullTtft), k);
      assertEquals(1 / num(c, "ttft_vs_full"), num(c, "ttft_speedup"), 1e-3 * num(c, "ttft_speedup"), k);
      assertEquals(200 / (prefill / 1e3), num(c, "prompt_tokens_per_s"),
          (0.05 / prefill + 1e-3) * num(c, "prompt_tokens_per_s"), k);
      long kv = Long.parseLong(c.get("kv_bytes"));
      assertEquals((double) kv / fullKv, num(c, "kv_vs_full"), 1e-6, k);
      assertTrue(Long.parseLong(c.get("held_bytes")) > kv, k + ": the cache's bookkeeping comes on top");
    }
    // The decoder's FLOP counts: SwiftKV's skipping rows do less in layers 2 and 3, pairs less again (AcrossKV
    // projects K/V once per pair); FastKV's later layer runs a fifth of the rows.
    double fullFlop = num(full, "prefill_flop");
    assertEquals(1.0, num(full, "prefill_flop_vs_full"), 0.0);
    for (Map<String, String> c : rows.values()) {
      assertEquals(num(c, "prefill_flop") / fullFlop, num(c, "prefill_flop_vs_full"), 1e-6);
    }
    double pairs = num(rows.get("swiftKV(0.5,2)"), "prefill_flop_vs_full");
    double ones = num(rows.get("swiftKV(0.5,1)"), "prefill_flop_vs_full");
    assertTrue(pairs < ones && ones < 1 && num(rows.get("fastKV(tsp(full=0.5,20.0%),64)"), "prefill_flop_vs_full") < 1,
        r.out());
    // AcrossKV in pairs over the later half of 4 layers stores 3 layers of 4; in groups of one, all 4.
    assertEquals(0.75, num(rows.get("swiftKV(0.5,2)"), "kv_vs_full"), 0.0);
    assertEquals(fullKv, Long.parseLong(rows.get("swiftKV(0.5,1)").get("kv_bytes")));
    // FastKV keeps 64 tokens per KV head in every layer of the 200 the full cache holds.
    assertTrue(Long.parseLong(rows.get("fastKV(tsp(full=0.5,20.0%),64)").get("kv_bytes")) < fullKv / 2, r.out());
  }

  /** How far a ratio of two times printed to 0.1 ms may be from the printed ratio of the unrounded ones. */
  static double rounding(double a, double b) {
    return 0.06 * (1 + a / b) / b + 1e-3;
  }

  @Test
  void jsonParsesAndCarriesTheMachineFacts() {
    Result r = run(tiny("--format", "json", "--repeats", "1", "-s", "fastKV(0.5)", "-s", "full"));
    assertEquals(0, r.exitCode(), r.err());
    Object parsed = new MiniJson(r.out()).parse();
    assertTrue(parsed instanceof Map<?, ?>, r.out());
    Map<?, ?> top = (Map<?, ?>) parsed;
    assertEquals("tiny", top.get("shape"));
    assertEquals(200.0, top.get("promptTokens"));
    Map<?, ?> machine = (Map<?, ?>) top.get("machine");
    assertEquals(2.0, machine.get("threads"));
    assertEquals((double) Runtime.getRuntime().availableProcessors(), machine.get("cores"));
    List<?> rows = (List<?>) top.get("rows");
    assertEquals(2, rows.size(), "full is named once and kept once: " + r.out());
    Map<?, ?> full = (Map<?, ?>) rows.get(0);
    Map<?, ?> fast = (Map<?, ?>) rows.get(1);
    assertEquals("full-f16", full.get("strategy"));
    assertEquals("fastKV(tsp(full=0.5,50.0%),64)", fast.get("strategy"));
    assertEquals(1.0, full.get("ttftVsFull"));
    double expected = (Double) fast.get("ttftMs") / (Double) full.get("ttftMs");
    assertEquals(expected, (Double) fast.get("ttftVsFull"), rounding((Double) fast.get("ttftMs"),
        (Double) full.get("ttftMs")));
  }

  @Test
  void tableNamesTheMachineAndEveryRow() {
    Result r = run(tiny("--repeats", "1"));
    assertEquals(0, r.exitCode(), r.err());
    assertTrue(r.out().contains("shape tiny (4 layers, hidden 64, 4 q / 2 kv heads x 16"), r.out());
    Matcher m = Pattern.compile("machine: (\\d+) cores, 2 threads used, JDK .*matrix kernels .*attention kernels")
        .matcher(r.out());
    assertTrue(m.find(), r.out());
    for (String s : new String[] {"full-f16", "fastKV(tsp(full=0.5,20.0%),64)", "swiftKV(0.5,2)", "swiftKV(0.5,1)"}) {
      assertTrue(r.out().contains("\n" + s + " "), s + " in\n" + r.out());
    }
  }

  @Test
  void badArgumentsAreNamedOnOneLine() {
    String[][] cases = {
        {"--prompt", "1", "--prompt must be in [2, 4096]"},
        {"--chunk", "0", "--chunk must be in [1, 65536], got 0"},
        {"--repeats", "0", "--repeats must be in [1, 1000], got 0"},
        {"--threads", "0", "--threads must be in [1, 1024], got 0"},
        {"--budget", "0", "--budget must be >= 1"},
        {"--format", "xml", "--format must be table, csv or json, got 'xml'"},
        {"--shape", "llama-70b", "--shape must be one of llama-3.2-1b, tiny, got 'llama-70b'"},
        {"-s", "swiftKV(2,2)", "strategy 'swiftKV(2,2)': skipFraction must be in (0, 1], got 2.0"},
        {"-s", "fastKV(x)", "strategy 'fastKV(x)'"},
        {"-s", "warp", "unknown part 'warp'"},
    };
    for (String[] c : cases) {
      Result r = run(tiny(c[0], c[1]));
      assertEquals(2, r.exitCode(), c[0] + " " + c[1] + ": " + r.err());
      assertTrue(r.err().contains(c[2]), "expected '" + c[2] + "' in: " + r.err());
      assertTrue(r.err().strip().startsWith("prefill: ") && !r.err().contains("\tat "),
          "one line, no trace: " + r.err());
    }
  }

  @Test
  void strategiesPutTheFullScheduleFirstOnce() {
    List<KVCacheStrategy> l = PrefillCommand.strategies(List.of("swiftKV", "full-f16", "fastKV"), 128);
    assertEquals(List.of("full-f16", "swiftKV(0.5,2)", "fastKV(tsp(full=0.5,20.0%),128)"),
        l.stream().map(KVCacheStrategy::name).toList());
    assertEquals(4, PrefillCommand.strategies(List.of(), 128).size());
    assertThrows(IllegalArgumentException.class, () -> PrefillCommand.resolve("fastKV(0)", 64));
  }

  /** The JSON check above is only as strict as its reader: a missing or trailing comma is not JSON. */
  @org.junit.jupiter.api.Test
  void theJsonReaderRefusesWhatIsNotJson() {
    assertEquals(java.util.Arrays.asList(1.0, null), new MiniJson("[1, null]").parse());
    for (String bad : new String[] {"{\"a\": 1 \"b\": 2}", "[1 2]", "[1, ]", "{\"a\": 1,}"}) {
      org.junit.jupiter.api.Assertions.assertThrows(AssertionError.class, () -> new MiniJson(bad).parse(), bad);
    }
  }

  /** Just enough JSON for the command's output: objects, arrays, strings, numbers and null. */
  static final class MiniJson {
    private final String s;
    private int i;

    MiniJson(String s) {
      this.s = s.strip();
    }

    Object parse() {
      Object v = value();
      skip();
      if (i != s.length()) {
        throw new AssertionError("trailing text at " + i + ": " + s.substring(i));
      }
      return v;
    }

    private Object value() {
      skip();
      char c = s.charAt(i);
      if (c == '{') {
        Map<String, Object> m = new LinkedHashMap<>();
        i++;
        skip();
        while (s.charAt(i) != '}') {
          String k = (String) value();
          skip();
          expect(':');
          m.put(k, value());
          skip();
          separator('}');
        }
        i++;
        return m;
      }
      if (c == '[') {
        List<Object> l = new ArrayList<>();
        i++;
        skip();
        while (s.charAt(i) != ']') {
          l.add(value());
          skip();
          separator(']');
        }
        i++;
        return l;
      }
      if (c == '"') {
        int end = s.indexOf('"', i + 1);
        String v = s.substring(i + 1, end);
        i = end + 1;
        return v;
      }
      if (s.startsWith("null", i)) {
        i += 4;
        return null;
      }
      int start = i;
      while (i < s.length() && "+-0123456789.eE".indexOf(s.charAt(i)) >= 0) {
        i++;
      }
      if (start == i) {
        throw new AssertionError("unexpected '" + c + "' at " + i);
      }
      return Double.parseDouble(s.substring(start, i));
    }

    /** After a member: a comma and another member, or the closing bracket; anything else is not JSON. */
    private void separator(char close) {
      if (s.charAt(i) == ',') {
        i++;
        skip();
        if (s.charAt(i) == close) {
          throw new AssertionError("trailing comma at " + i);
        }
      } else if (s.charAt(i) != close) {
        throw new AssertionError("expected ',' or '" + close + "' at " + i + ", got '" + s.charAt(i) + "'");
      }
    }

    private void expect(char c) {
      if (s.charAt(i) != c) {
        throw new AssertionError("expected '" + c + "' at " + i + ", got '" + s.charAt(i) + "'");
      }
      i++;
    }

    private void skip() {
      while (i < s.length() && Character.isWhitespace(s.charAt(i))) {
        i++;
      }
    }
  }
}
