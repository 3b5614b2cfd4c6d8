package io.kvcache.gpu.cl;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.IntBuffer;
import java.nio.ShortBuffer;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * What both bindings share: the program cache, resource loading, and the staging of small transfers.
 *
 * <p><b>Staging.</b> A decode step moves a few kilobytes each way (the query up, the outputs down). A
 * blocking transfer from a Java array costs a round trip to the driver on top of the copy (about 19 us
 * up and 25 us down on an H100 with a profiling queue, 11 and 16 without), so arrays up to
 * {@link #STAGED_MAX} bytes go through pinned host memory instead: an upload is copied into it and
 * enqueued without waiting (the in-order queue runs it before any later command), a read-back lands in
 * it and is copied out. Uploads take consecutive slices of their area; the area is reused from its
 * start only after a call that waits for the queue (a read-back or {@link #finish}), which in an
 * in-order queue means every earlier upload has reached the device.
 */
abstract class AbstractContext implements ClContext {

  /** Bytes of the pinned upload area (read-backs have one of {@link #STAGED_MAX} bytes). */
  static final int STAGING_BYTES = 1 << 20;
  /** Arrays of up to this many bytes go through staging; larger ones are transferred from the array. */
  static final int STAGED_MAX = 256 << 10;

  /**
   * System property: when {@code true}, every successful build prints its build log to standard error
   * (with {@code -cl-nv-verbose} in {@code kvcache.gpu.buildOptions}, NVIDIA's log gives each kernel's
   * registers and spills).
   */
  static final String BUILD_LOG_PROPERTY = "kvcache.gpu.buildLog";

  /** Built programs by source key and options, released when the context closes. */
  private final Map<String, Object> programs = new LinkedHashMap<>();
  private int built;
  /** Buffers, kernels and events created and not yet released: a leak check for tests. */
  private int live;
  protected boolean closed;
  private final boolean profiling;
  private ByteBuffer up;
  private FloatBuffer upF;
  private IntBuffer upI;
  private ShortBuffer upS;
  /** Bytes of {@link #up} that hold uploads the device may not have read yet. */
  private int upUsed;
  private ByteBuffer down;
  private FloatBuffer downF;
  private IntBuffer downI;

  protected AbstractContext(boolean profiling) {
    this.profiling = profiling;
  }

  @Override
  public final boolean profiling() {
    return profiling;
  }

  @Override
  public final void write(ClBuffer dst, long byteOffset, short[] src) {
    ensureOpen();
    if (src.length == 0) {
      return; // OpenCL refuses a transfer of zero bytes
    }
    int at = stage(2L * src.length);
    if (at < 0) {
      writeDirect(dst, byteOffset, src);
    } else {
      upS.put(at >> 1, src);
      writeFromPinned(dst, byteOffset, up, at, 2 * src.length);
    }
  }

  @Override
  public final void write(ClBuffer dst, long byteOffset, float[] src) {
    ensureOpen();
    if (src.length == 0) {
      return; // OpenCL refuses a transfer of zero bytes
    }
    int at = stage(4L * src.length);
    if (at < 0) {
      writeDirect(dst, byteOffset, src);
    } else {
      upF.put(at >> 2, src);
      writeFromPinned(dst, byteOffset, up, at, 4 * src.length);
    }
  }

  @Override
  public final void write(ClBuffer dst, long byteOffset, int[] src) {
    ensureOpen();
    if (src.length == 0) {
      return; // OpenCL refuses a transfer of zero bytes
    }
    int at = stage(4L * src.length);
    if (at < 0) {
      writeDirect(dst, byteOffset, src);
    } else {
      upI.put(at >> 2, src);
      writeFromPinned(dst, byteOffset, up, at, 4 * src.length);
    }
  }

  @Override
  public final void read(ClBuffer src, long byteOffset, float[] dst) {
    ensureOpen();
    if (dst.length == 0) {
      return; // OpenCL refuses a transfer of zero bytes
    }
    if (direct(4L * dst.length)) {
      readDirect(src, byteOffset, dst);
    } else {
      readToPinned(src, byteOffset, downArea(), 4 * dst.length);
      downF.get(0, dst);
    }
    upUsed = 0; // a blocking read returns after every earlier command of the in-order queue
  }

  @Override
  public final void read(ClBuffer src, long byteOffset, int[] dst) {
    ensureOpen();
    if (dst.length == 0) {
      return; // OpenCL refuses a transfer of zero bytes
    }
    if (direct(4L * dst.length)) {
      readDirect(src, byteOffset, dst);
    } else {
      readToPinned(src, byteOffset, downArea(), 4 * dst.length);
      downI.get(0, dst);
    }
    upUsed = 0;
  }

  @Override
  public final void finish() {
    ensureOpen();
    finishQueue();
    upUsed = 0;
  }

  /**
   * @return where in the upload area an upload of {@code len} bytes goes (after waiting for the queue
   *     if the area is full), or -1 when it takes the direct path: empty, or over {@link #STAGED_MAX}. A
   *     direct write is blocking, but that promises only that the array may be reused, not that earlier
   *     commands (and so earlier staged uploads) have run, so it leaves the area as it is.
   */
  private int stage(long len) {
    ensureOpen();
    if (direct(len)) {
      return -1;
    }
    if (up == null) {
      up = mapPinned(STAGING_BYTES).order(ByteOrder.nativeOrder());
      upF = up.asFloatBuffer();
      upI = up.asIntBuffer();
      upS = up.asShortBuffer();
    }
    if (upUsed + len > STAGING_BYTES) {
      finish();
    }
    int at = upUsed;
    upUsed = (int) ((at + len + 63) & ~63);
    return at;
  }

  /** Whether a transfer of {@code len} bytes bypasses staging: empty, or over {@link #STAGED_MAX}. */
  private static boolean direct(long len) {
    return len == 0 || len > STAGED_MAX;
  }

  private ByteBuffer downArea() {
    if (down == null) {
      down = mapPinned(STAGED_MAX).order(ByteOrder.nativeOrder());
      downF = down.asFloatBuffer();
      downI = down.asIntBuffer();
    }
    return down;
  }

  /** Blocking write from the array (large transfers). */
  protected abstract void writeDirect(ClBuffer dst, long byteOffset, short[] src);

  /** Blocking write from the array (large transfers). */
  protected abstract void writeDirect(ClBuffer dst, long byteOffset, float[] src);

  /** Blocking write from the array (large transfers). */
  protected abstract void writeDirect(ClBuffer dst, long byteOffset, int[] src);

  /** Blocking read into the array (large transfers). */
  protected abstract void readDirect(ClBuffer src, long byteOffset, float[] dst);

  /** Blocking read into the array (large transfers). */
  protected abstract void readDirect(ClBuffer src, long byteOffset, int[] dst);

  /**
   * Allocates pinned host memory the device can copy from and to directly (a buffer made with
   * {@code CL_MEM_ALLOC_HOST_PTR}, mapped for the life of the context; the binding unmaps and releases
   * it when the context closes).
   */
  protected abstract ByteBuffer mapPinned(int bytes);

  /** Enqueues, without waiting, a write of {@code len} bytes of {@code pinned} from {@code at}. */
  protected abstract void writeFromPinned(ClBuffer dst, long byteOffset, ByteBuffer pinned, int at, int len);

  /** Blocking read of {@code len} bytes into the start of {@code pinned}. */
  protected abstract void readToPinned(ClBuffer src, long byteOffset, ByteBuffer pinned, int len);

  /** clFinish. */
  protected abstract void finishQueue();

  @Override
  public final ClKernel kernel(String resource, String options, String name) {
    String key = resource + '\u0000' + options;
    Object p = programs.get(key);
    if (p == null) {
      p = program(resource, load(resource), options);
    }
    return kernel(p, name);
  }

  @Override
  public final Object program(String key, String source, String options) {
    ensureOpen();
    String k = key + '\u0000' + options;
    Object p = programs.get(k);
    if (p == null) {
      p = build(key, source, options);
      built++;
      programs.put(k, p);
    }
    return p;
  }

  @Override
  public final int liveObjects() {
    return live;
  }

  final void opened() {
    live++;
  }

  final void released() {
    live--;
  }

  @Override
  public final int programsBuilt() {
    return built;
  }

  /** Builds a program; on failure releases it and throws with the build log. */
  protected abstract Object build(String key, String source, String options);

  protected abstract void releaseProgram(Object program);

  protected abstract void releaseQueueAndContext();

  /** Device times come only from a queue made with profiling; a clear message instead of the driver's code. */
  final void requireProfiling(String what) {
    if (!profiling) {
      throw new IllegalStateException("device times need a context opened with profiling (OpenCl.open(binding, "
          + "platform, device, true) or -D" + OpenCl.PROFILING_PROPERTY + "=true); " + what + " ran on one without");
    }
  }

  protected final void ensureOpen() {
    if (closed) {
      throw new IllegalStateException("ClContext is closed");
    }
  }

  @Override
  public final void close() {
    if (closed) {
      return;
    }
    closed = true;
    for (Object p : programs.values()) {
      releaseProgram(p);
    }
    programs.clear();
    releaseQueueAndContext();
  }

  static String load(String resource) {
    try (InputStream in = AbstractContext.class.getResourceAsStream(resource)) {
      if (in == null) {
        throw new IllegalArgumentException("OpenCL source resource not found: " + resource);
      }
      return new String(in.readAllBytes(), StandardCharsets.UTF_8);
    } catch (IOException e) {
      throw new UncheckedIOException("cannot read OpenCL source " + resource, e);
    }
  }

  static void checkLaunch(long[] global, long[] local) {
    if (global.length != local.length || global.length < 1 || global.length > 3) {
      throw new IllegalArgumentException("global and local sizes must have the same 1..3 dimensions, got "
          + global.length + " and " + local.length);
    }
  }
}
