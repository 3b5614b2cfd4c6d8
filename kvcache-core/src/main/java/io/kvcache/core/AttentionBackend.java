package io.kvcache.core;

import java.util.Optional;

/**
 * Where a strategy's caches run: the CPU ({@link #cpu()}, the default) or an accelerator provided by
 * another module (kvcache-gpu's {@code GpuAttentionBackend}), chosen by configuration through
 * {@link KVCacheStrategy.Builder#backend}, so that callers keep the one {@link KVCache} API.
 *
 * <p>A backend may serve only some strategies (say, f16 storage with keep-all retention); for the
 * others it returns empty and the strategy makes its CPU cache, so a configuration never fails for
 * want of an accelerator.
 *
 * <p>An accelerator's backend holds its device (a context, pinned memory, compiled kernels): make one
 * per process, close it after the caches it made, e.g. with try-with-resources. Closing the CPU
 * backend does nothing, and it stays usable.
 */
public interface AttentionBackend extends AutoCloseable {

  /** @return a short name for logs and strategy descriptions, e.g. "cpu" or "opencl:NVIDIA H100" */
  String name();

  /**
   * Makes a cache for one sequence on this backend.
   *
   * @param strategy the strategy whose axes the cache follows
   * @param shape    the model's attention shape
   * @return the cache, or empty when this backend cannot serve this strategy or shape
   */
  Optional<KVCache> newCache(KVCacheStrategy strategy, AttentionShape shape);

  /**
   * Releases what the backend holds; its caches still open then refuse every call. The default, for
   * backends that hold nothing, does nothing.
   */
  @Override
  default void close() {}

  /** @return the CPU backend: it serves nothing itself, so every strategy makes its paged CPU cache */
  static AttentionBackend cpu() {
    return CpuBackend.INSTANCE;
  }
}

/** The default backend: declines every request, leaving the CPU cache. */
final class CpuBackend implements AttentionBackend {
  static final CpuBackend INSTANCE = new CpuBackend();

  private CpuBackend() {}

  @Override
  public String name() {
    return "cpu";
  }

  @Override
  public Optional<KVCache> newCache(KVCacheStrategy strategy, AttentionShape shape) {
    return Optional.empty();
  }
}
