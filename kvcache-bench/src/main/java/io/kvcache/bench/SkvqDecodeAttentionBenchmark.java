package io.kvcache.bench;

import io.kvcache.codec.HeadStore;
import io.kvcache.codec.StorageCodec;
import io.kvcache.kernel.Kernels;
import io.kvcache.reader.PagedAttention;
import io.kvcache.skvq.SkvqCodec;
import io.kvcache.skvq.SkvqConfig;
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
import org.openjdk.jmh.infra.Blackhole;

/**
 * One decode step of one layer of a Llama-3-8B-shaped model (32 query heads, 8 KV heads, head dim
 * 128), as {@link DecodeAttentionBenchmark}, with SKVQ storage (keys 2 bits, values 1.5 bits, groups of
 * 128, window 128, 5 sinks) against f16 in the same run, vector kernels, one thread. SKVQ's old pages
 * are attended to from their codes (fused dequantization); its window pages on the f16 path.
 *
 * <p>Bound: the f16 decode of the same run. SKVQ reads about 7.5x fewer bytes (66 vs 512 per token and
 * KV head), so a memory-bound kernel would gain up to that; {@code bytes held / median time} is the
 * effective bandwidth.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = {"--add-modules=jdk.incubator.vector", "-Xms4g", "-Xmx4g"})
public class SkvqDecodeAttentionBenchmark {

  /** Instantiated by JMH; its state is built in the {@code @Setup} method. */
  public SkvqDecodeAttentionBenchmark() {}

  static final int QUERY_HEADS = 32;
  static final int KV_HEADS = 8;
  static final int HEAD_DIM = 128;

  /** Tokens in the cache. */
  @Param({"32768", "131072"})
  public int context;

  /** Storage: f16, or SKVQ K2/V1.5. */
  @Param({"f16", "skvq"})
  public String codec;

  private HeadStore[] stores;
  private PagedAttention[] work;
  private float[] q;
  private float[] out;

  /** Fills one layer's stores with random keys and values and lets SKVQ quantize all but its window. */
  @Setup(Level.Trial)
  public void setUp() {
    if (!codec.equals("skvq") && !codec.equals("f16")) {
      throw new IllegalArgumentException("codec must be f16 or skvq, got \"" + codec + "\"");
    }
    StorageCodec c = codec.equals("skvq") ? SkvqCodec.of(SkvqConfig.paperDefault()) : StorageCodec.f16();
    SplittableRandom rnd = new SplittableRandom(1);
    stores = new HeadStore[KV_HEADS];
    work = new PagedAttention[KV_HEADS];
    for (int h = 0; h < KV_HEADS; h++) {
      stores[h] = c.newStore(HEAD_DIM);
      work[h] = new PagedAttention(Kernels.vector(), HEAD_DIM);
      RandomStores.fill(stores[h], context, rnd);
      stores[h].attentionDone();
    }
    q = new float[QUERY_HEADS * HEAD_DIM];
    for (int i = 0; i < q.length; i++) {
      q[i] = (float) rnd.nextGaussian();
    }
    out = new float[q.length];
    long bytes = 0;
    for (HeadStore s : stores) {
      bytes += s.payloadBytes();
    }
    System.out.printf("%n%s at %d tokens: %d payload bytes (%.2f per token and KV head)%n", codec, context, bytes,
        bytes / (double) context / KV_HEADS);
  }

  /**
   * One decode step over all KV heads.
   *
   * @param bh sink for the output
   */
  @Benchmark
  public void decode(Blackhole bh) {
    int g = QUERY_HEADS / KV_HEADS;
    float scale = (float) (1 / Math.sqrt(HEAD_DIM));
    for (int h = 0; h < KV_HEADS; h++) {
      work[h].decode(stores[h], g, q, h * g * HEAD_DIM, context, scale, out, h * g * HEAD_DIM);
    }
    bh.consume(out);
  }
}
