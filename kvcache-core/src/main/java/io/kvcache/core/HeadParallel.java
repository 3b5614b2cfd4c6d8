package io.kvcache.core;

import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Executor;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.IntConsumer;

/**
 * Runs one task per KV head on an executor, the calling thread taking a share. Heads are claimed
 * from a shared counter, so a busy executor only costs parallelism, never correctness: whatever the
 * helpers have not claimed, the caller runs. An executor that rejects a helper (shut down, or a full
 * bounded queue) is treated the same way, and {@link #run} returns only when every head is done, even
 * if the calling thread is interrupted meanwhile (its interrupt status is restored): a cache call never
 * returns, or fails, while helpers still write its stores.
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
    int submitted = 0;
    try {
      for (; submitted < helpers; submitted++) {
        executor.execute(worker);
      }
    } catch (RejectedExecutionException e) {
      for (int i = submitted; i < helpers; i++) {
        done.countDown(); // never started: the caller claims their heads below
      }
    }
    claim(next, heads, task, failure);
    boolean interrupted = false;
    while (true) {
      try {
        done.await();
        break;
      } catch (InterruptedException e) {
        interrupted = true;
      }
    }
    if (interrupted) {
      Thread.currentThread().interrupt();
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
