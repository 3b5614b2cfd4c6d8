package io.kvcache.core;

import io.kvcache.codec.StorageCodec;
import io.kvcache.kernel.AttentionKernels;
import io.kvcache.kernel.Kernels;
import io.kvcache.reader.AttentionReader;
import io.kvcache.retention.RetentionPolicy;
import io.kvcache.schedule.PrefillSchedule;
import java.util.Objects;
import java.util.Optional;
import java.util.concurrent.Executor;

/**
 * A KV-cache method: one choice on each of the four axes, plus a name. Immutable and thread-safe;
 * one strategy makes any number of caches. Get the published methods from {@link Strategies}, or
 * combine axes with {@link #builder()}.
 */
public final class KVCacheStrategy {

  private final String name;
  private final StorageCodec codec;
  private final RetentionPolicy retention;
  private final AttentionReader reader;
  private final PrefillSchedule schedule;
  private final AttentionKernels kernels;
  private final AttentionBackend backend;

  private KVCacheStrategy(Builder b) {
    this.codec = b.codec;
    this.retention = b.retention;
    this.reader = b.reader;
    this.schedule = b.schedule;
    this.kernels = b.kernels;
    this.backend = b.backend;
    this.name = b.name != null ? b.name
        : codec.name() + "/" + retention.name() + "/" + reader.name() + "/" + schedule.name();
  }

  /** @return a builder with the full-cache defaults: f16, keep-all, dense, full schedule */
  public static Builder builder() {
    return new Builder();
  }

  /** @return a builder starting from this strategy's axes */
  public Builder toBuilder() {
    Builder b = new Builder();
    b.name = name;
    b.codec = codec;
    b.backend = backend;
    b.retention = retention;
    b.reader = reader;
    b.schedule = schedule;
    b.kernels = kernels;
    return b;
  }

  /** @return the name shown in tables */
  public String name() {
    return name;
  }

  /** @return the storage codec (axis 1) */
  public StorageCodec codec() {
    return codec;
  }

  /** @return the retention policy (axis 2) */
  public RetentionPolicy retention() {
    return retention;
  }

  /** @return the attention reader (axis 3) */
  public AttentionReader reader() {
    return reader;
  }

  /** @return the prefill schedule (axis 4), for the model runner */
  public PrefillSchedule schedule() {
    return schedule;
  }

  /** @return where the caches run; {@link AttentionBackend#cpu()} unless configured */
  public AttentionBackend backend() {
    return backend;
  }

  /** @return the kernels the caches run */
  public AttentionKernels kernels() {
    return kernels;
  }

  /**
   * Makes an empty cache for one sequence, run on the calling thread.
   *
   * @param shape the model's attention shape
   * @return a new cache; close it when the sequence ends
   */
  public KVCache newCache(AttentionShape shape) {
    return newCache(shape, null);
  }

  /**
   * Makes an empty cache for one sequence whose per-layer work is split across KV heads on
   * {@code executor} (the calling thread takes a share too). Worth it for long contexts served one
   * sequence at a time; a server that runs many sequences in parallel usually passes null.
   *
   * <p>Where the strategy's backend serves the cache (an OpenCL device, {@code kvcache-gpu}), the
   * device does the parallel work and {@code executor} is not used.
   *
   * @param shape    the model's attention shape
   * @param executor where to run KV heads in parallel, or null for the calling thread only
   * @return a new cache; close it when the sequence ends
   */
  public KVCache newCache(AttentionShape shape, Executor executor) {
    Objects.requireNonNull(shape, "shape");
    Optional<KVCache> offloaded = backend.newCache(this, shape);
    return offloaded.isPresent() ? offloaded.get() : new PagedKVCache(this, shape, executor);
  }

  @Override
  public String toString() {
    return name;
  }

  /** Builds a {@link KVCacheStrategy}; every setter rejects null. */
  public static final class Builder {
    private String name;
    private StorageCodec codec = StorageCodec.f16();
    private RetentionPolicy retention = RetentionPolicy.keepAll();
    private AttentionReader reader = AttentionReader.dense();
    private PrefillSchedule schedule = PrefillSchedule.full();
    private AttentionKernels kernels = Kernels.get();
    private AttentionBackend backend = AttentionBackend.cpu();

    private Builder() {}

    /**
     * @param name the name shown in tables; default: the four axes' names joined by '/'
     * @return this builder
     */
    public Builder name(String name) {
      this.name = Objects.requireNonNull(name, "name");
      return this;
    }

    /**
     * @param codec storage codec; default f16
     * @return this builder
     */
    public Builder codec(StorageCodec codec) {
      this.codec = Objects.requireNonNull(codec, "codec");
      return this;
    }

    /**
     * @param retention retention policy; default keep-all
     * @return this builder
     */
    public Builder retention(RetentionPolicy retention) {
      this.retention = Objects.requireNonNull(retention, "retention");
      return this;
    }

    /**
     * @param reader attention reader; default dense
     * @return this builder
     */
    public Builder reader(AttentionReader reader) {
      this.reader = Objects.requireNonNull(reader, "reader");
      return this;
    }

    /**
     * @param schedule prefill schedule; default full
     * @return this builder
     */
    public Builder schedule(PrefillSchedule schedule) {
      this.schedule = Objects.requireNonNull(schedule, "schedule");
      return this;
    }

    /**
     * @param kernels the kernels to run; default {@link Kernels#get()}. Tests and benchmarks pin
     *     {@link Kernels#scalar()} or {@link Kernels#vector()} here.
     * @return this builder
     */
    public Builder kernels(AttentionKernels kernels) {
      this.kernels = Objects.requireNonNull(kernels, "kernels");
      return this;
    }

    /**
     * @param backend where caches run; default {@link AttentionBackend#cpu()}. A backend that cannot
     *     serve this strategy leaves the CPU cache.
     * @return this builder
     */
    public Builder backend(AttentionBackend backend) {
      this.backend = Objects.requireNonNull(backend, "backend");
      return this;
    }

    /** @return the strategy */
    public KVCacheStrategy build() {
      return new KVCacheStrategy(this);
    }
  }
}
