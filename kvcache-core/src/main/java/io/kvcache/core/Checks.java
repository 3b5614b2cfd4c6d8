package io.kvcache.core;

/** Argument checks whose messages name the argument, the value and what was expected. */
public final class Checks {
  private Checks() {}

  /**
   * Checks {@code min <= value <= max}.
   *
   * @param name  the argument's name, used in the message
   * @param value the value to check
   * @param min   smallest accepted value
   * @param max   largest accepted value
   * @return {@code value}
   * @throws IllegalArgumentException when out of range
   */
  public static int inRange(String name, int value, int min, int max) {
    if (value < min || value > max) {
      throw new IllegalArgumentException(name + " must be in [" + min + ", " + max + "], got " + value);
    }
    return value;
  }

  /**
   * Checks that {@code array} holds {@code length} elements from {@code offset}. A negative offset is
   * named as the API names each array's offset: {@code name + "Off"} ({@code qOff}, {@code kOff}, ...).
   *
   * @param name   the argument's name
   * @param array  the array, not null
   * @param offset first element used
   * @param length elements needed
   * @throws IllegalArgumentException when the array is null or too short
   */
  public static void span(String name, float[] array, int offset, long length) {
    if (array == null) {
      throw new IllegalArgumentException(name + " must not be null");
    }
    if (offset < 0) { // the API names each array's offset after it: qOff, kOff, vOff, outOff
      throw new IllegalArgumentException(name + "Off must be >= 0, got " + offset);
    }
    if (offset + length > array.length) {
      throw new IllegalArgumentException(name + " must hold " + length + " floats from offset " + offset
          + ", but its length is " + array.length);
    }
  }

  /**
   * Checks that {@code array} holds exactly {@code length} elements: the overloads without offsets
   * take whole arrays, so a longer one is a mistake, not a buffer to read a part of. The commonest,
   * keys or values laid out with one head per query head (after a {@code repeat_kv}), gets its own
   * hint.
   *
   * @param name   the argument's name
   * @param array  the array
   * @param length elements expected
   * @param what   how {@code length} is made, for the message, e.g. {@code "tokens * kvHeads * headDim"}
   * @param kv     whether the array holds keys or values (kvHeads heads per token), for the hint
   * @param shape  the cache's shape, for the hint
   * @param tokens tokens in the call
   * @throws IllegalArgumentException when the array is null or its length differs
   */
  public static void exactLength(String name, float[] array, long length, String what, boolean kv,
      AttentionShape shape, int tokens) {
    if (array == null) {
      throw new IllegalArgumentException(name + " must not be null");
    }
    if (array.length != length) {
      String hint = "";
      if (kv && shape.groupSize() > 1 && array.length == (long) tokens * shape.queryWidth()) {
        hint = "; keys and values take kvHeads (" + shape.kvHeads() + ") heads per token, not queryHeads ("
            + shape.queryHeads() + ")";
      }
      throw new IllegalArgumentException(name + " must hold exactly " + what + " = " + length
          + " floats (the overload with offsets reads part of a larger array), got " + array.length + hint);
    }
  }

  /**
   * Checks that {@code n} floats from {@code offset} are finite.
   *
   * @param name   the argument's name
   * @param array  the array
   * @param offset first element checked
   * @param n      elements checked
   * @throws IllegalArgumentException naming the first non-finite element
   */
  public static void finite(String name, float[] array, int offset, int n) {
    for (int i = 0; i < n; i++) {
      float x = array[offset + i];
      // x - x is 0 for finite x and NaN for NaN and +-Inf: one test covers both.
      if (x - x != 0f) {
        throw new IllegalArgumentException(name + " must be finite, got " + x + " at index " + (offset + i));
      }
    }
  }

  /**
   * Checks the positions of queries that attend to a layer without storing anything
   * ({@link KVCache#attendPrefill}): at least {@code tokens} of them, strictly increasing, within the
   * layer's stored positions {@code [0, last]}.
   *
   * @param positions the query positions
   * @param tokens    how many are used
   * @param last      the layer's largest stored position
   * @param layer     the layer, for the message
   * @throws IllegalArgumentException naming the first position that breaks the rule
   */
  public static void attendPositions(int[] positions, int tokens, int last, int layer) {
    if (positions == null || positions.length < tokens) {
      throw new IllegalArgumentException("positions must hold " + tokens + " entries, got "
          + (positions == null ? "null" : "length " + positions.length));
    }
    for (int t = 0; t < tokens; t++) {
      if (positions[t] < 0 || positions[t] > last || (t > 0 && positions[t] <= positions[t - 1])) {
        throw new IllegalArgumentException("positions must increase strictly within [0, " + last + "] (layer " + layer
            + "'s stored positions), got " + positions[t] + " at index " + t);
      }
    }
  }
}
