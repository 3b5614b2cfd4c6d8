package io.kvcache.retention;

import io.kvcache.codec.HeadStore;
import io.kvcache.core.AttentionShape;

/** What a retention policy sees of one layer of one cache. Valid during the call that passes it. */
public interface LayerAccess {

  /** @return the layer index */
  int layer();

  /** @return the model's attention shape */
  AttentionShape shape();

  /**
   * @param kvHead a KV head
   * @return its store, where the policy reads positions and evicts slots
   */
  HeadStore store(int kvHead);

  /**
   * Runs {@code task} once for every KV head of the layer, in parallel where the cache was given an
   * executor (the same threads as its attention), sequentially otherwise; returns when all are done.
   * Tasks of different heads must touch only their own head's store and scratch. An exception in a
   * task is rethrown here: in parallel after the other heads' tasks finish, sequentially (this default)
   * at once, the later heads not run.
   *
   * @param task called with each KV head index
   */
  default void forEachKvHead(java.util.function.IntConsumer task) {
    for (int h = 0; h < shape().kvHeads(); h++) {
      task.accept(h);
    }
  }

  /** @return the position the next token of this layer will get */
  int nextPosition();

  /** @return prompt tokens held in the observation window (0 when none was requested) */
  int windowTokens();

  /**
   * Adds the attention weights that the observation-window queries give each slot of a KV head:
   * {@code acc[g * accStride + slot] += sum over window tokens of A[(t, g)][slot]}, for the group's
   * query heads {@code g}. Causal: a window token sees only slots up to its own position.
   *
   * @param kvHead    the KV head
   * @param acc       accumulators, at least {@code groupSize * accStride} floats
   * @param accStride at least {@code store(kvHead).pageCount() * PAGE_TOKENS}
   */
  void windowWeights(int kvHead, float[] acc, int accStride);

  /**
   * Adds the attention weights that the queries of the prefill chunk being appended give each slot
   * of a KV head, as {@link #windowWeights} does for the observation window: H2O scores the prompt
   * with it. Valid only during {@link RetentionPolicy.State#afterAppend} of a prefill chunk; costs
   * two extra passes over the keys for the chunk's queries, so call it only when needed.
   *
   * @param kvHead    the KV head
   * @param acc       accumulators, at least {@code groupSize * accStride} floats
   * @param accStride at least {@code store(kvHead).pageCount() * PAGE_TOKENS}
   * @throws UnsupportedOperationException when this access has no prefill chunk
   */
  default void chunkWeights(int kvHead, float[] acc, int accStride) {
    throw new UnsupportedOperationException("chunkWeights is available only during afterAppend of a prefill chunk");
  }
}
