package io.kvcache.retention;

import io.kvcache.codec.HeadStore;
import io.kvcache.core.AttentionShape;

/**
 * StreamingLLM (arXiv 2309.17453): keep the tokens at positions {@code < sinks} (attention sinks) and
 * the {@code window} most recent positions; evict the middle. Keys are stored after RoPE, so the kept
 * tokens keep their original positions and nothing is re-rotated.
 *
 * <p>After every append a KV head holds at most {@code sinks + window} tokens; during a prefill chunk
 * it briefly holds the whole chunk, because the chunk's own queries attend to it causally.
 */
final class SinksAndWindow implements RetentionPolicy, RetentionPolicy.State {

  private final int sinks;
  private final int window;

  SinksAndWindow(int sinks, int window) {
    if (sinks < 0) {
      throw new IllegalArgumentException("sinks must be >= 0, got " + sinks);
    }
    if (window < 1) {
      throw new IllegalArgumentException("window must be >= 1, got " + window);
    }
    this.sinks = sinks;
    this.window = window;
  }

  @Override
  public String name() {
    return "sinks" + sinks + "+window" + window;
  }

  @Override
  public State newState(AttentionShape shape) {
    return this; // stateless: everything it needs is in the positions
  }

  @Override
  public void afterAppend(LayerAccess layer, boolean decode) {
    // The window is the last 'window' positions this layer has seen, by position, not by count:
    // under a prefill schedule that drops rows, positions have gaps.
    long oldestKept = (long) layer.nextPosition() - window;
    for (int h = 0; h < layer.shape().kvHeads(); h++) {
      HeadStore store = layer.store(h);
      int evicted = 0;
      int slots = store.pageCount() * HeadStore.PAGE_TOKENS;
      for (int slot = 0; slot < slots; slot++) {
        int pos = store.position(slot);
        if (pos != HeadStore.EMPTY && pos >= sinks && pos < oldestKept) {
          store.evict(slot);
          evicted++;
        }
      }
      if (evicted > HeadStore.PAGE_TOKENS) {
        store.compact();
      }
    }
  }

  @Override
  public String toString() {
    return name();
  }
}
