package io.kvcache.core;

/**
 * A snapshot of what a {@link KVCache} holds; immutable (it copies its arrays in and out), so it may be
 * kept and read from any thread.
 *
 * <p>Bytes are exact: {@code payloadBytes} is every allocated page's keys and values as the codec
 * stores them (pages are allocated whole, so a partly filled page counts in full, as do the not yet
 * used pages of a block a prefill chunk reserved);
 * {@code metadataBytes} is the cache's bookkeeping (one int position per allocated slot, plus what a
 * codec keeps beside its pages: SKVQ's page masks, channel permutations and clipping ratios). Not
 * counted, for any codec: the store's page index (each page's smallest and largest position and its
 * version, 12 bytes, and for f16 and f32 the page's place in its block, 16 bytes; arrays grown by
 * doubling, so up to twice that), the attention's fixed per-store and per-thread scratch, and what a
 * policy or reader keeps to choose tokens (H2O's one float per slot, RocketKV's page key bounds).
 * After a compaction or the end of the prompt, those shrink with what is kept. The
 * reference for {@link #compressionRatio()} is a dense f16 cache of every token seen, with no
 * metadata: {@code sum over layers of tokensSeen * kvHeads * headDim * 2 (K and V) * 2 bytes}. A
 * layer that stores nothing because it attends to another layer's cache ({@link KVCache#attendPrefill},
 * SwiftKV's AcrossKV) sees no tokens and is left out of that reference, so the ratio is per stored
 * layer and does not show the sharing: compare {@link #bytesHeld()} with a full cache of the model's
 * layers for that (docs/swiftkv.md does).
 *
 * <p>A cache on a device (kvcache-gpu) allocates its capacity when it is made, and counts what it
 * allocated: keys and values of every layer at capacity as payload, positions and a top-k decoder's
 * page summaries as metadata. Its ratio is therefore below 1 until the sequence nears the capacity.
 *
 * @param strategy      the strategy's name
 * @param shape         the attention shape
 * @param tokensSeen    tokens appended per layer (prompt rows that reached it plus decode tokens)
 * @param retained      tokens held per layer and KV head, {@code retained[layer][kvHead]}
 * @param payloadBytes  bytes of key and value data held
 * @param metadataBytes bytes of bookkeeping held
 */
public record CacheStats(String strategy, AttentionShape shape, long[] tokensSeen, int[][] retained, long payloadBytes,
    long metadataBytes) {

  /**
   * Validates the snapshot against its shape and copies the arrays: a snapshot does not change when its
   * caller edits what it passed in or got out.
   *
   * @throws IllegalArgumentException for a null argument, arrays that do not match {@code shape} (one
   *     entry per layer, one per KV head), or negative counts
   */
  public CacheStats {
    if (strategy == null || shape == null || tokensSeen == null || retained == null) {
      throw new IllegalArgumentException("strategy, shape, tokensSeen and retained must not be null, got "
          + strategy + ", " + shape + ", " + (tokensSeen == null ? null : "long[]") + ", "
          + (retained == null ? null : "int[][]"));
    }
    if (tokensSeen.length != shape.layers() || retained.length != shape.layers()) {
      throw new IllegalArgumentException("tokensSeen and retained must have one entry per layer (" + shape.layers()
          + "), got " + tokensSeen.length + " and " + retained.length);
    }
    for (int l = 0; l < retained.length; l++) {
      if (tokensSeen[l] < 0) {
        throw new IllegalArgumentException("tokensSeen[" + l + "] must be >= 0, got " + tokensSeen[l]);
      }
      if (retained[l] == null || retained[l].length != shape.kvHeads()) {
        throw new IllegalArgumentException("retained[" + l + "] must have one entry per KV head (" + shape.kvHeads()
            + "), got " + (retained[l] == null ? "null" : retained[l].length));
      }
      for (int h = 0; h < retained[l].length; h++) {
        if (retained[l][h] < 0) {
          throw new IllegalArgumentException("retained[" + l + "][" + h + "] must be >= 0, got " + retained[l][h]);
        }
      }
    }
    if (payloadBytes < 0 || metadataBytes < 0) {
      throw new IllegalArgumentException("payloadBytes and metadataBytes must be >= 0, got " + payloadBytes + " and "
          + metadataBytes);
    }
    tokensSeen = tokensSeen.clone();
    retained = deepCopy(retained);
  }

  /** Equal when every component is, the arrays compared by content (a record compares them by identity). */
  @Override
  public boolean equals(Object o) {
    return o instanceof CacheStats c && strategy.equals(c.strategy) && shape.equals(c.shape)
        && java.util.Arrays.equals(tokensSeen, c.tokensSeen) && java.util.Arrays.deepEquals(retained, c.retained)
        && payloadBytes == c.payloadBytes && metadataBytes == c.metadataBytes;
  }

  @Override
  public int hashCode() {
    return java.util.Objects.hash(strategy, shape, java.util.Arrays.hashCode(tokensSeen),
        java.util.Arrays.deepHashCode(retained), payloadBytes, metadataBytes);
  }

  @Override
  public String toString() {
    return "CacheStats[strategy=" + strategy + ", shape=" + shape + ", tokensSeen="
        + java.util.Arrays.toString(tokensSeen) + ", retained=" + java.util.Arrays.deepToString(retained)
        + ", payloadBytes=" + payloadBytes + ", metadataBytes=" + metadataBytes + "]";
  }

  private static int[][] deepCopy(int[][] a) {
    int[][] c = new int[a.length][];
    for (int i = 0; i < a.length; i++) {
      c[i] = a[i].clone();
    }
    return c;
  }

  /** @return a copy of the tokens each layer has seen */
  @Override
  public long[] tokensSeen() {
    return tokensSeen.clone();
  }

  /** @return a copy of the tokens held per layer and KV head */
  @Override
  public int[][] retained() {
    return deepCopy(retained);
  }

  /** @return payload plus metadata */
  public long bytesHeld() {
    return payloadBytes + metadataBytes;
  }

  /** @return tokens held, summed over layers and KV heads */
  public long totalRetained() {
    long n = 0;
    for (int[] layer : retained) {
      for (int r : layer) {
        n += r;
      }
    }
    return n;
  }

  /**
   * @param layer a layer, in {@code [0, layers)}
   * @return the largest number of tokens any KV head of the layer holds
   */
  public int maxRetained(int layer) {
    Checks.inRange("layer", layer, 0, retained.length - 1);
    int m = 0;
    for (int r : retained[layer]) {
      m = Math.max(m, r);
    }
    return m;
  }

  /** @return bytes a dense f16 cache of every token seen would hold */
  public long denseF16Bytes() {
    long bytes = 0;
    for (long t : tokensSeen) {
      bytes += t * shape.kvHeads() * shape.headDim() * 2L * 2L;
    }
    return bytes;
  }

  /** @return {@link #denseF16Bytes()} divided by {@link #bytesHeld()}; 1.0 for an empty cache */
  public double compressionRatio() {
    long held = bytesHeld();
    return held == 0 ? 1.0 : (double) denseF16Bytes() / held;
  }

  /**
   * Payload bits per stored key or value element of the retained tokens (32 for f32, 16 for f16,
   * slightly more where pages are partly filled); 0 for an empty cache.
   *
   * @return bits per value
   */
  public double bitsPerValue() {
    long values = totalRetained() * shape.headDim() * 2L;
    return values == 0 ? 0.0 : payloadBytes * 8.0 / values;
  }
}
