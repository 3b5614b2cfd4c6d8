package io.kvcache.reader;

import io.kvcache.codec.HeadStore;
import io.kvcache.core.AttentionShape;

/** Exact attention over every retained token; stateless. */
final class DenseReader implements AttentionReader, AttentionReader.State {

  static final DenseReader INSTANCE = new DenseReader();

  private DenseReader() {}

  @Override
  public String name() {
    return "dense";
  }

  @Override
  public State newState(AttentionShape shape) {
    return this;
  }

  @Override
  public void decode(int layer, int kvHead, HeadStore store, PagedAttention work, int group, float[] q, int qOff,
      int position, float scale, float[] out, int outOff) {
    work.decode(store, group, q, qOff, position, scale, out, outOff);
  }

  @Override
  public String toString() {
    return name();
  }
}
