package io.kvcache.kernel;

import java.util.SplittableRandom;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * Not a test: how fast can the f16 decode's score tile (4 query heads of a GQA group times one
 * 16-token page, head dim 128, 1,024 8-lane multiply-adds) run in cache, in the forms C2 compiles
 * differently? One form per JVM (C2's choices depend on what else it compiled), eight rounds of 8 pages
 * times 40,000, ns per page:
 * <ul>
 *   <li><b>library</b>: {@link AttentionKernels#scoresHalf} of the running kernels;
 *   <li><b>counted2</b>: the same tile, two channels per iteration, every index a constant stride of one
 *       counter, so that C2 removes the bounds checks (and, with them, the order they imposed);
 *   <li><b>counted1</b>: one channel per iteration, constant strides;
 *   <li><b>floats</b>: one channel per iteration over keys already held as floats (no widening), a loop
 *       C2 does not unroll (its stride is a field's value);
 *   <li><b>widen</b>: each page widened into a float page first ({@code Float.float16ToFloat} in a plain
 *       loop, which C2 compiles to packed conversions), then <b>floats</b>' loop;
 *   <li><b>fma</b>: eight independent multiply-add chains over registers: the core's peak, as ns for a
 *       page's 1,024.
 *   <li><b>fma10</b>: the same with ten chains (a loop of 128 steps of ten, 1,280 multiply-adds, its time
 *       scaled to 1,024): what the FMA units do when latency never holds them up. A GQA-4 tile of two
 *       8-lane token vectors has eight accumulators, and AVX2's sixteen registers leave no room for more
 *       beside its key vectors and broadcasts;
 *   <li><b>rolled</b>: <b>counted1</b>'s tile over halves in a loop C2 does not unroll (its stride is a
 *       field's value), so that nothing spills;
 *   <li><b>muladd</b>: <b>rolled</b> with each multiply-add as a multiply and an add (on Zen 3 they issue
 *       to other pipes than the FMAs, and an add's latency is shorter than an FMA's).
 * </ul>
 * The halves are widened as the library does (sign-extend, shift, mask: value times 2^-112); the
 * outputs are not compared, only timed. From {@code kvcache-core}: {@code java --add-modules
 * jdk.incubator.vector -cp target/classes:target/test-classes io.kvcache.kernel.ScoreTileFormProbe FORM}.
 */
public final class ScoreTileFormProbe {

  private static final VectorSpecies<Float> F = FloatVector.SPECIES_256;
  private static final VectorSpecies<Short> H = ShortVector.SPECIES_128;
  private static final VectorSpecies<Integer> I = IntVector.SPECIES_256;
  private static final int L = 8;
  private static final int D = 128;
  private static final int PAGES = 8;
  /** A field, not a constant: a loop stepping by it is not a counted loop, and C2 does not unroll it. */
  private static int one = 1;

  private ScoreTileFormProbe() {}

  /**
   * Runs one form.
   *
   * @param args the form: library, counted2, counted1, floats, widen, fma, fma10, rolled or muladd
   */
  public static void main(String[] args) {
    String form = args.length > 0 ? args[0] : "library";
    AttentionKernels lib = Kernels.get();
    SplittableRandom r = new SplittableRandom(1);
    float[] q = new float[4 * D];
    short[] kt = new short[PAGES * 16 * D];
    float[] kf = new float[kt.length];
    for (int i = 0; i < q.length; i++) {
      q[i] = (float) r.nextGaussian();
    }
    for (int i = 0; i < kt.length; i++) {
      kt[i] = Float.floatToFloat16((float) r.nextGaussian());
      kf[i] = Float.float16ToFloat(kt[i]);
    }
    float[] page = new float[16 * D];
    float[] s = new float[4 * PAGES * 16];
    StringBuilder line = new StringBuilder(lib.name() + " " + form + ", ns per page:");
    for (int round = 0; round < 8; round++) {
      int iters = 40_000;
      long t0 = System.nanoTime();
      for (int it = 0; it < iters; it++) {
        for (int pg = 0; pg < PAGES; pg++) {
          int k0 = pg * 16 * D;
          int s0 = pg * 16;
          switch (form) {
            case "library" -> lib.scoresHalf(q, 0, 4, D, kt, k0, 16, s, s0, PAGES * 16);
            case "counted2" -> counted2(q, kt, k0, s, s0);
            case "counted1" -> counted1(q, kt, k0, s, s0);
            case "floats" -> floats(q, kf, k0, s, s0);
            case "widen" -> {
              for (int i = 0; i < page.length; i++) {
                page[i] = Float.float16ToFloat(kt[k0 + i]);
              }
              floats(q, page, 0, s, s0);
            }
            case "fma" -> s[s0] += fma(q, iters);
            case "fma10" -> s[s0] += fma10(q, iters);
            case "rolled" -> rolled(q, kt, k0, s, s0, false);
            case "muladd" -> rolled(q, kt, k0, s, s0, true);
            default -> throw new IllegalArgumentException("form must be library, counted2, counted1, floats, "
                + "widen, fma, fma10, rolled or muladd, got " + form);
          }
        }
      }
      long t1 = System.nanoTime();
      double scale = form.equals("fma10") ? 1024.0 / 1280 : 1.0;
      line.append(String.format(" %.0f", scale * (t1 - t0) / iters / PAGES));
    }
    System.out.println(line + "  (" + s[5] + ")");
  }

  private static FloatVector half(short[] a, int off) {
    IntVector i = (IntVector) ShortVector.fromArray(H, a, off).convertShape(VectorOperators.S2I, I, 0);
    return i.lanewise(VectorOperators.LSHL, 13).and(0x8FFFE000).reinterpretAsFloats();
  }

  private static void counted2(float[] q, short[] kT, int k0, float[] s, int s0) {
    FloatVector a00 = FloatVector.zero(F), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
    for (int c = 0; c < D; c += 2) {
      int k = k0 + c * 16;
      FloatVector x0 = half(kT, k), x1 = half(kT, k + 8), y0 = half(kT, k + 16), y1 = half(kT, k + 24);
      FloatVector b0 = FloatVector.broadcast(F, q[c]);
      a00 = x0.fma(b0, a00);
      a01 = x1.fma(b0, a01);
      FloatVector b1 = FloatVector.broadcast(F, q[D + c]);
      a10 = x0.fma(b1, a10);
      a11 = x1.fma(b1, a11);
      FloatVector b2 = FloatVector.broadcast(F, q[2 * D + c]);
      a20 = x0.fma(b2, a20);
      a21 = x1.fma(b2, a21);
      FloatVector b3 = FloatVector.broadcast(F, q[3 * D + c]);
      a30 = x0.fma(b3, a30);
      a31 = x1.fma(b3, a31);
      FloatVector e0 = FloatVector.broadcast(F, q[c + 1]);
      a00 = y0.fma(e0, a00);
      a01 = y1.fma(e0, a01);
      FloatVector e1 = FloatVector.broadcast(F, q[D + c + 1]);
      a10 = y0.fma(e1, a10);
      a11 = y1.fma(e1, a11);
      FloatVector e2 = FloatVector.broadcast(F, q[2 * D + c + 1]);
      a20 = y0.fma(e2, a20);
      a21 = y1.fma(e2, a21);
      FloatVector e3 = FloatVector.broadcast(F, q[3 * D + c + 1]);
      a30 = y0.fma(e3, a30);
      a31 = y1.fma(e3, a31);
    }
    store(s, s0, a00, a01, a10, a11, a20, a21, a30, a31);
  }

  private static void counted1(float[] q, short[] kT, int k0, float[] s, int s0) {
    FloatVector a00 = FloatVector.zero(F), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
    for (int c = 0; c < D; c++) {
      int k = k0 + c * 16;
      FloatVector x0 = half(kT, k), x1 = half(kT, k + L);
      FloatVector b0 = FloatVector.broadcast(F, q[c]);
      a00 = x0.fma(b0, a00);
      a01 = x1.fma(b0, a01);
      FloatVector b1 = FloatVector.broadcast(F, q[D + c]);
      a10 = x0.fma(b1, a10);
      a11 = x1.fma(b1, a11);
      FloatVector b2 = FloatVector.broadcast(F, q[2 * D + c]);
      a20 = x0.fma(b2, a20);
      a21 = x1.fma(b2, a21);
      FloatVector b3 = FloatVector.broadcast(F, q[3 * D + c]);
      a30 = x0.fma(b3, a30);
      a31 = x1.fma(b3, a31);
    }
    store(s, s0, a00, a01, a10, a11, a20, a21, a30, a31);
  }

  private static void floats(float[] q, float[] kT, int k0, float[] s, int s0) {
    FloatVector a00 = FloatVector.zero(F), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
    int step = one;
    for (int c = 0, k = k0; c < D; c += step, k += 16) {
      FloatVector x0 = FloatVector.fromArray(F, kT, k), x1 = FloatVector.fromArray(F, kT, k + L);
      FloatVector b0 = FloatVector.broadcast(F, q[c]);
      a00 = x0.fma(b0, a00);
      a01 = x1.fma(b0, a01);
      FloatVector b1 = FloatVector.broadcast(F, q[D + c]);
      a10 = x0.fma(b1, a10);
      a11 = x1.fma(b1, a11);
      FloatVector b2 = FloatVector.broadcast(F, q[2 * D + c]);
      a20 = x0.fma(b2, a20);
      a21 = x1.fma(b2, a21);
      FloatVector b3 = FloatVector.broadcast(F, q[3 * D + c]);
      a30 = x0.fma(b3, a30);
      a31 = x1.fma(b3, a31);
    }
    store(s, s0, a00, a01, a10, a11, a20, a21, a30, a31);
  }

  private static void rolled(float[] q, short[] kT, int k0, float[] s, int s0, boolean split) {
    FloatVector a00 = FloatVector.zero(F), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
    int step = one;
    for (int c = 0, k = k0; c < D; c += step, k += 16) {
      FloatVector x0 = half(kT, k), x1 = half(kT, k + L);
      FloatVector b0 = FloatVector.broadcast(F, q[c]);
      FloatVector b1 = FloatVector.broadcast(F, q[D + c]);
      FloatVector b2 = FloatVector.broadcast(F, q[2 * D + c]);
      FloatVector b3 = FloatVector.broadcast(F, q[3 * D + c]);
      if (split) {
        a00 = a00.add(x0.mul(b0));
        a01 = a01.add(x1.mul(b0));
        a10 = a10.add(x0.mul(b1));
        a11 = a11.add(x1.mul(b1));
        a20 = a20.add(x0.mul(b2));
        a21 = a21.add(x1.mul(b2));
        a30 = a30.add(x0.mul(b3));
        a31 = a31.add(x1.mul(b3));
      } else {
        a00 = x0.fma(b0, a00);
        a01 = x1.fma(b0, a01);
        a10 = x0.fma(b1, a10);
        a11 = x1.fma(b1, a11);
        a20 = x0.fma(b2, a20);
        a21 = x1.fma(b2, a21);
        a30 = x0.fma(b3, a30);
        a31 = x1.fma(b3, a31);
      }
    }
    store(s, s0, a00, a01, a10, a11, a20, a21, a30, a31);
  }

  /** 128 steps of ten independent chains: 1,280 multiply-adds. */
  private static float fma10(float[] q, int salt) {
    FloatVector x = FloatVector.broadcast(F, q[salt & 7]), y = FloatVector.broadcast(F, 0.999f);
    FloatVector a0 = FloatVector.zero(F), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0,
        a9 = a0;
    int step = one;
    for (int c = 0; c < D; c += step) {
      a0 = x.fma(y, a0);
      a1 = x.fma(y, a1);
      a2 = x.fma(y, a2);
      a3 = x.fma(y, a3);
      a4 = x.fma(y, a4);
      a5 = x.fma(y, a5);
      a6 = x.fma(y, a6);
      a7 = x.fma(y, a7);
      a8 = x.fma(y, a8);
      a9 = x.fma(y, a9);
    }
    return a0.add(a1).add(a2).add(a3).add(a4).add(a5).add(a6).add(a7).add(a8).add(a9)
        .reduceLanes(VectorOperators.ADD);
  }

  /** A page's 1,024 multiply-adds as 128 steps of eight independent chains over registers. */
  private static float fma(float[] q, int salt) {
    FloatVector x = FloatVector.broadcast(F, q[salt & 7]), y = FloatVector.broadcast(F, 0.999f);
    FloatVector a0 = FloatVector.zero(F), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    int step = one;
    for (int c = 0; c < D; c += step) {
      a0 = x.fma(y, a0);
      a1 = x.fma(y, a1);
      a2 = x.fma(y, a2);
      a3 = x.fma(y, a3);
      a4 = x.fma(y, a4);
      a5 = x.fma(y, a5);
      a6 = x.fma(y, a6);
      a7 = x.fma(y, a7);
    }
    return a0.add(a1).add(a2).add(a3).add(a4).add(a5).add(a6).add(a7).reduceLanes(VectorOperators.ADD);
  }

  private static void store(float[] s, int s0, FloatVector a00, FloatVector a01, FloatVector a10, FloatVector a11,
      FloatVector a20, FloatVector a21, FloatVector a30, FloatVector a31) {
    int st = PAGES * 16;
    a00.intoArray(s, s0);
    a01.intoArray(s, s0 + L);
    a10.intoArray(s, s0 + st);
    a11.intoArray(s, s0 + st + L);
    a20.intoArray(s, s0 + 2 * st);
    a21.intoArray(s, s0 + 2 * st + L);
    a30.intoArray(s, s0 + 3 * st);
    a31.intoArray(s, s0 + 3 * st + L);
  }
}
