package io.kvcache.model;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Path;
import java.util.SplittableRandom;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * The Vector API kernels against the scalar definition and both against float64 (every weight type,
 * batches, offsets), and the row split against one thread.
 */
class MatrixKernelsTest {

  @TempDir
  Path tmp;

  /** A random {@code [rows][cols]} tensor of the given type, through the GGUF writer and reader. */
  Weight tensor(DType type, int rows, int cols, SplittableRandom r) throws IOException {
    Path f = tmp.resolve("t" + r.nextInt(1 << 30) + ".gguf");
    new GgufWriter().addTensor("w", type, rows, cols, TinyModels.gaussian(r, rows * cols, 1, 0)).write(f);
    return GgufFile.read(f).tensors().get("w");
  }

  @ParameterizedTest
  @EnumSource(DType.class)
  void vectorKernelsMatchScalarWithinFloatRounding(DType type) throws IOException {
    assumeTrue(MatrixKernels.vectorAvailable(), "jdk.incubator.vector absent");
    long seed = TinyModels.seed();
    SplittableRandom r = new SplittableRandom(seed);
    for (int trial = 0; trial < 6; trial++) {
      int rows = 1 + r.nextInt(37);
      int cols = type == DType.Q8_0 ? 32 * (1 + r.nextInt(6)) : 1 + r.nextInt(150);
      int n = 1 + r.nextInt(6);
      Weight w = tensor(type, rows, cols, r);
      float[] x = TinyModels.gaussian(r, 3 + n * (cols + 2), 1, 0);
      float[] ys = new float[1 + n * (rows + 3)];
      float[] yv = ys.clone();
      MatrixKernels.Scratch s = new MatrixKernels.Scratch(cols);
      MatrixKernels.scalar().matmul(w, x, 3, cols + 2, n, ys, 1, rows + 3, 0, rows, s);
      MatrixKernels.vector().matmul(w, x, 3, cols + 2, n, yv, 1, rows + 3, 0, rows, s);
      for (int t = 0; t < n; t++) {
        for (int i = 0; i < rows; i++) {
          double mag = 0, exact = 0;
          for (int c = 0; c < cols; c++) {
            double prod = (double) w.get(i, c) * x[3 + t * (cols + 2) + c];
            mag += Math.abs(prod);
            exact += prod;
          }
          // Summation order differs: each of the cols products is rounded once either way. The float64
          // sum of the dequantized weights times the inputs is the definition both must meet.
          double tol = 2 * cols * Math.ulp(1f) * mag + 1e-30;
          int k = 1 + t * (rows + 3) + i;
          String where = "seed=" + seed + " type=" + type + " " + rows + "x" + cols + " n=" + n + " row " + i
              + " token " + t;
          assertEquals(ys[k], yv[k], tol, where);
          assertEquals(exact, ys[k], tol, where + ": scalar against float64");
          assertEquals(exact, yv[k], tol, where + ": vector against float64");
        }
      }
      assertEquals(0f, ys[0], "seed=" + seed + ": wrote outside the output range");
    }
  }

  /** Decode's path for 16-bit weights: vector tails, row blocks of four, a row range and offsets. */
  @ParameterizedTest
  @EnumSource(value = DType.class, names = {"F16", "BF16"})
  void matrixVectorProductMatchesScalarAcrossTailsAndRowBlocks(DType type) throws IOException {
    assumeTrue(MatrixKernels.vectorAvailable(), "jdk.incubator.vector absent");
    long seed = TinyModels.seed();
    SplittableRandom r = new SplittableRandom(seed);
    int[] colsCases = {1, 7, 15, 16, 31, 32, 33, 64, 257, 2 * 256 + 17};
    for (int cols : colsCases) {
      int rows = 9 + r.nextInt(12);
      Weight w = tensor(type, rows, cols, r);
      float[] x = TinyModels.gaussian(r, 5 + cols, 1, 0);
      int r0 = r.nextInt(3);
      int r1 = rows - r.nextInt(3);
      float[] ys = new float[rows + 2];
      float[] yv = new float[rows + 2];
      java.util.Arrays.fill(ys, 7f);
      java.util.Arrays.fill(yv, 7f);
      MatrixKernels.Scratch s = new MatrixKernels.Scratch(cols + r.nextInt(40));
      MatrixKernels.scalar().matmul(w, x, 5, cols, 1, ys, 2, rows, r0, r1, s);
      MatrixKernels.vector().matmul(w, x, 5, cols, 1, yv, 2, rows, r0, r1, s);
      for (int i = 0; i < rows; i++) {
        double mag = 0;
        for (int c = 0; c < cols; c++) {
          mag += Math.abs(w.get(i, c) * x[5 + c]);
        }
        double tol = 2 * cols * Math.ulp(1f) * mag + 1e-30;
        String where = "seed=" + seed + " type=" + type + " " + rows + "x" + cols + " rows [" + r0 + ", " + r1
            + ") row " + i;
        if (i < r0 || i >= r1) {
          assertEquals(7f, yv[2 + i], where + ": written outside the row range");
        } else {
          assertEquals(ys[2 + i], yv[2 + i], tol, where);
        }
      }
      assertEquals(7f, yv[0], "seed=" + seed + ": wrote before the output offset");
    }
  }

  /** An f16 infinity or NaN among the weights must reach the output as it does in the definition. */
  @Test
  void matrixVectorProductKeepsInfinitiesAndNaNs() throws IOException {
    assumeTrue(MatrixKernels.vectorAvailable(), "jdk.incubator.vector absent");
    int cols = 296;
    float[] a = new float[8 * cols];
    java.util.Arrays.fill(a, 0.5f);
    a[3] = Float.POSITIVE_INFINITY;
    a[cols + 263] = Float.NEGATIVE_INFINITY;
    a[2 * cols + 100] = Float.NaN;
    a[5 * cols + cols - 1] = Float.POSITIVE_INFINITY;
    Path f = tmp.resolve("inf.gguf");
    new GgufWriter().addTensor("w", DType.F16, 8, cols, a).write(f);
    Weight w = GgufFile.read(f).tensors().get("w");
    float[] x = new float[cols];
    java.util.Arrays.fill(x, 1f);
    float[] ys = new float[8];
    float[] yv = new float[8];
    MatrixKernels.Scratch s = new MatrixKernels.Scratch(cols);
    MatrixKernels.scalar().matmul(w, x, 0, cols, 1, ys, 0, 8, 0, 8, s);
    MatrixKernels.vector().matmul(w, x, 0, cols, 1, yv, 0, 8, 0, 8, s);
    assertEquals(Float.POSITIVE_INFINITY, yv[0]);
    assertEquals(Float.NEGATIVE_INFINITY, yv[1]);
    assertTrue(Float.isNaN(yv[2]));
    assertEquals(Float.POSITIVE_INFINITY, yv[5]);
    for (int i = 0; i < 8; i++) {
      assertEquals(ys[i], yv[i], 1e-3, "row " + i);
    }
  }

  /**
   * Every finite binary16 value (62 x 1024 of them: all patterns but exponent 31) widened by the
   * vector decode kernel equals {@link Float#float16ToFloat}: a one-hot activation reads out one
   * column at a time, exactly (the other products are zeros).
   */
  @Test
  void decodeWidensEveryFiniteHalfExactly() {
    assumeTrue(MatrixKernels.vectorAvailable(), "jdk.incubator.vector absent");
    assertEquals(Runtime.version().feature() >= 22 && !"false".equals(System.getProperty("kvcache.matvec.segments")),
        SegmentLoads.AVAILABLE, "the one-pass path where Java has it, unless switched off");
    int rows = 62, cols = 1024;
    java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(2 * rows * cols).order(java.nio.ByteOrder.LITTLE_ENDIAN);
    short[] bits = new short[rows * cols];
    for (int p = 0, i = 0; p < 65536; p++) {
      if ((p & 0x7c00) != 0x7c00) {
        bits[i] = (short) p;
        b.putShort(2 * i, (short) p);
        i++;
      }
    }
    Weight w = new Weight("all-halves", DType.F16, rows, cols, b);
    float[] x = new float[cols];
    float[] y = new float[rows];
    MatrixKernels.Scratch s = new MatrixKernels.Scratch(cols);
    for (int c = 0; c < cols; c++) {
      x[c] = 1f;
      MatrixKernels.vector().matmul(w, x, 0, cols, 1, y, 0, rows, 0, rows, s);
      x[c] = 0f;
      for (int r = 0; r < rows; r++) {
        float want = Float.float16ToFloat(bits[r * cols + c]);
        if (want != y[r]) { // == also accepts -0 read back as +0: the other products add +0
          throw new AssertionError("half 0x" + Integer.toHexString(bits[r * cols + c] & 0xffff) + " read as " + y[r]
              + ", want " + want);
        }
      }
    }
  }

  /**
   * Decode's one-pass product moves a 2^112 factor from the weights into the activations when every
   * activation is below 2^16; larger ones take the copying kernel. Both agree with the definition.
   */
  @Test
  void decodeWithLargeActivationsMatchesTheDefinition() throws IOException {
    assumeTrue(MatrixKernels.vectorAvailable(), "jdk.incubator.vector absent");
    long seed = TinyModels.seed();
    SplittableRandom r = new SplittableRandom(seed);
    int rows = 13, cols = 300;
    Weight w = tensor(DType.F16, rows, cols, r);
    for (float big : new float[] {0x1p16f, 3e5f, -7e4f, 65535f}) {
      float[] x = TinyModels.gaussian(r, cols, 1, 0);
      x[r.nextInt(cols)] = big;
      float[] ys = new float[rows];
      float[] yv = new float[rows];
      MatrixKernels.Scratch s = new MatrixKernels.Scratch(cols);
      MatrixKernels.scalar().matmul(w, x, 0, cols, 1, ys, 0, rows, 0, rows, s);
      MatrixKernels.vector().matmul(w, x, 0, cols, 1, yv, 0, rows, 0, rows, s);
      for (int i = 0; i < rows; i++) {
        double mag = 0;
        for (int c = 0; c < cols; c++) {
          mag += Math.abs(w.get(i, c) * x[c]);
        }
        assertEquals(ys[i], yv[i], 2 * cols * Math.ulp(1f) * mag + 1e-30, "seed=" + seed + " big=" + big + " row " + i);
      }
    }
  }

  @Test
  void scalarKernelComputesTheDefinedProduct() throws IOException {
    long seed = TinyModels.seed();
    SplittableRandom r = new SplittableRandom(seed);
    Weight w = tensor(DType.F32, 5, 7, r);
    float[] x = TinyModels.gaussian(r, 7, 1, 0);
    float[] y = new float[5];
    MatrixKernels.scalar().matmul(w, x, 0, 7, 1, y, 0, 5, 0, 5, new MatrixKernels.Scratch(7));
    for (int i = 0; i < 5; i++) {
      double want = 0;
      for (int c = 0; c < 7; c++) {
        want += (double) w.get(i, c) * x[c];
      }
      assertEquals(want, y[i], 1e-5 * (1 + Math.abs(want)), "seed=" + seed + " row " + i);
    }
  }

  @Test
  void q8RoundTripKeepsValuesWithinHalfAStep() throws IOException {
    long seed = TinyModels.seed();
    SplittableRandom r = new SplittableRandom(seed);
    float[] a = TinyModels.gaussian(r, 64, 1, 0);
    Path f = tmp.resolve("q.gguf");
    new GgufWriter().addTensor("q", DType.Q8_0, 1, 64, a).write(f);
    Weight w = GgufFile.read(f).tensors().get("q");
    for (int b = 0; b < 2; b++) {
      float amax = 0;
      for (int j = 0; j < 32; j++) {
        amax = Math.max(amax, Math.abs(a[32 * b + j]));
      }
      for (int j = 0; j < 32; j++) {
        // half a quantisation step, plus the f16 rounding of the scale applied to 127 steps
        double tol = amax / 127 * 0.5 + amax * 1e-3;
        assertEquals(a[32 * b + j], w.get(0, 32 * b + j), tol, "seed=" + seed + " element " + (32 * b + j));
      }
    }
  }

  @Test
  void rowSplitAcrossThreadsEqualsOneThreadExactly() throws IOException {
    long seed = TinyModels.seed();
    SplittableRandom r = new SplittableRandom(seed);
    Weight w = tensor(DType.F16, 301, 64, r);
    float[] x = TinyModels.gaussian(r, 3 * 64, 1, 0);
    float[] one = new float[3 * 301];
    float[] many = new float[3 * 301];
    ExecutorService ex = Executors.newFixedThreadPool(3);
    try {
      new RowSplit(null, 1, 64).matmul(MatrixKernels.get(), w, x, 0, 64, 3, one, 0, 301);
      RowSplit split = new RowSplit(ex, 4, 64);
      for (int rep = 0; rep < 20; rep++) {
        java.util.Arrays.fill(many, Float.NaN);
        split.matmul(MatrixKernels.get(), w, x, 0, 64, 3, many, 0, 301);
        for (int i = 0; i < one.length; i++) {
          assertTrue(one[i] == many[i], "seed=" + seed + " rep " + rep + " index " + i + ": " + one[i] + " vs "
              + many[i]);
        }
      }
    } finally {
      ex.shutdownNow();
    }
  }

  @Test
  void rowSplitRunsEveryIndexOfARangeOnceAndInterleavesWithMatrixProducts() throws IOException {
    long seed = TinyModels.seed();
    SplittableRandom r = new SplittableRandom(seed);
    Weight w = tensor(DType.F16, 301, 64, r);
    float[] x = TinyModels.gaussian(r, 3 * 64, 1, 0);
    float[] one = new float[3 * 301];
    new RowSplit(null, 1, 64).matmul(MatrixKernels.get(), w, x, 0, 64, 3, one, 0, 301);
    ExecutorService ex = Executors.newFixedThreadPool(3);
    try {
      RowSplit split = new RowSplit(ex, 4, 64);
      for (int n : new int[] {0, 1, 999, 1000, 4001, 100_003}) {
        java.util.concurrent.atomic.AtomicIntegerArray hits = new java.util.concurrent.atomic.AtomicIntegerArray(n);
        java.util.concurrent.atomic.AtomicInteger calls = new java.util.concurrent.atomic.AtomicInteger();
        split.forRange(n, 1000, (from, to) -> {
          calls.incrementAndGet();
          for (int i = from; i < to; i++) {
            hits.incrementAndGet(i);
          }
        });
        for (int i = 0; i < n; i++) {
          assertEquals(1, hits.get(i), "n=" + n + " index " + i);
        }
        assertEquals(Math.min(4, Math.max(1, n / 1000)), calls.get(), "tasks for n=" + n);
        // A matrix product after a range job runs the product, not the range.
        float[] many = new float[3 * 301];
        split.matmul(MatrixKernels.get(), w, x, 0, 64, 3, many, 0, 301);
        assertArrayEquals(one, many, "seed=" + seed + " n=" + n);
      }
      IllegalStateException e = assertThrows(IllegalStateException.class, () -> split.forRange(8000, 1000,
          (from, to) -> {
            if (from > 0) {
              throw new ArithmeticException("task from " + from);
            }
          }));
      assertTrue(e.getCause() instanceof ArithmeticException, String.valueOf(e.getCause()));
      // The calling thread's own share fails while the workers are still busy: the call waits for them
      // before it throws, so the next product finds its workers free and its result whole.
      java.util.concurrent.atomic.AtomicInteger finished = new java.util.concurrent.atomic.AtomicInteger();
      assertThrows(ArithmeticException.class, () -> split.forRange(8000, 1000, (from, to) -> {
        if (from == 0) {
          throw new ArithmeticException("caller's share");
        }
        java.util.concurrent.locks.LockSupport.parkNanos(50_000_000L);
        finished.incrementAndGet();
      }));
      assertEquals(3, finished.get(), "workers done before the call returned");
      float[] after = new float[3 * 301];
      split.matmul(MatrixKernels.get(), w, x, 0, 64, 3, after, 0, 301);
      assertArrayEquals(one, after, "seed=" + seed);
    } finally {
      ex.shutdownNow();
    }
  }
}
