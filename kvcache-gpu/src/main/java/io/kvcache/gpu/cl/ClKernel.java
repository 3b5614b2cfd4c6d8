package io.kvcache.gpu.cl;

/**
 * One kernel object of a built program, with its own argument state: a caller that runs a kernel
 * makes its own instance, so two users of one program never overwrite each other's arguments.
 */
public interface ClKernel extends AutoCloseable {

  /** @return the kernel's function name */
  String name();

  /**
   * @param index argument index
   * @param buffer a device buffer
   * @return this
   */
  ClKernel arg(int index, ClBuffer buffer);

  /**
   * @param index argument index
   * @param value an {@code int} argument
   * @return this
   */
  ClKernel arg(int index, int value);

  /**
   * @param index argument index
   * @param value a {@code float} argument
   * @return this
   */
  ClKernel arg(int index, float value);

  /**
   * Enqueues the kernel over an N-dimensional range.
   *
   * @param global global work size per dimension (multiples of {@code local})
   * @param local  work-group size per dimension
   * @return the command's event, to await, time (on a context opened with profiling), then close
   */
  ClEvent launch(long[] global, long[] local);

  /**
   * Enqueues the kernel without an event, the cheaper call where nobody times or awaits it (the queue
   * is in order, so later reads see its results).
   *
   * @param global global work size per dimension
   * @param local  work-group size per dimension
   */
  void run(long[] global, long[] local);

  /** Releases the kernel object. Idempotent. */
  @Override
  void close();
}
