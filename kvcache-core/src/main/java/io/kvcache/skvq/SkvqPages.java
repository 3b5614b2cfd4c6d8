package io.kvcache.skvq;

/**
 * Read access to the quantized pages of one SKVQ {@link io.kvcache.codec.HeadStore}, in a layout-neutral
 * form, so that another attention engine (the OpenCL one in {@code kvcache-gpu}) can mirror the codes
 * the codec chose instead of quantizing again. Every store {@link SkvqCodec#newStore} returns implements
 * it.
 *
 * <p>A token {@code j} of a page is quantized when bit {@code j} of {@link #quantizedSlots} is set. Its
 * key in permuted channel {@code c} decodes to {@code keyZero[g*16 + j] + keyScale[g*16 + j] * keyCode}
 * with {@code g = c / keyGroup}, and lands in original channel {@link #keyPermutation()}{@code [c]};
 * values alike with {@code g = c / valueGroup} and {@link #valuePermutation()}. Scales and zero points
 * are binary16 values, returned as the floats they are exactly.
 */
public interface SkvqPages {

  /** @return the codec's configuration (widths, groups, window, sinks) */
  SkvqConfig config();

  /** @return whether the store has calibrated (its permutations are final); before, they are the identity */
  boolean calibrated();

  /** @return a copy of the key permutation: permuted channel {@code c} holds original channel {@code perm[c]} */
  int[] keyPermutation();

  /** @return a copy of the value permutation, as {@link #keyPermutation()} */
  int[] valuePermutation();

  /**
   * @param page a page index, {@code < pageCount()}
   * @return the page's quantized slots as a 16-bit mask (bit {@code j} for slot {@code j})
   */
  int quantizedSlots(int page);

  /**
   * Copies a page's codes, scales and zero points. Entries of slots that are not quantized are
   * written as zeros.
   *
   * @param page       a page index, {@code < pageCount()}
   * @param keyCodes   {@code headDim * 16} ints: code of permuted channel {@code c}, token {@code j} at {@code c*16 + j}
   * @param valueCodes {@code 16 * headDim} ints: token {@code j}, permuted channel {@code c} at {@code j*headDim + c}
   * @param keyScale   {@code keyGroups * 16} floats, group {@code g} of token {@code j} at {@code g*16 + j}
   * @param keyZero    as {@code keyScale}
   * @param valueScale {@code 16 * valueGroups} floats, token {@code j}, group {@code g} at {@code j*valueGroups + g}
   * @param valueZero  as {@code valueScale}
   * @throws IllegalArgumentException for a page out of range or an array too short
   */
  void readQuantizedPage(int page, int[] keyCodes, int[] valueCodes, float[] keyScale, float[] keyZero,
      float[] valueScale, float[] valueZero);
}
