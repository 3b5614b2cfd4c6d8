package io.kvcache.bench;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;
import java.util.SortedSet;
import org.junit.jupiter.api.Test;
import org.openjdk.jmh.runner.BenchmarkListEntry;

/** The jmh command's own checks and listing; no benchmark is run. */
class JmhCommandTest {

  record Outcome(int rc, String out, String err) {}

  static Outcome jmh(String... args) {
    PrintStream oldOut = System.out, oldErr = System.err;
    ByteArrayOutputStream out = new ByteArrayOutputStream(), err = new ByteArrayOutputStream();
    System.setOut(new PrintStream(out, true, StandardCharsets.UTF_8));
    System.setErr(new PrintStream(err, true, StandardCharsets.UTF_8));
    int rc;
    try {
      String[] a = new String[args.length + 1];
      a[0] = "jmh";
      System.arraycopy(args, 0, a, 1, args.length);
      rc = Main.commandLine().execute(a);
    } finally {
      System.setOut(oldOut);
      System.setErr(oldErr);
    }
    return new Outcome(rc, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
  }

  @Test
  void listNamesTheSelectedBenchmarksAndTheirParameters() {
    Outcome o = jmh("--list", "--include", "bench\\.DecodeAttentionBenchmark|MemoryBandwidth");
    assertEquals(0, o.rc(), o.err());
    assertTrue(o.out().contains("io.kvcache.bench.DecodeAttentionBenchmark.decode")
        && o.out().contains("io.kvcache.bench.MemoryBandwidthBenchmark.read"), o.out());
    assertTrue(o.out().contains("  context = 4096, 32768, 131072") && o.out().contains("  threads = 1, 2"), o.out());
    assertTrue(!o.out().contains("Prefill"), "only what --include selects:\n" + o.out());
  }

  @Test
  void aSelectionOfNothingAndAMisspeltParameterAreRefusedWithWhatExists() {
    Outcome o = jmh("--include", "NoSuchBenchmark");
    assertEquals(2, o.rc(), o.err());
    assertTrue(o.err().contains("matches no benchmark") && o.err().contains("DecodeAttentionBenchmark.decode")
        && o.err().contains("PrefillAttentionBenchmark.prefill"), o.err());
    // JMH itself would ignore the unknown name and run every default value.
    o = jmh("--include", "bench\\.DecodeAttentionBenchmark", "--param", "contxt=4096");
    assertEquals(2, o.rc(), o.err());
    assertTrue(o.err().contains("--param contxt") && o.err().contains("context, fill, kernels, threads"), o.err());
    o = jmh("--include", "MemoryBandwidth", "--param", "threads=");
    assertEquals(2, o.rc(), o.err());
    assertTrue(o.err().contains("name=v1,v2"), o.err());
  }

  @Test
  void everyRequestedRunWithoutAResultIsNamed() {
    SortedSet<BenchmarkListEntry> selected = JmhCommand.select("bench\\.MemoryBandwidth|bench\\.PrefillAttention");
    Map<String, String[]> overrides = JmhCommand.overrides(List.of("kernels=vector", "threads=2"), selected);
    List<String> missing = JmhCommand.missing(selected, overrides, List.of());
    assertEquals(List.of("io.kvcache.bench.MemoryBandwidthBenchmark.read threads=2",
        "io.kvcache.bench.PrefillAttentionBenchmark.prefill context=2048 kernels=vector",
        "io.kvcache.bench.PrefillAttentionBenchmark.prefill context=8192 kernels=vector"), missing);
  }
}
