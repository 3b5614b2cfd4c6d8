package io.kvcache.gpu.cl;

/**
 * The narrow seam between kvcache's GPU code and an OpenCL binding: one device, its context and an
 * in-order command queue (recording device times only when opened with profiling, which costs host
 * time on every command), buffers, programs built from {@code .cl} resources (built once per
 * context and option string, then cached) and kernels. Two implementations, LWJGL 3 and JOCL, are
 * chosen by {@link OpenCl}; nothing outside this package sees either binding.
 *
 * <p>Every failed OpenCL call throws {@link ClException} naming the call. Closing the context releases
 * its programs, queue and context; buffers and kernels are closed by their owners first.
 * One thread at a time.
 */
public interface ClContext extends AutoCloseable {

  /**
   * Whether the queue records device times: {@link ClEvent#elapsedNanos()} (and the caches' kernel
   * times) need it and refuse otherwise. See {@link OpenCl#open(String, String, String, boolean)}.
   *
   * @return whether the context was opened with profiling
   */
  boolean profiling();

  /** @return "lwjgl" or "jocl" */
  String binding();

  /** @return the platform's name, e.g. "NVIDIA CUDA" or "Portable Computing Language" */
  String platformName();

  /** @return the device's name */
  String deviceName();

  /** @return local memory per work-group in bytes */
  long localMemBytes();

  /** @return the largest work-group the device accepts */
  int maxWorkGroupSize();

  /** @return compute units (SMs on NVIDIA) */
  int computeUnits();

  /**
   * The NVIDIA compute capability as {@code 10 * major + minor} (90 for an H100), read through the
   * {@code cl_nv_device_attribute_query} extension; 0 on devices without it (PoCL, other vendors).
   * Kernels that use NVIDIA inline PTX (tensor-core {@code mma.sync}) are built only where it is 80 or more.
   *
   * @return the compute capability, or 0 where the device does not report one
   */
  int computeCapability();

  /**
   * @param bytes size, at least 1
   * @return a new read-write device buffer
   */
  ClBuffer buffer(long bytes);

  /**
   * Writes a whole array. The array may be reused as soon as the call returns; the transfer runs in
   * queue order, before any command enqueued later. Arrays of up to 256 KiB are copied into pinned
   * staging memory and enqueued without waiting for the device; larger ones block until the array may be reused.
   *
   * @param dst        device buffer
   * @param byteOffset where in {@code dst}
   * @param src        values (binary16 bits)
   */
  void write(ClBuffer dst, long byteOffset, short[] src);

  /**
   * Writes a whole array. The array may be reused as soon as the call returns; the transfer runs in
   * queue order, before any command enqueued later. Arrays of up to 256 KiB are copied into pinned
   * staging memory and enqueued without waiting for the device; larger ones block until the array may be reused.
   *
   * @param dst        device buffer
   * @param byteOffset where in {@code dst}
   * @param src        values
   */
  void write(ClBuffer dst, long byteOffset, float[] src);

  /**
   * Writes a whole array. The array may be reused as soon as the call returns; the transfer runs in
   * queue order, before any command enqueued later. Arrays of up to 256 KiB are copied into pinned
   * staging memory and enqueued without waiting for the device; larger ones block until the array may be reused.
   *
   * @param dst        device buffer
   * @param byteOffset where in {@code dst}
   * @param src        values
   */
  void write(ClBuffer dst, long byteOffset, int[] src);

  /**
   * Blocking read filling a whole array (through pinned staging memory up to 256 KiB). When it returns,
   * every command enqueued before it has completed.
   *
   * @param src        device buffer
   * @param byteOffset where in {@code src}
   * @param dst        destination
   */
  void read(ClBuffer src, long byteOffset, float[] dst);

  /**
   * Blocking read filling a whole array (through pinned staging memory up to 256 KiB). When it returns,
   * every command enqueued before it has completed.
   *
   * @param src        device buffer
   * @param byteOffset where in {@code src}
   * @param dst        destination
   */
  void read(ClBuffer src, long byteOffset, int[] dst);

  /**
   * A new kernel object of the program built from a classpath resource with the given options; the
   * program is built on first use and cached for the life of the context.
   *
   * @param resource classpath resource of the {@code .cl} source, e.g. "/io/kvcache/gpu/attention.cl"
   * @param options  build options (defines); part of the cache key
   * @param name     kernel function name
   * @return a kernel the caller closes
   */
  ClKernel kernel(String resource, String options, String name);

  /**
   * Builds (or returns the cached) program from source text; {@link #kernel} reads resources through it.
   *
   * @param key     cache key naming the source
   * @param source  OpenCL C source
   * @param options build options
   * @return an opaque handle for {@link #kernel(Object, String)}
   */
  Object program(String key, String source, String options);

  /**
   * @param program a handle from {@link #program}
   * @param name    kernel function name
   * @return a kernel the caller closes
   */
  ClKernel kernel(Object program, String name);

  /** @return programs built so far (cache misses), for tests of the cache */
  int programsBuilt();

  /** @return buffers, kernels and events created through this context and not yet closed (leak checks) */
  int liveObjects();

  /** Blocks until every enqueued command has completed. */
  void finish();

  /** Releases programs, queue and context. Idempotent. */
  @Override
  void close();
}
