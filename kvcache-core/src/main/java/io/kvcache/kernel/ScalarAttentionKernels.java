package io.kvcache.kernel;

/**
 * The definition of every kernel: plain loops, written to be read. The vector kernels are tested
 * against these.
 */
public final class ScalarAttentionKernels implements AttentionKernels {

  /** The single instance; the class holds no state. */
  public static final ScalarAttentionKernels INSTANCE = new ScalarAttentionKernels();

  private ScalarAttentionKernels() {}

  @Override
  public String name() {
    return "scalar";
  }

  @Override
  public void scores(float[] q, int qOff, int rows, int d, float[] kT, int kOff, int pageTokens, float[] s, int sOff,
      int sStride) {
    for (int r = 0; r < rows; r++) {
      int qr = qOff + r * d;
      for (int j = 0; j < pageTokens; j++) {
        float dot = 0f;
        for (int c = 0; c < d; c++) {
          dot += q[qr + c] * kT[kOff + c * pageTokens + j];
        }
        s[sOff + r * sStride + j] = dot;
      }
    }
  }

  @Override
  public void accumulate(float[] p, int pOff, int pStride, int rows, float[] v, int vOff, int pageTokens, int d,
      float[] o, int oOff) {
    for (int r = 0; r < rows; r++) {
      int pr = pOff + r * pStride;
      int or = oOff + r * d;
      for (int b = 0; b < d; b += VALUE_BLOCK) {
        int w = Math.min(VALUE_BLOCK, d - b);
        for (int j = 0; j < pageTokens; j++) {
          float pj = p[pr + j];
          int vj = vOff + b * pageTokens + j * w;
          for (int c = 0; c < w; c++) {
            o[or + b + c] += pj * v[vj + c];
          }
        }
      }
    }
  }

  @Override
  public void scoresHalf(float[] q, int qOff, int rows, int d, short[] kT, int kOff, int pageTokens, float[] s,
      int sOff, int sStride) {
    for (int r = 0; r < rows; r++) {
      int qr = qOff + r * d;
      for (int j = 0; j < pageTokens; j++) {
        float dot = 0f;
        for (int c = 0; c < d; c++) {
          dot += q[qr + c] * halfScaled(kT[kOff + c * pageTokens + j]);
        }
        s[sOff + r * sStride + j] = dot;
      }
    }
  }

  @Override
  public void accumulateHalf(float[] p, int pOff, int pStride, int rows, short[] v, int vOff, int first, int tokens,
      int pageTokens, int d, float[] o, int oOff) {
    for (int r = 0; r < rows; r++) {
      int pr = pOff + r * pStride;
      int or = oOff + r * d;
      for (int b = 0; b < d; b += VALUE_BLOCK) {
        int w = Math.min(VALUE_BLOCK, d - b);
        for (int j = 0; j < tokens; j++) {
          float pj = p[pr + j];
          int vj = vOff + b * pageTokens + (first + j) * w;
          for (int c = 0; c < w; c++) {
            o[or + b + c] += pj * halfScaled(v[vj + c]);
          }
        }
      }
    }
  }

  /** The reference reads decode tiles in place as the 256-bit vector kernels do, so it defines both paths. */
  @Override
  public int halfPageMaxRows() {
    return 4;
  }

  /** The definition the half-page kernels follow: the half's value times 2^-112, exact in f32. */
  static float halfScaled(short h) {
    return Float.float16ToFloat(h) * (1f / HALF_FACTOR);
  }

  @Override
  public float max(float[] a, int off, int n) {
    float m = Float.NEGATIVE_INFINITY;
    for (int i = 0; i < n; i++) {
      m = Math.max(m, a[off + i]);
    }
    return m;
  }

  @Override
  public float expAndSum(float[] a, int off, int n, float m) {
    float sum = 0f;
    for (int i = 0; i < n; i++) {
      float e = (float) Math.exp(a[off + i] - m);
      a[off + i] = e;
      sum += e;
    }
    return sum;
  }

  @Override
  public void scale(float[] a, int off, int n, float f) {
    for (int i = 0; i < n; i++) {
      a[off + i] *= f;
    }
  }

  @Override
  public void pageBounds(float[] qc, int group, float[] min, float[] max, int off, int n, float[] est) {
    for (int i = 0; i < n; i++) {
      float lo = min[off + i], hi = max[off + i];
      float e = 0f;
      for (int g = 0; g < group; g++) {
        e += Math.max(qc[g] * lo, qc[g] * hi);
      }
      est[i] += e;
    }
  }

  @Override
  public void f16ToF32(short[] src, int srcOff, float[] dst, int dstOff, int n) {
    for (int i = 0; i < n; i++) {
      dst[dstOff + i] = Float.float16ToFloat(src[srcOff + i]);
    }
  }
}
