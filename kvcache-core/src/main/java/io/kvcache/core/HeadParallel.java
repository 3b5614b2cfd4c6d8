package io.kvcache.core;

import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Executor;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.IntConsumer;

/**
 * Runs one task per KV head on an executor, the calling thread taking a share. Heads are claimed
 * from a shared counter, so a busy executor only costs parallelism, never correctness: whatever the
 * helpers have not claimed, the caller runs.
 */
final class HeadParallel {

  private final Executor executor;

  HeadParallel(Executor executor) {
    this.executor = executor;
  }

  void run(int heads, IntConsumer task) {
    AtomicInteger next = new AtomicInteger();
    AtomicReference<Throwable> failure = new AtomicReference<>();
    int helpers = heads - 1;
    CountDownLatch done = new CountDownLatch(helpers);
    Runnable worker = () -> {
      try {
        claim(next, heads, task, failure);
      } finally {
        done.countDown();
      }
    };
    for (int i = 0; i < helpers; i++) {
      executor.execute(worker);
    }
    claim(next, heads, task, failure);
    try {
      done.await();
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IllegalStateException("interrupted while waiting for KV-head tasks", e);
    }
    Throwable t = failure.get();
    if (t instanceof RuntimeException re) {
      throw re;
    }
    if (t instanceof Error err) {
      throw err;
    }
  }

  private static void claim(AtomicInteger next, int heads, IntConsumer task, AtomicReference<Throwable> failure) {
    for (int h = next.getAndIncrement(); h < heads; h = next.getAndIncrement()) {
      try {
        task.accept(h);
      } catch (Throwable t) {
        failure.compareAndSet(null, t);
      }
    }
  }
}
