package io.kvcache.model;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.ShortBuffer;
import java.util.Arrays;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/** Temporary: variants of the f16 matrix-vector product against the bandwidth loop, one thread. */
public final class MatvecExperiment {

  static final VectorSpecies<Float> S = FloatVector.SPECIES_256;
  static final VectorSpecies<Integer> I = IntVector.SPECIES_256;
  static final VectorSpecies<Short> H = ShortVector.SPECIES_128;

  public static void main(String[] args) {
    int rows = Integer.parseInt(args[0]);
    int cols = Integer.parseInt(args[1]);
    int reps = args.length > 2 ? Integer.parseInt(args[2]) : 20;
    // Several copies so that the matrix is not in cache: 256 MiB of weights in all.
    int copies = args.length > 3 ? 1 : Math.max(1, (int) ((256L << 20) / (2L * rows * cols)));
    Weight[] ws = new Weight[copies];
    ByteBuffer pattern = DecodeSpeedProbe.randomHalves(1 << 20, 1);
    java.util.Map<String, Weight> m = new java.util.HashMap<>();
    for (int i = 0; i < copies; i++) {
      DecodeSpeedProbe.add(m, "w" + i, rows, cols, pattern);
      ws[i] = m.get("w" + i);
    }
    if (System.getProperty("v", "").matches(".*3[45].*")) {
      for (Weight w : ws) {
        short[] a = new short[w.rows() * w.cols()];
        w.shorts.get(0, a, 0, a.length);
        HEAP.put(w, a);
      }
    }
    float[] x = new float[cols];
    java.util.SplittableRandom r = new java.util.SplittableRandom(5);
    for (int i = 0; i < cols; i++) {
      x[i] = (float) r.nextGaussian();
    }
    float[] big = new float[1 << 26];
    float[] y = new float[rows];
    float[] yRef = new float[rows];
    MatrixKernels.Scratch scratch = new MatrixKernels.Scratch(cols);
    Exp e = new Exp(cols);
    MatrixKernels.vector().matmul(ws[0], x, 0, cols, 1, yRef, 0, rows, 0, rows, scratch);
    String[] names = {"current", "copy", "fusedShort", "fusedPairs", "chunked3pass", "fusedShortFix", "short1",
        "pairs1", "short1fix", "chunkRow256", "chunkRow1024", "chunk4x256", "short1chunk512", "P1x512", "P1x2048", "P2x512", "P2x2048",
        "P1mul512", "direct4x256", "directRow512", "chunk4x512", "chunk4x128", "chunkRow512", "block4x256", "block4x512", "block4x256acc4", "before", "pipeRow256", "pipeRow512", "pipeRow1024", "pipe4x256", "pipe4x512", "rows2", "block4full", "heap4x512", "heapRow"};
    int[] sel = Arrays.stream(System.getProperty("v", "0").split(",")).mapToInt(Integer::parseInt).toArray();
    for (int v : sel) {
      Arrays.fill(y, 0);
      run(v, ws[0], x, y, e, scratch);
      double err = 0;
      for (int i = 0; i < rows; i++) {
        err = Math.max(err, Math.abs(y[i] - yRef[i]));
      }
      if (v != 1) {
        System.out.printf("%s max |diff| vs current: %.3g%n", names[v], err);
      }
    }
    for (int round = 0; round < Integer.getInteger("rounds", 3); round++) {
      double bw = 0;
      for (int k = 0; k < 5; k++) {
        long t0 = System.nanoTime();
        double s = DecodeSpeedProbe.sum(big, 0, big.length);
        bw = Math.max(bw, big.length * 4.0 / (System.nanoTime() - t0));
        if (s == 42) {
          System.out.println();
        }
      }
      StringBuilder sb = new StringBuilder(String.format("round %d (GB/s median/best): sum loop %.2f", round, bw));
      for (int v : sel) {
        double[] t = new double[reps];
        double[] cpu = new double[reps];
        for (int k = 0; k < reps; k++) {
          Weight w = ws[k % copies];
          long c0 = cpuNanos();
          long t0 = System.nanoTime();
          run(v, w, x, y, e, scratch);
          t[k] = System.nanoTime() - t0;
          cpu[k] = cpuNanos() - c0;
        }
        Arrays.sort(t);
        Arrays.sort(cpu);
        double cpuSum = 0;
        for (double c : cpu) {
          cpuSum += c;
        }
        sb.append(String.format(" cpu-time avg %.2f", ws[0].byteSize() * reps / cpuSum));
        sb.append(String.format(" | %s %.2f/%.2f", names[v], ws[0].byteSize() / t[reps / 2], ws[0].byteSize() / t[0]));
      }
      System.out.println(sb);
    }
  }

  static final java.util.Map<Weight, short[]> HEAP = new java.util.IdentityHashMap<>();

  static long cpuNanos() {
    return ProcessHandle.current().info().totalCpuDuration().orElseThrow().toNanos();
  }

  static void run(int v, Weight w, float[] x, float[] y, Exp e, MatrixKernels.Scratch scratch) {
    switch (v) {
      case 0 -> MatrixKernels.vector().matmul(w, x, 0, w.cols(), 1, y, 0, w.rows(), 0, w.rows(), scratch);
      case 1 -> e.copyOnly(w, y);
      case 2 -> e.fusedShort(w, x, y, false);
      case 3 -> e.fusedPairs(w, x, y);
      case 4 -> e.chunked(w, x, y);
      case 5 -> e.fusedShort(w, x, y, true);
      case 6 -> e.short1(w, x, y);
      case 7 -> e.pairs1(w, x, y);
      case 8 -> e.short1fix(w, x, y);
      case 9 -> e.chunkRow(w, x, y, 256);
      case 10 -> e.chunkRow(w, x, y, 1024);
      case 11 -> e.chunk4(w, x, y, 256);
      case 12 -> e.short1chunk(w, x, y, 512);
      case 13 -> e.p1(w, x, y, 512);
      case 14 -> e.p1(w, x, y, 2048);
      case 15 -> e.p2(w, x, y, 512);
      case 16 -> e.p2(w, x, y, 2048);
      case 17 -> e.p1mul(w, x, y, 512);
      case 18 -> e.direct4(w, x, y, 256);
      case 19 -> e.directRow(w, x, y, 512);
      case 20 -> e.chunk4(w, x, y, 512);
      case 21 -> e.chunk4(w, x, y, 128);
      case 22 -> e.chunkRow(w, x, y, 512);
      case 23 -> e.block4(w, x, y, 256);
      case 24 -> e.block4(w, x, y, 512);
      case 25 -> e.block4acc4(w, x, y, 256);
      case 26 -> e.before(w, x, y);
      case 27 -> e.pipeRow(w, x, y, 256);
      case 28 -> e.pipeRow(w, x, y, 512);
      case 29 -> e.pipeRow(w, x, y, 1024);
      case 30 -> e.pipe4(w, x, y, 256);
      case 31 -> e.pipe4(w, x, y, 512);
      case 32 -> e.rows2(w, x, y);
      case 33 -> e.block4full(w, x, y);
      case 34 -> e.heap4(HEAP.get(w), w.cols(), x, y, 512);
      case 35 -> e.heapRow(HEAP.get(w), w.cols(), x, y);
      default -> throw new IllegalArgumentException();
    }
  }

  static final class Exp {
    final short[] h;
    final int[] pairs;
    final float[] f;
    final float[] xp;

    Exp(int cols) {
      h = new short[4 * cols];
      pairs = new int[2 * cols];
      f = new float[4 * 1024];
      xp = new float[cols];
    }

    void copyOnly(Weight w, float[] y) {
      int cols = w.cols();
      ShortBuffer sb = w.shorts;
      for (int r = 0; r + 4 <= w.rows(); r += 4) {
        sb.get(r * cols, h, 0, 4 * cols);
        y[r] = h[r & 1023];
      }
    }

    private static final float SCALE = 0x1p112f;

    /** Copies four rows of halves, then one pass: widen in registers, scale, multiply-add. */
    void fusedShort(Weight w, float[] x, float[] y, boolean fix) {
      int cols = w.cols();
      ShortBuffer sb = w.shorts;
      for (int r = 0; r + 4 <= w.rows(); r += 4) {
        sb.get(r * cols, h, 0, 4 * cols);
        FloatVector a0 = FloatVector.zero(S);
        FloatVector a1 = FloatVector.zero(S);
        FloatVector a2 = FloatVector.zero(S);
        FloatVector a3 = FloatVector.zero(S);
        for (int c = 0; c < cols; c += 8) {
          FloatVector xv = FloatVector.fromArray(S, x, c);
          a0 = half(h, c, fix).fma(xv, a0);
          a1 = half(h, cols + c, fix).fma(xv, a1);
          a2 = half(h, 2 * cols + c, fix).fma(xv, a2);
          a3 = half(h, 3 * cols + c, fix).fma(xv, a3);
        }
        y[r] = a0.reduceLanes(VectorOperators.ADD);
        y[r + 1] = a1.reduceLanes(VectorOperators.ADD);
        y[r + 2] = a2.reduceLanes(VectorOperators.ADD);
        y[r + 3] = a3.reduceLanes(VectorOperators.ADD);
      }
    }

    static FloatVector half(short[] h, int off, boolean fix) {
      IntVector i = (IntVector) ShortVector.fromArray(H, h, off).convertShape(VectorOperators.S2I, I, 0);
      IntVector t = i.lanewise(VectorOperators.LSHL, 13);
      FloatVector f = t.and(0x8FFFE000).reinterpretAsFloats().mul(SCALE);
      if (fix) {
        IntVector e = t.and(0x0F800000);
        f = f.reinterpretAsInts().lanewise(VectorOperators.OR, 0x7F800000, e.eq(0x0F800000)).reinterpretAsFloats();
      }
      return f;
    }

    /** Halves read two to an int; x permuted once so that even and odd columns line up. */
    void fusedPairs(Weight w, float[] x, float[] y) {
      int cols = w.cols();
      for (int b = 0; b < cols; b += 16) {
        for (int j = 0; j < 8; j++) {
          xp[b + j] = x[b + 2 * j];
          xp[b + 8 + j] = x[b + 2 * j + 1];
        }
      }
      java.nio.IntBuffer ib = w.raw().asIntBuffer();
      int half = cols / 2;
      for (int r = 0; r + 4 <= w.rows(); r += 4) {
        ib.get(r * half, pairs, 0, 4 * half);
        FloatVector a0 = FloatVector.zero(S);
        FloatVector a1 = FloatVector.zero(S);
        FloatVector a2 = FloatVector.zero(S);
        FloatVector a3 = FloatVector.zero(S);
        for (int c = 0; c < cols; c += 16) {
          FloatVector xe = FloatVector.fromArray(S, xp, c);
          FloatVector xo = FloatVector.fromArray(S, xp, c + 8);
          int p = c >> 1;
          IntVector v0 = IntVector.fromArray(I, pairs, p);
          a0 = lo(v0).fma(xe, a0);
          a0 = hi(v0).fma(xo, a0);
          IntVector v1 = IntVector.fromArray(I, pairs, half + p);
          a1 = lo(v1).fma(xe, a1);
          a1 = hi(v1).fma(xo, a1);
          IntVector v2 = IntVector.fromArray(I, pairs, 2 * half + p);
          a2 = lo(v2).fma(xe, a2);
          a2 = hi(v2).fma(xo, a2);
          IntVector v3 = IntVector.fromArray(I, pairs, 3 * half + p);
          a3 = lo(v3).fma(xe, a3);
          a3 = hi(v3).fma(xo, a3);
        }
        y[r] = a0.reduceLanes(VectorOperators.ADD);
        y[r + 1] = a1.reduceLanes(VectorOperators.ADD);
        y[r + 2] = a2.reduceLanes(VectorOperators.ADD);
        y[r + 3] = a3.reduceLanes(VectorOperators.ADD);
      }
    }

    void short1(Weight w, float[] x, float[] y) {
      int cols = w.cols();
      ShortBuffer sb = w.shorts;
      for (int r = 0; r < w.rows(); r++) {
        sb.get(r * cols, h, 0, cols);
        FloatVector a0 = FloatVector.zero(S);
        FloatVector a1 = FloatVector.zero(S);
        for (int c = 0; c < cols; c += 16) {
          IntVector i0 = (IntVector) ShortVector.fromArray(H, h, c).convertShape(VectorOperators.S2I, I, 0);
          IntVector i1 = (IntVector) ShortVector.fromArray(H, h, c + 8).convertShape(VectorOperators.S2I, I, 0);
          FloatVector f0 = i0.lanewise(VectorOperators.LSHL, 13).and(0x8FFFE000).reinterpretAsFloats().mul(SCALE);
          FloatVector f1 = i1.lanewise(VectorOperators.LSHL, 13).and(0x8FFFE000).reinterpretAsFloats().mul(SCALE);
          a0 = f0.fma(FloatVector.fromArray(S, x, c), a0);
          a1 = f1.fma(FloatVector.fromArray(S, x, c + 8), a1);
        }
        y[r] = a0.add(a1).reduceLanes(VectorOperators.ADD);
      }
    }

    void short1fix(Weight w, float[] x, float[] y) {
      int cols = w.cols();
      ShortBuffer sb = w.shorts;
      for (int r = 0; r < w.rows(); r++) {
        sb.get(r * cols, h, 0, cols);
        FloatVector a0 = FloatVector.zero(S);
        FloatVector a1 = FloatVector.zero(S);
        IntVector big = IntVector.zero(I);
        for (int c = 0; c < cols; c += 16) {
          IntVector i0 = (IntVector) ShortVector.fromArray(H, h, c).convertShape(VectorOperators.S2I, I, 0);
          IntVector i1 = (IntVector) ShortVector.fromArray(H, h, c + 8).convertShape(VectorOperators.S2I, I, 0);
          IntVector t0 = i0.lanewise(VectorOperators.LSHL, 13);
          IntVector t1 = i1.lanewise(VectorOperators.LSHL, 13);
          big = big.max(t0.and(0x0FFFE000)).max(t1.and(0x0FFFE000));
          a0 = t0.and(0x8FFFE000).reinterpretAsFloats().mul(SCALE).fma(FloatVector.fromArray(S, x, c), a0);
          a1 = t1.and(0x8FFFE000).reinterpretAsFloats().mul(SCALE).fma(FloatVector.fromArray(S, x, c + 8), a1);
        }
        y[r] = a0.add(a1).reduceLanes(VectorOperators.ADD);
        if (big.reduceLanes(VectorOperators.MAX) >= 0x0F800000) {
          y[r] = Float.NaN;
        }
      }
    }

    void pairs1(Weight w, float[] x, float[] y) {
      int cols = w.cols();
      for (int b = 0; b < cols; b += 16) {
        for (int j = 0; j < 8; j++) {
          xp[b + j] = x[b + 2 * j];
          xp[b + 8 + j] = x[b + 2 * j + 1];
        }
      }
      java.nio.IntBuffer ib = w.raw().asIntBuffer();
      int half = cols / 2;
      for (int r = 0; r < w.rows(); r++) {
        ib.get(r * half, pairs, 0, half);
        FloatVector a0 = FloatVector.zero(S);
        FloatVector a1 = FloatVector.zero(S);
        for (int c = 0; c < cols; c += 16) {
          IntVector v = IntVector.fromArray(I, pairs, c >> 1);
          FloatVector lo = v.lanewise(VectorOperators.LSHL, 16).lanewise(VectorOperators.ASHR, 3).and(0x8FFFE000)
              .reinterpretAsFloats().mul(SCALE);
          FloatVector hi = v.lanewise(VectorOperators.ASHR, 3).and(0x8FFFE000).reinterpretAsFloats().mul(SCALE);
          a0 = lo.fma(FloatVector.fromArray(S, xp, c), a0);
          a1 = hi.fma(FloatVector.fromArray(S, xp, c + 8), a1);
        }
        y[r] = a0.add(a1).reduceLanes(VectorOperators.ADD);
      }
    }

    void chunkRow(Weight w, float[] x, float[] y, int ch) {
      int cols = w.cols();
      ShortBuffer sb = w.shorts;
      for (int r = 0; r < w.rows(); r++) {
        FloatVector a0 = FloatVector.zero(S);
        FloatVector a1 = FloatVector.zero(S);
        for (int c0 = 0; c0 < cols; c0 += ch) {
          int len = Math.min(ch, cols - c0);
          sb.get(r * cols + c0, h, 0, len);
          for (int c = 0; c < len; c++) {
            f[c] = Float.float16ToFloat(h[c]);
          }
          for (int c = 0; c < len; c += 16) {
            a0 = FloatVector.fromArray(S, f, c).fma(FloatVector.fromArray(S, x, c0 + c), a0);
            a1 = FloatVector.fromArray(S, f, c + 8).fma(FloatVector.fromArray(S, x, c0 + c + 8), a1);
          }
        }
        y[r] = a0.add(a1).reduceLanes(VectorOperators.ADD);
      }
    }

    void chunk4(Weight w, float[] x, float[] y, int ch) {
      int cols = w.cols();
      ShortBuffer sb = w.shorts;
      for (int r = 0; r + 4 <= w.rows(); r += 4) {
        FloatVector a0 = FloatVector.zero(S);
        FloatVector a1 = FloatVector.zero(S);
        FloatVector a2 = FloatVector.zero(S);
        FloatVector a3 = FloatVector.zero(S);
        for (int c0 = 0; c0 < cols; c0 += ch) {
          int len = Math.min(ch, cols - c0);
          for (int i = 0; i < 4; i++) {
            sb.get((r + i) * cols + c0, h, i * ch, len);
          }
          for (int c = 0; c < 4 * ch; c++) {
            f[c] = Float.float16ToFloat(h[c]);
          }
          for (int c = 0; c < len; c += 8) {
            FloatVector xv = FloatVector.fromArray(S, x, c0 + c);
            a0 = FloatVector.fromArray(S, f, c).fma(xv, a0);
            a1 = FloatVector.fromArray(S, f, ch + c).fma(xv, a1);
            a2 = FloatVector.fromArray(S, f, 2 * ch + c).fma(xv, a2);
            a3 = FloatVector.fromArray(S, f, 3 * ch + c).fma(xv, a3);
          }
        }
        y[r] = a0.reduceLanes(VectorOperators.ADD);
        y[r + 1] = a1.reduceLanes(VectorOperators.ADD);
        y[r + 2] = a2.reduceLanes(VectorOperators.ADD);
        y[r + 3] = a3.reduceLanes(VectorOperators.ADD);
      }
    }

    void short1chunk(Weight w, float[] x, float[] y, int ch) {
      int cols = w.cols();
      ShortBuffer sb = w.shorts;
      for (int r = 0; r < w.rows(); r++) {
        FloatVector a0 = FloatVector.zero(S);
        FloatVector a1 = FloatVector.zero(S);
        for (int c0 = 0; c0 < cols; c0 += ch) {
          int len = Math.min(ch, cols - c0);
          sb.get(r * cols + c0, h, 0, len);
          for (int c = 0; c < len; c += 16) {
            IntVector i0 = (IntVector) ShortVector.fromArray(H, h, c).convertShape(VectorOperators.S2I, I, 0);
            IntVector i1 = (IntVector) ShortVector.fromArray(H, h, c + 8).convertShape(VectorOperators.S2I, I, 0);
            FloatVector f0 = i0.lanewise(VectorOperators.LSHL, 13).and(0x8FFFE000).reinterpretAsFloats().mul(SCALE);
            FloatVector f1 = i1.lanewise(VectorOperators.LSHL, 13).and(0x8FFFE000).reinterpretAsFloats().mul(SCALE);
            a0 = f0.fma(FloatVector.fromArray(S, x, c0 + c), a0);
            a1 = f1.fma(FloatVector.fromArray(S, x, c0 + c + 8), a1);
          }
        }
        y[r] = a0.add(a1).reduceLanes(VectorOperators.ADD);
      }
    }

    private static final float PRE = 0x1p56f;

    void permute(float[] x, int cols, float scale) {
      for (int b = 0; b < cols; b += 16) {
        for (int j = 0; j < 8; j++) {
          xp[b + j] = x[b + 2 * j] * scale;
          xp[b + 8 + j] = x[b + 2 * j + 1] * scale;
        }
      }
    }

    void p1(Weight w, float[] x, float[] y, int ch) {
      int cols = w.cols();
      permute(x, cols, PRE);
      java.nio.IntBuffer ib = w.raw().asIntBuffer();
      int half = cols / 2;
      IntVector bad = IntVector.zero(I);
      for (int r = 0; r < w.rows(); r++) {
        FloatVector a0 = FloatVector.zero(S);
        FloatVector a1 = FloatVector.zero(S);
        FloatVector a2 = FloatVector.zero(S);
        FloatVector a3 = FloatVector.zero(S);
        for (int c0 = 0; c0 < cols; c0 += ch) {
          int len = Math.min(ch, cols - c0);
          ib.get((r * cols + c0) >> 1, pairs, 0, len >> 1);
          for (int c = 0; c < len; c += 32) {
            IntVector v = IntVector.fromArray(I, pairs, c >> 1);
            IntVector u = IntVector.fromArray(I, pairs, (c >> 1) + 8);
            bad = bad.or(v.and(0x7C007C00).add(0x04000400)).or(u.and(0x7C007C00).add(0x04000400));
            a0 = v.lanewise(VectorOperators.LSHL, 16).lanewise(VectorOperators.ASHR, 3).and(0x8FFFE000)
                .reinterpretAsFloats().fma(FloatVector.fromArray(S, xp, c0 + c), a0);
            a1 = v.lanewise(VectorOperators.ASHR, 3).and(0x8FFFE000).reinterpretAsFloats()
                .fma(FloatVector.fromArray(S, xp, c0 + c + 8), a1);
            a2 = u.lanewise(VectorOperators.LSHL, 16).lanewise(VectorOperators.ASHR, 3).and(0x8FFFE000)
                .reinterpretAsFloats().fma(FloatVector.fromArray(S, xp, c0 + c + 16), a2);
            a3 = u.lanewise(VectorOperators.ASHR, 3).and(0x8FFFE000).reinterpretAsFloats()
                .fma(FloatVector.fromArray(S, xp, c0 + c + 24), a3);
          }
        }
        y[r] = a0.add(a1).add(a2.add(a3)).reduceLanes(VectorOperators.ADD) * PRE;
      }
      if (bad.and(0x80008000).reduceLanes(VectorOperators.OR) != 0) {
        y[0] = Float.NaN;
      }
    }

    void p1mul(Weight w, float[] x, float[] y, int ch) {
      int cols = w.cols();
      permute(x, cols, 1f);
      java.nio.IntBuffer ib = w.raw().asIntBuffer();
      int half = cols / 2;
      IntVector bad = IntVector.zero(I);
      for (int r = 0; r < w.rows(); r++) {
        FloatVector a0 = FloatVector.zero(S);
        FloatVector a1 = FloatVector.zero(S);
        FloatVector a2 = FloatVector.zero(S);
        FloatVector a3 = FloatVector.zero(S);
        for (int c0 = 0; c0 < cols; c0 += ch) {
          int len = Math.min(ch, cols - c0);
          ib.get((r * cols + c0) >> 1, pairs, 0, len >> 1);
          for (int c = 0; c < len; c += 32) {
            IntVector v = IntVector.fromArray(I, pairs, c >> 1);
            IntVector u = IntVector.fromArray(I, pairs, (c >> 1) + 8);
            bad = bad.or(v.and(0x7C007C00).add(0x04000400)).or(u.and(0x7C007C00).add(0x04000400));
            a0 = v.lanewise(VectorOperators.LSHL, 16).lanewise(VectorOperators.ASHR, 3).and(0x8FFFE000)
                .reinterpretAsFloats().mul(SCALE).fma(FloatVector.fromArray(S, xp, c0 + c), a0);
            a1 = v.lanewise(VectorOperators.ASHR, 3).and(0x8FFFE000).reinterpretAsFloats().mul(SCALE)
                .fma(FloatVector.fromArray(S, xp, c0 + c + 8), a1);
            a2 = u.lanewise(VectorOperators.LSHL, 16).lanewise(VectorOperators.ASHR, 3).and(0x8FFFE000)
                .reinterpretAsFloats().mul(SCALE).fma(FloatVector.fromArray(S, xp, c0 + c + 16), a2);
            a3 = u.lanewise(VectorOperators.ASHR, 3).and(0x8FFFE000).reinterpretAsFloats().mul(SCALE)
                .fma(FloatVector.fromArray(S, xp, c0 + c + 24), a3);
          }
        }
        y[r] = a0.add(a1).add(a2.add(a3)).reduceLanes(VectorOperators.ADD);
      }
      if (bad.and(0x80008000).reduceLanes(VectorOperators.OR) != 0) {
        y[0] = Float.NaN;
      }
    }

    void p2(Weight w, float[] x, float[] y, int ch) {
      int cols = w.cols();
      permute(x, cols, PRE);
      java.nio.IntBuffer ib = w.raw().asIntBuffer();
      int half = cols / 2;
      IntVector bad = IntVector.zero(I);
      for (int r = 0; r + 2 <= w.rows(); r += 2) {
        FloatVector a0 = FloatVector.zero(S);
        FloatVector a1 = FloatVector.zero(S);
        FloatVector b0 = FloatVector.zero(S);
        FloatVector b1 = FloatVector.zero(S);
        for (int c0 = 0; c0 < cols; c0 += ch) {
          int len = Math.min(ch, cols - c0);
          ib.get((r * cols + c0) >> 1, pairs, 0, len >> 1);
          ib.get(((r + 1) * cols + c0) >> 1, pairs, half, len >> 1);
          for (int c = 0; c < len; c += 16) {
            IntVector v = IntVector.fromArray(I, pairs, c >> 1);
            IntVector u = IntVector.fromArray(I, pairs, half + (c >> 1));
            bad = bad.or(v.and(0x7C007C00).add(0x04000400)).or(u.and(0x7C007C00).add(0x04000400));
            FloatVector xe = FloatVector.fromArray(S, xp, c0 + c);
            FloatVector xo = FloatVector.fromArray(S, xp, c0 + c + 8);
            a0 = v.lanewise(VectorOperators.LSHL, 16).lanewise(VectorOperators.ASHR, 3).and(0x8FFFE000)
                .reinterpretAsFloats().fma(xe, a0);
            a1 = v.lanewise(VectorOperators.ASHR, 3).and(0x8FFFE000).reinterpretAsFloats().fma(xo, a1);
            b0 = u.lanewise(VectorOperators.LSHL, 16).lanewise(VectorOperators.ASHR, 3).and(0x8FFFE000)
                .reinterpretAsFloats().fma(xe, b0);
            b1 = u.lanewise(VectorOperators.ASHR, 3).and(0x8FFFE000).reinterpretAsFloats().fma(xo, b1);
          }
        }
        y[r] = a0.add(a1).reduceLanes(VectorOperators.ADD) * PRE;
        y[r + 1] = b0.add(b1).reduceLanes(VectorOperators.ADD) * PRE;
      }
      if (bad.and(0x80008000).reduceLanes(VectorOperators.OR) != 0) {
        y[0] = Float.NaN;
      }
    }

    void direct4(Weight w, float[] x, float[] y, int ch) {
      int cols = w.cols();
      ShortBuffer sb = w.shorts;
      for (int r = 0; r + 4 <= w.rows(); r += 4) {
        FloatVector a0 = FloatVector.zero(S);
        FloatVector a1 = FloatVector.zero(S);
        FloatVector a2 = FloatVector.zero(S);
        FloatVector a3 = FloatVector.zero(S);
        for (int c0 = 0; c0 < cols; c0 += ch) {
          int len = Math.min(ch, cols - c0);
          for (int i = 0; i < 4; i++) {
            int src = (r + i) * cols + c0;
            int dst = i * ch;
            for (int c = 0; c < len; c++) {
              f[dst + c] = Float.float16ToFloat(sb.get(src + c));
            }
          }
          for (int c = 0; c < len; c += 8) {
            FloatVector xv = FloatVector.fromArray(S, x, c0 + c);
            a0 = FloatVector.fromArray(S, f, c).fma(xv, a0);
            a1 = FloatVector.fromArray(S, f, ch + c).fma(xv, a1);
            a2 = FloatVector.fromArray(S, f, 2 * ch + c).fma(xv, a2);
            a3 = FloatVector.fromArray(S, f, 3 * ch + c).fma(xv, a3);
          }
        }
        y[r] = a0.reduceLanes(VectorOperators.ADD);
        y[r + 1] = a1.reduceLanes(VectorOperators.ADD);
        y[r + 2] = a2.reduceLanes(VectorOperators.ADD);
        y[r + 3] = a3.reduceLanes(VectorOperators.ADD);
      }
    }

    void directRow(Weight w, float[] x, float[] y, int ch) {
      int cols = w.cols();
      ShortBuffer sb = w.shorts;
      for (int r = 0; r < w.rows(); r++) {
        FloatVector a0 = FloatVector.zero(S);
        FloatVector a1 = FloatVector.zero(S);
        for (int c0 = 0; c0 < cols; c0 += ch) {
          int len = Math.min(ch, cols - c0);
          int src = r * cols + c0;
          for (int c = 0; c < len; c++) {
            f[c] = Float.float16ToFloat(sb.get(src + c));
          }
          for (int c = 0; c < len; c += 16) {
            a0 = FloatVector.fromArray(S, f, c).fma(FloatVector.fromArray(S, x, c0 + c), a0);
            a1 = FloatVector.fromArray(S, f, c + 8).fma(FloatVector.fromArray(S, x, c0 + c + 8), a1);
          }
        }
        y[r] = a0.add(a1).reduceLanes(VectorOperators.ADD);
      }
    }

    /** One bulk copy of four rows, then per column chunk: widen into L1 scratch, 8 accumulators. */
    void block4(Weight w, float[] x, float[] y, int ch) {
      int cols = w.cols();
      ShortBuffer sb = w.shorts;
      for (int r = 0; r + 4 <= w.rows(); r += 4) {
        sb.get(r * cols, h, 0, 4 * cols);
        FloatVector a0 = FloatVector.zero(S);
        FloatVector a1 = FloatVector.zero(S);
        FloatVector a2 = FloatVector.zero(S);
        FloatVector a3 = FloatVector.zero(S);
        FloatVector b0 = FloatVector.zero(S);
        FloatVector b1 = FloatVector.zero(S);
        FloatVector b2 = FloatVector.zero(S);
        FloatVector b3 = FloatVector.zero(S);
        for (int c0 = 0; c0 < cols; c0 += ch) {
          int len = Math.min(ch, cols - c0);
          for (int i = 0; i < 4; i++) {
            int src = i * cols + c0;
            int dst = i * ch;
            for (int c = 0; c < len; c++) {
              f[dst + c] = Float.float16ToFloat(h[src + c]);
            }
          }
          for (int c = 0; c < len; c += 16) {
            FloatVector xv = FloatVector.fromArray(S, x, c0 + c);
            FloatVector xw = FloatVector.fromArray(S, x, c0 + c + 8);
            a0 = FloatVector.fromArray(S, f, c).fma(xv, a0);
            a1 = FloatVector.fromArray(S, f, ch + c).fma(xv, a1);
            a2 = FloatVector.fromArray(S, f, 2 * ch + c).fma(xv, a2);
            a3 = FloatVector.fromArray(S, f, 3 * ch + c).fma(xv, a3);
            b0 = FloatVector.fromArray(S, f, c + 8).fma(xw, b0);
            b1 = FloatVector.fromArray(S, f, ch + c + 8).fma(xw, b1);
            b2 = FloatVector.fromArray(S, f, 2 * ch + c + 8).fma(xw, b2);
            b3 = FloatVector.fromArray(S, f, 3 * ch + c + 8).fma(xw, b3);
          }
        }
        y[r] = a0.add(b0).reduceLanes(VectorOperators.ADD);
        y[r + 1] = a1.add(b1).reduceLanes(VectorOperators.ADD);
        y[r + 2] = a2.add(b2).reduceLanes(VectorOperators.ADD);
        y[r + 3] = a3.add(b3).reduceLanes(VectorOperators.ADD);
      }
    }

    void block4acc4(Weight w, float[] x, float[] y, int ch) {
      int cols = w.cols();
      ShortBuffer sb = w.shorts;
      for (int r = 0; r + 4 <= w.rows(); r += 4) {
        sb.get(r * cols, h, 0, 4 * cols);
        FloatVector a0 = FloatVector.zero(S);
        FloatVector a1 = FloatVector.zero(S);
        FloatVector a2 = FloatVector.zero(S);
        FloatVector a3 = FloatVector.zero(S);
        for (int c0 = 0; c0 < cols; c0 += ch) {
          int len = Math.min(ch, cols - c0);
          for (int i = 0; i < 4; i++) {
            int src = i * cols + c0;
            int dst = i * ch;
            for (int c = 0; c < len; c++) {
              f[dst + c] = Float.float16ToFloat(h[src + c]);
            }
          }
          for (int c = 0; c < len; c += 8) {
            FloatVector xv = FloatVector.fromArray(S, x, c0 + c);
            a0 = FloatVector.fromArray(S, f, c).fma(xv, a0);
            a1 = FloatVector.fromArray(S, f, ch + c).fma(xv, a1);
            a2 = FloatVector.fromArray(S, f, 2 * ch + c).fma(xv, a2);
            a3 = FloatVector.fromArray(S, f, 3 * ch + c).fma(xv, a3);
          }
        }
        y[r] = a0.reduceLanes(VectorOperators.ADD);
        y[r + 1] = a1.reduceLanes(VectorOperators.ADD);
        y[r + 2] = a2.reduceLanes(VectorOperators.ADD);
        y[r + 3] = a3.reduceLanes(VectorOperators.ADD);
      }
    }

    /** The kernel before this change: four whole rows widened, then four accumulators. */
    void before(Weight w, float[] x, float[] y) {
      int cols = w.cols();
      float[] rows = new float[0];
      if (big.length < 4 * cols) {
        big = new float[4 * cols];
      }
      rows = big;
      for (int r = 0; r + 4 <= w.rows(); r += 4) {
        for (int i = 0; i < 4; i++) {
          w.shorts.get((r + i) * cols, h, 0, cols);
          for (int c = 0; c < cols; c++) {
            rows[i * cols + c] = Float.float16ToFloat(h[c]);
          }
        }
        FloatVector a0 = FloatVector.zero(S);
        FloatVector a1 = FloatVector.zero(S);
        FloatVector a2 = FloatVector.zero(S);
        FloatVector a3 = FloatVector.zero(S);
        for (int c = 0; c < cols; c += 8) {
          FloatVector xv = FloatVector.fromArray(S, x, c);
          a0 = FloatVector.fromArray(S, rows, c).fma(xv, a0);
          a1 = FloatVector.fromArray(S, rows, cols + c).fma(xv, a1);
          a2 = FloatVector.fromArray(S, rows, 2 * cols + c).fma(xv, a2);
          a3 = FloatVector.fromArray(S, rows, 3 * cols + c).fma(xv, a3);
        }
        y[r] = a0.reduceLanes(VectorOperators.ADD);
        y[r + 1] = a1.reduceLanes(VectorOperators.ADD);
        y[r + 2] = a2.reduceLanes(VectorOperators.ADD);
        y[r + 3] = a3.reduceLanes(VectorOperators.ADD);
      }
    }

    float[] big = new float[0];

    /** Weights on the heap: widening reads them straight from memory, no copy pass. */
    void heap4(short[] hw, int cols, float[] x, float[] y, int ch) {
      int rows = hw.length / cols;
      for (int r = 0; r + 4 <= rows; r += 4) {
        FloatVector a0 = FloatVector.zero(S);
        FloatVector a1 = FloatVector.zero(S);
        FloatVector a2 = FloatVector.zero(S);
        FloatVector a3 = FloatVector.zero(S);
        for (int c0 = 0; c0 < cols; c0 += ch) {
          for (int i = 0; i < 4; i++) {
            int src = (r + i) * cols + c0;
            int dst = i * ch;
            for (int c = 0; c < ch; c++) {
              f[dst + c] = Float.float16ToFloat(hw[src + c]);
            }
          }
          for (int c = 0; c < ch; c += 8) {
            FloatVector xv = FloatVector.fromArray(S, x, c0 + c);
            a0 = FloatVector.fromArray(S, f, c).fma(xv, a0);
            a1 = FloatVector.fromArray(S, f, ch + c).fma(xv, a1);
            a2 = FloatVector.fromArray(S, f, 2 * ch + c).fma(xv, a2);
            a3 = FloatVector.fromArray(S, f, 3 * ch + c).fma(xv, a3);
          }
        }
        y[r] = a0.reduceLanes(VectorOperators.ADD);
        y[r + 1] = a1.reduceLanes(VectorOperators.ADD);
        y[r + 2] = a2.reduceLanes(VectorOperators.ADD);
        y[r + 3] = a3.reduceLanes(VectorOperators.ADD);
      }
    }

    void heapRow(short[] hw, int cols, float[] x, float[] y) {
      int rows = hw.length / cols;
      if (big.length < 4 * cols) {
        big = new float[4 * cols];
      }
      float[] g = big;
      for (int r = 0; r < rows; r++) {
        int src = r * cols;
        for (int c = 0; c < cols; c++) {
          g[c] = Float.float16ToFloat(hw[src + c]);
        }
        FloatVector a0 = FloatVector.zero(S);
        FloatVector a1 = FloatVector.zero(S);
        for (int c = 0; c < cols; c += 16) {
          a0 = FloatVector.fromArray(S, g, c).fma(FloatVector.fromArray(S, x, c), a0);
          a1 = FloatVector.fromArray(S, g, c + 8).fma(FloatVector.fromArray(S, x, c + 8), a1);
        }
        y[r] = a0.add(a1).reduceLanes(VectorOperators.ADD);
      }
    }

    void rows2(Weight w, float[] x, float[] y) {
      int cols = w.cols();
      if (big.length < 4 * cols) {
        big = new float[4 * cols];
      }
      float[] g = big;
      ShortBuffer sb = w.shorts;
      for (int r = 0; r + 2 <= w.rows(); r += 2) {
        sb.get(r * cols, h, 0, 2 * cols);
        for (int c = 0; c < 2 * cols; c++) {
          g[c] = Float.float16ToFloat(h[c]);
        }
        FloatVector a0 = FloatVector.zero(S);
        FloatVector a1 = FloatVector.zero(S);
        FloatVector a2 = FloatVector.zero(S);
        FloatVector a3 = FloatVector.zero(S);
        FloatVector b0 = FloatVector.zero(S);
        FloatVector b1 = FloatVector.zero(S);
        FloatVector b2 = FloatVector.zero(S);
        FloatVector b3 = FloatVector.zero(S);
        for (int c = 0; c < cols; c += 32) {
          FloatVector x0 = FloatVector.fromArray(S, x, c);
          FloatVector x1 = FloatVector.fromArray(S, x, c + 8);
          FloatVector x2 = FloatVector.fromArray(S, x, c + 16);
          FloatVector x3 = FloatVector.fromArray(S, x, c + 24);
          a0 = FloatVector.fromArray(S, g, c).fma(x0, a0);
          a1 = FloatVector.fromArray(S, g, c + 8).fma(x1, a1);
          a2 = FloatVector.fromArray(S, g, c + 16).fma(x2, a2);
          a3 = FloatVector.fromArray(S, g, c + 24).fma(x3, a3);
          b0 = FloatVector.fromArray(S, g, cols + c).fma(x0, b0);
          b1 = FloatVector.fromArray(S, g, cols + c + 8).fma(x1, b1);
          b2 = FloatVector.fromArray(S, g, cols + c + 16).fma(x2, b2);
          b3 = FloatVector.fromArray(S, g, cols + c + 24).fma(x3, b3);
        }
        y[r] = a0.add(a1).add(a2.add(a3)).reduceLanes(VectorOperators.ADD);
        y[r + 1] = b0.add(b1).add(b2.add(b3)).reduceLanes(VectorOperators.ADD);
      }
    }

    void block4full(Weight w, float[] x, float[] y) {
      int cols = w.cols();
      if (big.length < 4 * cols) {
        big = new float[4 * cols];
      }
      float[] g = big;
      ShortBuffer sb = w.shorts;
      for (int r = 0; r + 4 <= w.rows(); r += 4) {
        sb.get(r * cols, h, 0, 4 * cols);
        for (int c = 0; c < 4 * cols; c++) {
          g[c] = Float.float16ToFloat(h[c]);
        }
        FloatVector a0 = FloatVector.zero(S);
        FloatVector a1 = FloatVector.zero(S);
        FloatVector a2 = FloatVector.zero(S);
        FloatVector a3 = FloatVector.zero(S);
        FloatVector b0 = FloatVector.zero(S);
        FloatVector b1 = FloatVector.zero(S);
        FloatVector b2 = FloatVector.zero(S);
        FloatVector b3 = FloatVector.zero(S);
        for (int c = 0; c < cols; c += 16) {
          FloatVector xv = FloatVector.fromArray(S, x, c);
          FloatVector xw = FloatVector.fromArray(S, x, c + 8);
          a0 = FloatVector.fromArray(S, g, c).fma(xv, a0);
          a1 = FloatVector.fromArray(S, g, cols + c).fma(xv, a1);
          a2 = FloatVector.fromArray(S, g, 2 * cols + c).fma(xv, a2);
          a3 = FloatVector.fromArray(S, g, 3 * cols + c).fma(xv, a3);
          b0 = FloatVector.fromArray(S, g, c + 8).fma(xw, b0);
          b1 = FloatVector.fromArray(S, g, cols + c + 8).fma(xw, b1);
          b2 = FloatVector.fromArray(S, g, 2 * cols + c + 8).fma(xw, b2);
          b3 = FloatVector.fromArray(S, g, 3 * cols + c + 8).fma(xw, b3);
        }
        y[r] = a0.add(b0).reduceLanes(VectorOperators.ADD);
        y[r + 1] = a1.add(b1).reduceLanes(VectorOperators.ADD);
        y[r + 2] = a2.add(b2).reduceLanes(VectorOperators.ADD);
        y[r + 3] = a3.add(b3).reduceLanes(VectorOperators.ADD);
      }
    }

    /**
     * Software pipelining: the copy of the next chunk is issued before the current chunk is widened
     * and multiplied, so that the out-of-order core overlaps its cache misses with the arithmetic.
     */
    void pipeRow(Weight w, float[] x, float[] y, int ch) {
      int cols = w.cols();
      ShortBuffer sb = w.shorts;
      int per = cols / ch;
      int total = w.rows() * per;
      sb.get(0, h, 0, ch);
      FloatVector a0 = FloatVector.zero(S);
      FloatVector a1 = FloatVector.zero(S);
      for (int k = 0; k < total; k++) {
        int cur = (k & 1) * ch;
        if (k + 1 < total) {
          sb.get((k + 1) * ch, h, ch - cur, ch);
        }
        for (int c = 0; c < ch; c++) {
          f[c] = Float.float16ToFloat(h[cur + c]);
        }
        int c0 = (k % per) * ch;
        for (int c = 0; c < ch; c += 16) {
          a0 = FloatVector.fromArray(S, f, c).fma(FloatVector.fromArray(S, x, c0 + c), a0);
          a1 = FloatVector.fromArray(S, f, c + 8).fma(FloatVector.fromArray(S, x, c0 + c + 8), a1);
        }
        if (c0 + ch == cols) {
          y[k / per] = a0.add(a1).reduceLanes(VectorOperators.ADD);
          a0 = FloatVector.zero(S);
          a1 = FloatVector.zero(S);
        }
      }
    }

    void pipe4(Weight w, float[] x, float[] y, int ch) {
      int cols = w.cols();
      ShortBuffer sb = w.shorts;
      int per = cols / ch;
      int blocks = w.rows() / 4;
      int total = blocks * per;
      for (int i = 0; i < 4; i++) {
        sb.get(i * cols, h, i * ch, ch);
      }
      FloatVector a0 = FloatVector.zero(S);
      FloatVector a1 = FloatVector.zero(S);
      FloatVector a2 = FloatVector.zero(S);
      FloatVector a3 = FloatVector.zero(S);
      FloatVector b0 = FloatVector.zero(S);
      FloatVector b1 = FloatVector.zero(S);
      FloatVector b2 = FloatVector.zero(S);
      FloatVector b3 = FloatVector.zero(S);
      for (int k = 0; k < total; k++) {
        int cur = (k & 1) * 4 * ch;
        if (k + 1 < total) {
          int nb = (k + 1) / per;
          int nc = ((k + 1) % per) * ch;
          for (int i = 0; i < 4; i++) {
            sb.get((4 * nb + i) * cols + nc, h, 4 * ch - cur + i * ch, ch);
          }
        }
        for (int c = 0; c < 4 * ch; c++) {
          f[c] = Float.float16ToFloat(h[cur + c]);
        }
        int c0 = (k % per) * ch;
        for (int c = 0; c < ch; c += 16) {
          FloatVector xv = FloatVector.fromArray(S, x, c0 + c);
          FloatVector xw = FloatVector.fromArray(S, x, c0 + c + 8);
          a0 = FloatVector.fromArray(S, f, c).fma(xv, a0);
          a1 = FloatVector.fromArray(S, f, ch + c).fma(xv, a1);
          a2 = FloatVector.fromArray(S, f, 2 * ch + c).fma(xv, a2);
          a3 = FloatVector.fromArray(S, f, 3 * ch + c).fma(xv, a3);
          b0 = FloatVector.fromArray(S, f, c + 8).fma(xw, b0);
          b1 = FloatVector.fromArray(S, f, ch + c + 8).fma(xw, b1);
          b2 = FloatVector.fromArray(S, f, 2 * ch + c + 8).fma(xw, b2);
          b3 = FloatVector.fromArray(S, f, 3 * ch + c + 8).fma(xw, b3);
        }
        if (c0 + ch == cols) {
          int r = 4 * (k / per);
          y[r] = a0.add(b0).reduceLanes(VectorOperators.ADD);
          y[r + 1] = a1.add(b1).reduceLanes(VectorOperators.ADD);
          y[r + 2] = a2.add(b2).reduceLanes(VectorOperators.ADD);
          y[r + 3] = a3.add(b3).reduceLanes(VectorOperators.ADD);
          a0 = FloatVector.zero(S);
          a1 = FloatVector.zero(S);
          a2 = FloatVector.zero(S);
          a3 = FloatVector.zero(S);
          b0 = FloatVector.zero(S);
          b1 = FloatVector.zero(S);
          b2 = FloatVector.zero(S);
          b3 = FloatVector.zero(S);
        }
      }
    }

    static FloatVector lo(IntVector v) {
      return v.lanewise(VectorOperators.LSHL, 16).lanewise(VectorOperators.ASHR, 3).and(0x8FFFE000)
          .reinterpretAsFloats().mul(SCALE);
    }

    static FloatVector hi(IntVector v) {
      return v.lanewise(VectorOperators.ASHR, 3).and(0x8FFFE000).reinterpretAsFloats().mul(SCALE);
    }

    /** The three passes over column chunks of four rows that stay in L1. */
    void chunked(Weight w, float[] x, float[] y) {
      int cols = w.cols();
      ShortBuffer sb = w.shorts;
      int ch = 512;
      for (int r = 0; r + 4 <= w.rows(); r += 4) {
        sb.get(r * cols, h, 0, 4 * cols);
        FloatVector a0 = FloatVector.zero(S);
        FloatVector a1 = FloatVector.zero(S);
        FloatVector a2 = FloatVector.zero(S);
        FloatVector a3 = FloatVector.zero(S);
        for (int c0 = 0; c0 < cols; c0 += ch) {
          int len = Math.min(ch, cols - c0);
          for (int i = 0; i < 4; i++) {
            int src = i * cols + c0;
            int dst = i * ch;
            for (int c = 0; c < len; c++) {
              f[dst + c] = Float.float16ToFloat(h[src + c]);
            }
          }
          for (int c = 0; c < len; c += 8) {
            FloatVector xv = FloatVector.fromArray(S, x, c0 + c);
            a0 = FloatVector.fromArray(S, f, c).fma(xv, a0);
            a1 = FloatVector.fromArray(S, f, ch + c).fma(xv, a1);
            a2 = FloatVector.fromArray(S, f, 2 * ch + c).fma(xv, a2);
            a3 = FloatVector.fromArray(S, f, 3 * ch + c).fma(xv, a3);
          }
        }
        y[r] = a0.reduceLanes(VectorOperators.ADD);
        y[r + 1] = a1.reduceLanes(VectorOperators.ADD);
        y[r + 2] = a2.reduceLanes(VectorOperators.ADD);
        y[r + 3] = a3.reduceLanes(VectorOperators.ADD);
      }
    }
  }
}
