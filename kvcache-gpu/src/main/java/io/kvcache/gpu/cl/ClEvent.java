package io.kvcache.gpu.cl;

/** A command enqueued on a {@link ClContext}'s queue. Closing releases the event object. */
public interface ClEvent extends AutoCloseable {

  /** Blocks until the command has completed; a failed command throws {@link ClException}. */
  void await();

  /**
   * Waits for the command, then reads its device-side duration from the profiling counters.
   *
   * @return nanoseconds between the command's start and end on the device
   * @throws IllegalStateException on a context opened without profiling
   */
  long elapsedNanos();

  /** Releases the event. Idempotent. */
  @Override
  void close();
}
