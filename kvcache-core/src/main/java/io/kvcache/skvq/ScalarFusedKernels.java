package io.kvcache.skvq;

/** The definition of the fused kernels: every value dequantized plainly, then a dot product. */
final class ScalarFusedKernels extends FusedKernels {

  static final ScalarFusedKernels INSTANCE = new ScalarFusedKernels();

  private ScalarFusedKernels() {}

  @Override
  String name() {
    return "scalar";
  }

  @Override
  void scores(Layout lay, Layout.QPage p, float[] q, float[] qSum, int rows, float[] ks, float[] kz, float[] s,
      int sOff, int sStride) {
    int d = lay.d, P = Layout.P;
    for (int r = 0; r < rows; r++) {
      for (int j = 0; j < P; j++) {
        float dot = 0f;
        for (int c = 0; c < d; c++) {
          int g = c / lay.kGroup;
          float k = kz[g * P + j] + ks[g * P + j] * lay.kCode(p, c, j);
          dot += q[r * d + c] * k;
        }
        s[sOff + r * sStride + j] = dot;
      }
    }
  }

  @Override
  void accumulate(Layout lay, Layout.QPage p, float[] w, int wOff, int wStride, int rows, float[] vs, float[] vz,
      float[] o, int oOff, float[] tmp, short[] codes) {
    int d = lay.d, P = Layout.P, G = lay.vGroups;
    for (int r = 0; r < rows; r++) {
      for (int j = 0; j < P; j++) {
        float wj = w[wOff + r * wStride + j];
        if (wj == 0f) {
          continue;
        }
        for (int c = 0; c < d; c++) {
          int g = c / lay.vGroup;
          float v = vz[j * G + g] + vs[j * G + g] * lay.vCode(p, j, c);
          o[oOff + r * d + c] += wj * v;
        }
      }
    }
  }
}
