package io.kvcache.model;

import java.util.concurrent.Executor;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.locks.LockSupport;

/**
 * Splits a matrix product's rows, or an element-wise pass over an array, across the threads of a
 * caller-given executor. Workers and their scratch are made once; a call publishes the job in fields,
 * hands tasks 1..n-1 to the executor, runs task 0 on the calling thread and waits, so that a call
 * allocates nothing.
 */
final class RowSplit {

  /** Below this many rows per thread, the hand-off costs more than it saves. */
  private static final int MIN_ROWS_PER_TASK = 32;

  private final Executor executor;
  private final Worker[] workers;
  private final AtomicInteger pending = new AtomicInteger();
  private volatile Thread waiter;
  private volatile Throwable failure;

  /** An element-wise job over the indices {@code [from, to)}; each index's result must not depend on the split. */
  interface RangeTask {
    void run(int from, int to);
  }

  /** The element-wise job being run, or null while a matrix product runs. */
  private RangeTask range;
  private MatrixKernels kernels;
  private Weight w;
  private float[] x;
  private int xOff;
  private int xStride;
  private int n;
  private float[] y;
  private int yOff;
  private int yStride;

  RowSplit(Executor executor, int threads, int maxCols) {
    this.executor = executor;
    int t = executor == null ? 1 : Math.max(1, threads);
    workers = new Worker[t];
    for (int i = 0; i < t; i++) {
      workers[i] = new Worker(new MatrixKernels.Scratch(maxCols));
    }
  }

  MatrixKernels.Scratch scratch0() {
    return workers[0].scratch;
  }

  void matmul(MatrixKernels k, Weight w, float[] x, int xOff, int xStride, int n, float[] y, int yOff, int yStride) {
    int rows = w.rows();
    int tasks = Math.min(workers.length, Math.max(1, rows / MIN_ROWS_PER_TASK));
    if (tasks == 1) {
      k.matmul(w, x, xOff, xStride, n, y, yOff, yStride, 0, rows, workers[0].scratch);
      return;
    }
    this.range = null;
    this.kernels = k;
    this.w = w;
    this.x = x;
    this.xOff = xOff;
    this.xStride = xStride;
    this.n = n;
    this.y = y;
    this.yOff = yOff;
    this.yStride = yStride;
    // Multiples of 4 rows keep the kernels' 4-row blocks whole.
    run(rows, tasks, ((rows + tasks - 1) / tasks + 3) & ~3);
    Throwable f = failure;
    if (f != null) {
      throw new IllegalStateException("matrix kernel failed on a worker thread for tensor " + w.name(), f);
    }
  }

  /**
   * Runs {@code task} over {@code [0, n)} split into ranges of at least {@code minPerTask} indices, one
   * per thread at most.
   */
  void forRange(int n, int minPerTask, RangeTask task) {
    int tasks = Math.min(workers.length, Math.max(1, n / minPerTask));
    if (tasks == 1) {
      task.run(0, n);
      return;
    }
    this.range = task;
    run(n, tasks, (n + tasks - 1) / tasks);
    this.range = null;
    Throwable f = failure;
    if (f != null) {
      throw new IllegalStateException("element-wise task failed on a worker thread", f);
    }
  }

  /** Hands {@code [0, n)} in ranges of {@code per} to at most {@code tasks} workers, the first on this thread; waits. */
  private void run(int n, int tasks, int per) {
    int used = 0;
    for (int i = 0; i < tasks; i++) {
      int r0 = i * per;
      int r1 = Math.min(n, r0 + per);
      if (r0 >= r1) {
        break;
      }
      workers[i].r0 = r0;
      workers[i].r1 = r1;
      used++;
    }
    failure = null;
    waiter = Thread.currentThread();
    pending.set(used - 1);
    for (int i = 1; i < used; i++) {
      executor.execute(workers[i]);
    }
    try {
      workers[0].compute();
    } finally {
      // Even when this thread's share throws: the workers still use the job's fields.
      while (pending.get() > 0) {
        LockSupport.park(this);
      }
    }
  }

  private final class Worker implements Runnable {
    final MatrixKernels.Scratch scratch;
    int r0;
    int r1;

    Worker(MatrixKernels.Scratch scratch) {
      this.scratch = scratch;
    }

    void compute() {
      if (range != null) {
        range.run(r0, r1);
      } else {
        kernels.matmul(w, x, xOff, xStride, n, y, yOff, yStride, r0, r1, scratch);
      }
    }

    @Override
    public void run() {
      try {
        compute();
      } catch (Throwable t) {
        failure = t;
      } finally {
        if (pending.decrementAndGet() == 0) {
          LockSupport.unpark(waiter);
        }
      }
    }
  }
}
