package io.kvcache.gpu.cl;

import static org.lwjgl.opencl.CL10.*;

import io.kvcache.gpu.OpenClProbe;
import java.nio.ByteBuffer;
import java.nio.IntBuffer;
import java.nio.LongBuffer;
import java.util.ArrayList;
import java.util.List;
import org.lwjgl.PointerBuffer;
import org.lwjgl.system.Configuration;
import org.lwjgl.system.MemoryStack;
import org.lwjgl.system.MemoryUtil;

/**
 * {@link ClContext} over LWJGL 3: small structs on the {@link MemoryStack}, every return code of a call that
 * does work checked (the releases at close are best effort; a failed {@code clFinish} there is reported).
 */
final class LwjglContext extends AbstractContext {

  private static volatile boolean configured;

  private final long device;
  private final long context;
  private final long queue;
  private final String platformName;
  private final String deviceName;
  private final long localMem;
  private final int maxWg;
  private final int units;
  private final int capability;

  /** Pinned staging buffers and their mappings, unmapped and released with the queue. */
  private final List<Long> pinned = new ArrayList<>();
  private final List<ByteBuffer> pinnedMaps = new ArrayList<>();

  private LwjglContext(long device, long context, long queue, String platformName, String deviceName,
      boolean profiling) {
    super(profiling);
    this.device = device;
    this.context = context;
    this.queue = queue;
    this.platformName = platformName;
    this.deviceName = deviceName;
    this.localMem = deviceLong(device, CL_DEVICE_LOCAL_MEM_SIZE);
    this.maxWg = (int) deviceSize(device, CL_DEVICE_MAX_WORK_GROUP_SIZE);
    this.units = (int) deviceInt(device, CL_DEVICE_MAX_COMPUTE_UNITS);
    this.capability = deviceString(device, CL_DEVICE_EXTENSIONS).contains(NvAttributes.EXTENSION)
        ? (int) (10 * deviceInt(device, NvAttributes.CC_MAJOR) + deviceInt(device, NvAttributes.CC_MINOR)) : 0;
  }

  /** Points LWJGL at the loader the probe found: its default name, libOpenCL.so, is often only in -dev packages. */
  private static void configure() {
    if (!configured) {
      OpenClProbe.system().loader().ifPresent(p -> {
        if (Configuration.OPENCL_LIBRARY_NAME.get() == null) {
          Configuration.OPENCL_LIBRARY_NAME.set(p.toString());
        }
      });
      configured = true;
    }
  }

  /**
   * Adds a platform's devices, as {@code "platform" / "device"}, to {@code seen}, for the message when no
   * device matches. A platform that was not asked for must never stop the one that was from opening, so
   * any failure here lists nothing.
   */
  private static void listDevices(long platform, String name, List<String> seen) {
    try (MemoryStack stack = MemoryStack.stackPush()) {
      IntBuffer nd = stack.mallocInt(1);
      if (clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, null, nd) != CL_SUCCESS || nd.get(0) <= 0) {
        return;
      }
      PointerBuffer devices = stack.mallocPointer(nd.get(0));
      if (clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, devices, (IntBuffer) null) != CL_SUCCESS) {
        return;
      }
      for (int j = 0; j < devices.capacity(); j++) {
        seen.add("\"" + name + "\" / \"" + deviceString(devices.get(j), CL_DEVICE_NAME) + "\"");
      }
    } catch (RuntimeException e) {
      // unlisted: see above
    }
  }

  static LwjglContext open(String platformWanted, String deviceWanted, boolean profiling) {
    configure();
    long chosenPlatform = 0, chosenDevice = 0;
    String pName = null, dName = null;
    boolean chosenIsGpu = false;
    try (MemoryStack stack = MemoryStack.stackPush()) {
      IntBuffer n = stack.mallocInt(1);
      int err = clGetPlatformIDs(null, n);
      if (err == -1001 || n.get(0) == 0) { // CL_PLATFORM_NOT_FOUND_KHR: a loader without drivers
        throw new ClException("no OpenCL platform found (clGetPlatformIDs: " + err
            + (err == -1001 ? " CL_PLATFORM_NOT_FOUND_KHR" : "") + ")");
      }
      List<String> seen = new ArrayList<>(); // every platform / device, for the message when none matches
      ClException.check("clGetPlatformIDs", err);
      PointerBuffer platforms = stack.mallocPointer(n.get(0));
      ClException.check("clGetPlatformIDs", clGetPlatformIDs(platforms, (IntBuffer) null));
      for (int i = 0; i < platforms.capacity(); i++) {
        long p = platforms.get(i);
        String name = platformString(p, CL_PLATFORM_NAME);
        if (!OpenCl.matches(name, platformWanted)) {
          listDevices(p, name, seen); // for the message only
          continue;
        }
        IntBuffer nd = stack.mallocInt(1);
        err = clGetDeviceIDs(p, CL_DEVICE_TYPE_ALL, null, nd);
        if (err == CL_DEVICE_NOT_FOUND) {
          continue;
        }
        ClException.check("clGetDeviceIDs(" + name + ")", err);
        PointerBuffer devices = stack.mallocPointer(nd.get(0));
        ClException.check("clGetDeviceIDs(" + name + ")", clGetDeviceIDs(p, CL_DEVICE_TYPE_ALL, devices, (IntBuffer) null));
        for (int j = 0; j < devices.capacity(); j++) {
          long d = devices.get(j);
          String dn = deviceString(d, CL_DEVICE_NAME);
          seen.add("\"" + name + "\" / \"" + dn + "\"");
          boolean gpu = (deviceLong(d, CL_DEVICE_TYPE) & CL_DEVICE_TYPE_GPU) != 0;
          if (OpenCl.matches(dn, deviceWanted) && (chosenDevice == 0 || (gpu && !chosenIsGpu))) {
            chosenPlatform = p;
            chosenDevice = d;
            pName = name;
            dName = dn;
            chosenIsGpu = gpu;
          }
        }
      }
      if (chosenDevice == 0) {
        throw new ClException(OpenCl.noMatch(platformWanted, deviceWanted, seen));
      }
      IntBuffer errBuf = stack.mallocInt(1);
      PointerBuffer props = stack.mallocPointer(3).put(CL_CONTEXT_PLATFORM).put(chosenPlatform).put(0).flip();
      long ctx = clCreateContext(props, chosenDevice, null, 0, errBuf);
      ClException.check("clCreateContext(" + dName + ")", errBuf.get(0));
      long q = clCreateCommandQueue(ctx, chosenDevice, profiling ? CL_QUEUE_PROFILING_ENABLE : 0, errBuf);
      if (errBuf.get(0) != CL_SUCCESS) {
        clReleaseContext(ctx);
        ClException.check("clCreateCommandQueue(" + dName + ")", errBuf.get(0));
      }
      try {
        return new LwjglContext(chosenDevice, ctx, q, pName, dName, profiling);
      } catch (RuntimeException e) { // a device query failed: release what was created for it
        clReleaseCommandQueue(q);
        clReleaseContext(ctx);
        throw e;
      }
    }
  }

  private static String platformString(long platform, int param) {
    try (MemoryStack stack = MemoryStack.stackPush()) {
      PointerBuffer size = stack.mallocPointer(1);
      ClException.check("clGetPlatformInfo", clGetPlatformInfo(platform, param, (ByteBuffer) null, size));
      ByteBuffer buf = stack.malloc((int) size.get(0));
      ClException.check("clGetPlatformInfo", clGetPlatformInfo(platform, param, buf, null));
      return MemoryUtil.memASCII(buf, buf.remaining() - 1).strip();
    }
  }

  private static String deviceString(long device, int param) {
    try (MemoryStack stack = MemoryStack.stackPush()) {
      PointerBuffer size = stack.mallocPointer(1);
      ClException.check("clGetDeviceInfo", clGetDeviceInfo(device, param, (ByteBuffer) null, size));
      ByteBuffer buf = stack.malloc((int) size.get(0));
      ClException.check("clGetDeviceInfo", clGetDeviceInfo(device, param, buf, null));
      return MemoryUtil.memASCII(buf, buf.remaining() - 1).strip();
    }
  }

  private static long deviceLong(long device, int param) {
    try (MemoryStack stack = MemoryStack.stackPush()) {
      LongBuffer v = stack.mallocLong(1);
      ClException.check("clGetDeviceInfo", clGetDeviceInfo(device, param, v, null));
      return v.get(0);
    }
  }

  private static long deviceInt(long device, int param) {
    try (MemoryStack stack = MemoryStack.stackPush()) {
      IntBuffer v = stack.mallocInt(1);
      ClException.check("clGetDeviceInfo", clGetDeviceInfo(device, param, v, null));
      return v.get(0);
    }
  }

  private static long deviceSize(long device, int param) {
    try (MemoryStack stack = MemoryStack.stackPush()) {
      PointerBuffer v = stack.mallocPointer(1);
      ClException.check("clGetDeviceInfo", clGetDeviceInfo(device, param, v, null));
      return v.get(0);
    }
  }

  @Override
  public String binding() {
    return "lwjgl";
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
    final long mem;
    final long bytes;
    boolean released;

    Buf(long mem, long bytes) {
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
    try (MemoryStack stack = MemoryStack.stackPush()) {
      IntBuffer err = stack.mallocInt(1);
      long mem = clCreateBuffer(context, CL_MEM_READ_WRITE, bytes, err);
      ClException.check("clCreateBuffer(" + bytes + " bytes)", err.get(0));
      return new Buf(mem, bytes);
    }
  }

  private long mem(ClBuffer b, long offset, long len) {
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

  @Override
  protected void writeDirect(ClBuffer dst, long byteOffset, short[] src) {
    ClException.check("clEnqueueWriteBuffer", clEnqueueWriteBuffer(queue, mem(dst, byteOffset, 2L * src.length), true,
        byteOffset, src, null, null));
  }

  @Override
  protected void writeDirect(ClBuffer dst, long byteOffset, float[] src) {
    ClException.check("clEnqueueWriteBuffer", clEnqueueWriteBuffer(queue, mem(dst, byteOffset, 4L * src.length), true,
        byteOffset, src, null, null));
  }

  @Override
  protected void writeDirect(ClBuffer dst, long byteOffset, int[] src) {
    ClException.check("clEnqueueWriteBuffer", clEnqueueWriteBuffer(queue, mem(dst, byteOffset, 4L * src.length), true,
        byteOffset, src, null, null));
  }

  @Override
  protected void readDirect(ClBuffer src, long byteOffset, float[] dst) {
    ClException.check("clEnqueueReadBuffer", clEnqueueReadBuffer(queue, mem(src, byteOffset, 4L * dst.length), true,
        byteOffset, dst, null, null));
  }

  @Override
  protected void readDirect(ClBuffer src, long byteOffset, int[] dst) {
    ClException.check("clEnqueueReadBuffer", clEnqueueReadBuffer(queue, mem(src, byteOffset, 4L * dst.length), true,
        byteOffset, dst, null, null));
  }

  @Override
  protected ByteBuffer mapPinned(int bytes) {
    try (MemoryStack stack = MemoryStack.stackPush()) {
      IntBuffer err = stack.mallocInt(1);
      long mem = clCreateBuffer(context, CL_MEM_READ_WRITE | CL_MEM_ALLOC_HOST_PTR, bytes, err);
      ClException.check("clCreateBuffer(" + bytes + " bytes, ALLOC_HOST_PTR)", err.get(0));
      ByteBuffer map = clEnqueueMapBuffer(queue, mem, true, CL_MAP_READ | CL_MAP_WRITE, 0, bytes, null, null, err, null);
      if (err.get(0) != CL_SUCCESS || map == null) {
        clReleaseMemObject(mem);
        ClException.check("clEnqueueMapBuffer(" + bytes + " bytes)", err.get(0) != CL_SUCCESS ? err.get(0) : CL_MAP_FAILURE);
      }
      pinned.add(mem);
      pinnedMaps.add(map);
      return map;
    }
  }

  @Override
  protected void writeFromPinned(ClBuffer dst, long byteOffset, ByteBuffer from, int at, int len) {
    ClException.check("clEnqueueWriteBuffer", nclEnqueueWriteBuffer(queue, mem(dst, byteOffset, len), CL_FALSE,
        byteOffset, len, MemoryUtil.memAddress(from) + at, 0, MemoryUtil.NULL, MemoryUtil.NULL));
  }

  @Override
  protected void readToPinned(ClBuffer src, long byteOffset, ByteBuffer to, int len) {
    ClException.check("clEnqueueReadBuffer", nclEnqueueReadBuffer(queue, mem(src, byteOffset, len), CL_TRUE,
        byteOffset, len, MemoryUtil.memAddress(to), 0, MemoryUtil.NULL, MemoryUtil.NULL));
  }

  @Override
  protected Object build(String key, String source, String options) {
    try (MemoryStack stack = MemoryStack.stackPush()) {
      IntBuffer err = stack.mallocInt(1);
      long program = clCreateProgramWithSource(context, source, err);
      ClException.check("clCreateProgramWithSource(" + key + ")", err.get(0));
      int rc = clBuildProgram(program, device, options, null, 0);
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
  }

  private String buildLog(long program) {
    try (MemoryStack stack = MemoryStack.stackPush()) {
      PointerBuffer size = stack.mallocPointer(1);
      if (clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_LOG, (ByteBuffer) null, size) != CL_SUCCESS) {
        return "(no build log)";
      }
      ByteBuffer buf = MemoryUtil.memAlloc((int) Math.max(1, size.get(0)));
      try {
        clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_LOG, buf, null);
        return MemoryUtil.memASCII(buf, Math.max(0, buf.remaining() - 1)).strip();
      } finally {
        MemoryUtil.memFree(buf);
      }
    }
  }

  @Override
  protected void releaseProgram(Object program) {
    clReleaseProgram((Long) program);
  }

  @Override
  protected void releaseQueueAndContext() {
    for (int i = 0; i < pinned.size(); i++) {
      clEnqueueUnmapMemObject(queue, pinned.get(i), pinnedMaps.get(i), null, null);
    }
    // An earlier kernel's fault may surface only here: reported after everything is released. The
    // releases themselves are best effort (nothing could be done about a failed one at close).
    int finished = clFinish(queue);
    for (long m : pinned) {
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
    try (MemoryStack stack = MemoryStack.stackPush()) {
      IntBuffer err = stack.mallocInt(1);
      long k = clCreateKernel((Long) program, name, err);
      ClException.check("clCreateKernel(" + name + ")", err.get(0));
      return new Kernel(k, name);
    }
  }

  @Override
  protected void finishQueue() {
    ClException.check("clFinish", clFinish(queue));
  }

  private final class Kernel implements ClKernel {
    final long kernel;
    final String name;
    boolean released;

    Kernel(long kernel, String name) {
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
          clSetKernelArg1p(kernel, index, mem(buffer, 0, 0)));
      return this;
    }

    @Override
    public ClKernel arg(int index, int value) {
      live();
      ClException.check("clSetKernelArg(" + name + ", " + index + ")", clSetKernelArg1i(kernel, index, value));
      return this;
    }

    @Override
    public ClKernel arg(int index, float value) {
      live();
      ClException.check("clSetKernelArg(" + name + ", " + index + ")", clSetKernelArg1f(kernel, index, value));
      return this;
    }

    @Override
    public ClEvent launch(long[] global, long[] local) {
      return new Event(enqueue(global, local, true), name);
    }

    @Override
    public void run(long[] global, long[] local) {
      enqueue(global, local, false);
    }

    /** @return the command's event where {@code withEvent}, else 0 */
    private long enqueue(long[] global, long[] local, boolean withEvent) {
      live();
      checkLaunch(global, local);
      try (MemoryStack stack = MemoryStack.stackPush()) {
        PointerBuffer g = stack.mallocPointer(global.length);
        PointerBuffer l = stack.mallocPointer(local.length);
        for (int i = 0; i < global.length; i++) {
          g.put(i, global[i]);
          l.put(i, local[i]);
        }
        PointerBuffer ev = withEvent ? stack.mallocPointer(1) : null;
        ClException.check("clEnqueueNDRangeKernel(" + name + ")",
            clEnqueueNDRangeKernel(queue, kernel, global.length, null, g, l, null, ev));
        return withEvent ? ev.get(0) : 0;
      }
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
    final long event;
    final String what;
    boolean released;

    Event(long event, String what) {
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
      ClException.check("clWaitForEvents(" + what + ")", clWaitForEvents(event));
    }

    @Override
    public long elapsedNanos() {
      if (released) {
        throw new IllegalStateException("event of " + what + " is closed");
      }
      ensureOpen();
      requireProfiling(what);
      await();
      try (MemoryStack stack = MemoryStack.stackPush()) {
        LongBuffer t = stack.mallocLong(1);
        ClException.check("clGetEventProfilingInfo(" + what + ")",
            clGetEventProfilingInfo(event, CL_PROFILING_COMMAND_START, t, null));
        long start = t.get(0);
        ClException.check("clGetEventProfilingInfo(" + what + ")",
            clGetEventProfilingInfo(event, CL_PROFILING_COMMAND_END, t, null));
        return t.get(0) - start;
      }
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
