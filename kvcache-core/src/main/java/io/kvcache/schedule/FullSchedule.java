package io.kvcache.schedule;

/** The ordinary schedule: all layers, all rows, one cache per layer. */
final class FullSchedule implements PrefillSchedule {

  static final FullSchedule INSTANCE = new FullSchedule();

  private FullSchedule() {}

  @Override
  public String name() {
    return "full";
  }

  @Override
  public String toString() {
    return name();
  }
}
