/**
 * kvcache GPU offload over OpenCL. For now it holds the probe that finds an OpenCL runtime; the
 * kernels, device-resident cache and backends (LWJGL 3, JOCL) build on it.
 */
module io.kvcache.gpu {
  requires io.kvcache.core;

  exports io.kvcache.gpu;
}
