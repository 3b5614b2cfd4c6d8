/**
 * kvcache GPU offload over OpenCL: the probe that finds an OpenCL runtime, a narrow device seam
 * ({@code io.kvcache.gpu.cl}) with LWJGL 3 and JOCL implementations, the device-resident f16 cache and
 * the attention kernels.
 */
@SuppressWarnings({"requires-automatic", "requires-transitive-automatic"})
module io.kvcache.gpu {
  requires transitive io.kvcache.core;
  requires org.lwjgl;
  requires org.lwjgl.opencl;
  requires jocl;

  exports io.kvcache.gpu;
  exports io.kvcache.gpu.cl;
}
