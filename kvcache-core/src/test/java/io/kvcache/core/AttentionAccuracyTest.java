package io.kvcache.core;

import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.codec.StorageCodec;
import io.kvcache.kernel.AttentionKernels;
import io.kvcache.kernel.Kernels;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.stream.Stream;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Prefill and decode attention, through the public API, against the float64 {@link Reference} on
 * fresh random inputs. Tolerance, as the row error of {@link Reference#rowError}: 1e-5 for f32
 * storage; 2e-3 for f16 storage, measured against the reference on the <em>unrounded</em> inputs,
 * so it bounds the storage rounding and the kernel together.
 */
class AttentionAccuracyTest {

  static final double F32_TOLERANCE = 1e-5;
  static final double F16_TOLERANCE = 2e-3;

  static Stream<Arguments> cases() {
    List<Arguments> cases = new ArrayList<>();
    for (String kernels : new String[] {"scalar", "vector"}) {
      for (String codec : new String[] {"f32", "f16"}) {
        for (int d : new int[] {64, 128}) {
          for (int g : new int[] {1, 4, 8}) {
            for (int n : new int[] {0, 1, 7, 1000}) {
              cases.add(Arguments.of(kernels, codec, d, g, 2, n));
            }
          }
        }
      }
    }
    // Long contexts: one KV head keeps the float64 reference and the scalar pass affordable.
    for (String codec : new String[] {"f32", "f16"}) {
      for (int g : new int[] {1, 4, 8}) {
        cases.add(Arguments.of("vector", codec, 128, g, 1, 5000));
      }
    }
    cases.add(Arguments.of("scalar", "f16", 64, 4, 1, 5000));
    return cases.stream();
  }

  @ParameterizedTest(name = "{0} {1} d={2} G={3} kvHeads={4} n={5}")
  @MethodSource("cases")
  void prefillThenDecodeMatchesFloat64Reference(String kernelName, String codecName, int d, int g, int kvHeads,
      int n) {
    AttentionKernels kernels = kernels(kernelName);
    StorageCodec codec = codecName.equals("f32") ? StorageCodec.f32() : StorageCodec.f16();
    double tol = codecName.equals("f32") ? F32_TOLERANCE : F16_TOLERANCE;
    AttentionShape shape = new AttentionShape(1, g * kvHeads, kvHeads, d);
    long seed = TestData.seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    int total = n + 1;
    float[] q = TestData.gaussian(rnd, total * shape.queryWidth(), 1.0);
    float[] k = TestData.gaussian(rnd, total * shape.kvWidth(), 1.0);
    float[] v = TestData.gaussian(rnd, total * shape.kvWidth(), 1.0);
    float[] out = new float[total * shape.queryWidth()];

    KVCacheStrategy strategy = KVCacheStrategy.builder().codec(codec).kernels(kernels).build();
    try (KVCache cache = strategy.newCache(shape)) {
      if (n > 0) {
        cache.prefill(0, n, null, q, 0, k, 0, v, 0, out, 0);
      }
      cache.decode(0, q, n * shape.queryWidth(), k, n * shape.kvWidth(), v, n * shape.kvWidth(), out,
          n * shape.queryWidth());
    }

    // Every row of short inputs; for long ones the first, the last and a random sample.
    List<Integer> tokens = new ArrayList<>();
    if (total <= 16) {
      for (int t = 0; t < total; t++) {
        tokens.add(t);
      }
    } else {
      tokens.add(0);
      tokens.add(n - 1);
      tokens.add(n);
      for (int i = 0; i < 12; i++) {
        tokens.add(rnd.nextInt(total));
      }
    }
    double worst = 0;
    for (int t : tokens) {
      for (int h = 0; h < shape.queryHeads(); h++) {
        double[] ref = Reference.row(shape, q, t, h, k, v, null, t + 1);
        worst = Math.max(worst, Reference.rowError(out, t * shape.queryWidth() + h * d, ref));
      }
    }
    double w = worst;
    assertTrue(w <= tol, () -> "row error " + w + " > " + tol + " (seed " + seed + ")");
  }

  static AttentionKernels kernels(String name) {
    if (name.equals("vector")) {
      Assumptions.assumeTrue(Kernels.vectorAvailable(), "jdk.incubator.vector not available");
      return Kernels.vector();
    }
    return Kernels.scalar();
  }
}
