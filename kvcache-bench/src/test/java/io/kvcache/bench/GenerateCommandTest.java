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
    int rc = new CommandLine(new Main()).execute("generate", "--model", TINY.toString());
    assertTrue(rc != 0, "neither --prompt nor --tokens must fail");
  }
}
