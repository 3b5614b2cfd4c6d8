package io.kvcache.workload;

import io.kvcache.core.AttentionShape;
import java.util.SplittableRandom;

/**
 * Seeded synthetic queries, keys and values with the structure real attention has, for measuring
 * what a KV-cache strategy loses without a trained model. Shared by the tests and the bench tool.
 *
 * <p>Per layer and KV head, for token {@code t} in region {@code r(t)}:
 * <ul>
 *   <li><b>content</b>: keys and values are Gaussian noise plus the region's topic vector, so tokens of
 *       one region resemble each other (region structure: a good cache keeps a voice from every
 *       region);</li>
 *   <li><b>sinks</b>: the first {@code sinks} keys carry a strong shared "sink" direction that every
 *       query also carries, so they draw a large share of attention, as in StreamingLLM's finding;</li>
 *   <li><b>recency</b>: keys carry a slowly rotating positional code; queries of local heads carry the
 *       same code at their own position, so they favour recent tokens;</li>
 *   <li><b>needles</b>: a few keys (at the given depths) carry a needle direction that decode queries
 *       also carry, so a handful of old tokens matter a lot at the end;</li>
 *   <li><b>outlier channels</b>: a few key channels get a large constant offset and range, as key
 *       outliers in real models (what SKVQ's reordering and clipping are for).</li>
 * </ul>
 * Queries of the prompt look up a random mix of regions; the last {@value #QUESTION_TOKENS} prompt
 * tokens (the question, at most an eighth of the prompt) and the decode tokens also look up the
 * needles. All of it is deterministic in the spec's seed, the layer and the head.
 *
 * <p>Arrays follow the {@link io.kvcache.core.KVCache} layout: {@code [token][head][dim]}.
 */
public final class SyntheticWorkload {

  /** Prompt tokens at the end that ask for the needles, like the question of a long-context task. */
  public static final int QUESTION_TOKENS = 32;

  private final AttentionShape shape;
  private final WorkloadSpec spec;
  private final int[] needlePositions;

  /**
   * @param shape the attention shape to generate for
   * @param spec  what to plant
   */
  public SyntheticWorkload(AttentionShape shape, WorkloadSpec spec) {
    java.util.Objects.requireNonNull(shape, "shape");
    java.util.Objects.requireNonNull(spec, "spec");
    // One layer's queries must fit one array.
    long width = (long) spec.totalTokens() * shape.queryWidth();
    if (width > Integer.MAX_VALUE - 8) {
      throw new IllegalArgumentException("totalTokens * queryWidth must fit one array, got " + spec.totalTokens()
          + " * " + shape.queryWidth() + " = " + width);
    }
    this.shape = shape;
    this.spec = spec;
    double[] depths = spec.needleDepths();
    needlePositions = new int[spec.needles()];
    for (int i = 0; i < needlePositions.length; i++) {
      double depth = depths[i % depths.length];
      needlePositions[i] = Math.min(spec.promptTokens() - 1, spec.sinks() + (int) (depth * (spec.promptTokens() - spec.sinks())));
    }
  }

  /** @return the shape */
  public AttentionShape shape() {
    return shape;
  }

  /** @return the spec */
  public WorkloadSpec spec() {
    return spec;
  }

  /** @return positions of the planted needles */
  public int[] needlePositions() {
    return needlePositions.clone();
  }

  /**
   * One layer's arrays for all {@code totalTokens} tokens, token-major.
   *
   * @param q queries, {@code totalTokens * queryWidth} floats
   * @param k keys, {@code totalTokens * kvWidth} floats
   * @param v values, {@code totalTokens * kvWidth} floats
   */
  public record Layer(float[] q, float[] k, float[] v) {}

  /**
   * Generates one layer. Costs {@code O(tokens * (queryHeads + 2 kvHeads) * headDim)} time and memory;
   * call it per layer rather than holding every layer.
   *
   * @param layer layer index
   * @return the layer's queries, keys and values
   */
  public Layer layer(int layer) {
    io.kvcache.core.Checks.inRange("layer", layer, 0, shape.layers() - 1);
    int n = spec.totalTokens();
    int d = shape.headDim();
    int g = shape.groupSize();
    int qw = shape.queryWidth(), kw = shape.kvWidth();
    float[] q = new float[n * qw];
    float[] k = new float[n * kw];
    float[] v = new float[n * kw];
    int regionLen = Math.max(1, spec.promptTokens() / spec.regions());
    int localHeads = (int) Math.round(spec.localHeadShare() * shape.kvHeads());
    for (int h = 0; h < shape.kvHeads(); h++) {
      SplittableRandom rnd = new SplittableRandom(spec.seed() * 1_000_003L + layer * 7919L + h);
      float[][] topicsK = new float[spec.regions()][];
      float[][] topicsV = new float[spec.regions()][];
      for (int r = 0; r < spec.regions(); r++) {
        topicsK[r] = unit(rnd, d, 1.0);
        topicsV[r] = unit(rnd, d, 1.0);
      }
      float[] sinkDir = unit(rnd, d, 1.0);
      float[] needleDir = unit(rnd, d, 1.0);
      int[] outliers = new int[Math.min(spec.outlierChannels(), d)];
      for (int i = 0; i < outliers.length; i++) {
        outliers[i] = rnd.nextInt(d);
      }
      boolean local = h < localHeads;
      // Scales chosen so that a planted match scores about 3-6 above noise after 1/sqrt(d).
      double noise = 1.0, topic = 2.0, sink = 6.0, needle = 7.0, pos = 1.0;
      for (int t = 0; t < n; t++) {
        int region = Math.min(spec.regions() - 1, Math.min(t, spec.promptTokens() - 1) / regionLen);
        int kb = t * kw + h * d;
        for (int c = 0; c < d; c++) {
          double x = noise * rnd.nextGaussian() + topic * topicsK[region][c] * Math.sqrt(d) / 4;
          x += pos * positional(t, c, d);
          k[kb + c] = (float) x;
          v[kb + c] = (float) (noise * rnd.nextGaussian() + topic * topicsV[region][c] * Math.sqrt(d) / 4);
        }
        if (t < spec.sinks()) {
          addScaled(k, kb, sinkDir, sink * Math.sqrt(d) / 2);
        }
        for (int np : needlePositions) {
          if (np == t) {
            addScaled(k, kb, needleDir, needle * Math.sqrt(d) / 2);
            addScaled(v, kb, needleDir, 4.0 * Math.sqrt(d) / 2);
          }
        }
        for (int c : outliers) {
          k[kb + c] = (float) (k[kb + c] * 8 + 20);
        }
        // Queries of the group: a lookup of some region (prompt) or of the needles (decode), plus the
        // sink direction, plus for local heads the positional code of their own position.
        int lookRegion = rnd.nextInt(spec.regions());
        // The question sits at the end of the prompt, as in long-context QA: its queries and the decode
        // queries look for the needles, so a method that scores with an observation window can see them.
        boolean asking = t >= spec.promptTokens() - Math.min(QUESTION_TOKENS, spec.promptTokens() / 8);
        for (int gi = 0; gi < g; gi++) {
          int qb = t * qw + (h * g + gi) * d;
          for (int c = 0; c < d; c++) {
            double x = 0.5 * rnd.nextGaussian() + 0.6 * topicsK[lookRegion][c] * Math.sqrt(d) / 4 + 0.5 * sinkDir[c]
                * Math.sqrt(d) / 2;
            if (local) {
              x += 1.0 * positional(t, c, d);
            }
            if (asking && needlePositions.length > 0) {
              x += 0.9 * needleDir[c] * Math.sqrt(d) / 2;
            }
            q[qb + c] = (float) x;
          }
        }
      }
    }
    return new Layer(q, k, v);
  }

  /** A slowly rotating code: nearby positions have a high dot product, distant ones about zero. */
  private static double positional(int t, int c, int d) {
    int pairs = Math.max(1, Math.min(8, d / 2));
    int pair = c / 2;
    if (pair >= pairs) {
      return 0;
    }
    double freq = 1.0 / (16.0 * (1 << pair));
    double angle = t * freq;
    return (c % 2 == 0 ? Math.cos(angle) : Math.sin(angle)) * Math.sqrt((double) d / pairs);
  }

  private static float[] unit(SplittableRandom rnd, int d, double norm) {
    float[] u = new float[d];
    double s = 0;
    for (int c = 0; c < d; c++) {
      u[c] = (float) rnd.nextGaussian();
      s += u[c] * u[c];
    }
    double f = norm / Math.sqrt(s);
    for (int c = 0; c < d; c++) {
      u[c] *= (float) f;
    }
    return u;
  }

  private static void addScaled(float[] a, int off, float[] dir, double scale) {
    for (int c = 0; c < dir.length; c++) {
      a[off + c] += (float) (dir[c] * scale);
    }
  }
}
