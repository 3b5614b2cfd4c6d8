package io.kvcache.bench;

import io.kvcache.codec.HeadStore;
import io.kvcache.codec.StorageCodec;
import io.kvcache.kernel.AttentionKernels;
import io.kvcache.kernel.Kernels;
import io.kvcache.reader.PagedAttention;
import java.util.Locale;
import java.util.SplittableRandom;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * A quick decode-attention table (one thread, in-process timing, medians), for a first look in
 * under a minute. The JMH benchmarks ({@code jmh}) are the measurement of record.
 */
@Command(name = "decode", mixinStandardHelpOptions = true,
    description = "Times decode attention (Llama-3-8B heads: 32 query, 8 KV, dim 128; one layer) per codec and kernel.")
final class DecodeCommand implements Runnable {

  @Option(names = "--contexts", split = ",", defaultValue = "4096,32768",
      description = "Tokens in the cache, comma-separated (default: ${DEFAULT-VALUE}).")
  int[] contexts = {4096, 32768};

  @Option(names = "--reps", defaultValue = "15", description = "Timed repetitions per row; the median is shown.")
  int reps = 15;

  @Override
  public void run() {
    io.kvcache.core.Checks.inRange("--reps", reps, 1, 1_000_000);
    for (int c : contexts) {
      io.kvcache.core.Checks.inRange("--contexts", c, 1, Integer.MAX_VALUE / 2);
    }
    int qHeads = 32, kvHeads = 8, d = 128, g = qHeads / kvHeads;
    System.out.printf(Locale.ROOT, "decode attention, one layer, 32 query / 8 KV heads, dim 128, 1 thread (%s, %d cores)%n",
        System.getProperty("os.arch"), Runtime.getRuntime().availableProcessors());
    System.out.printf(Locale.ROOT, "%-8s %-6s %-11s %12s %10s%n", "context", "codec", "kernels", "median us", "GB/s");
    AttentionKernels[] all = Kernels.vectorAvailable()
        ? new AttentionKernels[] {Kernels.vector(), Kernels.scalar()} : new AttentionKernels[] {Kernels.scalar()};
    float scale = (float) (1 / Math.sqrt(d));
    for (int context : contexts) {
      for (StorageCodec codec : new StorageCodec[] {StorageCodec.f16(), StorageCodec.f32()}) {
        HeadStore[] stores = fill(codec, kvHeads, d, context);
        float[] q = new float[qHeads * d];
        SplittableRandom rnd = new SplittableRandom(3);
        for (int i = 0; i < q.length; i++) {
          q[i] = (float) rnd.nextGaussian();
        }
        float[] out = new float[q.length];
        long bytes = (long) context * kvHeads * d * 2 * (codec.name().equals("f32") ? 4 : 2);
        for (AttentionKernels k : all) {
          PagedAttention work = new PagedAttention(k, d);
          double[] t = new double[reps];
          for (int r = -3; r < reps; r++) {
            long t0 = System.nanoTime();
            for (int h = 0; h < kvHeads; h++) {
              work.decode(stores[h], g, q, h * g * d, context, scale, out, h * g * d);
            }
            long ns = System.nanoTime() - t0;
            if (r >= 0) {
              t[r] = ns;
            }
          }
          double med = Stats.median(t);
          System.out.printf(Locale.ROOT, "%-8d %-6s %-11s %12.1f %10.2f%n", context, codec.name(), k.name(), med / 1e3,
              bytes / med);
        }
      }
    }
    System.out.println("For the measurement of record: java -jar kvcache-bench/target/kvcache-bench.jar jmh");
  }

  static HeadStore[] fill(StorageCodec codec, int kvHeads, int d, int context) {
    SplittableRandom rnd = new SplittableRandom(1);
    HeadStore[] stores = new HeadStore[kvHeads];
    for (int h = 0; h < kvHeads; h++) {
      stores[h] = codec.newStore(d);
      RandomStores.fill(stores[h], context, rnd);
    }
    return stores;
  }
}
