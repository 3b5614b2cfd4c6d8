package io.kvcache.bench;

import io.kvcache.core.KVCacheStrategy;
import io.kvcache.model.ByteTokenizer;
import io.kvcache.model.GenerationConfig;
import io.kvcache.model.Generator;
import io.kvcache.model.LlamaModel;
import io.kvcache.model.LlamaWeights;
import java.io.IOException;
import java.nio.file.Path;
import java.util.Locale;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * Generates with the reference decoder through any strategy: tokens in, tokens out, and the speed.
 * The prompt is UTF-8 bytes for byte-level models (the project's own), or explicit token ids.
 */
@Command(name = "generate", mixinStandardHelpOptions = true,
    description = "Runs the reference decoder on a model (HF directory or .gguf) through a strategy; prints tokens and tokens/s.")
final class GenerateCommand implements Runnable {

  @Option(names = "--model", description = "A Hugging Face model directory (config.json + *.safetensors) or a .gguf "
      + "file; default: the project's trained byte-level model kvcache-byte-4m, embedded in the jar.")
  Path model;

  @Option(names = "--prompt", description = "Prompt text, as UTF-8 bytes with BOS (byte-level models).")
  String prompt;

  @Option(names = "--tokens", split = ",", description = "Prompt as token ids, comma-separated (any vocabulary).")
  int[] tokens;

  @Option(names = {"-s", "--strategy"}, defaultValue = "full-f16",
      description = "A preset or a combination, as in compare (default: ${DEFAULT-VALUE}).")
  String strategy;

  @Option(names = "--budget", defaultValue = "1024", description = "Tokens per KV head for budgeted strategies (default: ${DEFAULT-VALUE}).")
  int budget;

  @Option(names = "--max-tokens", defaultValue = "64", description = "Tokens to generate (default: ${DEFAULT-VALUE}).")
  int maxTokens;

  @Option(names = "--temperature", defaultValue = "0", description = "0 for greedy (default), else sampling temperature.")
  float temperature;

  @Option(names = "--top-p", defaultValue = "0.95", description = "Nucleus sampling threshold when sampling (default: ${DEFAULT-VALUE}).")
  float topP;

  @Option(names = "--seed", defaultValue = "1", description = "Sampling seed (default: ${DEFAULT-VALUE}).")
  long seed;

  @Override
  public void run() {
    if ((prompt == null) == (tokens == null)) {
      throw new IllegalArgumentException("give exactly one of --prompt and --tokens");
    }
    io.kvcache.core.Checks.inRange("--max-tokens", maxTokens, 1, 1 << 20);
    io.kvcache.core.Checks.inRange("--budget", budget, 16, Integer.MAX_VALUE);
    if (!(temperature >= 0) || Float.isInfinite(temperature)) {
      throw new IllegalArgumentException("--temperature must be 0 (greedy) or a positive number, got " + temperature);
    }
    if (!(topP > 0 && topP <= 1)) {
      throw new IllegalArgumentException("--top-p must be in (0, 1], got " + topP);
    }
    OptionChecks.inputFile("--model", model);
    int[] input = tokens != null ? tokens : ByteTokenizer.encode(prompt, true);
    KVCacheStrategy s = Presets.resolveWithSchedules(strategy, budget);
    GenerationConfig config = temperature <= 0 ? GenerationConfig.greedy(maxTokens)
        : GenerationConfig.sampled(maxTokens, temperature, topP, seed);
    Path dir = model != null ? model : EmbeddedModel.directory();
    try (LlamaWeights weights = LlamaWeights.load(dir)) {
      Generator g = new Generator(LlamaModel.of(weights), s);
      int[] out = g.generate(input, config, null);
      System.out.println("tokens: " + java.util.Arrays.toString(out));
      if (tokens == null) {
        System.out.println("text:   " + ByteTokenizer.decode(out));
      }
      System.out.printf(Locale.ROOT, "strategy %s: prompt %d tokens at %.1f tokens/s, %d generated at %.2f tokens/s%n",
          s.name(), input.length, g.lastPrefillTokensPerSecond(), out.length, g.lastDecodeTokensPerSecond());
    } catch (IOException e) {
      throw new IllegalStateException("cannot load " + dir + ": " + e.getMessage(), e);
    }
  }
}
