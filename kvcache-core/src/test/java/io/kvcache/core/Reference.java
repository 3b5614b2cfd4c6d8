package io.kvcache.core;

/**
 * The float64 definition of causal GQA attention, dense and unpaged, that every kernel is held to.
 * Rows are {@code [token][head][dim]} as at the {@link KVCache} API.
 */
final class Reference {
  private Reference() {}

  /**
   * Attention output of one query row.
   *
   * @param shape  the shape
   * @param q      queries of all tokens
   * @param qToken the query's token index into {@code q}
   * @param head   the query head
   * @param k      keys of the visible tokens, {@code [n][kvHeads][dim]}
   * @param v      values, like {@code k}
   * @param keys   which token rows of {@code k}/{@code v} the query sees (null: rows 0..n-1)
   * @param n      number of visible tokens (or of entries in {@code keys})
   * @return the output row
   */
  static double[] row(AttentionShape shape, float[] q, int qToken, int head, float[] k, float[] v, int[] keys, int n) {
    int d = shape.headDim();
    int kvh = head / shape.groupSize();
    int qBase = qToken * shape.queryWidth() + head * d;
    double scale = 1.0 / Math.sqrt(d);
    double[] s = new double[n];
    double max = Double.NEGATIVE_INFINITY;
    for (int i = 0; i < n; i++) {
      int j = keys == null ? i : keys[i];
      int kBase = j * shape.kvWidth() + kvh * d;
      double dot = 0;
      for (int c = 0; c < d; c++) {
        dot += (double) q[qBase + c] * k[kBase + c];
      }
      s[i] = dot * scale;
      max = Math.max(max, s[i]);
    }
    double sum = 0;
    for (int i = 0; i < n; i++) {
      s[i] = Math.exp(s[i] - max);
      sum += s[i];
    }
    double[] out = new double[d];
    for (int i = 0; i < n; i++) {
      int j = keys == null ? i : keys[i];
      int vBase = j * shape.kvWidth() + kvh * d;
      double p = s[i] / sum;
      for (int c = 0; c < d; c++) {
        out[c] += p * v[vBase + c];
      }
    }
    return out;
  }

  /**
   * Relative error of one output row: {@code max_c |out - ref| / max_c |ref|}.
   *
   * @param out    the output array
   * @param outOff offset of the row
   * @param ref    the reference row
   * @return the error
   */
  static double rowError(float[] out, int outOff, double[] ref) {
    double num = 0, den = 1e-30;
    for (int c = 0; c < ref.length; c++) {
      num = Math.max(num, Math.abs(out[outOff + c] - ref[c]));
      den = Math.max(den, Math.abs(ref[c]));
    }
    return num / den;
  }
}
