package io.kvcache.core;

/**
 * The attention geometry of a model: layers, query heads, KV heads and head dimension.
 *
 * <p>Grouped-query attention (GQA) maps query head {@code h} to KV head {@code h / groupSize()}, the
 * convention of Llama, Mistral and Qwen checkpoints. Arrays at the API are row-major
 * {@code [token][head][dim]}. Immutable.
 *
 * @param layers      transformer layers, 1 to 4096
 * @param queryHeads  query heads per layer, a positive multiple of {@code kvHeads}, at most 65536
 * @param kvHeads     key/value heads per layer, 1 to 4096
 * @param headDim     channels per head, 1 to 1024
 */
public record AttentionShape(int layers, int queryHeads, int kvHeads, int headDim) {

  /** Validates every field; the message names the field, its value and the accepted range. */
  public AttentionShape {
    Checks.inRange("layers", layers, 1, 4096);
    Checks.inRange("kvHeads", kvHeads, 1, 4096);
    Checks.inRange("queryHeads", queryHeads, 1, 65536);
    Checks.inRange("headDim", headDim, 1, 1024);
    if (queryHeads % kvHeads != 0) {
      throw new IllegalArgumentException("queryHeads must be a multiple of kvHeads (GQA), got queryHeads="
          + queryHeads + " and kvHeads=" + kvHeads);
    }
  }

  /** Query heads served by one KV head: {@code queryHeads / kvHeads} (1 for multi-head attention). */
  public int groupSize() {
    return queryHeads / kvHeads;
  }

  /** Floats in one token's query row: {@code queryHeads * headDim}. */
  public int queryWidth() {
    return queryHeads * headDim;
  }

  /** Floats in one token's key (or value) row: {@code kvHeads * headDim}. */
  public int kvWidth() {
    return kvHeads * headDim;
  }

  /** The attention scale {@code 1 / sqrt(headDim)}. */
  public float scale() {
    return (float) (1.0 / Math.sqrt(headDim));
  }

  /** A Llama-3-8B-shaped model: 32 layers, 32 query heads, 8 KV heads, head dim 128. */
  public static AttentionShape llama3_8B() {
    return new AttentionShape(32, 32, 8, 128);
  }
}
