package io.kvcache.gpu;

import io.kvcache.codec.StorageCodec;
import io.kvcache.core.AttentionBackend;
import io.kvcache.core.AttentionShape;
import io.kvcache.core.KVCache;
import io.kvcache.core.KVCacheStrategy;
import io.kvcache.gpu.cl.ClContext;
import io.kvcache.gpu.cl.OpenCl;
import io.kvcache.reader.AttentionReader;
import io.kvcache.retention.RetentionPolicy;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Runs a strategy's caches on an OpenCL device: {@code KVCacheStrategy.builder().backend(backend)}.
 * It serves strategies with f16 storage, keep-all retention and the dense reader (their caches are
 * {@link DeviceKVCache}s behind the {@link KVCache} API; with a top-k configuration, decode is the
 * top-k sparse attention of {@link TopKDecoder}), under any prefill schedule (SwiftKV's AcrossKV runs its
 * sharing layers through the cache's read-only attention); for any other strategy or a shape the device
 * cannot run it declines, with one log line per strategy and reason (not per cache), and the strategy makes
 * its CPU cache.
 *
 * <p>The backend owns its {@link ClContext}; close it after the caches it made. Its caches share that
 * context, which takes one thread at a time: each cache call holds it for its device work, so distinct
 * caches may be used from distinct threads (as {@code KVCache} promises), their device work taking turns.
 */
public final class GpuAttentionBackend implements AttentionBackend {

  private static final System.Logger LOG = System.getLogger("io.kvcache.gpu");

  private final ClContext cl;
  private final int capacity;
  private final TopKDecoder.Config topK;
  // What was declined and why, logged once each: a server makes a cache per request.
  private final Set<String> declined = ConcurrentHashMap.newKeySet();
  private final AtomicInteger declinesLogged = new AtomicInteger();

  /**
   * @param cl       the device (owned and closed by this backend)
   * @param capacity tokens per layer each cache holds at most, 1 to {@link DeviceKVCache#MAX_CAPACITY}
   * @param topK     top-k decode configuration, or null for dense decode
   */
  public GpuAttentionBackend(ClContext cl, int capacity, TopKDecoder.Config topK) {
    if (cl == null) {
      throw new IllegalArgumentException("cl must not be null");
    }
    DeviceKVCache.checkCapacity(capacity);
    this.cl = cl;
    this.capacity = capacity;
    this.topK = topK;
  }

  /**
   * The device named by the {@code kvcache.opencl*} system properties, or, where there is no OpenCL
   * runtime or device (one log line says which), the CPU backend.
   *
   * @param capacity tokens per layer each cache holds at most
   * @param topK     top-k decode configuration, or null for dense decode
   * @return a GPU backend or {@link AttentionBackend#cpu()}
   */
  public static AttentionBackend createOrCpu(int capacity, TopKDecoder.Config topK) {
    DeviceKVCache.checkCapacity(capacity); // before a context is opened that a refused capacity would leak
    Optional<ClContext> cl = OpenCl.tryOpen();
    return cl.<AttentionBackend>map(c -> new GpuAttentionBackend(c, capacity, topK)).orElseGet(AttentionBackend::cpu);
  }

  @Override
  public String name() {
    return "opencl:" + cl.deviceName() + (topK != null ? "/top-" + topK.budgetTokens() : "");
  }

  /** @return the device context */
  public ClContext context() {
    return cl;
  }

  @Override
  public Optional<KVCache> newCache(KVCacheStrategy strategy, AttentionShape shape) {
    String why = null;
    // By identity, not by name: a user's own policy that happens to be called "keep-all" but evicts
    // must not be replaced by the device's keep-all.
    if (strategy.codec() != StorageCodec.f16()) {
      why = "codec " + strategy.codec().name() + " (the device stores f16)";
    } else if (strategy.retention() != RetentionPolicy.keepAll()) {
      why = "retention " + strategy.retention().name() + " (the device cache keeps all tokens)";
    } else if (strategy.reader() != AttentionReader.dense()) {
      why = "reader " + strategy.reader().name();
    } else if (shape.headDim() < 16 || shape.headDim() > 128 || Integer.bitCount(shape.headDim()) != 1) {
      why = "headDim " + shape.headDim() + " (the kernels take powers of two in [16, 128])";
    }
    // Schedules whose layers share a cache (SwiftKV's AcrossKV) run the sharing layers through read-only
    // attention (KVCache.attendPrefill/attendDecode), which the device cache implements.
    if (why != null) {
      decline(strategy.name() + " runs on the CPU: unsupported " + why);
      return Optional.empty();
    }
    synchronized (cl) { // the context's program cache and allocations take one thread at a time (GpuKVCache)
      DeviceKVCache dev;
      try {
        dev = new DeviceKVCache(cl, shape, capacity);
      } catch (IllegalArgumentException e) {
        // A shape this device cannot run (a GQA group whose decode tile does not fit its local memory, a
        // kernel kind it lacks): declined like the cases above, not thrown, so the strategy still works.
        decline(strategy.name() + " runs on the CPU: " + e.getMessage());
        return Optional.empty();
      }
      return Optional.of(new GpuKVCache(strategy.name(), dev, topK));
    }
  }

  /** @return the lines logged for declined strategies so far (tests) */
  int declinesLogged() {
    return declinesLogged.get();
  }

  private void decline(String message) {
    // Bounded: strategy names made per request must not grow the set without end.
    if (declined.size() < 1024 && declined.add(message)) {
      LOG.log(System.Logger.Level.INFO, "kvcache gpu: " + message + " (logged once)");
      declinesLogged.incrementAndGet();
    }
  }

  /**
   * Closes the device context. Caches this backend made and that are still open then refuse every
   * call with an {@link IllegalStateException} (nothing reaches the driver); close them first.
   */
  @Override
  public void close() {
    cl.close();
  }
}
