package io.kvcache.bench;

import io.kvcache.codec.HeadStore;
import io.kvcache.codec.StorageCodec;
import io.kvcache.kernel.AttentionKernels;
import io.kvcache.kernel.Kernels;
import io.kvcache.reader.PagedAttention;
import java.util.SplittableRandom;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
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
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;
import org.openjdk.jmh.infra.Blackhole;

/**
 * One decode step of one layer of a Llama-3-8B-shaped model (32 query heads, 8 KV heads, head dim
 * 128): every KV head's pages read once for its 4 query heads.
 *
 * <p>Bound: decode attention is memory-bound, so its measure is bytes of K/V read per second,
 * {@code context * 8 * 128 * 2 * bytesPerValue / time}, against {@link MemoryBandwidthBenchmark} in
 * the same run with the same threads. {@code threads > 1} splits the KV heads across threads, as
 * {@code KVCacheStrategy.newCache(shape, executor)} does.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = {"--add-modules=jdk.incubator.vector", "-Xms4g", "-Xmx4g"})
public class DecodeAttentionBenchmark {

  /** Instantiated by JMH; its state is built in the {@code @Setup} method. */
  public DecodeAttentionBenchmark() {}

  static final int QUERY_HEADS = 32;
  static final int KV_HEADS = 8;
  static final int HEAD_DIM = 128;

  /** Tokens in the cache. */
  @Param({"4096", "32768", "131072"})
  public int context;

  /** Storage codec: f32 or f16. */
  @Param({"f16", "f32"})
  public String codec;

  /** Kernels: scalar (the reference) or vector. */
  @Param({"vector", "scalar"})
  public String kernels;

  /** Threads the KV heads are split across. */
  @Param({"1", "2"})
  public int threads;

  /**
   * How the stores were filled: {@code prefill}, in reserved chunks of {@link RandomStores#PREFILL_CHUNK}
   * tokens (a prompt), or {@code decode}, one token at a time interleaved over the KV heads with no
   * reservation, as a long generation appends them (the stores merge such pages in eights). Only
   * {@code prefill} runs by default; {@code --param fill=prefill,decode} compares the two.
   */
  @Param({"prefill"})
  public String fill;

  private HeadStore[] stores;
  private PagedAttention[] work;
  private float[] q;
  private float[] out;
  private ExecutorService pool;

  /** Fills one layer's stores with random keys and values; no attention is computed here. */
  @Setup(Level.Trial)
  public void setUp() {
    if (!kernels.equals("scalar") && !kernels.equals("vector")) {
      throw new IllegalArgumentException("kernels must be scalar or vector, got \"" + kernels + "\"");
    }
    if (!codec.equals("f32") && !codec.equals("f16")) {
      throw new IllegalArgumentException("codec must be f16 or f32, got \"" + codec + "\"");
    }
    if (threads < 1 || threads > KV_HEADS) {
      throw new IllegalArgumentException("threads must be in [1, " + KV_HEADS + "] (the KV heads are split across them), got "
          + threads);
    }
    AttentionKernels k = kernels.equals("scalar") ? Kernels.scalar() : Kernels.vector();
    StorageCodec c = codec.equals("f32") ? StorageCodec.f32() : StorageCodec.f16();
    SplittableRandom rnd = new SplittableRandom(1);
    if (!fill.equals("prefill") && !fill.equals("decode")) {
      throw new IllegalArgumentException("fill must be prefill or decode, got \"" + fill + "\"");
    }
    stores = new HeadStore[KV_HEADS];
    work = new PagedAttention[KV_HEADS];
    for (int h = 0; h < KV_HEADS; h++) {
      stores[h] = c.newStore(HEAD_DIM);
      work[h] = new PagedAttention(k, HEAD_DIM);
      if (fill.equals("prefill")) {
        RandomStores.fill(stores[h], context, rnd);
      }
    }
    if (fill.equals("decode")) {
      RandomStores.fillAsDecode(stores, context, rnd);
    }
    q = new float[QUERY_HEADS * HEAD_DIM];
    for (int i = 0; i < q.length; i++) {
      q[i] = (float) rnd.nextGaussian();
    }
    out = new float[q.length];
    pool = threads > 1 ? Executors.newFixedThreadPool(threads - 1) : null;
  }

  /** Stops the helper threads. */
  @TearDown(Level.Trial)
  public void tearDown() {
    if (pool != null) {
      pool.shutdownNow();
    }
  }

  /** @return the last step's output (tests) */
  float[] output() {
    return out;
  }

  /** @return bytes of K/V one decode step reads */
  long bytesRead() {
    return (long) context * KV_HEADS * HEAD_DIM * 2 * (codec.equals("f32") ? 4 : 2);
  }

  private void heads(int from, int to) {
    int g = QUERY_HEADS / KV_HEADS;
    float scale = (float) (1 / Math.sqrt(HEAD_DIM));
    for (int h = from; h < to; h++) {
      work[h].decode(stores[h], g, q, h * g * HEAD_DIM, context, scale, out, h * g * HEAD_DIM);
    }
  }

  /**
   * One decode step over all KV heads.
   *
   * @param bh sink for the output
   * @throws Exception when a helper thread fails
   */
  @Benchmark
  public void decode(Blackhole bh) throws Exception {
    if (pool == null) {
      heads(0, KV_HEADS);
    } else {
      // Thread i takes heads [i * 8 / threads, (i + 1) * 8 / threads): as even as 8 heads split.
      Future<?>[] fs = new Future<?>[threads - 1];
      for (int i = 1; i < threads; i++) {
        int from = i * KV_HEADS / threads, to = (i + 1) * KV_HEADS / threads;
        fs[i - 1] = pool.submit(() -> heads(from, to));
      }
      heads(0, KV_HEADS / threads);
      for (Future<?> f : fs) {
        f.get();
      }
    }
    bh.consume(out);
  }
}
