package io.kvcache.core;

/**
 * The KV cache of one sequence, made by {@link KVCacheStrategy#newCache}.
 *
 * <p>Arrays are row-major: a query chunk is {@code [token][queryHead][dim]}, a key or value chunk
 * {@code [token][kvHead][dim]}, the output like the query. Keys arrive after RoPE. Each call appends
 * to one layer and writes that layer's attention output; layers keep their own positions, so a model
 * runs layer 0 to {@code L-1} for a chunk, then the next chunk.
 *
 * <p>A cache holds one sequence and takes one prompt: {@link #prefill} (in as many chunks as needed)
 * until {@link #endPrefill} or the first {@link #decode}, after which {@code prefill} throws
 * {@link IllegalStateException}, because a policy that compresses at the end of the prompt has already
 * chosen what to keep. Later input, such as a conversation's next turn, goes through {@code decode} a
 * token at a time, or into a new cache. A {@code decode} before any {@code prefill} starts from an
 * empty prompt.
 *
 * <p>Every argument is checked before anything is stored: a bad call throws an
 * {@link IllegalArgumentException} or {@link IllegalStateException} naming the argument and the
 * expected value, and leaves the cache as it was. The cache copies what it keeps and holds no reference
 * to the caller's arrays once a call returns, so they may be reused for the next call. The output may
 * overlap the queries (attention in place, {@code out == q}): the queries are used as they were passed.
 * One thread at a
 * time: the CPU cache refuses a call made while another thread is inside one with an
 * {@link IllegalStateException} rather than let the two corrupt it (kvcache-gpu's cache makes it wait).
 * Distinct caches may be used concurrently. Close it to release its memory.
 */
public interface KVCache extends AutoCloseable {

  /** @return the shape this cache was made for */
  AttentionShape shape();

  /**
   * Causal attention of a prompt chunk, appending the chunk's keys and values. Token {@code t} gets
   * position {@code next + t}, where {@code next} is one past the layer's last position.
   *
   * @param layer  layer index
   * @param tokens tokens in the chunk, {@code >= 1}
   * @param q      queries, exactly {@code tokens * queryHeads * headDim} floats (the overload with offsets
   *               reads part of a larger array)
   * @param k      keys after RoPE, exactly {@code tokens * kvHeads * headDim} floats
   * @param v      values, like {@code k}
   * @param out    attention output, like {@code q}
   */
  default void prefill(int layer, int tokens, float[] q, float[] k, float[] v, float[] out) {
    if (tokens >= 1) { // else the overload names tokens
      AttentionShape s = shape();
      Checks.exactLength("q", q, (long) tokens * s.queryWidth(), "tokens * queryHeads * headDim", false, s, tokens);
      Checks.exactLength("k", k, (long) tokens * s.kvWidth(), "tokens * kvHeads * headDim", true, s, tokens);
      Checks.exactLength("v", v, (long) tokens * s.kvWidth(), "tokens * kvHeads * headDim", true, s, tokens);
      Checks.exactLength("out", out, (long) tokens * s.queryWidth(), "tokens * queryHeads * headDim", false, s, tokens);
    }
    prefill(layer, tokens, null, q, 0, k, 0, v, 0, out, 0);
  }

  /**
   * Causal attention of a prompt chunk at explicit positions, appending the chunk's keys and values.
   * Positions must increase strictly and follow the layer's last position; gaps are allowed (a
   * schedule that lets only some rows reach a layer keeps their original positions).
   *
   * @param layer     layer index
   * @param tokens    tokens in the chunk, {@code >= 1}
   * @param positions the tokens' positions, or null for consecutive positions after the layer's last
   * @param q         queries
   * @param qOff      offset of token 0 in {@code q}
   * @param k         keys after RoPE
   * @param kOff      offset of token 0 in {@code k}
   * @param v         values
   * @param vOff      offset of token 0 in {@code v}
   * @param out       attention output
   * @param outOff    offset of token 0 in {@code out}
   */
  void prefill(int layer, int tokens, int[] positions, float[] q, int qOff, float[] k, int kOff, float[] v, int vOff,
      float[] out, int outOff);

  /**
   * Appends a prompt chunk's keys and values at consecutive positions after the layer's last,
   * computing no attention: see {@link #append(int, int, int[], float[], int, float[], int)}.
   *
   * @param layer  layer index
   * @param tokens tokens in the chunk, {@code >= 1}
   * @param k      keys after RoPE, exactly {@code tokens * kvHeads * headDim} floats (the overload with
   *               offsets reads part of a larger array)
   * @param v      values, like {@code k}
   */
  default void append(int layer, int tokens, float[] k, float[] v) {
    if (tokens >= 1) { // else the overload names tokens
      AttentionShape s = shape();
      Checks.exactLength("k", k, (long) tokens * s.kvWidth(), "tokens * kvHeads * headDim", true, s, tokens);
      Checks.exactLength("v", v, (long) tokens * s.kvWidth(), "tokens * kvHeads * headDim", true, s, tokens);
    }
    append(layer, tokens, null, k, 0, v, 0);
  }

  /**
   * Appends a prompt chunk's keys and values without computing attention: for rows that have no
   * query at this layer, such as the prompt rows that SwiftKV's SingleInputKV lets skip the later
   * layers. The rows are stored exactly as {@link #prefill} would store them (same codec, positions,
   * argument checks, and the retention policy's per-chunk step), but they feed nothing that needs a
   * query: they do not enter the observation window, and {@link
   * io.kvcache.retention.LayerAccess#chunkWeights} adds nothing for them. So a policy that scores
   * the prompt by its queries (SnapKV, SnapKV++, H2O, KVCrush) scores it with the rows that did come
   * with queries; keep-all and sinks-and-window retention end up with the same cache as a
   * {@link #prefill} of the same rows.
   *
   * <p>The default implementation, for caches that have no store-only path, calls {@link #prefill}
   * with zero queries and discards the output: the same stored rows at the cost of the attention,
   * and zero queries where the policy looks for queries.
   *
   * @param layer     layer index
   * @param tokens    tokens in the chunk, {@code >= 1}
   * @param positions the tokens' positions, or null for consecutive positions after the layer's last;
   *                  as for {@link #prefill}, increasing strictly after the layer's last position
   * @param k         keys after RoPE
   * @param kOff      offset of token 0 in {@code k}
   * @param v         values
   * @param vOff      offset of token 0 in {@code v}
   */
  default void append(int layer, int tokens, int[] positions, float[] k, int kOff, float[] v, int vOff) {
    AttentionShape s = shape();
    Checks.inRange("tokens", tokens, 1, Integer.MAX_VALUE / Math.max(s.queryWidth(), 1));
    // Bounds the zero query's size by the caller's keys before allocating it.
    Checks.span("k", k, kOff, (long) tokens * s.kvWidth());
    float[] zero = new float[tokens * s.queryWidth()];
    prefill(layer, tokens, positions, zero, 0, k, kOff, v, vOff, new float[zero.length], 0);
  }

  /**
   * Ends the prompt: retention policies that compress once (SnapKV and its kin) do so now. Called
   * implicitly by the first {@link #decode}; calling it twice is an error, and so is a {@link #prefill}
   * after it (a cache takes one prompt).
   */
  void endPrefill();

  /**
   * One decode token: append its key and value to {@code layer}, attend, write the output.
   *
   * @param layer layer index
   * @param q     query, exactly {@code queryHeads * headDim} floats (the overload with offsets reads part
   *              of a larger array)
   * @param k     key after RoPE, exactly {@code kvHeads * headDim} floats
   * @param v     value, like {@code k}
   * @param out   attention output, like {@code q}
   */
  default void decode(int layer, float[] q, float[] k, float[] v, float[] out) {
    AttentionShape s = shape();
    Checks.exactLength("q", q, s.queryWidth(), "queryHeads * headDim", false, s, 1);
    Checks.exactLength("k", k, s.kvWidth(), "kvHeads * headDim", true, s, 1);
    Checks.exactLength("v", v, s.kvWidth(), "kvHeads * headDim", true, s, 1);
    Checks.exactLength("out", out, s.queryWidth(), "queryHeads * headDim", false, s, 1);
    decode(layer, q, 0, k, 0, v, 0, out, 0);
  }

  /**
   * One decode token, with offsets into the caller's arrays.
   *
   * @param layer  layer index
   * @param q      query
   * @param qOff   offset of the query
   * @param k      key after RoPE
   * @param kOff   offset of the key
   * @param v      value
   * @param vOff   offset of the value
   * @param out    attention output
   * @param outOff offset of the output
   */
  void decode(int layer, float[] q, int qOff, float[] k, int kOff, float[] v, int vOff, float[] out, int outOff);

  /**
   * Attention of a prompt chunk against what {@code layer} already holds, storing nothing: a layer
   * that shares another layer's cache (SwiftKV's AcrossKV) calls it after the owning layer's
   * {@link #prefill} of the same chunk. Query token {@code t} at {@code positions[t]} attends to the
   * stored tokens at positions up to its own.
   *
   * <p>It reads the store as the owner's call left it. Under a policy that acts at the end of the
   * prompt (keep-all, SnapKV and its kin) that is what the owner's queries saw. Under one that evicts
   * as tokens arrive (StreamingLLM, H2O) the owner's call has already evicted, and over SKVQ it has
   * already moved tokens out of the full-precision window, so the sharing layer sees less than its
   * owner did. The SwiftKV presets use keep-all.
   *
   * @param layer     the layer whose cache is read
   * @param tokens    tokens in the chunk, {@code >= 1}
   * @param positions the queries' positions, increasing, each at most the layer's last position
   * @param q         queries
   * @param qOff      offset of token 0 in {@code q}
   * @param out       attention output, like {@code q}
   * @param outOff    offset of token 0 in {@code out}
   */
  void attendPrefill(int layer, int tokens, int[] positions, float[] q, int qOff, float[] out, int outOff);

  /**
   * One decode query against what {@code layer} already holds, storing nothing (AcrossKV): called
   * after the owning layer's {@link #decode} of the same token, at that token's position. As for
   * {@link #attendPrefill}, over SKVQ under a policy that evicts as tokens arrive, the owner's call has
   * already moved a token out of the full-precision window.
   *
   * @param layer  the layer whose cache is read
   * @param q      query
   * @param qOff   offset of the query
   * @param out    attention output
   * @param outOff offset of the output
   */
  void attendDecode(int layer, float[] q, int qOff, float[] out, int outOff);

  /**
   * What the cache holds now. A storage step that waits for the layer's next append (SKVQ's window
   * step under a policy that acts at the end of the prompt, so that a layer sharing the cache sees what
   * its owner saw) is taken first, so the bytes are those the next append would find: under AcrossKV,
   * read the stats after the sharing layers' {@link #attendPrefill} or {@link #attendDecode} of the
   * chunk, not between the owner's call and theirs. It is a call like the others, for the thread that
   * uses the cache: a metrics thread should read snapshots that thread takes.
   *
   * @return tokens per layer and head, exact bytes, compression
   */
  CacheStats stats();

  /**
   * Drops the cache's stores, so that their pages can be collected; any later call except
   * {@link #shape()} and {@code close()} throws {@link IllegalStateException}. Memory the cache holds
   * outside the stores (a retention policy's scores, a reader's summaries) is freed when the cache
   * itself becomes unreachable; a cache on a device ({@code kvcache-gpu}) frees its device memory here.
   * Idempotent.
   */
  @Override
  void close();
}
