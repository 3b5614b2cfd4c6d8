package io.kvcache.core;

import io.kvcache.codec.HeadStore;
import java.lang.reflect.Array;
import java.lang.reflect.Field;
import java.lang.reflect.Modifier;
import java.util.ArrayDeque;
import java.util.IdentityHashMap;
import java.util.Map;
import java.util.TreeMap;

/**
 * What a cache really holds: walks the objects reachable from a root through the library's own
 * classes (java.* objects other than arrays are not entered, nor statics, nor the shared strategy),
 * and adds up the primitive arrays' element bytes (no object headers), by the field that first reached
 * each array. Test code only.
 */
final class HeldBytes {
  private HeldBytes() {}

  /** Bytes of one primitive array's elements. */
  static long bytes(Object array) {
    Class<?> c = array.getClass().getComponentType();
    int n = Array.getLength(array);
    int e = c == long.class || c == double.class ? 8 : c == int.class || c == float.class ? 4
        : c == short.class || c == char.class ? 2 : 1;
    return (long) n * e;
  }

  static Object field(Object o, String name) {
    for (Class<?> c = o.getClass(); c != null; c = c.getSuperclass()) {
      try {
        Field f = c.getDeclaredField(name);
        f.setAccessible(true);
        return f.get(o);
      } catch (NoSuchFieldException e) {
        // up
      } catch (IllegalAccessException e) {
        throw new AssertionError(e);
      }
    }
    throw new AssertionError("no field " + name + " in " + o.getClass());
  }

  static HeadStore[][] stores(KVCache cache) {
    return (HeadStore[][]) field(cache, "stores");
  }

  /**
   * @param root  where to start
   * @param skip  objects not to enter (and whose arrays not to count)
   * @return bytes by "Class.field" of the field that first reached each array
   */
  static Map<String, Long> reachable(Object root, IdentityHashMap<Object, Boolean> skip) {
    Map<String, Long> out = new TreeMap<>();
    IdentityHashMap<Object, Boolean> seen = new IdentityHashMap<>(skip);
    ArrayDeque<Object[]> todo = new ArrayDeque<>();
    todo.add(new Object[] {root, "root"});
    while (!todo.isEmpty()) {
      Object[] item = todo.poll();
      Object o = item[0];
      String path = (String) item[1];
      if (o == null || seen.containsKey(o)) {
        continue;
      }
      seen.put(o, true);
      Class<?> c = o.getClass();
      if (c.isArray()) {
        if (c.getComponentType().isPrimitive()) {
          out.merge(path, bytes(o), Long::sum);
        } else {
          for (int i = 0, n = Array.getLength(o); i < n; i++) {
            todo.add(new Object[] {Array.get(o, i), path});
          }
        }
        continue;
      }
      if (!c.getName().startsWith("io.kvcache") || o instanceof KVCacheStrategy
          || o instanceof io.kvcache.kernel.AttentionKernels) {
        continue;
      }
      for (Class<?> k = c; k != null && k.getName().startsWith("io.kvcache"); k = k.getSuperclass()) {
        for (Field f : k.getDeclaredFields()) {
          if (Modifier.isStatic(f.getModifiers()) || f.getType().isPrimitive()) {
            continue;
          }
          f.setAccessible(true);
          try {
            todo.add(new Object[] {f.get(o), simple(k) + "." + f.getName()});
          } catch (IllegalAccessException e) {
            throw new AssertionError(e);
          }
        }
      }
    }
    return out;
  }

  private static String simple(Class<?> k) {
    String n = k.getName();
    return n.substring(n.lastIndexOf('.') + 1);
  }

  /**
   * The payload a store really holds: the distinct arrays of its pages (f16, f32: every array its
   * PageBlocks can reach; SKVQ: the f16 parts and the quantized pages' codes, scales and zero points).
   */
  static long payloadHeld(HeadStore s) {
    IdentityHashMap<Object, Boolean> skip = new IdentityHashMap<>();
    Object root;
    String name = s.getClass().getName();
    if (name.endsWith("SkvqStore")) {
      IdentityHashMap<Object, Boolean> none = new IdentityHashMap<>();
      long b = 0;
      for (long v : reachable(field(s, "full"), none).values()) {
        b += v;
      }
      for (long v : reachable(field(s, "qp"), none).values()) {
        b += v;
      }
      return b;
    }
    root = field(s, "pages");
    long b = 0;
    for (long v : reachable(root, skip).values()) {
      b += v;
    }
    // PageBlocks' own bookkeeping arrays (base, valueBase, groupSize, groupIndex) are not payload.
    for (String f : new String[] {"base", "valueBase", "groupSize", "groupIndex"}) {
      b -= bytes(field(root, f));
    }
    return b;
  }

  /** The positions a store really holds: its per-page position arrays. */
  static long positionsHeld(HeadStore s) {
    long b = 0;
    for (Object p : (Object[]) field(s, "positions")) {
      if (p != null) {
        b += bytes(p);
      }
    }
    return b;
  }
}
