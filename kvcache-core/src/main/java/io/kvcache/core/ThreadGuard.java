package io.kvcache.core;

import java.util.concurrent.atomic.AtomicReference;

/**
 * Turns overlapping calls from two threads into an exception, for objects that take one thread at a
 * time ({@link KVCache}). Without it such calls corrupt the object's state silently. Each public call
 * brackets its body with {@link #enter()} and {@link #leave(boolean)}; the release on leaving also
 * orders calls that different threads make one after another. No allocation per call.
 */
final class ThreadGuard {
  private final AtomicReference<Thread> user = new AtomicReference<>();
  private final String what;

  /**
   * @param what the guarded object, for the message, e.g. {@code "cache"}
   */
  ThreadGuard(String what) {
    this.what = what;
  }

  /**
   * Claims the object for the calling thread.
   *
   * @return true when this call claimed it; false for a call nested in one of the same thread's calls,
   *     which must not release it
   * @throws IllegalStateException when another thread is inside a call
   */
  boolean enter() {
    Thread t = Thread.currentThread();
    if (user.get() == t) {
      return false;
    }
    if (!user.compareAndSet(null, t)) {
      Thread other = user.get();
      throw new IllegalStateException(what + " is in use by another thread" + (other == null ? "" : " ("
          + other.getName() + ")") + ": it takes one thread at a time");
    }
    return true;
  }

  /**
   * Releases the claim {@link #enter()} took.
   *
   * @param entered what {@link #enter()} returned
   */
  void leave(boolean entered) {
    if (entered) {
      user.set(null);
    }
  }
}
