package io.kvcache.bench;

import io.kvcache.core.AttentionShape;
import io.kvcache.gpu.DeviceKVCache;
import io.kvcache.gpu.DeviceSkvqCache;
import io.kvcache.gpu.cl.ClContext;
import io.kvcache.gpu.cl.OpenCl;
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
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

/**
 * One decode step of one layer of a Llama-3-8B-shaped model (32 query heads, 8 KV heads, head dim 128)
 * on an OpenCL device: the dense f16 cache ({@link DeviceKVCache}) against SKVQ K2/V1.5
 * ({@link DeviceSkvqCache}, groups of 128, window 128, 5 sinks) holding the same random tokens. JMH times
 * the whole Java call (query upload, launches, read-back) as a server would make it, on a queue without
 * profiling; {@code kvcache-bench gpu} reports the kernels' device times. Not in the default JMH
 * selection: {@code jmh --include GpuDecode} on a machine with OpenCL ({@code -Dkvcache.opencl.platform=NVIDIA}
 * through {@code --jvm-arg} picks the card where PoCL is registered too).
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = {"--add-modules=jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED",
    "-Xms8g", "-Xmx8g"})
public class GpuDecodeBenchmark {

  /** Instantiated by JMH; its state is built in the {@code @Setup} method. */
  public GpuDecodeBenchmark() {}

  static final int QUERY_HEADS = 32;
  static final int KV_HEADS = 8;
  static final int HEAD_DIM = 128;

  /** Tokens in the cache. */
  @Param({"32768", "131072"})
  public int context;

  /** Storage: f16 (dense decode), or SKVQ K2/V1.5 (decode over the codes). */
  @Param({"f16", "skvq"})
  public String codec;

  private ClContext cl;
  private DeviceKVCache dense;
  private DeviceSkvqCache skvq;
  private float[] q;
  private float[] out;

  /** Opens the device named by the OpenCL system properties and fills the cache with random tokens. */
  @Setup(Level.Trial)
  public void setUp() {
    cl = OpenCl.open(System.getProperty(OpenCl.BINDING_PROPERTY, "lwjgl"),
        System.getProperty(OpenCl.PLATFORM_PROPERTY, ""), System.getProperty(OpenCl.DEVICE_PROPERTY, ""), false);
    AttentionShape shape = new AttentionShape(1, QUERY_HEADS, KV_HEADS, HEAD_DIM);
    if (codec.equals("skvq")) {
      skvq = new DeviceSkvqCache(cl, shape, context, SkvqConfig.paperDefault());
    } else if (codec.equals("f16")) {
      dense = new DeviceKVCache(cl, shape, context);
    } else {
      throw new IllegalArgumentException("codec must be f16 or skvq, got " + codec);
    }
    // The tokens and query of `kvcache-bench gpu` (same seeds), so that the two report the same work.
    GpuCommand.fill(context, context, skvq != null ? (b, k, v, pos) -> skvq.append(0, b, k, v, pos)
        : (b, k, v, pos) -> dense.append(0, b, k, v, pos));
    SplittableRandom rnd = new SplittableRandom(7);
    q = new float[QUERY_HEADS * HEAD_DIM];
    out = new float[q.length];
    for (int i = 0; i < q.length; i++) {
      q[i] = (float) (rnd.nextDouble() * 2 - 1);
    }
  }

  /** @return an output element, so that the call is not dead code */
  @Benchmark
  public float decode() {
    if (skvq != null) {
      skvq.decode(0, q, context - 1, out);
    } else {
      dense.decode(0, q, context - 1, out);
    }
    return out[0];
  }

  /** Frees the device memory. */
  @TearDown(Level.Trial)
  public void tearDown() {
    if (skvq != null) {
      skvq.close();
    }
    if (dense != null) {
      dense.close();
    }
    cl.close();
  }
}
