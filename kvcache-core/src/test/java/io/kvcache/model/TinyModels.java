package io.kvcache.model;

import java.io.IOException;
import java.nio.file.Path;
import java.util.SplittableRandom;

/** Small random llama GGUF files for tests. */
final class TinyModels {
  private TinyModels() {}

  static long seed() {
    String fixed = System.getProperty("kvcache.test.seed");
    return fixed != null ? Long.parseLong(fixed) : System.nanoTime();
  }

  static float[] gaussian(SplittableRandom r, int n, double sd, double mean) {
    float[] a = new float[n];
    for (int i = 0; i < n; i++) {
      double u = Math.max(1e-12, r.nextDouble());
      a[i] = (float) (mean + sd * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * r.nextDouble()));
    }
    return a;
  }

  /** A random llama: hidden 64, 4 heads, 2 KV heads, MLP 96, vocab 300, the given depth. */
  static Path write(Path file, long seed, int layers, DType type) throws IOException {
    return write(file, seed, layers, type, -1);
  }

  /**
   * As {@link #write(Path, long, int, DType)}; when {@code twin >= 0}, layer {@code twin} adds nothing
   * to the residual (zero output and down projections) and layer {@code twin + 1} has its input norm
   * and K/V projections, so both layers compute the same keys and values.
   */
  static Path write(Path file, long seed, int layers, DType type, int twin) throws IOException {
    return write(file, seed, layers, type, twin, 16);
  }

  /**
   * As {@link #write(Path, long, int, DType, int)} with head size {@code hd}; one other than hidden / heads
   * (16) is recorded as {@code llama.attention.key_length}, as llama.cpp does for such models.
   */
  static Path write(Path file, long seed, int layers, DType type, int twin, int hd) throws IOException {
    SplittableRandom r = new SplittableRandom(seed);
    int h = 64;
    int f = 96;
    int v = 300;
    GgufWriter g = new GgufWriter().putString("general.architecture", "llama")
        .putU32("llama.embedding_length", h).putU32("llama.block_count", layers)
        .putU32("llama.feed_forward_length", f).putU32("llama.attention.head_count", 4)
        .putU32("llama.attention.head_count_kv", 2).putF32("llama.rope.freq_base", 10000f)
        .putF32("llama.attention.layer_norm_rms_epsilon", 1e-5f).putU32("llama.context_length", 2048);
    if (hd != h / 4) {
      g.putU32("llama.attention.key_length", hd).putU32("llama.rope.dimension_count", hd);
    }
    g.addTensor("token_embd.weight", type, v, h, gaussian(r, v * h, 1, 0));
    float[] norm = null;
    float[] wk = null;
    float[] wv = null;
    for (int l = 0; l < layers; l++) {
      String p = "blk." + l + ".";
      boolean copy = l == twin + 1 && twin >= 0;
      float[] n = gaussian(r, h, 0.1, 1);
      float[] kw = gaussian(r, 2 * hd * h, 0.3, 0);
      float[] vw = gaussian(r, 2 * hd * h, 0.3, 0);
      if (copy) {
        n = norm;
        kw = wk;
        vw = wv;
      }
      norm = n;
      wk = kw;
      wv = vw;
      float[] o = gaussian(r, h * 4 * hd, 0.1, 0);
      float[] down = gaussian(r, h * f, 0.1, 0);
      if (l == twin) {
        o = new float[o.length];
        down = new float[down.length];
      }
      g.addTensor(p + "attn_norm.weight", DType.F32, 1, h, n);
      g.addTensor(p + "attn_q.weight", type, 4 * hd, h, gaussian(r, 4 * hd * h, 0.3, 0));
      g.addTensor(p + "attn_k.weight", type, 2 * hd, h, kw);
      g.addTensor(p + "attn_v.weight", type, 2 * hd, h, vw);
      g.addTensor(p + "attn_output.weight", type, h, 4 * hd, o);
      g.addTensor(p + "ffn_norm.weight", DType.F32, 1, h, gaussian(r, h, 0.1, 1));
      g.addTensor(p + "ffn_gate.weight", type, f, h, gaussian(r, f * h, 0.15, 0));
      g.addTensor(p + "ffn_up.weight", type, f, h, gaussian(r, f * h, 0.15, 0));
      g.addTensor(p + "ffn_down.weight", type, h, f, down);
    }
    g.addTensor("output_norm.weight", DType.F32, 1, h, gaussian(r, h, 0.1, 1));
    g.addTensor("output.weight", type, v, h, gaussian(r, v * h, 0.2, 0));
    g.write(file);
    return file;
  }
}
