package io.kvcache.gpu.cl;

/** Device-info names of NVIDIA's {@code cl_nv_device_attribute_query} extension (cl_ext.h). */
final class NvAttributes {

  private NvAttributes() {}

  /** The extension's name in {@code CL_DEVICE_EXTENSIONS}. */
  static final String EXTENSION = "cl_nv_device_attribute_query";
  /** {@code CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV}, a cl_uint. */
  static final int CC_MAJOR = 0x4000;
  /** {@code CL_DEVICE_COMPUTE_CAPABILITY_MINOR_NV}, a cl_uint. */
  static final int CC_MINOR = 0x4001;
}
