package io.kvcache.bench;

import io.kvcache.codec.StorageCodec;
import io.kvcache.core.AttentionShape;
import io.kvcache.core.KVCache;
import io.kvcache.core.KVCacheStrategy;
import io.kvcache.kernel.Kernels;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.Warmup;

/**
 * Causal prefill attention of a whole prompt in one chunk, one thread, f32 storage, through the
 * public {@link KVCache#prefill} API: one GQA group of Llama-3-8B (4 query heads sharing 1 KV head,
 * head dim 128), so a scalar run at 8K tokens stays under a minute.
 *
 * <p>Bound: prefill is compute-bound, measured in GFLOP/s of the causal attention,
 * {@code sum over t of (t + 1) * 4 heads * 4 * 128} FLOP (2d for QK, 2d for PV), against the
 * machine's FMA peak (one core, 8-lane AVX2: 2 FMA/cycle = 32 FLOP/cycle).
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.SingleShotTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 1)
@Measurement(iterations = 3)
@Fork(value = 1, jvmArgsAppend = {"--add-modules=jdk.incubator.vector", "-Xmx2g"})
public class PrefillAttentionBenchmark {

  /** Instantiated by JMH; its state is built in the {@code @Setup} method. */
  public PrefillAttentionBenchmark() {}

  static final AttentionShape SHAPE = new AttentionShape(1, 4, 1, 128);

  /** Prompt tokens. */
  @Param({"2048", "8192"})
  public int context;

  /** Kernels: scalar (the reference) or vector. */
  @Param({"vector", "scalar"})
  public String kernels;

  private KVCacheStrategy strategy;
  private float[] q;
  private float[] k;
  private float[] v;
  private float[] out;

  /** Random prompt. */
  @Setup(Level.Trial)
  public void setUp() {
    if (!kernels.equals("scalar") && !kernels.equals("vector")) {
      throw new IllegalArgumentException("kernels must be scalar or vector, got \"" + kernels + "\"");
    }
    strategy = KVCacheStrategy.builder()
        .codec(StorageCodec.f32())
        .kernels(kernels.equals("scalar") ? Kernels.scalar() : Kernels.vector())
        .build();
    SplittableRandom rnd = new SplittableRandom(2);
    q = random(rnd, context * SHAPE.queryWidth());
    k = random(rnd, context * SHAPE.kvWidth());
    v = random(rnd, context * SHAPE.kvWidth());
    out = new float[q.length];
  }

  private static float[] random(SplittableRandom rnd, int n) {
    float[] a = new float[n];
    for (int i = 0; i < n; i++) {
      a[i] = (float) rnd.nextGaussian();
    }
    return a;
  }

  /** @return FLOP of one causal prefill of {@code tokens} tokens in this shape */
  static double flops(int tokens) {
    double pairs = (double) tokens * (tokens + 1) / 2;
    return pairs * SHAPE.queryHeads() * 4.0 * SHAPE.headDim();
  }

  /**
   * Prefills the prompt into a fresh cache.
   *
   * @return the output, for the blackhole
   */
  @Benchmark
  public float[] prefill() {
    try (KVCache cache = strategy.newCache(SHAPE)) {
      cache.prefill(0, context, q, k, v, out);
    }
    return out;
  }
}
