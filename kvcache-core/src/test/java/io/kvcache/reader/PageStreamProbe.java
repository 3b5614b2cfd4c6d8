package io.kvcache.reader;

import io.kvcache.codec.HeadStore;
import io.kvcache.codec.StorageCodec;
import io.kvcache.kernel.Kernels;
import java.util.SplittableRandom;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * Not a test: where f16 decode time goes, in three numbers on one machine. (1) {@link PagedAttention}
 * decode of one GQA-4 tile (head dim 128) over f16 stores, as ns per 16-token page and GB/s of K/V:
 * with few tokens the pages stay in cache, with many they come from memory; the KV heads' pages are
 * allocated interleaved, as a model's layers and heads append them (or, with {@code by-head}, one
 * head's after another's). (2) A plain vectorised sum over
 * the same number of 8 KB arrays (one f16 page of K and V), in allocation order and in a random order:
 * what the memory delivers to a loop with almost no arithmetic, with and without one long forward
 * stream for the hardware prefetcher. Run from {@code kvcache-core} with {@code java --add-modules
 * jdk.incubator.vector -Xmx6g -cp target/classes:target/test-classes io.kvcache.reader.PageStreamProbe
 * [tokens] [kvHeads] [repetitions]}, e.g. {@code 1024 1 30000} and {@code 32768 8 60}.
 */
public final class PageStreamProbe {

  private static final VectorSpecies<Short> S = ShortVector.SPECIES_PREFERRED;

  private PageStreamProbe() {}

  /**
   * Runs the probe.
   *
   * @param args tokens per KV head (default 32768), KV heads (default 8), repetitions (default 60;
   *             the last two thirds are averaged), and {@code by-head} to append one head's tokens
   *             after another's, so each head's pages lie back to back in memory
   */
  public static void main(String[] args) {
    int tokens = args.length > 0 ? Integer.parseInt(args[0]) : 32768;
    int heads = args.length > 1 ? Integer.parseInt(args[1]) : 8;
    int reps = args.length > 2 ? Integer.parseInt(args[2]) : 60;
    int d = 128, group = 4;
    SplittableRandom rnd = new SplittableRandom(3);
    HeadStore[] stores = new HeadStore[heads];
    for (int h = 0; h < heads; h++) {
      stores[h] = StorageCodec.f16().newStore(d);
    }
    float[] k = new float[d], v = new float[d];
    boolean byHead = args.length > 3 && args[3].equals("by-head");
    for (int i = 0; i < tokens * heads; i++) {
      int t = byHead ? i % tokens : i / heads;
      int h = byHead ? i / tokens : i % heads;
      for (int c = 0; c < d; c++) {
        k[c] = (float) rnd.nextGaussian();
        v[c] = (float) rnd.nextGaussian();
      }
      stores[h].append(k, 0, v, 0, t);
    }
    float[] q = new float[group * d];
    for (int i = 0; i < q.length; i++) {
      q[i] = (float) rnd.nextGaussian();
    }
    float[] out = new float[group * d];
    PagedAttention attention = new PagedAttention(Kernels.get(), d);
    int pages = heads * stores[0].pageCount();
    short[][] inOrder = new short[pages][2 * d * HeadStore.PAGE_TOKENS];
    short[][] shuffled = inOrder.clone();
    for (int i = pages - 1; i > 0; i--) {
      int j = rnd.nextInt(i + 1);
      short[] x = shuffled[i];
      shuffled[i] = shuffled[j];
      shuffled[j] = x;
    }
    double decode = 0, ordered = 0, random = 0;
    long sink = 0;
    int counted = 0;
    for (int rep = 0; rep < reps; rep++) {
      long t0 = System.nanoTime();
      for (HeadStore store : stores) {
        attention.decode(store, group, q, 0, tokens, 0.088f, out, 0);
      }
      long t1 = System.nanoTime();
      for (short[] page : inOrder) {
        sink += sum(page);
      }
      long t2 = System.nanoTime();
      for (short[] page : shuffled) {
        sink += sum(page);
      }
      long t3 = System.nanoTime();
      if (rep >= reps / 3) {
        decode += t1 - t0;
        ordered += t2 - t1;
        random += t3 - t2;
        counted++;
      }
    }
    double bytes = (double) pages * 2 * d * HeadStore.PAGE_TOKENS * Short.BYTES * counted;
    System.out.printf("%s, %d tokens x %d KV heads (%d pages of 8 KiB%s): decode %.0f ns per page, %.2f GB/s; "
        + "sum over 8 KiB arrays in order %.2f GB/s, in random order %.2f GB/s (%g %d)%n", Kernels.get().name(),
        tokens, heads, pages, byHead ? ", by head" : "", decode / counted / pages, bytes / decode, bytes / ordered, bytes / random, out[1],
        sink);
  }

  private static int sum(short[] a) {
    ShortVector s0 = ShortVector.zero(S), s1 = s0;
    int l = S.length();
    for (int i = 0; i + 2 * l <= a.length; i += 2 * l) {
      s0 = s0.add(ShortVector.fromArray(S, a, i));
      s1 = s1.add(ShortVector.fromArray(S, a, i + l));
    }
    return s0.add(s1).reduceLanes(VectorOperators.ADD);
  }
}
