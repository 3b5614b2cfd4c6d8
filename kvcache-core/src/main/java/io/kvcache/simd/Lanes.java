package io.kvcache.simd;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorShuffle;
import jdk.incubator.vector.VectorSpecies;

/**
 * Vector API helpers that the attention kernels ({@code io.kvcache.kernel}) and the matrix kernels
 * ({@code io.kvcache.model}) share. Internal: the package is not exported from the module. Loaded only
 * by the vector kernels, so only where {@code jdk.incubator.vector} is present.
 */
public final class Lanes {

  private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;

  /** Lane {@code i} from lane {@code i ^ k}: the fixed pairings of {@link #sum}'s tree. */
  private static final VectorShuffle<Float> SWAP1 = VectorShuffle.fromOp(F, i -> i ^ 1);
  private static final VectorShuffle<Float> SWAP2 = VectorShuffle.fromOp(F, i -> i ^ 2);
  private static final VectorShuffle<Float> SWAP4 = VectorShuffle.fromOp(F, i -> (i ^ 4) % F.length());
  private static final VectorShuffle<Float> SWAP8 = VectorShuffle.fromOp(F, i -> (i ^ 8) % F.length());

  private Lanes() {}

  /**
   * The lanes' sum in a fixed tree (neighbours, then pairs, ...). {@code reduceLanes(ADD)} leaves the
   * order open, and its compiled form and its Java fallback (which runs until C2 compiles the caller)
   * add in different orders, so the same softmax or logits could round differently early and late in a
   * JVM's life.
   *
   * @param v a vector of the preferred float species (4, 8 or 16 lanes)
   * @return the sum of its lanes
   */
  public static float sum(FloatVector v) {
    v = v.add(v.rearrange(SWAP1));
    v = v.add(v.rearrange(SWAP2));
    if (F.length() >= 8) {
      v = v.add(v.rearrange(SWAP4));
    }
    if (F.length() >= 16) {
      v = v.add(v.rearrange(SWAP8));
    }
    return v.lane(0);
  }
}
