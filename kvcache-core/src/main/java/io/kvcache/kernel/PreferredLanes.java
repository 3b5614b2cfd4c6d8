package io.kvcache.kernel;

import jdk.incubator.vector.FloatVector;

/**
 * The preferred float vector's lane count, apart from {@link VectorAttentionKernels} so that asking
 * does not initialise the kernels (whose species are derived from it and need 4, 8 or 16 lanes).
 * Loaded only by name, only when {@code jdk.incubator.vector} is present.
 */
final class PreferredLanes {

  private PreferredLanes() {}

  static int lanes() {
    return FloatVector.SPECIES_PREFERRED.length();
  }
}
