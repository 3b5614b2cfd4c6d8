package io.kvcache.retention;

import io.kvcache.core.AttentionShape;

/** Keeps every token: the full cache. */
final class KeepAll implements RetentionPolicy, RetentionPolicy.State {

  static final KeepAll INSTANCE = new KeepAll();

  private KeepAll() {}

  @Override
  public String name() {
    return "keep-all";
  }

  @Override
  public boolean actsAtEndOfPrompt() {
    return true;
  }

  @Override
  public State newState(AttentionShape shape) {
    return this;
  }

  @Override
  public void afterAppend(LayerAccess layer, boolean decode) {}

  @Override
  public String toString() {
    return name();
  }
}
