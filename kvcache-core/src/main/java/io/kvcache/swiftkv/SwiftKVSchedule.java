package io.kvcache.swiftkv;

import io.kvcache.schedule.PrefillSchedule;

/**
 * SwiftKV's prefill schedule (arXiv 2410.03960): SingleInputKV and AcrossKV.
 *
 * <ul>
 *   <li><b>SingleInputKV.</b> Prompt tokens run layers {@code 0 … s−1} only, {@code s = round(f · L)}
 *       (half the depth by default); every later layer's K and V come from the hidden state leaving
 *       layer {@code s − 1}, through that layer's own input norm and K/V projections (RoPE at the
 *       original positions). The last prompt token and every decode token run all layers.</li>
 *   <li><b>AcrossKV.</b> Among layers {@code ≥ s}, groups of {@code k} consecutive layers share one KV
 *       cache, owned by the group's first layer: its K/V are stored once and the others attend to
 *       them.</li>
 * </ul>
 * Honoured by the reference decoder ({@link io.kvcache.model.LlamaModel}). With a plain checkpoint
 * (no distilled SwiftKV projections) the later layers' K/V come from a hidden state they were not
 * trained on, so quality drops; released SwiftKV checkpoints carry retrained projections.
 */
public final class SwiftKVSchedule implements PrefillSchedule {

  private final double skipFraction;
  /** The first skipped layer when given as an index (from a checkpoint's config); -1 when a fraction. */
  private final int skipLayer;
  private final int group;

  /**
   * @param skipFraction the first skipped layer as a share of depth, in (0, 1]; 1 skips none
   * @param acrossGroup  layers per shared cache past the skip point, {@code >= 1}; 1 shares none
   */
  public SwiftKVSchedule(double skipFraction, int acrossGroup) {
    if (!(skipFraction > 0 && skipFraction <= 1)) {
      throw new IllegalArgumentException("skipFraction must be in (0, 1], got " + skipFraction);
    }
    if (acrossGroup < 1) {
      throw new IllegalArgumentException("acrossGroup must be >= 1, got " + acrossGroup);
    }
    this.skipFraction = skipFraction;
    this.skipLayer = -1;
    this.group = acrossGroup;
  }

  private SwiftKVSchedule(int skipLayer, int acrossGroup) {
    this.skipFraction = 0;
    this.skipLayer = skipLayer;
    this.group = acrossGroup;
  }

  /**
   * The schedule a SwiftKV checkpoint's config names: {@code num_key_value_layers} is the first
   * skipped layer, {@code key_value_group_size} the AcrossKV group. On a model shallower than
   * {@code skipLayer} nothing is skipped.
   *
   * @param skipLayer   the first skipped layer, {@code >= 1}
   * @param acrossGroup layers per shared cache past the skip point, {@code >= 1}
   * @return the schedule
   */
  public static SwiftKVSchedule atLayer(int skipLayer, int acrossGroup) {
    if (skipLayer < 1) {
      throw new IllegalArgumentException("skipLayer must be >= 1, got " + skipLayer);
    }
    if (acrossGroup < 1) {
      throw new IllegalArgumentException("acrossGroup must be >= 1, got " + acrossGroup);
    }
    return new SwiftKVSchedule(skipLayer, acrossGroup);
  }

  /** @return layers per shared cache past the skip point */
  public int acrossGroup() {
    return group;
  }

  @Override
  public String name() {
    return skipLayer > 0 ? "swiftKV(layer " + skipLayer + "," + group + ")" : "swiftKV(" + skipFraction + "," + group + ")";
  }

  @Override
  public int skipFromLayer(int layers) {
    if (skipLayer > 0) {
      return Math.min(layers, skipLayer);
    }
    return Math.max(1, Math.min(layers, (int) Math.round(skipFraction * layers)));
  }

  @Override
  public int cacheLayer(int layer, int layers) {
    int s = skipFromLayer(layers);
    return layer < s ? layer : s + ((layer - s) / group) * group;
  }

  @Override
  public String toString() {
    return name();
  }
}
