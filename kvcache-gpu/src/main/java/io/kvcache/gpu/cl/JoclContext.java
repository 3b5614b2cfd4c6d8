package io.kvcache.gpu.cl;

import static org.jocl.CL.*;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import org.jocl.CL;
import org.jocl.Pointer;
import org.jocl.Sizeof;
import org.jocl.cl_command_queue;
import org.jocl.cl_context;
import org.jocl.cl_context_properties;
import org.jocl.cl_device_id;
import org.jocl.cl_event;
import org.jocl.cl_kernel;
import org.jocl.cl_mem;
import org.jocl.cl_platform_id;
import org.jocl.cl_program;

/**
 * {@link ClContext} over JOCL, with JOCL's own exceptions off so that every return code of a call that
 * does work is checked here and the exception names the call (the releases at close are best effort; a
 * failed {@code clFinish} there is reported).
 */
final class JoclContext extends AbstractContext {

  private final cl_device_id device;
  private final cl_context context;
  private final cl_command_queue queue;
  private final String platformName;
  private final String deviceName;
  private final long localMem;
  private final int maxWg;
  private final int units;
  private final int capability;

  /** Pinned staging buffers and their mappings, unmapped and released with the queue. */
  private final List<cl_mem> pinned = new ArrayList<>();
  private final List<ByteBuffer> pinnedMaps = new ArrayList<>();

  private JoclContext(cl_device_id device, cl_context context, cl_command_queue queue, String platformName,
      String deviceName, boolean profiling) {
    super(profiling);
    this.device = device;
    this.context = context;
    this.queue = queue;
    this.platformName = platformName;
    this.deviceName = deviceName;
    this.localMem = deviceLong(device, CL_DEVICE_LOCAL_MEM_SIZE);
    this.maxWg = (int) deviceSizeT(device, CL_DEVICE_MAX_WORK_GROUP_SIZE);
    int[] ui = new int[1];
    ClException.check("clGetDeviceInfo", clGetDeviceInfo(device, CL_DEVICE_MAX_COMPUTE_UNITS, Sizeof.cl_uint,
        Pointer.to(ui), null));
    this.units = ui[0];
    if (deviceString(device, CL_DEVICE_EXTENSIONS).contains(NvAttributes.EXTENSION)) {
      int[] major = new int[1], minor = new int[1];
      ClException.check("clGetDeviceInfo", clGetDeviceInfo(device, NvAttributes.CC_MAJOR, Sizeof.cl_uint,
          Pointer.to(major), null));
      ClException.check("clGetDeviceInfo", clGetDeviceInfo(device, NvAttributes.CC_MINOR, Sizeof.cl_uint,
          Pointer.to(minor), null));
      this.capability = 10 * major[0] + minor[0];
    } else {
      this.capability = 0;
    }
  }

  /**
   * Adds a platform's devices, as {@code "platform" / "device"}, to {@code seen}, for the message when no
   * device matches. A platform that was not asked for must never stop the one that was from opening, so
   * any failure here lists nothing.
   */
  private static void listDevices(cl_platform_id platform, String name, List<String> seen) {
    try {
      int[] nd = new int[1];
      if (clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, 0, null, nd) != CL_SUCCESS || nd[0] <= 0) {
        return;
      }
      cl_device_id[] devices = new cl_device_id[nd[0]];
      if (clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, nd[0], devices, null) != CL_SUCCESS) {
        return;
      }
      for (cl_device_id d : devices) {
        seen.add("\"" + name + "\" / \"" + deviceString(d, CL_DEVICE_NAME) + "\"");
      }
    } catch (RuntimeException e) {
      // unlisted: see above
    }
  }

  static JoclContext open(String platformWanted, String deviceWanted, boolean profiling) {
    try {
      CL.setExceptionsEnabled(false);
    } catch (LinkageError e) {
      throw new ClException("JOCL cannot load the OpenCL loader: it opens only the unversioned libOpenCL.so "
          + "(package ocl-icd-opencl-dev, or a symlink to libOpenCL.so.1 on LD_LIBRARY_PATH): " + e);
    }
    int[] n = new int[1];
    int err = clGetPlatformIDs(0, null, n);
    if (err == -1001 || (err == CL_SUCCESS && n[0] == 0)) { // CL_PLATFORM_NOT_FOUND_KHR, or none listed
      throw new ClException("no OpenCL platform found (clGetPlatformIDs: " + err
          + (err == -1001 ? " CL_PLATFORM_NOT_FOUND_KHR" : "") + ")");
    }
    List<String> seen = new ArrayList<>(); // every platform / device, for the message when none matches
    ClException.check("clGetPlatformIDs", err); // any other error, by its name
    cl_platform_id[] platforms = new cl_platform_id[n[0]];
    ClException.check("clGetPlatformIDs", clGetPlatformIDs(platforms.length, platforms, null));
    cl_platform_id chosenPlatform = null;
    cl_device_id chosenDevice = null;
    String pName = null, dName = null;
    boolean chosenIsGpu = false;
    for (cl_platform_id p : platforms) {
      String name = platformString(p, CL_PLATFORM_NAME);
      if (!OpenCl.matches(name, platformWanted)) {
        listDevices(p, name, seen); // for the message only
        continue;
      }
      int[] nd = new int[1];
      err = clGetDeviceIDs(p, CL_DEVICE_TYPE_ALL, 0, null, nd);
      if (err == CL_DEVICE_NOT_FOUND) {
        continue;
      }
      ClException.check("clGetDeviceIDs(" + name + ")", err);
      cl_device_id[] devices = new cl_device_id[nd[0]];
      ClException.check("clGetDeviceIDs(" + name + ")", clGetDeviceIDs(p, CL_DEVICE_TYPE_ALL, nd[0], devices, null));
      for (cl_device_id d : devices) {
        String dn = deviceString(d, CL_DEVICE_NAME);
        seen.add("\"" + name + "\" / \"" + dn + "\"");
        boolean gpu = (deviceLong(d, CL_DEVICE_TYPE) & CL_DEVICE_TYPE_GPU) != 0;
        if (OpenCl.matches(dn, deviceWanted) && (chosenDevice == null || (gpu && !chosenIsGpu))) {
          chosenPlatform = p;
          chosenDevice = d;
          pName = name;
          dName = dn;
          chosenIsGpu = gpu;
        }
      }
    }
    if (chosenDevice == null) {
      throw new ClException(OpenCl.noMatch(platformWanted, deviceWanted, seen));
    }
    cl_context_properties props = new cl_context_properties();
    props.addProperty(CL_CONTEXT_PLATFORM, chosenPlatform);
    int[] e = new int[1];
    cl_context ctx = clCreateContext(props, 1, new cl_device_id[] {chosenDevice}, null, null, e);
    ClException.check("clCreateContext(" + dName + ")", e[0]);
    @SuppressWarnings("deprecation")
    cl_command_queue q = clCreateCommandQueue(ctx, chosenDevice, profiling ? CL_QUEUE_PROFILING_ENABLE : 0, e);
    if (e[0] != CL_SUCCESS) {
      clReleaseContext(ctx);
      ClException.check("clCreateCommandQueue(" + dName + ")", e[0]);
    }
    try {
      return new JoclContext(chosenDevice, ctx, q, pName, dName, profiling);
    } catch (RuntimeException ex) { // a device query failed: release what was created for it
      clReleaseCommandQueue(q);
      clReleaseContext(ctx);
      throw ex;
    }
  }

  private static String platformString(cl_platform_id p, int param) {
    long[] size = new long[1];
    ClException.check("clGetPlatformInfo", clGetPlatformInfo(p, param, 0, null, size));
    byte[] buf = new byte[(int) size[0]];
    ClException.check("clGetPlatformInfo", clGetPlatformInfo(p, param, buf.length, Pointer.to(buf), null));
    return new String(buf, 0, Math.max(0, buf.length - 1), StandardCharsets.US_ASCII).strip();
  }

  private static String deviceString(cl_device_id d, int param) {
    long[] size = new long[1];
    ClException.check("clGetDeviceInfo", clGetDeviceInfo(d, param, 0, null, size));
    byte[] buf = new byte[(int) size[0]];
    ClException.check("clGetDeviceInfo", clGetDeviceInfo(d, param, buf.length, Pointer.to(buf), null));
    return new String(buf, 0, Math.max(0, buf.length - 1), StandardCharsets.US_ASCII).strip();
  }

  private static long deviceLong(cl_device_id d, int param) {
    long[] v = new long[1];
    ClException.check("clGetDeviceInfo", clGetDeviceInfo(d, param, Sizeof.cl_ulong, Pointer.to(v), null));
    return v[0];
  }

  private static long deviceSizeT(cl_device_id d, int param) {
    long[] v = new long[1];
    ClException.check("clGetDeviceInfo", clGetDeviceInfo(d, param, Sizeof.size_t, Pointer.to(v), null));
    return v[0];
  }

  @Override
  public String binding() {
    return "jocl";
  }

  @Override
  public String platformName() {
    return platformName;
  }

  @Override
  public String deviceName() {
    return deviceName;
  }

  @Override
  public long localMemBytes() {
    return localMem;
  }

  @Override
  public int maxWorkGroupSize() {
    return maxWg;
  }

  @Override
  public int computeUnits() {
    return units;
  }

  @Override
  public int computeCapability() {
    return capability;
  }

  private final class Buf implements ClBuffer {
    final cl_mem mem;
    final long bytes;
    boolean released;

    Buf(cl_mem mem, long bytes) {
      this.mem = mem;
      this.bytes = bytes;
      opened();
    }

    @Override
    public long bytes() {
      return bytes;
    }

    @Override
    public void close() {
      if (!released) {
        released = true;
        released();
        ClException.check("clReleaseMemObject", clReleaseMemObject(mem));
      }
    }
  }

  @Override
  public ClBuffer buffer(long bytes) {
    ensureOpen();
    if (bytes < 1) {
      throw new IllegalArgumentException("buffer bytes must be >= 1, got " + bytes);
    }
    int[] e = new int[1];
    cl_mem m = clCreateBuffer(context, CL_MEM_READ_WRITE, bytes, null, e);
    ClException.check("clCreateBuffer(" + bytes + " bytes)", e[0]);
    return new Buf(m, bytes);
  }

  private cl_mem mem(ClBuffer b, long offset, long len) {
    ensureOpen();
    Buf buf = (Buf) b;
    if (buf.released) {
      throw new IllegalStateException("buffer is closed");
    }
    if (offset < 0 || offset + len > buf.bytes) {
      throw new IndexOutOfBoundsException("transfer of " + len + " bytes at offset " + offset
          + " exceeds the buffer's " + buf.bytes + " bytes");
    }
    return buf.mem;
  }

  private void write(ClBuffer dst, long off, long len, Pointer p) {
    ClException.check("clEnqueueWriteBuffer",
        clEnqueueWriteBuffer(queue, mem(dst, off, len), CL_TRUE, off, len, p, 0, null, null));
  }

  private void read(ClBuffer src, long off, long len, Pointer p) {
    ClException.check("clEnqueueReadBuffer",
        clEnqueueReadBuffer(queue, mem(src, off, len), CL_TRUE, off, len, p, 0, null, null));
  }

  @Override
  protected void writeDirect(ClBuffer dst, long byteOffset, short[] src) {
    write(dst, byteOffset, 2L * src.length, Pointer.to(src));
  }

  @Override
  protected void writeDirect(ClBuffer dst, long byteOffset, float[] src) {
    write(dst, byteOffset, 4L * src.length, Pointer.to(src));
  }

  @Override
  protected void writeDirect(ClBuffer dst, long byteOffset, int[] src) {
    write(dst, byteOffset, 4L * src.length, Pointer.to(src));
  }

  @Override
  protected void readDirect(ClBuffer src, long byteOffset, float[] dst) {
    read(src, byteOffset, 4L * dst.length, Pointer.to(dst));
  }

  @Override
  protected void readDirect(ClBuffer src, long byteOffset, int[] dst) {
    read(src, byteOffset, 4L * dst.length, Pointer.to(dst));
  }

  @Override
  protected ByteBuffer mapPinned(int bytes) {
    int[] e = new int[1];
    cl_mem m = clCreateBuffer(context, CL_MEM_READ_WRITE | CL_MEM_ALLOC_HOST_PTR, bytes, null, e);
    ClException.check("clCreateBuffer(" + bytes + " bytes, ALLOC_HOST_PTR)", e[0]);
    ByteBuffer map = clEnqueueMapBuffer(queue, m, CL_TRUE, CL_MAP_READ | CL_MAP_WRITE, 0, bytes, 0, null, null, e);
    if (e[0] != CL_SUCCESS || map == null) {
      clReleaseMemObject(m);
      ClException.check("clEnqueueMapBuffer(" + bytes + " bytes)", e[0] != CL_SUCCESS ? e[0] : CL_MAP_FAILURE);
    }
    pinned.add(m);
    pinnedMaps.add(map);
    return map;
  }

  @Override
  protected void writeFromPinned(ClBuffer dst, long byteOffset, ByteBuffer from, int at, int len) {
    ClException.check("clEnqueueWriteBuffer", clEnqueueWriteBuffer(queue, mem(dst, byteOffset, len), CL_FALSE,
        byteOffset, len, Pointer.to(from).withByteOffset(at), 0, null, null));
  }

  @Override
  protected void readToPinned(ClBuffer src, long byteOffset, ByteBuffer to, int len) {
    ClException.check("clEnqueueReadBuffer", clEnqueueReadBuffer(queue, mem(src, byteOffset, len), CL_TRUE,
        byteOffset, len, Pointer.to(to), 0, null, null));
  }

  @Override
  protected Object build(String key, String source, String options) {
    int[] e = new int[1];
    cl_program program = clCreateProgramWithSource(context, 1, new String[] {source}, null, e);
    ClException.check("clCreateProgramWithSource(" + key + ")", e[0]);
    int rc = clBuildProgram(program, 1, new cl_device_id[] {device}, options, null, null);
    if (rc != CL_SUCCESS) {
      String log = buildLog(program);
      clReleaseProgram(program);
      throw new ClException("clBuildProgram(" + key + ", \"" + options + "\")", rc, log);
    }
    if (Boolean.getBoolean(BUILD_LOG_PROPERTY)) {
      System.err.println("kvcache gpu: build log of " + key + " \"" + options + "\":\n" + buildLog(program));
    }
    return program;
  }

  private String buildLog(cl_program program) {
    long[] size = new long[1];
    if (clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_LOG, 0, null, size) != CL_SUCCESS) {
      return "(no build log)";
    }
    byte[] buf = new byte[(int) Math.max(1, size[0])];
    clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_LOG, buf.length, Pointer.to(buf), null);
    return new String(buf, 0, Math.max(0, buf.length - 1), StandardCharsets.US_ASCII).strip();
  }

  @Override
  protected void releaseProgram(Object program) {
    clReleaseProgram((cl_program) program);
  }

  @Override
  protected void releaseQueueAndContext() {
    for (int i = 0; i < pinned.size(); i++) {
      clEnqueueUnmapMemObject(queue, pinned.get(i), pinnedMaps.get(i), 0, null, null);
    }
    // An earlier kernel's fault may surface only here: reported after everything is released. The
    // releases themselves are best effort (nothing could be done about a failed one at close).
    int finished = clFinish(queue);
    for (cl_mem m : pinned) {
      clReleaseMemObject(m);
    }
    pinned.clear();
    pinnedMaps.clear();
    clReleaseCommandQueue(queue);
    clReleaseContext(context);
    ClException.check("clFinish (at close: a kernel or transfer enqueued earlier failed)", finished);
  }

  @Override
  public ClKernel kernel(Object program, String name) {
    ensureOpen();
    int[] e = new int[1];
    cl_kernel k = clCreateKernel((cl_program) program, name, e);
    ClException.check("clCreateKernel(" + name + ")", e[0]);
    return new Kernel(k, name);
  }

  @Override
  protected void finishQueue() {
    ClException.check("clFinish", clFinish(queue));
  }

  private final class Kernel implements ClKernel {
    final cl_kernel kernel;
    final String name;
    boolean released;

    Kernel(cl_kernel kernel, String name) {
      this.kernel = kernel;
      this.name = name;
      opened();
    }

    /** A released kernel or a closed context would hand the driver a freed handle. */
    private void live() {
      if (released) {
        throw new IllegalStateException("kernel " + name + " is closed");
      }
      ensureOpen();
    }

    @Override
    public String name() {
      return name;
    }

    @Override
    public ClKernel arg(int index, ClBuffer buffer) {
      live();
      ClException.check("clSetKernelArg(" + name + ", " + index + ")",
          clSetKernelArg(kernel, index, Sizeof.cl_mem, Pointer.to(mem(buffer, 0, 0))));
      return this;
    }

    @Override
    public ClKernel arg(int index, int value) {
      live();
      ClException.check("clSetKernelArg(" + name + ", " + index + ")",
          clSetKernelArg(kernel, index, Sizeof.cl_int, Pointer.to(new int[] {value})));
      return this;
    }

    @Override
    public ClKernel arg(int index, float value) {
      live();
      ClException.check("clSetKernelArg(" + name + ", " + index + ")",
          clSetKernelArg(kernel, index, Sizeof.cl_float, Pointer.to(new float[] {value})));
      return this;
    }

    @Override
    public ClEvent launch(long[] global, long[] local) {
      live();
      checkLaunch(global, local);
      cl_event ev = new cl_event();
      ClException.check("clEnqueueNDRangeKernel(" + name + ")",
          clEnqueueNDRangeKernel(queue, kernel, global.length, null, global, local, 0, null, ev));
      return new Event(ev, name);
    }

    @Override
    public void run(long[] global, long[] local) {
      live();
      checkLaunch(global, local);
      ClException.check("clEnqueueNDRangeKernel(" + name + ")",
          clEnqueueNDRangeKernel(queue, kernel, global.length, null, global, local, 0, null, null));
    }

    @Override
    public void close() {
      if (!released) {
        released = true;
        released();
        clReleaseKernel(kernel);
      }
    }
  }

  private final class Event implements ClEvent {
    final cl_event event;
    final String what;
    boolean released;

    Event(cl_event event, String what) {
      this.event = event;
      this.what = what;
      opened();
    }

    @Override
    public void await() {
      if (released) {
        throw new IllegalStateException("event of " + what + " is closed");
      }
      ensureOpen();
      ClException.check("clWaitForEvents(" + what + ")", clWaitForEvents(1, new cl_event[] {event}));
    }

    @Override
    public long elapsedNanos() {
      if (released) {
        throw new IllegalStateException("event of " + what + " is closed");
      }
      ensureOpen();
      requireProfiling(what);
      await();
      long[] t = new long[1];
      ClException.check("clGetEventProfilingInfo(" + what + ")",
          clGetEventProfilingInfo(event, CL_PROFILING_COMMAND_START, Sizeof.cl_ulong, Pointer.to(t), null));
      long start = t[0];
      ClException.check("clGetEventProfilingInfo(" + what + ")",
          clGetEventProfilingInfo(event, CL_PROFILING_COMMAND_END, Sizeof.cl_ulong, Pointer.to(t), null));
      return t[0] - start;
    }

    @Override
    public void close() {
      if (!released) {
        released = true;
        released();
        clReleaseEvent(event);
      }
    }
  }
}
