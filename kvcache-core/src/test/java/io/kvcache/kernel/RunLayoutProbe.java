package io.kvcache.kernel;

import java.util.Arrays;
import java.util.SplittableRandom;

/**
 * Not a test: would decode from memory gain from softmax steps of 8 pages if a run kept its keys
 * together and its values together? One thread, f16, a GQA-4 tile (head dim 128) over 8 KV heads of
 * {@code tokens} tokens each (default 32768), one array per head, three loops timed in turn, per 16 tokens:
 * <ul>
 *   <li><b>page</b>: today's layout and order, each 16-token page its keys (transposed) then its
 *       values, one softmax step per page;
 *   <li><b>run8</b>: 128-token runs laid out as 8 key pages, then the run's values as one 128-token
 *       value page ({@link AttentionKernels#valueIndex} with 128 tokens), one softmax step and one
 *       value accumulation per run: keys and values each read front to back;
 *   <li><b>touch</b>: one half per 64-byte line of the same arrays, what the memory delivers.
 * </ul>
 * The weights are not scaled by {@link AttentionKernels#HALF_FACTOR}: the floats are meaningless, the
 * work and the order of reads are decode's. From {@code kvcache-core}: {@code java --add-modules
 * jdk.incubator.vector -Xmx8g -cp target/classes:target/test-classes io.kvcache.kernel.RunLayoutProbe
 * 32768}; twelve rounds, each printing the three times.
 */
public final class RunLayoutProbe {

  private static final int D = 128;
  private static final int ROWS = 4;
  private static final int HEADS = 8;
  private static final int RUN = 128;

  private RunLayoutProbe() {}

  /**
   * Runs the probe.
   *
   * @param args tokens per KV head, a multiple of 128 (default 32768)
   */
  public static void main(String[] args) {
    AttentionKernels k = Kernels.get();
    int tokens = args.length > 0 ? Integer.parseInt(args[0]) : 32768;
    SplittableRandom rnd = new SplittableRandom(1);
    short[][] mem = new short[HEADS][tokens * D * 2];
    for (short[] h : mem) {
      for (int i = 0; i < h.length; i++) {
        h[i] = Float.floatToFloat16((float) rnd.nextGaussian());
      }
    }
    float[] q = new float[ROWS * D];
    for (int i = 0; i < q.length; i++) {
      q[i] = (float) rnd.nextGaussian() * 0.088f * AttentionKernels.HALF_FACTOR;
    }
    float[] o = new float[ROWS * D];
    float[] s = new float[ROWS * RUN];
    float[] m = new float[ROWS];
    float[] l = new float[ROWS];
    double sink = 0;
    for (int rep = 0; rep < 12; rep++) {
      StringBuilder line = new StringBuilder("ns per 16 tokens from memory:");
      for (int mode = 0; mode < 3; mode++) {
        long t0 = System.nanoTime();
        for (short[] h : mem) {
          Arrays.fill(m, Float.NEGATIVE_INFINITY);
          Arrays.fill(l, 0f);
          if (mode == 0) {
            for (int page = 0; page < tokens / 16; page++) {
              int off = page * 16 * D * 2;
              k.scoresHalf(q, 0, ROWS, D, h, off, 16, s, 0, 16);
              softmax(k, s, 16, 16, m, l, o);
              k.accumulateHalf(s, 0, 16, ROWS, h, off + 16 * D, 16, D, o, 0);
            }
          } else if (mode == 1) {
            for (int run = 0; run < tokens / RUN; run++) {
              int off = run * RUN * D * 2;
              for (int page = 0; page < RUN / 16; page++) {
                k.scoresHalf(q, 0, ROWS, D, h, off + page * 16 * D, 16, s, page * 16, RUN);
              }
              softmax(k, s, RUN, RUN, m, l, o);
              k.accumulateHalf(s, 0, RUN, ROWS, h, off + RUN * D, RUN, D, o, 0);
            }
          } else {
            float acc = 0f;
            for (int i = 0; i < h.length; i += 32) {
              acc += h[i];
            }
            sink += acc;
          }
        }
        long dt = System.nanoTime() - t0;
        line.append(String.format("  %s %.0f", new String[] {"page", "run8", "touch"}[mode],
            dt / (double) (HEADS * tokens / 16)));
      }
      System.out.println(line);
    }
    System.out.println("(checksum " + (sink + o[0]) + ")");
  }

  /** One online-softmax step over {@code n} scores per row, as {@code PagedAttention} takes it. */
  private static void softmax(AttentionKernels k, float[] s, int n, int stride, float[] m, float[] l, float[] o) {
    for (int r = 0; r < ROWS; r++) {
      float pm = k.max(s, r * stride, n);
      if (pm > m[r]) {
        if (l[r] > 0f) {
          float f = (float) Math.exp(m[r] - pm);
          l[r] *= f;
          k.scale(o, r * D, D, f);
        }
        m[r] = pm;
      }
      l[r] += k.expAndSum(s, r * stride, n, m[r]);
    }
  }
}
