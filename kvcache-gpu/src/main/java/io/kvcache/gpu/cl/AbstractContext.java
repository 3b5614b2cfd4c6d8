package io.kvcache.gpu.cl;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.Map;

/** Program cache and resource loading shared by both bindings. */
abstract class AbstractContext implements ClContext {

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
