package io.kvcache.bench;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.core.Strategies;
import io.kvcache.model.GenerationConfig;
import io.kvcache.model.Generator;
import io.kvcache.model.LlamaModel;
import io.kvcache.model.LlamaWeights;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.Arrays;
import org.junit.jupiter.api.Test;
import picocli.CommandLine;

/** The generate command on the tiny transformers-made Llama that the decoder's parity test uses. */
class GenerateCommandTest {

  static final Path TINY = Path.of("..", "kvcache-core", "src", "test", "resources", "tiny-llama");

  @Test
  void printsTheDecodersGreedyTokensAndTheSpeed() throws Exception {
    PrintStream old = System.out;
    ByteArrayOutputStream buf = new ByteArrayOutputStream();
    System.setOut(new PrintStream(buf, true, StandardCharsets.UTF_8));
    int rc;
    try {
      rc = new CommandLine(new Main()).execute("generate", "--model", TINY.toString(), "--tokens", "1,2,3,4,5",
          "--max-tokens", "6");
    } finally {
      System.setOut(old);
    }
    String out = buf.toString(StandardCharsets.UTF_8);
    assertEquals(0, rc, out);
    int[] expected;
    try (LlamaWeights w = LlamaWeights.load(TINY)) {
      expected = new Generator(LlamaModel.of(w), Strategies.full()).generate(new int[] {1, 2, 3, 4, 5},
          GenerationConfig.greedy(6), null);
    }
    assertTrue(out.contains("tokens: " + Arrays.toString(expected)), out);
    assertTrue(out.contains("tokens/s"), out);
  }

  @Test
  void promptAndTokensAreExclusive() {
    String err = CompareCommandTest.refused("generate", "--model", TINY.toString());
    assertTrue(err.contains("give exactly one of --prompt and --tokens"), "neither: " + err);
    err = CompareCommandTest.refused("generate", "--model", TINY.toString(), "--prompt", "x", "--tokens", "1,2");
    assertTrue(err.contains("give exactly one of --prompt and --tokens"), "both: " + err);
  }

  @Test
  void badOptionsAreNamed() {
    String err = CompareCommandTest.refused("generate", "--tokens", "1,2", "--max-tokens", "0");
    assertTrue(err.contains("--max-tokens must be in [1,") && err.contains("got 0"), err);
    err = CompareCommandTest.refused("generate", "--tokens", "1,2", "--temperature", "NaN");
    assertTrue(err.contains("--temperature must be 0 (greedy) or a positive number, got NaN"), err);
    err = CompareCommandTest.refused("generate", "--tokens", "1,2", "--top-p", "0");
    assertTrue(err.contains("--top-p must be in (0, 1], got 0.0"), err);
    err = CompareCommandTest.refused("generate", "--tokens", "1,2", "--model", "/no/such/model");
    assertTrue(err.contains("--model /no/such/model: no such file"), err);
  }
}
