package io.kvcache.skvq;

/**
 * The code widths SKVQ stores. {@link #TERNARY} is the paper's "1.5 bits": three levels
 * ({@code 0, 1, 2}; the authors' reference sets the largest code to 2 when the width is 1.5), packed
 * five codes to a byte (base 3), so it costs 1.6 bits per value before padding.
 */
enum Bits {
  ONE(1.0, 1, 1),
  TERNARY(1.5, 2, 0),
  TWO(2.0, 3, 2),
  FOUR(4.0, 15, 4),
  EIGHT(8.0, 255, 8);

  /** The nominal width, as the user names it. */
  final double nominal;
  /** The largest code: codes are {@code 0 .. levels}. */
  final int levels;
  /** Bits per code in a bit-packed word; 0 for the base-3 packing. */
  final int width;

  Bits(double nominal, int levels, int width) {
    this.nominal = nominal;
    this.levels = levels;
    this.width = width;
  }

  boolean ternary() {
    return width == 0;
  }

  static Bits of(String name, double bits) {
    for (Bits b : values()) {
      if (b.nominal == bits) {
        return b;
      }
    }
    throw new IllegalArgumentException(name + " must be one of 1, 1.5, 2, 4, 8, got " + bits);
  }
}
