package io.kvcache.model;

import java.nio.ByteBuffer;
import java.nio.ShortBuffer;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * Not a test: one f16 matrix-vector product of decode on one thread, against the memory bandwidth
 * measured in the same process, and the two parts its time is made of. Run with {@code java
 * --add-modules jdk.incubator.vector -Xmx3g -XX:MaxDirectMemorySize=2g -cp
 * target/classes:target/test-classes io.kvcache.model.MatvecProbe [rows] [cols]}.
 *
 * <ul>
 *   <li><b>sum loop</b>: {@link DecodeSpeedProbe#sum} over a 256 MiB heap array, the bandwidth the
 *       bar is measured against;
 *   <li><b>kernel, cold</b>: {@link MatrixKernels#get()} over matrices that together exceed the
 *       caches (each call reads its weights from memory, as decode does);
 *   <li><b>copy only, cold</b>: the kernel's bulk copies of four rows out of the buffer, nothing else:
 *       the memory stream alone;
 *   <li><b>kernel, hot</b>: the kernel over 64 rows that stay in L2: the arithmetic alone.
 * </ul>
 *
 * <p>With {@code copy} and {@code hot} in GB/s of weights, {@code 1 / (1/copy + 1/hot)} is the rate
 * the kernel has when the arithmetic does not overlap the memory stream; the kernel's cold rate sits
 * near it.
 */
public final class MatvecProbe {

  public static void main(String[] args) {
    int rows = args.length > 0 ? Integer.parseInt(args[0]) : 8192;
    int cols = args.length > 1 ? Integer.parseInt(args[1]) : 2048;
    MatrixKernels k = MatrixKernels.get();
    int copies = Math.max(2, (int) ((512L << 20) / (2L * rows * cols)));
    Weight[] ws = new Weight[copies];
    ByteBuffer pattern = randomHalves(1 << 20, 1);
    Map<String, Weight> m = new HashMap<>();
    for (int i = 0; i < copies; i++) {
      add(m, "w" + i, rows, cols, pattern);
      ws[i] = m.get("w" + i);
    }
    Weight hotW = ws[0];
    int hotRows = 64;
    SplittableRandom r = new SplittableRandom(5);
    float[] x = new float[cols];
    for (int i = 0; i < cols; i++) {
      x[i] = (float) r.nextGaussian();
    }
    float[] y = new float[rows];
    float[] big = new float[1 << 26];
    MatrixKernels.Scratch s = new MatrixKernels.Scratch(cols);
    short[] h = new short[4 * cols];
    long bytes = hotW.byteSize();
    System.out.printf("matrix %dx%d f16 (%.1f MB), %d copies, kernels %s%n", rows, cols, bytes / 1e6, copies,
        k.name());
    for (int round = 0; round < 4; round++) {
      double bw = 0;
      for (int i = 0; i < 4; i++) {
        long t0 = System.nanoTime();
        double sum = DecodeSpeedProbe.sum(big, 0, big.length);
        bw = Math.max(bw, big.length * 4.0 / (System.nanoTime() - t0));
        if (sum == 42) {
          System.out.println();
        }
      }
      int reps = 3 * copies;
      double[] cold = new double[reps];
      double[] copy = new double[reps];
      for (int i = 0; i < reps; i++) {
        Weight w = ws[i % copies];
        long t0 = System.nanoTime();
        k.matmul(w, x, 0, cols, 1, y, 0, rows, 0, rows, s);
        cold[i] = bytes / (double) (System.nanoTime() - t0);
        w = ws[(i + copies / 2) % copies];
        ShortBuffer sb = w.data().asShortBuffer();
        t0 = System.nanoTime();
        for (int row = 0; row + 4 <= rows; row += 4) {
          sb.get(row * cols, h, 0, 4 * cols);
        }
        copy[i] = bytes / (double) (System.nanoTime() - t0);
        y[i % rows] += h[i % h.length];
      }
      int hotReps = 2000;
      double[] hot = new double[hotReps];
      for (int i = 0; i < hotReps; i++) {
        long t0 = System.nanoTime();
        k.matmul(hotW, x, 0, cols, 1, y, 0, rows, 0, hotRows, s);
        hot[i] = hotRows * (long) cols * 2 / (double) (System.nanoTime() - t0);
      }
      double c = median(copy);
      double hm = median(hot);
      System.out.printf("round %d: sum loop %.2f GB/s (best of 4) | kernel cold %.2f GB/s median, %.2f best"
          + " (%.0f%% of the sum loop) | copy only %.2f | kernel hot %.2f | no-overlap model %.2f%n", round, bw,
          median(cold), max(cold), 100 * median(cold) / bw, c, hm, 1 / (1 / c + 1 / hm));
    }
    System.out.println(y[rows / 3] == 42 ? "" : "done");
  }

  static double median(double[] a) {
    double[] b = a.clone();
    Arrays.sort(b);
    return b[b.length / 2];
  }

  static double max(double[] a) {
    double m = 0;
    for (double v : a) {
      m = Math.max(m, v);
    }
    return m;
  }

  static ByteBuffer randomHalves(int n, long seed) {
    SplittableRandom r = new SplittableRandom(seed);
    ByteBuffer b = ByteBuffer.allocateDirect(2 * n).order(java.nio.ByteOrder.LITTLE_ENDIAN);
    for (int i = 0; i < n; i++) {
      b.putShort(Float.floatToFloat16((float) (r.nextGaussian() * 0.02)));
    }
    return b.flip();
  }

  /** A tensor filled by repeating a random pattern: the bytes read per product are what matters here. */
  static void add(Map<String, Weight> t, String name, int rows, int cols, ByteBuffer pattern) {
    long n = (long) rows * cols * 2;
    ByteBuffer b = ByteBuffer.allocateDirect((int) n).order(java.nio.ByteOrder.LITTLE_ENDIAN);
    while (b.hasRemaining()) {
      ByteBuffer p = pattern.duplicate();
      p.limit((int) Math.min(p.capacity(), b.remaining()));
      b.put(p);
    }
    b.flip();
    t.put(name, new Weight(name, DType.F16, rows, cols, b));
  }
}
