package io.kvcache.kernel;

import java.util.SplittableRandom;

/**
 * Not a test: one tile's work per f16 page (4 query rows by default, head dim 128, 16 tokens), the two ways
 * the f16 store can do it, alternating in one JVM so that both see the same machine: <b>widened</b>
 * (the page into a float copy, then {@code scores}, softmax, {@code accumulate}) and <b>in place</b>
 * ({@code scoresHalf}, softmax, the weights scaled by {@link AttentionKernels#HALF_FACTOR},
 * {@code accumulateHalf}). With few pages the pages stay in L2; with many they come from memory.
 * Run from {@code kvcache-core} with {@code java --add-modules jdk.incubator.vector -Xmx4g -cp
 * target/classes:target/test-classes io.kvcache.kernel.HalfPageProbe [pages] [repetitions] [rows]}, e.g.
 * {@code 64 30000} and {@code 65536 30}.
 */
public final class HalfPageProbe {

  private HalfPageProbe() {}

  /**
   * Runs the probe.
   *
   * @param args pages (default 64), repetitions (default 30000; the last two thirds are averaged) and
   *             query rows (default 4, one decode tile of a GQA-4 KV head)
   */
  public static void main(String[] args) {
    int pages = args.length > 0 ? Integer.parseInt(args[0]) : 64;
    int reps = args.length > 1 ? Integer.parseInt(args[1]) : 30000;
    AttentionKernels k = Kernels.vector();
    int d = 128, p = 16;
    int rows = args.length > 2 ? Integer.parseInt(args[2]) : 4;
    SplittableRandom rnd = new SplittableRandom(1);
    short[][] halves = new short[pages][2 * d * p];
    for (short[] page : halves) {
      for (int i = 0; i < page.length; i++) {
        page[i] = Float.floatToFloat16((float) rnd.nextGaussian());
      }
    }
    float[] q = new float[rows * d];
    float[] qScaled = new float[rows * d];
    for (int i = 0; i < q.length; i++) {
      q[i] = (float) rnd.nextGaussian() / 16;
      qScaled[i] = q[i] * AttentionKernels.HALF_FACTOR;
    }
    float[] s = new float[rows * p];
    float[] w = new float[rows * p];
    float[] o = new float[rows * d];
    float[] buf = new float[2 * d * p];
    double widened = 0, inPlace = 0;
    int counted = 0;
    for (int rep = 0; rep < reps; rep++) {
      long t0 = System.nanoTime();
      for (short[] page : halves) {
        k.f16ToF32(page, 0, buf, 0, buf.length);
        k.scores(q, 0, rows, d, buf, 0, p, s, 0, p);
        softmax(k, s, rows, p);
        k.accumulate(s, 0, p, rows, buf, d * p, p, d, o, 0);
      }
      long t1 = System.nanoTime();
      for (short[] page : halves) {
        k.scoresHalf(qScaled, 0, rows, d, page, 0, p, s, 0, p);
        softmax(k, s, rows, p);
        for (int i = 0; i < w.length; i++) {
          w[i] = s[i] * AttentionKernels.HALF_FACTOR;
        }
        k.accumulateHalf(w, 0, p, rows, page, d * p, p, d, o, 0);
      }
      long t2 = System.nanoTime();
      if (rep >= reps / 3) {
        widened += t1 - t0;
        inPlace += t2 - t1;
        counted++;
      }
    }
    System.out.printf("%s: %d pages (%d KiB of halves), ns per page: widened %.0f, in place %.0f, ratio %.3f "
        + "(checksum %.3g)%n", k.name(), pages, pages * 2 * d * p * 2 / 1024, widened / counted / pages,
        inPlace / counted / pages, widened / inPlace, o[3]);
  }

  private static void softmax(AttentionKernels k, float[] s, int rows, int p) {
    for (int r = 0; r < rows; r++) {
      k.expAndSum(s, r * p, p, k.max(s, r * p, p));
    }
  }
}
