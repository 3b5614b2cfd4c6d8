/**
 * kvcache core: the KV-cache API ({@link io.kvcache.core}), the four strategy axes (storage codec,
 * retention policy, attention reader, prefill schedule), paged storage and the attention kernels.
 *
 * <p>The Vector API is optional at run time: when {@code jdk.incubator.vector} is not in the boot
 * layer (add it with {@code --add-modules jdk.incubator.vector}) the scalar kernels run, and one log
 * line says so.
 */
module io.kvcache.core {
  requires static jdk.incubator.vector;

  exports io.kvcache.core;
  exports io.kvcache.codec;
  exports io.kvcache.retention;
  exports io.kvcache.reader;
  exports io.kvcache.schedule;
  exports io.kvcache.kernel;
  exports io.kvcache.workload;
  exports io.kvcache.rocketkv;
  exports io.kvcache.kvcrush;
  exports io.kvcache.model;
  exports io.kvcache.fastkv;
  exports io.kvcache.swiftkv;
  exports io.kvcache.skvq;
}
