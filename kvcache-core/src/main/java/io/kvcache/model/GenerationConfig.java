package io.kvcache.model;

/**
 * How {@link Generator} continues a prompt.
 *
 * @param maxNewTokens tokens to generate, 1 to 2^20
 * @param temperature  0 for greedy decoding, else in (0, 100]: logits are divided by it
 * @param topP         nucleus mass in (0, 1]: sample among the most likely tokens whose probabilities
 *                     sum to at least this
 * @param seed         seed of the sampler's random numbers (same seed, same tokens)
 * @param prefillChunk prompt tokens run together, 1 to 65536
 * @param stopToken    a token that ends generation once emitted (it is returned), or -1
 */
public record GenerationConfig(int maxNewTokens, float temperature, float topP, long seed, int prefillChunk,
    int stopToken) {

  /** Validates every field, naming it in the message. */
  public GenerationConfig {
    if (maxNewTokens < 1 || maxNewTokens > (1 << 20)) {
      throw new IllegalArgumentException("maxNewTokens must be in [1, 2^20], got " + maxNewTokens);
    }
    if (!(temperature >= 0 && temperature <= 100)) {
      throw new IllegalArgumentException("temperature must be in [0, 100], got " + temperature);
    }
    if (!(topP > 0 && topP <= 1)) {
      throw new IllegalArgumentException("topP must be in (0, 1], got " + topP);
    }
    if (prefillChunk < 1 || prefillChunk > 65536) {
      throw new IllegalArgumentException("prefillChunk must be in [1, 65536], got " + prefillChunk);
    }
    if (stopToken < -1) {
      throw new IllegalArgumentException("stopToken must be -1 or a token id, got " + stopToken);
    }
  }

  /**
   * Greedy decoding, no stop token, prompt chunks of 256.
   *
   * @param maxNewTokens tokens to generate
   * @return the config
   */
  public static GenerationConfig greedy(int maxNewTokens) {
    return new GenerationConfig(maxNewTokens, 0f, 1f, 0L, 256, -1);
  }

  /**
   * Seeded temperature and top-p sampling, no stop token, prompt chunks of 256.
   *
   * @param maxNewTokens tokens to generate
   * @param temperature  sampling temperature, {@code > 0}
   * @param topP         nucleus mass
   * @param seed         random seed
   * @return the config
   */
  public static GenerationConfig sampled(int maxNewTokens, float temperature, float topP, long seed) {
    return new GenerationConfig(maxNewTokens, temperature, topP, seed, 256, -1);
  }

  /**
   * @param token the stop token, or -1
   * @return a copy that stops after emitting {@code token}
   */
  public GenerationConfig withStopToken(int token) {
    return new GenerationConfig(maxNewTokens, temperature, topP, seed, prefillChunk, token);
  }

  /**
   * @param chunk prompt tokens run together
   * @return a copy with that prefill chunk
   */
  public GenerationConfig withPrefillChunk(int chunk) {
    return new GenerationConfig(maxNewTokens, temperature, topP, seed, chunk, stopToken);
  }
}
