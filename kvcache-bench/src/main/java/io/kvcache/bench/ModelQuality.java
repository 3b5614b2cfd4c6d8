package io.kvcache.bench;

import io.kvcache.core.KVCacheStrategy;
import io.kvcache.model.LlamaModel;

/**
 * End-to-end quality of a strategy on a real model: the cross-entropy of a continuation given a
 * compressed context. The context is prefilled (so retention policies compress it at
 * {@code endPrefill}), then the continuation is teacher-forced token by token through decode, and
 * each next token's negative log-likelihood is summed. For a byte-level model, bits per token are
 * bits per byte.
 */
final class ModelQuality {

  private ModelQuality() {}

  /**
   * @param model     the decoder
   * @param strategy  the KV-cache strategy
   * @param tokens    context followed by continuation
   * @param context   tokens of {@code tokens} used as the prompt, {@code >= 1}
   * @param chunk     prefill chunk length
   * @return mean bits per continuation token (natural log converted to base 2)
   */
  static double bitsPerToken(LlamaModel model, KVCacheStrategy strategy, int[] tokens, int context, int chunk) {
    if (context < 1 || context >= tokens.length) {
      throw new IllegalArgumentException("context must be in [1, " + (tokens.length - 1) + "], got " + context);
    }
    int vocab = model.config().vocabSize();
    float[] logits = new float[vocab];
    double nats = 0;
    int scored = 0;
    try (LlamaModel.Sequence seq = model.newSequence(strategy, chunk)) {
      int[] prompt = java.util.Arrays.copyOf(tokens, context);
      seq.prefill(prompt, logits);
      for (int i = context; i < tokens.length; i++) {
        nats += negativeLogLikelihood(logits, tokens[i]);
        scored++;
        if (i + 1 < tokens.length) {
          seq.decode(tokens[i], logits);
        }
      }
    }
    return nats / scored / Math.log(2);
  }

  /** {@code -log softmax(logits)[target]}, computed stably in double. */
  static double negativeLogLikelihood(float[] logits, int target) {
    double max = Double.NEGATIVE_INFINITY;
    for (float x : logits) {
      max = Math.max(max, x);
    }
    double sum = 0;
    for (float x : logits) {
      sum += Math.exp(x - max);
    }
    return Math.log(sum) + max - logits[target];
  }

  /**
   * Needle retrieval: an identifier assigned at a chosen depth of a text context, asked for at the
   * end; exact match of the greedy continuation. Trial {@code i} places the needle at depth
   * {@code 0.1 + 0.8 * i / (trials - 1)} with a random 8-character value (seeded by {@code seed + i}).
   *
   * @param model    a byte-level decoder
   * @param strategy the KV-cache strategy
   * @param filler   context bytes (e.g. source code) the needle is planted in
   * @param context  context length in bytes, including the needle and the question
   * @param trials   trials, {@code >= 1}
   * @param seed     seed for the values
   * @return the share of trials answered exactly, in [0, 1]
   */
  static double needleAccuracy(LlamaModel model, KVCacheStrategy strategy, byte[] filler, int context, int trials,
      long seed) {
    if (trials < 1) {
      throw new IllegalArgumentException("trials must be >= 1, got " + trials);
    }
    io.kvcache.model.Generator generator = new io.kvcache.model.Generator(model, strategy);
    int hits = 0;
    for (int i = 0; i < trials; i++) {
      java.util.SplittableRandom rnd = new java.util.SplittableRandom(seed + i);
      char[] value = new char[8];
      for (int c = 0; c < value.length; c++) {
        value[c] = (char) ('a' + rnd.nextInt(26));
      }
      String name = "key_" + Integer.toHexString(0x1000 + rnd.nextInt(0xEFFF));
      byte[] needle = ("\n" + name + " = \"" + new String(value) + "\"\n").getBytes(java.nio.charset.StandardCharsets.US_ASCII);
      byte[] question = ("\n" + name + " = \"").getBytes(java.nio.charset.StandardCharsets.US_ASCII);
      int body = Math.max(1, context - needle.length - question.length);
      double depth = trials == 1 ? 0.5 : 0.1 + 0.8 * i / (trials - 1);
      int at = (int) (depth * body);
      int[] prompt = new int[1 + body + needle.length + question.length];
      int n = 0;
      prompt[n++] = io.kvcache.model.ByteTokenizer.BOS;
      for (int b = 0; b < body; b++) {
        if (b == at) {
          for (byte x : needle) {
            prompt[n++] = x & 0xFF;
          }
        }
        prompt[n++] = filler[b % filler.length] & 0xFF;
      }
      for (byte x : question) {
        prompt[n++] = x & 0xFF;
      }
      int[] out = generator.generate(java.util.Arrays.copyOf(prompt, n), io.kvcache.model.GenerationConfig.greedy(8), null);
      boolean ok = out.length >= 8;
      for (int c = 0; ok && c < 8; c++) {
        ok = out[c] == value[c];
      }
      if (ok) {
        hits++;
      }
    }
    return (double) hits / trials;
  }
}
