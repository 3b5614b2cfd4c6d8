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
   * One needle trial: the prompt (BOS, code with an assignment line planted at a depth, then the
   * question) and the bytes a right answer starts with.
   *
   * @param prompt token ids, {@code context} long
   * @param answer the value's bytes the greedy continuation must reproduce
   * @param depth  where the assignment sits, as a share of the context
   */
  record Needle(int[] prompt, int[] answer, double depth) {}

  /**
   * Builds trial {@code trial} of {@code trials}: a random 8-letter value assigned to a random
   * {@code key_XXXX} identifier, planted at the start of a line at depth
   * {@code 0.1 + 0.8 * trial / (trials - 1)} of a code context taken from a seeded random offset of
   * {@code text} (wrapping around), and asked for at the end as {@code \nkey_XXXX = "}.
   *
   * @param text    context bytes, e.g. held-out source code
   * @param context prompt length in tokens, BOS and question included
   * @param trial   index in {@code [0, trials)}
   * @param trials  trials in the experiment, {@code >= 1}
   * @param seed    seed; trial {@code i} of seed {@code s} is the same on every run
   * @return the trial
   */
  static Needle needle(byte[] text, int context, int trial, int trials, long seed) {
    if (trials < 1 || trial < 0 || trial >= trials) {
      throw new IllegalArgumentException("trial must be in [0, trials) with trials >= 1, got " + trial + " of " + trials);
    }
    if (text == null || text.length == 0) {
      throw new IllegalArgumentException("text must hold at least one byte");
    }
    java.util.SplittableRandom rnd = new java.util.SplittableRandom(seed * 1_000_003L + trial);
    char[] value = new char[8];
    for (int c = 0; c < value.length; c++) {
      value[c] = (char) ('a' + rnd.nextInt(26));
    }
    String name = "key_" + Integer.toHexString(0x1000 + rnd.nextInt(0xEFFF));
    byte[] assign = ("\n" + name + " = \"" + new String(value) + "\"\n").getBytes(java.nio.charset.StandardCharsets.US_ASCII);
    byte[] question = ("\n" + name + " = \"").getBytes(java.nio.charset.StandardCharsets.US_ASCII);
    int body = context - 1 - assign.length - question.length;
    if (body < 1) {
      throw new IllegalArgumentException("context must be at least " + (2 + assign.length + question.length)
          + " tokens for a needle, got " + context);
    }
    int start = rnd.nextInt(text.length);
    double depth = trials == 1 ? 0.5 : 0.1 + 0.8 * trial / (trials - 1);
    int at = (int) (depth * body);
    // Start the assignment on a line of its own, as code would, when a line ends nearby.
    for (int j = at; j < Math.min(body, at + 200); j++) {
      if (text[(start + j - 1 + text.length) % text.length] == '\n') {
        at = j;
        break;
      }
    }
    int[] prompt = new int[context];
    int n = 0;
    prompt[n++] = io.kvcache.model.ByteTokenizer.BOS;
    for (int b = 0; b < body; b++) {
      if (b == at) {
        for (byte x : assign) {
          prompt[n++] = x & 0xFF;
        }
      }
      prompt[n++] = text[(start + b) % text.length] & 0xFF;
    }
    for (byte x : question) {
      prompt[n++] = x & 0xFF;
    }
    int[] answer = new int[value.length];
    for (int c = 0; c < value.length; c++) {
      answer[c] = value[c];
    }
    return new Needle(prompt, answer, (double) at / body);
  }

  /**
   * Runs one needle trial: prefill, then greedy decoding until the answer is complete or wrong.
   *
   * @param model    a byte-level decoder
   * @param strategy the KV-cache strategy
   * @param needle   the trial
   * @param chunk    prefill chunk length
   * @return whether the greedy continuation starts with the answer
   */
  static boolean needleHit(LlamaModel model, KVCacheStrategy strategy, Needle needle, int chunk) {
    float[] logits = new float[model.config().vocabSize()];
    try (LlamaModel.Sequence seq = model.newSequence(strategy, chunk)) {
      seq.prefill(needle.prompt(), logits);
      for (int c = 0; c < needle.answer().length; c++) {
        int next = argmax(logits);
        if (next != needle.answer()[c]) {
          return false;
        }
        if (c + 1 < needle.answer().length) {
          seq.decode(next, logits);
        }
      }
      return true;
    }
  }

  /** Index of the largest logit (the first on ties), as greedy decoding picks. */
  static int argmax(float[] logits) {
    int best = 0;
    for (int i = 1; i < logits.length; i++) {
      if (logits[i] > logits[best]) {
        best = i;
      }
    }
    return best;
  }

  /**
   * Needle retrieval accuracy over {@code trials} trials of {@link #needle}, one after the other.
   *
   * @param model    a byte-level decoder
   * @param strategy the KV-cache strategy
   * @param filler   context bytes (e.g. source code) the needle is planted in
   * @param context  context length in tokens, including BOS, the needle and the question
   * @param trials   trials, {@code >= 1}
   * @param seed     seed for the values and offsets
   * @return the share of trials answered exactly, in [0, 1]
   */
  static double needleAccuracy(LlamaModel model, KVCacheStrategy strategy, byte[] filler, int context, int trials,
      long seed) {
    if (trials < 1) {
      throw new IllegalArgumentException("trials must be >= 1, got " + trials);
    }
    int hits = 0;
    for (int i = 0; i < trials; i++) {
      if (needleHit(model, strategy, needle(filler, context, i, trials, seed), 256)) {
        hits++;
      }
    }
    return (double) hits / trials;
  }
}
