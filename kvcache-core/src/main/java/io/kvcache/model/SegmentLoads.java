package io.kvcache.model;

import java.lang.invoke.MethodHandle;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.MethodType;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorSpecies;

/**
 * Vector loads of 16-bit weights straight from their (mapped) buffer, where the running JDK has the
 * final foreign-memory API (Java 22 and later). The library is compiled for Java 21, where
 * {@code MemorySegment} is a preview API and cannot be named, so the two calls it needs,
 * {@code MemorySegment.ofBuffer} and {@code ShortVector.fromMemorySegment}, are reached through
 * method handles held in static finals, which C2 inlines like direct calls. On Java 21 (or with
 * {@code -Dkvcache.matvec.segments=false}) {@link #AVAILABLE} is false and the kernels copy rows out of
 * the buffer instead; both paths compute the same products.
 */
final class SegmentLoads {

  private SegmentLoads() {}

  private static final MethodHandle OF_BUFFER;
  /**
   * {@code (VectorSpecies<Short>, Object segment, long offset, ByteOrder) -> ShortVector}. Callers invoke
   * it in the same method that widens the result: a vector returned from a helper that wraps the call
   * in a try/catch was boxed (measured 3x slower).
   */
  static final MethodHandle LOAD;

  /** Whether {@link #segment} and {@link #LOAD} may be used. */
  static final boolean AVAILABLE;

  static {
    MethodHandle of = null, load = null;
    boolean ok = false;
    if (Runtime.version().feature() >= 22 && !"false".equals(System.getProperty("kvcache.matvec.segments"))) {
      try {
        Class<?> seg = Class.forName("java.lang.foreign.MemorySegment");
        MethodHandles.Lookup lookup = MethodHandles.publicLookup();
        of = lookup.findStatic(seg, "ofBuffer", MethodType.methodType(seg, java.nio.Buffer.class))
            .asType(MethodType.methodType(Object.class, ByteBuffer.class));
        load = lookup.findStatic(ShortVector.class, "fromMemorySegment",
                MethodType.methodType(ShortVector.class, VectorSpecies.class, seg, long.class, ByteOrder.class))
            .asType(MethodType.methodType(ShortVector.class, VectorSpecies.class, Object.class, long.class,
                ByteOrder.class));
        ok = true;
      } catch (ReflectiveOperationException | LinkageError e) {
        ok = false; // an unexpected JDK: keep the copying kernels
      }
    }
    OF_BUFFER = of;
    LOAD = load;
    AVAILABLE = ok;
  }

  /**
   * @param buffer a weight's bytes
   * @return a {@code MemorySegment} over them, typed as Object for Java 21 callers
   */
  static Object segment(ByteBuffer buffer) {
    try {
      return (Object) OF_BUFFER.invokeExact(buffer);
    } catch (RuntimeException | Error e) {
      throw e;
    } catch (Throwable t) {
      throw new IllegalStateException(t);
    }
  }

}
