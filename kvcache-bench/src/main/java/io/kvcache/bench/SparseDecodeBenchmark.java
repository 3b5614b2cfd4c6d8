package io.kvcache.bench;

import io.kvcache.codec.HeadStore;
import io.kvcache.codec.StorageCodec;
import io.kvcache.core.AttentionShape;
import io.kvcache.kernel.Kernels;
import io.kvcache.reader.AttentionReader;
import io.kvcache.reader.PagedAttention;
import io.kvcache.rocketkv.HybridSparseReader;
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
 * One decode step of one layer (32 query / 8 KV heads, dim 128, f16, one thread) read densely or by
 * RocketKV's hybrid sparse reader with a token budget, over the same stores.
 *
 * <p>Bound: the dense reader reads every retained token; the sparse one reads the page summaries'
 * chosen channels for every page plus {@code budget} tokens (and the 16 most recent), so its time
 * should fall towards {@code budget / context} of the dense time plus the estimate's cost. No stage-1
 * eviction here: the reader scores every page of the full context, its worst case.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = {"--add-modules=jdk.incubator.vector", "-Xms2g", "-Xmx2g"})
public class SparseDecodeBenchmark {

  /** Instantiated by JMH; its state is built in the {@code @Setup} method. */
  public SparseDecodeBenchmark() {}

  static final AttentionShape SHAPE = new AttentionShape(1, 32, 8, 128);

  /** Tokens in the cache. */
  @Param({"32768", "131072"})
  public int context;

  /** Reader: dense, or hybrid with a token budget of 2048. */
  @Param({"dense", "hybrid2048"})
  public String reader;

  private HeadStore[] stores;
  private PagedAttention[] work;
  private AttentionReader.State state;
  private float[] q;
  private float[] out;

  /** Fills the stores with random keys and values; warms the reader's page summaries. */
  @Setup(Level.Trial)
  public void setUp() {
    SplittableRandom rnd = new SplittableRandom(5);
    int d = SHAPE.headDim();
    stores = new HeadStore[SHAPE.kvHeads()];
    work = new PagedAttention[SHAPE.kvHeads()];
    for (int h = 0; h < stores.length; h++) {
      stores[h] = StorageCodec.f16().newStore(d);
      work[h] = new PagedAttention(Kernels.get(), d);
      RandomStores.fill(stores[h], context, rnd);
    }
    if (!reader.equals("dense") && !reader.equals("hybrid2048")) {
      throw new IllegalArgumentException("reader must be dense or hybrid2048, got \"" + reader + "\"");
    }
    AttentionReader r = reader.equals("dense") ? AttentionReader.dense() : HybridSparseReader.of(2048, 0.25, 16);
    state = r.newState(SHAPE);
    q = new float[SHAPE.queryWidth()];
    for (int i = 0; i < q.length; i++) {
      q[i] = (float) rnd.nextGaussian();
    }
    out = new float[q.length];
    decode(null);
  }

  /**
   * One decode step over every KV head (the stores do not change, as after stage-1 eviction).
   *
   * @param bh sink for the output, or null
   */
  @Benchmark
  public void decode(Blackhole bh) {
    int g = SHAPE.groupSize(), d = SHAPE.headDim();
    for (int h = 0; h < stores.length; h++) {
      state.decode(0, h, stores[h], work[h], g, q, h * g * d, context, SHAPE.scale(), out, h * g * d);
    }
    if (bh != null) {
      bh.consume(out);
    }
  }
}
