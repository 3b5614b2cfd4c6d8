package io.kvcache.skvq;

import io.kvcache.core.Checks;

/**
 * The settings of SKVQ (arXiv 2405.06219): code widths, group sizes, the full-precision window and
 * sinks, clipping and channel reordering. Immutable; the compact constructor validates every field.
 *
 * @param keyBits    bits per key code: 1, 1.5 (three levels, base-3 packed), 2, 4 or 8
 * @param valueBits  bits per value code, the same choices
 * @param keyGroup   key channels sharing one f16 scale and zero point, {@code >= 1}; a head with fewer
 *                   channels forms one group
 * @param valueGroup value channels per group, {@code >= 1}
 * @param window     most recent positions kept in full precision (f16), {@code >= 0}
 * @param sinks      first positions ({@code 0 .. sinks-1}) never quantized, {@code >= 0}
 * @param clip       clipping ratio alpha in {@code [0.5, 1]}, or 0 to search it per layer and KV head on
 *                   the calibration data over {@code 1.00, 0.99, ..., 0.80}
 * @param reorder    whether to reorder channels from calibration data so similar ranges share a group
 */
public record SkvqConfig(double keyBits, double valueBits, int keyGroup, int valueGroup, int window, int sinks,
    double clip, boolean reorder) {

  /** The paper's full-precision window. */
  public static final int DEFAULT_WINDOW = 128;
  /** The paper's group size, for keys and values. */
  public static final int DEFAULT_GROUP = 128;
  /** Sink tokens kept in full precision; the authors' released configurations use 5 ({@code sink5}). */
  public static final int DEFAULT_SINKS = 5;

  /** Validates ranges; messages name the field, the value and the range. */
  public SkvqConfig {
    Bits.of("keyBits", keyBits);
    Bits.of("valueBits", valueBits);
    Checks.inRange("keyGroup", keyGroup, 1, 1 << 16);
    Checks.inRange("valueGroup", valueGroup, 1, 1 << 16);
    Checks.inRange("window", window, 0, Integer.MAX_VALUE / 2);
    Checks.inRange("sinks", sinks, 0, Integer.MAX_VALUE / 2);
    if (!(clip == 0 || (clip >= 0.5 && clip <= 1))) {
      throw new IllegalArgumentException("clip must be 0 (search) or in [0.5, 1], got " + clip);
    }
  }

  /**
   * The paper's headline setting: keys 2 bits, values 1.5 bits, groups of 128, window 128, 5 sinks,
   * clipping searched, channels reordered.
   *
   * @return the default configuration
   */
  public static SkvqConfig paperDefault() {
    return of(2, 1.5);
  }

  /**
   * The paper's defaults with other code widths.
   *
   * @param keyBits   key code width: 1, 1.5, 2, 4 or 8
   * @param valueBits value code width: 1, 1.5, 2, 4 or 8
   * @return the configuration
   */
  public static SkvqConfig of(double keyBits, double valueBits) {
    return new SkvqConfig(keyBits, valueBits, DEFAULT_GROUP, DEFAULT_GROUP, DEFAULT_WINDOW, DEFAULT_SINKS, 0, true);
  }

  /**
   * @param keyGroup   key channels per group
   * @param valueGroup value channels per group
   * @return a copy with these group sizes
   */
  public SkvqConfig withGroups(int keyGroup, int valueGroup) {
    return new SkvqConfig(keyBits, valueBits, keyGroup, valueGroup, window, sinks, clip, reorder);
  }

  /**
   * @param window full-precision recent positions
   * @param sinks  full-precision first positions
   * @return a copy with this window and these sinks
   */
  public SkvqConfig withWindow(int window, int sinks) {
    return new SkvqConfig(keyBits, valueBits, keyGroup, valueGroup, window, sinks, clip, reorder);
  }

  /**
   * @param clip a fixed clipping ratio in [0.5, 1], or 0 to search it
   * @return a copy with this clipping
   */
  public SkvqConfig withClip(double clip) {
    return new SkvqConfig(keyBits, valueBits, keyGroup, valueGroup, window, sinks, clip, reorder);
  }

  /**
   * @param reorder whether to reorder channels
   * @return a copy with reordering on or off
   */
  public SkvqConfig withReorder(boolean reorder) {
    return new SkvqConfig(keyBits, valueBits, keyGroup, valueGroup, window, sinks, clip, reorder);
  }

  /** @return a short name for tables, e.g. {@code skvq-k2-v1.5-g128-w128} */
  public String name() {
    return "skvq-k" + fmt(keyBits) + "-v" + fmt(valueBits) + "-g" + keyGroup
        + (valueGroup != keyGroup ? "/" + valueGroup : "") + "-w" + window;
  }

  private static String fmt(double b) {
    return b == Math.rint(b) ? Integer.toString((int) b) : Double.toString(b);
  }
}
