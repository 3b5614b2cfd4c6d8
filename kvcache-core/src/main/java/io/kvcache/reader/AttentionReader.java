package io.kvcache.reader;

import io.kvcache.codec.HeadStore;
import io.kvcache.core.AttentionShape;

/**
 * Attention reader, the third axis: what a decode step reads of the retained tokens. The dense
 * reader reads every retained token; a sparse reader (RocketKV's stage 2) picks a subset per step.
 *
 * <p>Implementations are immutable and thread-safe; per-cache state lives in the {@link State} they
 * make.
 */
public interface AttentionReader {

  /** @return a short name for tables and logs */
  String name();

  /**
   * Makes the per-cache state, e.g. per-page key summaries of a sparse reader.
   *
   * @param shape the model's attention shape
   * @return new state for one cache
   */
  State newState(AttentionShape shape);

  /** The dense reader: exact attention over every retained token. */
  static AttentionReader dense() {
    return DenseReader.INSTANCE;
  }

  /**
   * Per-cache reader state. Calls for different KV heads may run concurrently on different threads;
   * calls for one KV head never do.
   */
  interface State {

    /**
     * One decode step of one layer and KV head: attention of the group's query heads over the store,
     * written to {@code out}. The store already holds the new token.
     *
     * @param layer    the layer
     * @param kvHead   the KV head
     * @param store    its keys and values
     * @param work     scratch and kernels owned by the calling thread
     * @param group    query heads sharing the KV head
     * @param q        the group's query rows, {@code group * headDim} floats from {@code qOff}
     * @param qOff     offset of the first row
     * @param position the query's position
     * @param scale    attention scale
     * @param out      output rows, same layout as {@code q}
     * @param outOff   offset of the first output row
     */
    void decode(int layer, int kvHead, HeadStore store, PagedAttention work, int group, float[] q,
        int qOff, int position, float scale, float[] out, int outOff);
  }
}
