package io.kvcache.gpu.cl;

/** A buffer in device memory. Closing releases it; a closed buffer must not be used again. */
public interface ClBuffer extends AutoCloseable {

  /** @return its size in bytes */
  long bytes();

  /** Releases the device memory. Idempotent. */
  @Override
  void close();
}
