package io.kvcache.bench;

import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;
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

/**
 * What this machine can stream: a vectorised sum over a 1 GiB float array, split across
 * {@code threads}. The ceiling that {@link DecodeAttentionBenchmark} is quoted against, measured in
 * the same run with the same thread counts.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = {"--add-modules=jdk.incubator.vector", "-Xms3g", "-Xmx3g"})
public class MemoryBandwidthBenchmark {

  /** Instantiated by JMH; its state is built in the {@code @Setup} method. */
  public MemoryBandwidthBenchmark() {}

  /** Bytes summed per operation. */
  public static final long BYTES = 1L << 30;

  private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;

  /** Threads the array is split across. */
  @Param({"1", "2"})
  public int threads;

  private float[] data;
  private ExecutorService pool;

  /** Allocates and touches the array. */
  @Setup(Level.Trial)
  public void setUp() {
    data = new float[(int) (BYTES / Float.BYTES)];
    for (int i = 0; i < data.length; i += 1024) {
      data[i] = i;
    }
    pool = threads > 1 ? Executors.newFixedThreadPool(threads - 1) : null;
  }

  /** Stops the helper threads. */
  @TearDown(Level.Trial)
  public void tearDown() {
    if (pool != null) {
      pool.shutdownNow();
    }
  }

  static float sum(float[] a, int from, int to) {
    FloatVector s0 = FloatVector.zero(F), s1 = FloatVector.zero(F), s2 = FloatVector.zero(F), s3 = FloatVector.zero(F);
    int l = F.length();
    int i = from;
    for (; i + 4 * l <= to; i += 4 * l) {
      s0 = s0.add(FloatVector.fromArray(F, a, i));
      s1 = s1.add(FloatVector.fromArray(F, a, i + l));
      s2 = s2.add(FloatVector.fromArray(F, a, i + 2 * l));
      s3 = s3.add(FloatVector.fromArray(F, a, i + 3 * l));
    }
    float s = s0.add(s1).add(s2).add(s3).reduceLanes(VectorOperators.ADD);
    for (; i < to; i++) {
      s += a[i];
    }
    return s;
  }

  /**
   * Sums the whole array once.
   *
   * @return the sum, so the JIT cannot drop the loop
   * @throws Exception when a helper thread fails
   */
  @Benchmark
  public float read() throws Exception {
    if (pool == null) {
      return sum(data, 0, data.length);
    }
    int per = data.length / threads;
    @SuppressWarnings("unchecked")
    Future<Float>[] fs = new Future[threads - 1];
    for (int t = 1; t < threads; t++) {
      int from = t * per, to = t == threads - 1 ? data.length : from + per;
      fs[t - 1] = pool.submit(() -> sum(data, from, to));
    }
    float s = sum(data, 0, per);
    for (Future<Float> f : fs) {
      s += f.get();
    }
    return s;
  }
}
