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
}
