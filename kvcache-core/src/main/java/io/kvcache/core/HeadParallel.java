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
 * returns, or fails, while helpers still write its stores. It waits for heads, not for helpers, so a
 * helper queued behind other work and never started does not hold the call up.
 */
final class HeadParallel {

  private final Executor executor;

  HeadParallel(Executor executor) {
    this.executor = executor;
  }

  void run(int heads, IntConsumer task) {
    AtomicInteger next = new AtomicInteger();
    AtomicReference<Throwable> failure = new AtomicReference<>();
    // Counts heads done, not helpers: a helper the executor queues but never starts (a busy or paused
    // pool) claims nothing once the caller has taken every head, so nothing waits for it.
    CountDownLatch done = new CountDownLatch(heads);
    Runnable worker = () -> claim(next, heads, task, failure, done);
    try {
      for (int i = 1; i < heads; i++) {
        executor.execute(worker);
      }
    } catch (RejectedExecutionException e) {
      // Shut down or full: the caller claims below whatever no helper took.
    }
    claim(next, heads, task, failure, done);
    boolean interrupted = false;
    while (true) {
      try {
        done.await(); // the heads helpers claimed: they write this cache's stores
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

  private static void claim(AtomicInteger next, int heads, IntConsumer task, AtomicReference<Throwable> failure,
      CountDownLatch done) {
    for (int h = next.getAndIncrement(); h < heads; h = next.getAndIncrement()) {
      try {
        task.accept(h);
      } catch (Throwable t) {
        failure.compareAndSet(null, t);
      } finally {
        done.countDown();
      }
    }
  }
}
