package io.kvcache.model;

import io.kvcache.core.KVCacheStrategy;
import java.util.Arrays;
import java.util.SplittableRandom;

/**
 * Tokens in, tokens out: prefills a prompt in chunks (through the strategy's prefill schedule),
 * then decodes with greedy or seeded temperature/top-p sampling, reporting each token to a listener
 * as it is made. One generation at a time per instance.
 */
public final class Generator {

  /** Receives each generated token as it is made. */
  @FunctionalInterface
  public interface TokenListener {
    /**
     * @param index position of the token among the generated ones, from 0
     * @param token the token id
     * @return false to stop after this token
     */
    boolean onToken(int index, int token);
  }

  private final LlamaModel model;
  private final KVCacheStrategy strategy;
  private final float[] logits;
  private final long[] order;
  private long prefillNanos;
  private int promptTokens;
  private long decodeNanos;
  private int decoded;

  /**
   * @param model    the decoder
   * @param strategy the KV-cache strategy of each generation's cache
   */
  public Generator(LlamaModel model, KVCacheStrategy strategy) {
    if (model == null) {
      throw new IllegalArgumentException("model must not be null");
    }
    if (strategy == null) {
      throw new IllegalArgumentException("strategy must not be null");
    }
    this.model = model;
    this.strategy = strategy;
    this.logits = new float[model.config().vocabSize()];
    this.order = new long[model.config().vocabSize()];
  }

  /**
   * Continues {@code prompt}.
   *
   * @param prompt   token ids, at least one
   * @param config   how to continue
   * @param listener called for each new token, or null
   * @return the generated tokens (fewer than {@code maxNewTokens} when stopped)
   */
  public int[] generate(int[] prompt, GenerationConfig config, TokenListener listener) {
    SplittableRandom random = new SplittableRandom(config.seed());
    int[] out = new int[config.maxNewTokens()];
    int n = 0;
    decoded = 0;
    try (LlamaModel.Sequence seq = model.newSequence(strategy, config.prefillChunk())) {
      long t0 = System.nanoTime();
      seq.prefill(prompt, logits);
      long t1 = System.nanoTime();
      prefillNanos = t1 - t0;
      promptTokens = prompt.length;
      while (true) {
        checkFinite(logits, n);
        int token = config.temperature() == 0 ? argmax(logits) : sample(logits, config, random);
        out[n++] = token;
        boolean go = listener == null || listener.onToken(n - 1, token);
        if (!go || n == out.length || token == config.stopToken()) {
          break;
        }
        seq.decode(token, logits);
        decoded++;
      }
      decodeNanos = System.nanoTime() - t1;
    }
    return n == out.length ? out : Arrays.copyOf(out, n);
  }

  /** @return prompt tokens per second of the last generation's prefill */
  public double lastPrefillTokensPerSecond() {
    return promptTokens * 1e9 / Math.max(1, prefillNanos);
  }

  /** @return decode steps per second of the last generation (0 when it decoded none) */
  public double lastDecodeTokensPerSecond() {
    return decoded == 0 ? 0 : decoded * 1e9 / decodeNanos;
  }

  /**
   * A NaN or infinite logit (corrupt weights, an overflow) would make argmax and sampling pick a token
   * with no meaning: refused instead, naming the step and the token.
   */
  static void checkFinite(float[] logits, int step) {
    for (int i = 0; i < logits.length; i++) {
      if (!Float.isFinite(logits[i])) {
        throw new IllegalStateException("the model's logit for token " + i + " is " + logits[i] + " at generation step "
            + step + ": the weights or activations are not finite");
      }
    }
  }

  static int argmax(float[] a) {
    int best = 0;
    for (int i = 1; i < a.length; i++) {
      if (a[i] > a[best]) {
        best = i;
      }
    }
    return best;
  }

  private int sample(float[] l, GenerationConfig c, SplittableRandom random) {
    int v = l.length;
    float max = l[argmax(l)];
    double sum = 0;
    for (int i = 0; i < v; i++) {
      float p = (float) Math.exp((l[i] - max) / c.temperature());
      l[i] = p;
      sum += p;
    }
    // Probabilities are non-negative, so their float bits order like the values: sort the packed
    // (descending bits, index) pairs to rank tokens without boxing.
    for (int i = 0; i < v; i++) {
      order[i] = ((long) (0x7fffffff - Float.floatToRawIntBits(l[i])) << 32) | i;
    }
    Arrays.sort(order, 0, v);
    double target = c.topP() * sum;
    double cum = 0;
    int kept = 0;
    while (kept < v) {
      cum += l[(int) order[kept]];
      kept++;
      if (cum >= target) {
        break;
      }
    }
    double r = random.nextDouble() * cum;
    double acc = 0;
    for (int i = 0; i < kept; i++) {
      int id = (int) order[i];
      acc += l[id];
      if (r < acc) {
        return id;
      }
    }
    return (int) order[kept - 1];
  }
}
