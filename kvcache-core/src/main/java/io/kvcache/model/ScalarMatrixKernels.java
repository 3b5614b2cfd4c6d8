package io.kvcache.model;

/** The definition: each element decoded by {@link Weight#get}, products summed in column order. */
final class ScalarMatrixKernels implements MatrixKernels {

  static final ScalarMatrixKernels INSTANCE = new ScalarMatrixKernels();

  @Override
  public String name() {
    return "scalar";
  }

  @Override
  public void matmul(Weight w, float[] x, int xOff, int xStride, int n, float[] y, int yOff, int yStride, int r0,
      int r1, Scratch scratch) {
    scratch.check(w);
    int cols = w.cols();
    float[] row = scratch.rows;
    for (int r = r0; r < r1; r++) {
      w.row(r, row, 0);
      for (int t = 0; t < n; t++) {
        int xb = xOff + t * xStride;
        float sum = 0f;
        for (int c = 0; c < cols; c++) {
          sum += row[c] * x[xb + c];
        }
        y[yOff + t * yStride + r] = sum;
      }
    }
  }
}
