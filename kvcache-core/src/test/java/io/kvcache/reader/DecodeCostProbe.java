package io.kvcache.reader;

import io.kvcache.codec.HeadStore;
import io.kvcache.codec.StorageCodec;
import io.kvcache.kernel.Kernels;
import java.util.SplittableRandom;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * Not a test: does decode's memory time overlap its arithmetic, or add to it? One JVM, one thread,
 * f16 and f32 storage in turn, each repetition measuring, per 16-token page of one KV head (GQA 4, head
 * dim 128):
 * <ul>
 *   <li><b>C</b>, {@link PagedAttention} decode over 64 pages that stay in cache: the arithmetic;
 *   <li><b>M</b>, the same decode over 8 KV heads of {@code tokens} tokens each, from memory;
 *   <li><b>T</b>, a vectorised sum over as many arrays of a page's size, in allocation order: what the
 *       memory delivers to a loop with almost no arithmetic;
 *   <li><b>F</b>, the page's multiply-adds ({@code 2 * group * headDim * 16 / lanes}) at the FMA rate a
 *       loop of ten independent chains reaches: no kernel over these pages can take less.
 * </ul>
 * If memory and arithmetic overlapped, M would approach max(C, T); if they add, M is about C + T. The
 * last column is the share of the streaming bandwidth a kernel would reach with C = F (nothing but its
 * multiply-adds) under the rule this run measured, M = r (C + T): T / (r (F + T)). Run from
 * {@code kvcache-core} with {@code java --add-modules jdk.incubator.vector -Xmx12g -cp
 * target/classes:target/test-classes io.kvcache.reader.DecodeCostProbe [tokens] [repetitions]
 * [no-reserve]} (defaults 32768 and 30; the last two thirds are averaged). The stores are filled as
 * prefill chunks of 2,048 tokens, each {@link HeadStore#reserve reserved}, as {@code PagedKVCache}
 * does; {@code no-reserve} appends without a reservation, one token at a time as decode does: every
 * page starts as an array of its own and each eight in a row are merged into a block.
 */
public final class DecodeCostProbe {

  private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
  private static final int D = 128;
  private static final int GROUP = 4;
  private static final int HEADS = 8;
  private static final int PREFILL_CHUNK = 2048;

  private DecodeCostProbe() {}

  /**
   * Runs the probe.
   *
   * @param args tokens per KV head from memory (default 32768) and repetitions (default 30)
   */
  public static void main(String[] args) {
    int tokens = args.length > 0 ? Integer.parseInt(args[0]) : 32768;
    int reps = args.length > 1 ? Integer.parseInt(args[1]) : 30;
    boolean reserve = !(args.length > 2 && args[2].equals("no-reserve"));
    System.out.printf("%s, %d lanes; per page of one KV head: C in cache, M from memory (%d KV heads x %d tokens, %s), "
        + "T streamed, F multiply-adds at peak; ns%n", Kernels.get().name(), F.length(), HEADS, tokens,
        reserve ? "reserved in chunks of " + PREFILL_CHUNK : "page by page");
    for (StorageCodec codec : new StorageCodec[] {StorageCodec.f16(), StorageCodec.f32()}) {
      run(codec, tokens, reps, reserve);
    }
  }

  private static void run(StorageCodec codec, int tokens, int reps, boolean reserve) {
    SplittableRandom rnd = new SplittableRandom(3);
    HeadStore[] small = {fill(codec.newStore(D), 1024, rnd)};
    HeadStore[] large = new HeadStore[HEADS];
    for (int h = 0; h < HEADS; h++) {
      large[h] = codec.newStore(D);
    }
    float[] k = new float[D], v = new float[D];
    for (int t = 0; t < tokens; t++) { // interleaved over heads, as a model appends them
      if (reserve && t % PREFILL_CHUNK == 0) { // as PagedKVCache does for each prefill call
        for (HeadStore s : large) {
          s.reserve(Math.min(PREFILL_CHUNK, tokens - t));
        }
      }
      for (HeadStore s : large) {
        random(k, rnd);
        random(v, rnd);
        s.append(k, 0, v, 0, t);
      }
    }
    int pageFloats = 2 * D * HeadStore.PAGE_TOKENS * (codec.name().equals("f16") ? 1 : 2) / 2;
    int pageBytes = pageFloats * 4;
    int pages = HEADS * large[0].pageCount();
    float[][] stream = new float[pages][pageFloats];
    float[] q = new float[GROUP * D];
    random(q, rnd);
    float[] out = new float[GROUP * D];
    PagedAttention attention = new PagedAttention(Kernels.get(), D);
    double c = 0, m = 0, t = 0, f = 0;
    double sink = 0;
    int counted = 0;
    long fmaIters = 20_000_000L;
    for (int rep = 0; rep < reps; rep++) {
      long t0 = System.nanoTime();
      int inner = 200;
      for (int i = 0; i < inner; i++) {
        attention.decode(small[0], GROUP, q, 0, 1024, 0.088f, out, 0);
      }
      long t1 = System.nanoTime();
      for (HeadStore s : large) {
        attention.decode(s, GROUP, q, 0, tokens, 0.088f, out, 0);
      }
      long t2 = System.nanoTime();
      for (float[] page : stream) {
        sink += sum(page);
      }
      long t3 = System.nanoTime();
      sink += fmaChains(fmaIters);
      long t4 = System.nanoTime();
      if (rep >= reps / 3) {
        c += (double) (t1 - t0) / inner / small[0].pageCount();
        m += (double) (t2 - t1) / pages;
        t += (double) (t3 - t2) / pages;
        f += 10.0 * fmaIters / (t4 - t3); // FMAs per ns
        counted++;
      }
    }
    c /= counted;
    m /= counted;
    t /= counted;
    f /= counted;
    double fmaPerPage = 2.0 * GROUP * D * HeadStore.PAGE_TOKENS / F.length();
    double fPage = fmaPerPage / f;
    System.out.printf("%s (%d B a page): C %.0f  M %.0f  T %.0f (%.2f GB/s)  C+T %.0f  M/(C+T) %.2f  "
        + "kernel %.0f%% of streaming (T/M)  F %.0f (%.2f FMA/ns)  ceiling T/(r(F+T)) %.0f%%  (%g %g)%n",
        codec.name(), pageBytes, c, m, t, pageBytes / t, c + t, m / (c + t), 100 * t / m, fPage, f,
        100 * t / (m / (c + t) * (fPage + t)), out[1], sink);
  }

  private static HeadStore fill(HeadStore s, int tokens, SplittableRandom rnd) {
    float[] k = new float[D], v = new float[D];
    for (int t = 0; t < tokens; t++) {
      random(k, rnd);
      random(v, rnd);
      s.append(k, 0, v, 0, t);
    }
    return s;
  }

  private static void random(float[] a, SplittableRandom rnd) {
    for (int i = 0; i < a.length; i++) {
      a[i] = (float) rnd.nextGaussian();
    }
  }

  private static float sum(float[] a) {
    FloatVector s0 = FloatVector.zero(F), s1 = s0;
    int l = F.length();
    for (int i = 0; i + 2 * l <= a.length; i += 2 * l) {
      s0 = s0.add(FloatVector.fromArray(F, a, i));
      s1 = s1.add(FloatVector.fromArray(F, a, i + l));
    }
    return s0.add(s1).reduceLanes(VectorOperators.ADD);
  }

  /** Ten independent multiply-add chains: enough to cover the FMA latency on two pipes. */
  private static float fmaChains(long iters) {
    FloatVector a0 = FloatVector.broadcast(F, 1f), a1 = a0.add(1f), a2 = a0.add(2f), a3 = a0.add(3f);
    FloatVector a4 = a0.add(4f), a5 = a0.add(5f), a6 = a0.add(6f), a7 = a0.add(7f), a8 = a0.add(8f);
    FloatVector a9 = a0.add(9f);
    FloatVector x = FloatVector.broadcast(F, 0.999999f), y = FloatVector.broadcast(F, 1e-7f);
    for (long i = 0; i < iters; i++) {
      a0 = a0.fma(x, y);
      a1 = a1.fma(x, y);
      a2 = a2.fma(x, y);
      a3 = a3.fma(x, y);
      a4 = a4.fma(x, y);
      a5 = a5.fma(x, y);
      a6 = a6.fma(x, y);
      a7 = a7.fma(x, y);
      a8 = a8.fma(x, y);
      a9 = a9.fma(x, y);
    }
    return a0.add(a1).add(a2).add(a3).add(a4).add(a5).add(a6).add(a7).add(a8).add(a9)
        .reduceLanes(VectorOperators.ADD);
  }
}
