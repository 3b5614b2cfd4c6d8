package io.kvcache.retention;

import io.kvcache.codec.HeadStore;
import java.util.Arrays;

/**
 * The pieces score-based retention policies share: the live slots of a store in position order, 1-D
 * pooling along positions, and top-k selection. Over primitive arrays, with caller-owned scratch, so
 * a policy allocates only when a store grows.
 */
public final class TokenSelection {

  private TokenSelection() {}

  /**
   * Lists the live slots of {@code store} in increasing position order.
   *
   * @param store   the store
   * @param order   receives the slots; at least {@code store.size()} entries
   * @param scratch at least {@code store.size()} entries; used only when slots are out of position order
   * @return the number of live slots, {@code store.size()}
   */
  public static int liveByPosition(HeadStore store, int[] order, long[] scratch) {
    int slots = store.pageCount() * HeadStore.PAGE_TOKENS;
    int n = 0;
    boolean sorted = true;
    int last = -1;
    for (int slot = 0; slot < slots; slot++) {
      int pos = store.position(slot);
      if (pos != HeadStore.EMPTY) {
        sorted &= pos > last;
        last = pos;
        order[n++] = slot;
      }
    }
    if (!sorted) {
      // Positions are non-negative ints, so (position, slot) packs into a long that sorts by position.
      for (int i = 0; i < n; i++) {
        scratch[i] = ((long) store.position(order[i]) << 32) | order[i];
      }
      Arrays.sort(scratch, 0, n);
      for (int i = 0; i < n; i++) {
        order[i] = (int) scratch[i];
      }
    }
    return n;
  }

  /**
   * 1-D pooling with a centred, odd kernel, "same" size, windows clipped at the ends (SnapKV's
   * smoothing, which keeps the neighbours of a strong token so that a kept fact keeps its context).
   *
   * @param in     input
   * @param inOff  first input
   * @param n      length
   * @param kernel odd kernel size, {@code >= 1}; 1 copies
   * @param max    true for max pooling, false for average pooling (over the clipped window)
   * @param out    output, must not overlap the input
   * @param outOff first output
   */
  public static void pool(float[] in, int inOff, int n, int kernel, boolean max, float[] out, int outOff) {
    if (kernel < 1 || kernel % 2 == 0) {
      throw new IllegalArgumentException("kernel must be odd and >= 1, got " + kernel);
    }
    int r = kernel / 2;
    if (r == 0) {
      System.arraycopy(in, inOff, out, outOff, n);
      return;
    }
    if (max) {
      // O(n * kernel) is fine for the kernels in use (7 to 31); a deque would pay off only beyond that.
      for (int i = 0; i < n; i++) {
        int lo = Math.max(0, i - r), hi = Math.min(n - 1, i + r);
        float m = in[inOff + lo];
        for (int j = lo + 1; j <= hi; j++) {
          m = Math.max(m, in[inOff + j]);
        }
        out[outOff + i] = m;
      }
    } else {
      double sum = 0;
      int lo = 0, hi = -1;
      for (int i = 0; i < n; i++) {
        int nlo = Math.max(0, i - r), nhi = Math.min(n - 1, i + r);
        while (hi < nhi) {
          sum += in[inOff + ++hi];
        }
        while (lo < nlo) {
          sum -= in[inOff + lo++];
        }
        out[outOff + i] = (float) (sum / (hi - lo + 1));
      }
    }
  }

  /**
   * Marks the {@code k} largest of {@code score[off .. off+n)}: exactly {@code k} (or {@code n} when
   * smaller) entries; among equal scores the earlier index (older position) wins, so the choice is
   * deterministic.
   *
   * @param score   scores
   * @param off     first score
   * @param n       count
   * @param k       how many to keep, {@code >= 0}
   * @param keep    receives true for the kept entries, false otherwise, at {@code [0, n)}
   * @param scratch at least {@code n} entries
   */
  public static void top(float[] score, int off, int n, int k, boolean[] keep, long[] scratch) {
    if (k >= n) {
      Arrays.fill(keep, 0, n, true);
      return;
    }
    Arrays.fill(keep, 0, n, false);
    if (k <= 0) {
      return;
    }
    for (int i = 0; i < n; i++) {
      // Descending score, then ascending index: sort (-key, index) ascending.
      scratch[i] = ((long) -sortable(score[off + i]) << 32) | i;
    }
    Arrays.sort(scratch, 0, n);
    for (int i = 0; i < k; i++) {
      keep[(int) scratch[i]] = true;
    }
  }

  /**
   * The {@code k}-th largest of {@code score[off .. off+n)}, for "is in the top k" tests.
   *
   * @param score   scores
   * @param off     first score
   * @param n       count, {@code >= 1}
   * @param k       rank, in {@code [1, n]}
   * @param scratch at least {@code n} floats
   * @return the threshold
   */
  public static float kthLargest(float[] score, int off, int n, int k, float[] scratch) {
    if (k < 1 || k > n) {
      throw new IllegalArgumentException("k must be in [1, n=" + n + "], got " + k);
    }
    System.arraycopy(score, off, scratch, 0, n);
    Arrays.sort(scratch, 0, n);
    return scratch[n - k];
  }

  /**
   * Maps a float to an int with the same order (for NaN-free input), so (score, index) pairs sort as
   * one long.
   */
  static int sortable(float f) {
    int b = Float.floatToRawIntBits(f + 0.0f); // -0.0 -> +0.0
    return b >= 0 ? b : b ^ 0x7fffffff;
  }
}
