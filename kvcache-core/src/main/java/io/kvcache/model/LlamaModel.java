package io.kvcache.model;

import io.kvcache.core.KVCache;
import io.kvcache.core.KVCacheStrategy;
import io.kvcache.schedule.PrefillSchedule;
import java.util.Arrays;
import java.util.concurrent.Executor;

/**
 * The reference Llama-family decoder: token embedding, per layer RMSNorm, q/k/v projections (with
 * Qwen2's bias), RoPE, grouped-query attention through a {@link KVCache}, output projection, RMSNorm,
 * SwiGLU MLP, then a final RMSNorm and the output head. Matrix products go through
 * {@link MatrixKernels}, their rows split across the threads of the executor given here.
 *
 * <p>A model is immutable and may serve several {@link Sequence}s, each used by one thread at a
 * time. The weights must stay open while the model is used.
 */
public final class LlamaModel {

  /** Fewest SwiGLU elements per thread: below this the hand-off costs more than the exps. */
  private static final int SWIGLU_PER_TASK = 16384;

  private final LlamaWeights weights;
  private final LlamaConfig config;
  private final MatrixKernels kernels;
  private final Executor executor;
  private final int threads;

  /**
   * A model over {@code weights}.
   *
   * <p>A sequence's calls wait for the tasks they give {@code executor}: do not make those calls from
   * the executor's own threads (a {@link Generator} submitted to the same fixed pool, say), or every
   * thread can end up waiting for tasks that no thread is left to run.
   *
   * @param weights the weights, kept open by the caller
   * @param kernels matrix kernels, e.g. {@link MatrixKernels#get()}
   * @param executor executor for the matrix products, or null to run on the calling thread
   * @param threads tasks per matrix product, 1 to 1024 (ignored without an executor)
   */
  public LlamaModel(LlamaWeights weights, MatrixKernels kernels, Executor executor, int threads) {
    if (weights == null) {
      throw new IllegalArgumentException("weights must not be null");
    }
    if (kernels == null) {
      throw new IllegalArgumentException("kernels must not be null");
    }
    weights.checkOpen();
    if (threads < 1 || threads > 1024) {
      throw new IllegalArgumentException("threads must be in [1, 1024], got " + threads);
    }
    this.weights = weights;
    this.config = weights.config();
    this.kernels = kernels;
    this.executor = executor;
    this.threads = threads;
  }

  /**
   * A single-threaded model with the kernels this JVM chose.
   *
   * @param weights the weights
   * @return the model
   */
  public static LlamaModel of(LlamaWeights weights) {
    return new LlamaModel(weights, MatrixKernels.get(), null, 1);
  }

  /** @return the model's hyper-parameters */
  public LlamaConfig config() {
    return config;
  }

  /**
   * Starts a sequence with its own KV cache.
   *
   * @param strategy  the KV-cache strategy; its {@link PrefillSchedule} shapes how prompts run
   * @param maxChunk  most prompt tokens run together, 1 to 65536 and at most {@code 2^31 / } the widest
   *                  activation (hidden, MLP or query width): the activation buffers' size
   * @return the sequence; close it to free the cache
   * @throws IllegalArgumentException when the schedule combines hooks the decoder does not support
   */
  public Sequence newSequence(KVCacheStrategy strategy, int maxChunk) {
    weights.checkOpen();
    return new Sequence(strategy, maxChunk);
  }

  /**
   * One sequence: its KV cache, position and buffers. Not thread-safe.
   */
  public final class Sequence implements AutoCloseable {
    private final KVCache cache;
    private final PrefillSchedule schedule;
    private final int chunk;
    private final RowSplit split;
    private final float[] x;
    private final float[] xb;
    private final float[] q;
    private final float[] k;
    private final float[] v;
    private final float[] att;
    private final float[] g;
    private final float[] u;
    private final float[] cos;
    private final float[] sin;
    private final int[] pos;
    /** {@link #swiglu(int, int)}, made once so that a call allocates nothing. */
    private final RowSplit.RangeTask swiglu = this::swiglu;
    /** Positions of one run of rows handed to the cache (token-selective propagation). */
    private final int[] runPos;
    /**
     * Token-selective propagation runs the selection layer whole for every prompt row, as the paper's
     * implementation does, instead of only for the travelling rows: the reference tests compare with.
     */
    boolean wholeSelectionLayer;
    /**
     * Whether the strategy's codec and retention let the selection layer store the rows that stay behind
     * without queries and feed the others out of their chunks with the same result: see
     * {@link #prefillSelective}.
     */
    private final boolean travellingRowsOnly;
    /** The retention policy's observation window: the last prompt rows whose queries it reads. */
    private final int observedRows;
    /** The layer whose cache each layer uses (itself, or its AcrossKV group's first layer). */
    private final int[] owner;
    /**
     * The first SingleInputKV layer: from it on, every token's keys and values are projected from the
     * hidden state entering it ({@code xs}); the model's depth when there is none.
     */
    private final int single;
    /** The layer whose K/V projections serve each layer (a SwiftKV checkpoint's group owner). */
    private final int[] kvFrom;
    /** The hidden state entering layer {@link #single}, for the rows of the current chunk. */
    private final float[] xs;
    /** Multiply-add FLOPs spent in prefill, per layer and (last entry) the output head. */
    private final long[] flops;
    /** Rows appended to each layer's cache so far, for counting attention FLOPs. */
    private final long[] appended;
    private boolean counting;
    private int next;
    private boolean decoding;

    private Sequence(KVCacheStrategy strategy, int maxChunk) {
      if (strategy == null) {
        throw new IllegalArgumentException("strategy must not be null");
      }
      if (maxChunk < 1 || maxChunk > 65536) {
        throw new IllegalArgumentException("maxChunk must be in [1, 65536], got " + maxChunk);
      }
      int layers = config.layers();
      schedule = strategy.schedule();
      owner = new int[layers];
      for (int l = 0; l < layers; l++) {
        int c = schedule.cacheLayer(l, layers);
        if (c < 0 || c > l || schedule.cacheLayer(c, layers) != c) {
          throw new IllegalArgumentException("schedule " + schedule.name() + ": cacheLayer(" + l + ") = " + c
              + ", expected a layer in [0, " + l + "] that owns its own cache");
        }
        owner[l] = c;
      }
      int sel = schedule.selectionLayer(layers);
      int skip = schedule.skipFromLayer(layers);
      if (sel < 0 || sel > layers || skip < 1 || skip > layers) {
        throw new IllegalArgumentException("schedule " + schedule.name() + ": selectionLayer " + sel
            + " must be in [0, " + layers + "] and skipFromLayer " + skip + " in [1, " + layers + "]");
      }
      if (sel < layers && owner[sel] != sel) {
        throw new IllegalArgumentException("schedule " + schedule.name() + ": the selection layer " + sel
            + " shares layer " + owner[sel] + "'s cache; token selection needs a layer that projects its own keys");
      }
      SwiftKVConfig swift = weights.swiftKV;
      kvFrom = new int[layers];
      for (int l = 0; l < layers; l++) {
        kvFrom[l] = swift == null ? l : swift.kvSource(l);
      }
      if (swift != null) {
        checkCheckpointSchedule(swift, skip, layers);
      }
      single = swift != null ? swift.keyValueLayers() : skip;
      if (sel < layers && single < layers) {
        throw new IllegalArgumentException("schedule " + schedule.name() + " asks for token-selective propagation"
            + " (after layer " + sel + ") on a model with SingleInputKV from layer " + single
            + "; the decoder runs one at a time");
      }
      chunk = maxChunk;
      // Every activation buffer holds chunk rows of the widest activation: each must fit one array.
      long widest = Math.max(Math.max(config.hidden(), config.intermediate()), config.qWidth());
      if ((long) chunk * widest > Integer.MAX_VALUE - 8) {
        throw new IllegalArgumentException("maxChunk * the widest activation must fit one array: " + chunk + " * "
            + widest + " = " + (long) chunk * widest + "; use maxChunk <= " + (Integer.MAX_VALUE - 8) / widest);
      }
      xs = single < layers ? new float[chunk * config.hidden()] : null;
      flops = new long[layers + 1];
      appended = new long[layers];
      int h = config.hidden();
      split = new RowSplit(executor, threads, Math.max(h, Math.max(config.intermediate(), config.qWidth())));
      x = new float[chunk * h];
      xb = new float[chunk * h];
      q = new float[chunk * config.qWidth()];
      k = new float[chunk * config.kvWidth()];
      v = new float[chunk * config.kvWidth()];
      att = new float[chunk * config.qWidth()];
      g = new float[chunk * config.intermediate()];
      u = new float[chunk * config.intermediate()];
      cos = new float[chunk * (config.headDim() / 2)];
      sin = new float[chunk * (config.headDim() / 2)];
      pos = new int[chunk];
      runPos = new int[chunk];
      cache = strategy.newCache(config.shape(), executor);
      travellingRowsOnly = strategy.codec().splitInvariant() && strategy.retention().actsAtEndOfPrompt();
      observedRows = strategy.retention().observationWindow();
    }

    /**
     * A SwiftKV checkpoint fixes where SingleInputKV starts and which layers project K/V: the schedule
     * may skip from that layer or not at all, and may share a cache only among layers whose K/V the
     * checkpoint projects once.
     */
    private void checkCheckpointSchedule(SwiftKVConfig swift, int skip, int layers) {
      int kvl = swift.keyValueLayers();
      if (skip != kvl && skip != layers) {
        throw new IllegalArgumentException("schedule " + schedule.name() + " skips from layer " + skip
            + ", but this SwiftKV checkpoint projects the K/V of layers >= num_key_value_layers = " + kvl
            + " from the state entering layer " + kvl + "; expected skipFromLayer " + kvl + " (its schedule: "
            + swift.schedule().name() + ") or " + layers + " (no skipping)");
      }
      for (int l = 0; l < layers; l++) {
        if (owner[l] != l && kvFrom[owner[l]] != kvFrom[l]) {
          throw new IllegalArgumentException("schedule " + schedule.name() + " lets layer " + l + " read layer "
              + owner[l] + "'s cache, but this SwiftKV checkpoint projects their K/V separately (key_value_group_size = "
              + swift.groupSize() + " from layer " + kvl + "); expected sharing only within those groups");
        }
      }
    }

    /** @return the KV cache, for its statistics */
    public KVCache cache() {
      return cache;
    }

    /**
     * Multiply-add FLOPs spent so far on prompt tokens, counted as 2 per multiply-add: entry {@code l}
     * for layer {@code l} (q/k/v/o projections, attention, MLP; K/V projections only, for rows that
     * skip the layer: the cache stores them without attention — SingleInputKV's skipped layers, and
     * the rows that stay behind at token-selective propagation's selection layer), the last entry for
     * the output head.
     * Attention counts {@code 4 · headDim} per query head and key the query reaches (scores and weighted
     * values) over the rows appended to the layer's cache up to the query's own; norms, RoPE,
     * activations and residual adds are not multiply-adds of a matrix and are not counted.
     *
     * @return a fresh array of {@code layers + 1} counts
     */
    public long[] prefillFlops() {
      return flops.clone();
    }

    /** @return tokens consumed so far (prompt and decoded), i.e. the next position */
    public int position() {
      return next;
    }

    /**
     * Runs a whole prompt in chunks of at most {@code maxChunk} tokens, honouring the strategy's
     * prefill schedule, and writes the last token's logits. May be called once, before any decode.
     *
     * @param tokens the prompt, {@code >= 1} ids in {@code [0, vocabSize)}
     * @param logits {@code vocabSize} floats for the last prompt token's logits, or null
     */
    public void prefill(int[] tokens, float[] logits) {
      weights.checkOpen();
      checkPrompt(tokens);
      if (logits != null) {
        checkLogits(logits);
      }
      int layers = config.layers();
      int sel = schedule.selectionLayer(layers);
      int skip = schedule.skipFromLayer(layers);
      int n = tokens.length;
      if (sel < layers - 1 && n > (1 << 21)) {
        // Checked before any layer runs: the selection packs positions into 21 bits, and a prompt refused
        // after the first layers had filled the cache would leave the sequence half-prefilled.
        throw new IllegalArgumentException("token-selective propagation supports prompts up to 2^21 tokens, got " + n);
      }
      if (sel < layers - 1 && n > 1 && (long) n * Math.max(config.hidden(), config.qWidth()) > Integer.MAX_VALUE - 8) {
        // Token-selective propagation holds the whole prompt's hidden states and queries at its layer.
        throw new IllegalArgumentException("a prompt of " + n + " tokens is too long for token-selective propagation"
            + " on this model: its hidden states (" + n + " x " + Math.max(config.hidden(), config.qWidth())
            + ") must fit one array");
      }
      counting = true;
      try {
        if (sel < layers - 1 && n > 1 && wholeSelectionLayer) {
          prefillSelectiveWholeLayer(tokens, sel, logits);
        } else if (sel < layers - 1 && n > 1) {
          prefillSelective(tokens, sel, logits);
        } else if (skip < layers && n > 1) {
          prefillSkipping(tokens, skip, logits);
        } else {
          prefillAll(tokens, logits, false);
        }
      } finally {
        counting = false;
      }
    }

    /**
     * Runs a prompt through every layer, ignoring the schedule, and writes every prompt token's
     * logits: what a parity test compares with another implementation.
     *
     * @param tokens the prompt
     * @param logits {@code tokens.length * vocabSize} floats, row-major
     */
    public void prefillAllLogits(int[] tokens, float[] logits) {
      weights.checkOpen();
      checkPrompt(tokens);
      if (logits == null || logits.length < (long) tokens.length * config.vocabSize()) {
        throw new IllegalArgumentException("logits must hold tokens.length * vocabSize = "
            + (long) tokens.length * config.vocabSize() + " floats, got "
            + (logits == null ? "null" : logits.length + ""));
      }
      prefillAll(tokens, logits, true);
    }

    /**
     * Feeds one token and writes the logits for the next.
     *
     * @param token  id in {@code [0, vocabSize)}
     * @param logits {@code vocabSize} floats
     */
    public void decode(int token, float[] logits) {
      decode(token, logits, null);
    }

    /**
     * Feeds one token, writes the logits for the next and, for measurement, each layer's attention
     * output (the concatenated heads, before the output projection).
     *
     * @param token     id in {@code [0, vocabSize)}
     * @param logits    {@code vocabSize} floats
     * @param attention null, or {@code layers * qWidth} floats: layer {@code l}'s attention output lands at
     *                  {@code l * qWidth}
     */
    public void decode(int token, float[] logits, float[] attention) {
      weights.checkOpen();
      checkToken(token, "token");
      checkLogits(logits);
      int qw = config.qWidth();
      if (attention != null && attention.length < config.layers() * qw) {
        throw new IllegalArgumentException("attention must hold layers * qWidth = " + config.layers() * qw
            + " floats, got " + attention.length);
      }
      if (!decoding) {
        cache.endPrefill();
        decoding = true;
      }
      embed(token, x, 0);
      pos[0] = next;
      rope(1);
      for (int l = 0; l < config.layers(); l++) {
        if (l == single) {
          System.arraycopy(x, 0, xs, 0, config.hidden());
        }
        attentionIn(l, 1);
        if (owner[l] == l) {
          cache.decode(l, q, 0, k, 0, v, 0, att, 0);
        } else {
          cache.attendDecode(owner[l], q, 0, att, 0);
        }
        if (attention != null) {
          System.arraycopy(att, 0, attention, l * qw, qw);
        }
        attentionOut(l, 1);
        mlp(l, 1);
      }
      head(x, 0, logits, 0);
      next++;
    }

    private void checkPrompt(int[] tokens) {
      if (decoding || next != 0) {
        throw new IllegalStateException("prefill runs once, before decode; this sequence is at position " + next);
      }
      if (tokens == null || tokens.length == 0) {
        throw new IllegalArgumentException("tokens must hold at least one id, got "
            + (tokens == null ? "null" : "an empty array"));
      }
      for (int i = 0; i < tokens.length; i++) {
        checkToken(tokens[i], "tokens[" + i + "]");
      }
    }

    private void checkToken(int t, String what) {
      if (t < 0 || t >= config.vocabSize()) {
        throw new IllegalArgumentException(what + " must be in [0, " + config.vocabSize() + "), got " + t);
      }
    }

    private void checkLogits(float[] logits) {
      if (logits == null || logits.length < config.vocabSize()) {
        throw new IllegalArgumentException("logits must hold vocabSize = " + config.vocabSize() + " floats, got "
            + (logits == null ? "null" : logits.length + ""));
      }
    }

    private void prefillAll(int[] tokens, float[] logits, boolean all) {
      if (logits != null && !all) {
        checkLogits(logits);
      }
      int n = tokens.length;
      int vocab = config.vocabSize();
      for (int s = 0; s < n; s += chunk) {
        int c = Math.min(chunk, n - s);
        for (int t = 0; t < c; t++) {
          embed(tokens[s + t], x, t * config.hidden());
          pos[t] = next + t;
        }
        runLayers(0, config.layers(), c);
        if (all) {
          for (int t = 0; t < c; t++) {
            head(x, t * config.hidden(), logits, (s + t) * vocab);
          }
        } else if (s + c == n && logits != null) {
          head(x, (c - 1) * config.hidden(), logits, 0);
        }
        next += c;
      }
    }

    /**
     * SingleInputKV: all but the last prompt token run layers {@code [0, skip)}; the K/V of every
     * later layer come from the hidden state leaving layer {@code skip - 1}, through that layer's
     * own input norm and projections. The last prompt token runs every layer.
     */
    private void prefillSkipping(int[] tokens, int skip, float[] logits) {
      int n = tokens.length - 1;
      int h = config.hidden();
      for (int s = 0; s < n; s += chunk) {
        int c = Math.min(chunk, n - s);
        for (int t = 0; t < c; t++) {
          embed(tokens[s + t], x, t * h);
          pos[t] = next + t;
        }
        runLayers(0, skip, c);
        System.arraycopy(x, 0, xs, 0, c * h);
        for (int l = skip; l < config.layers(); l++) {
          kvOnly(l, c);
        }
        next += c;
      }
      prefillAll(new int[] {tokens[n]}, logits, false);
    }

    /**
     * Token-selective propagation: every prompt row runs layers {@code [0, sel)} and gives its keys and
     * values to layer {@code sel}; the tokens that the last prompt rows (the observation window) attend
     * to most at layer {@code sel}, summed over heads and window rows, plus the window itself, run the
     * rest of layer {@code sel} and travel on with their original positions.
     *
     * <p>Only the travelling rows need layer {@code sel}'s attention output, output projection and MLP:
     * the others' results would be dropped at the selection. So the other rows' keys and values are
     * stored there without a query (as {@link KVCache#append} stores SingleInputKV's skipped rows), and
     * the travelling rows' queries attend in position order, each to every key up to its own position:
     * the same outputs as running the whole layer for every row ({@link #prefillSelectiveWholeLayer},
     * the paper's implementation, which tests compare with), for about a fifth of the layer's work at
     * a 20% rate. That holds when the cache cannot tell the difference: a codec whose stored values do
     * not depend on how the prompt was split into calls ({@code StorageCodec.splitInvariant}: f32, f16)
     * and a retention policy that acts at the end of the prompt through an observation window no longer
     * than the selection window ({@code RetentionPolicy.actsAtEndOfPrompt}: keep-all, SnapKV; the FastKV
     * preset's window of 8 equals its selection window). Any other strategy runs the whole layer.
     */
    private void prefillSelective(int[] tokens, int sel, float[] logits) {
      int n = tokens.length;
      int h = config.hidden();
      int keep = keptRows(n);
      int window = Math.min(keep, Math.min(n, schedule.selectionWindow()));
      if (!travellingRowsOnly || observedRows > window) {
        prefillSelectiveWholeLayer(tokens, sel, logits);
        return;
      }
      int qw = config.qWidth();
      int kvw = config.kvWidth();
      float[] hidden = new float[n * h];
      float[] keys = new float[n * kvw];
      float[] values = new float[n * kvw];
      float[] winQ = new float[window * qw];
      // The window gets chunks of its own, so the rows that need a query at layer sel are whole chunks.
      for (int s = 0; s < n; ) {
        int end = s < n - window ? n - window : n;
        int c = Math.min(chunk, end - s);
        for (int t = 0; t < c; t++) {
          embed(tokens[s + t], x, t * h);
          pos[t] = s + t;
        }
        rope(c);
        for (int l = 0; l < sel; l++) {
          attentionIn(l, c);
          attend(l, c);
          attentionOut(l, c);
          mlp(l, c);
        }
        // The residual entering layer sel: the travelling rows resume from it.
        System.arraycopy(x, 0, hidden, s * h, c * h);
        normIn(sel, c);
        projectOwnKV(sel, c);
        System.arraycopy(k, 0, keys, s * kvw, c * kvw);
        System.arraycopy(v, 0, values, s * kvw, c * kvw);
        if (s >= n - window) {
          projectQ(sel, c);
          System.arraycopy(q, 0, winQ, (s - (n - window)) * qw, c * qw);
        }
        s += c;
      }
      int[] rows = selectRows(keys, winQ, n, window, keep, schedule.selectionPool());
      int m = rows.length;
      int stored = 0;
      for (int s = 0; s < m; s += chunk) {
        int c = Math.min(chunk, m - s);
        for (int t = 0; t < c; t++) {
          System.arraycopy(hidden, rows[s + t] * h, x, t * h, h);
          pos[t] = rows[s + t];
        }
        rope(c);
        normIn(sel, c);
        projectQ(sel, c);
        // Layer sel's cache takes every row in position order: the rows that stay behind as stored
        // keys and values, each run of consecutive travelling rows with its queries.
        for (int t = 0; t < c; ) {
          int first = pos[t];
          int u = t + 1;
          while (u < c && pos[u] == pos[u - 1] + 1) {
            u++;
          }
          stored = appendStored(sel, stored, first, keys, values);
          for (int i = t; i < u; i++) {
            runPos[i - t] = pos[i];
          }
          countAttention(sel, u - t);
          cache.prefill(sel, u - t, runPos, q, t * qw, keys, first * kvw, values, first * kvw, att, t * qw);
          stored = first + u - t;
          t = u;
        }
        attentionOut(sel, c);
        mlp(sel, c);
        runLayers(sel + 1, config.layers(), c);
        if (s + c == m && logits != null) {
          checkLogits(logits);
          head(x, (c - 1) * h, logits, 0);
        }
      }
      appendStored(sel, stored, n, keys, values);
      next = n;
    }

    /** Appends layer {@code l}'s stored keys and values of positions {@code [from, to)}, a chunk at a time. */
    private int appendStored(int l, int from, int to, float[] keys, float[] values) {
      int kvw = config.kvWidth();
      while (from < to) {
        int c = Math.min(chunk, to - from);
        for (int i = 0; i < c; i++) {
          runPos[i] = from + i;
        }
        appended[l] += c;
        cache.append(l, c, runPos, keys, from * kvw, values, from * kvw);
        from += c;
      }
      return to;
    }

    /**
     * Token-selective propagation as the paper's implementation runs it: every prompt row runs layers
     * {@code [0, sel]} whole, then the selected rows travel on from the state leaving layer {@code sel}.
     * The reference that {@link #prefillSelective} is tested against (chosen with
     * {@link #wholeSelectionLayer}), and the path of every strategy whose cache could tell the two apart.
     */
    private void prefillSelectiveWholeLayer(int[] tokens, int sel, float[] logits) {
      int n = tokens.length;
      int h = config.hidden();
      int keep = keptRows(n);
      int window = Math.min(keep, Math.min(n, schedule.selectionWindow()));
      int qw = config.qWidth();
      int kvw = config.kvWidth();
      float[] hidden = new float[n * h];
      float[] keys = new float[n * kvw];
      float[] winQ = new float[window * qw];
      for (int s = 0; s < n; s += chunk) {
        int c = Math.min(chunk, n - s);
        for (int t = 0; t < c; t++) {
          embed(tokens[s + t], x, t * h);
          pos[t] = next + t;
        }
        rope(c);
        for (int l = 0; l <= sel; l++) {
          attentionIn(l, c);
          if (l == sel) {
            System.arraycopy(k, 0, keys, s * kvw, c * kvw);
            for (int t = 0; t < c; t++) {
              int w = s + t - (n - window);
              if (w >= 0) {
                System.arraycopy(q, t * qw, winQ, w * qw, qw);
              }
            }
          }
          attend(l, c);
          attentionOut(l, c);
          mlp(l, c);
        }
        System.arraycopy(x, 0, hidden, s * h, c * h);
        next += c;
      }
      int[] rows = selectRows(keys, winQ, n, window, keep, schedule.selectionPool());
      int m = rows.length;
      for (int s = 0; s < m; s += chunk) {
        int c = Math.min(chunk, m - s);
        for (int t = 0; t < c; t++) {
          System.arraycopy(hidden, rows[s + t] * h, x, t * h, h);
          pos[t] = rows[s + t];
        }
        runLayers(sel + 1, config.layers(), c);
        if (s + c == m && logits != null) {
          checkLogits(logits);
          head(x, (c - 1) * h, logits, 0);
        }
      }
    }

    /** The schedule's row count and selection window for an {@code n}-token prompt, checked. */
    private int keptRows(int n) {
      int keep = schedule.rowsKept(n);
      if (keep < 1 || keep > n) {
        throw new IllegalArgumentException("schedule " + schedule.name() + ": rowsKept(" + n + ") = " + keep
            + ", expected [1, " + n + "]");
      }
      int wanted = schedule.selectionWindow();
      int pool = schedule.selectionPool();
      if (wanted < 1 || pool < 1 || pool % 2 == 0) {
        throw new IllegalArgumentException("schedule " + schedule.name() + ": selectionWindow " + wanted
            + " must be >= 1 and selectionPool " + pool + " an odd number >= 1");
      }
      return keep;
    }

    /**
     * Token-selective propagation's choice: the window's rows plus the {@code keep - window} earlier rows
     * the window's queries attend to most (softmax weights summed over the window's rows and every query
     * head, pooled), in position order. Package-private for its test.
     */
    int[] selectRows(float[] keys, float[] winQ, int n, int window, int keep, int pool) {
      int heads = config.heads();
      double[][] perHead = new double[heads][];
      // The query heads split across the matrix threads (the caller taking a share), each scoring every
      // token for the window's rows; summed afterwards in head order, so the scores do not depend on
      // the thread count. Scalar float64: this is the selection's definition.
      split.forRange(heads, 1, (from, to) -> {
        for (int head = from; head < to; head++) {
          perHead[head] = headScores(head, keys, winQ, n, window);
        }
      });
      double[] score = new double[n];
      for (int head = 0; head < heads; head++) {
        double[] ph = perHead[head];
        for (int j = 0; j < n; j++) {
          score[j] += ph[j];
        }
      }
      if (pool > 1 && n - window > 1) {
        // Smooth the scores of the rows before the window, so a chosen row keeps its neighbours.
        float[] raw = new float[n - window];
        float[] pooled = new float[n - window];
        for (int j = 0; j < n - window; j++) {
          raw[j] = (float) score[j];
        }
        io.kvcache.retention.TokenSelection.pool(raw, 0, n - window, pool, true, pooled, 0);
        for (int j = 0; j < n - window; j++) {
          score[j] = pooled[j];
        }
      }
      boolean[] chosen = new boolean[n];
      for (int j = n - window; j < n; j++) {
        chosen[j] = true;
      }
      // Highest score first, ties to the earlier position; the window is already in.
      if (n > (1 << 21)) {
        throw new IllegalArgumentException("token-selective propagation supports prompts up to 2^21 tokens, got " + n);
      }
      long[] order = new long[n - window];
      for (int j = 0; j < n - window; j++) {
        long bits = Double.doubleToLongBits(score[j]) >>> 21;
        order[j] = (((1L << 42) - 1 - bits) << 21) | j;
      }
      Arrays.sort(order);
      for (int i = 0; i < keep - window; i++) {
        chosen[(int) (order[i] & 0x1fffff)] = true;
      }
      int[] rows = new int[keep];
      int r = 0;
      for (int j = 0; j < n; j++) {
        if (chosen[j]) {
          rows[r++] = j;
        }
      }
      return rows;
    }

    /** Query head {@code head}'s softmax attention weights, summed over the window's rows, for each token. */
    private double[] headScores(int head, float[] keys, float[] winQ, int n, int window) {
      int hd = config.headDim();
      int kvw = config.kvWidth();
      int ko = head / (config.heads() / config.kvHeads()) * hd;
      double scale = (float) (1.0 / Math.sqrt(hd));
      double[] score = new double[n];
      double[] p = new double[n];
      for (int w = 0; w < window; w++) {
        int qpos = n - window + w;
        int qo = w * config.qWidth() + head * hd;
        double max = Double.NEGATIVE_INFINITY;
        for (int j = 0; j <= qpos; j++) {
          double d = 0;
          for (int c = 0; c < hd; c++) {
            d += winQ[qo + c] * keys[j * kvw + ko + c];
          }
          p[j] = d * scale;
          max = Math.max(max, p[j]);
        }
        double sum = 0;
        for (int j = 0; j <= qpos; j++) {
          p[j] = Math.exp(p[j] - max);
          sum += p[j];
        }
        for (int j = 0; j <= qpos; j++) {
          score[j] += p[j] / sum;
        }
      }
      return score;
    }

    private void runLayers(int from, int to, int c) {
      rope(c);
      for (int l = from; l < to; l++) {
        if (l == single) {
          System.arraycopy(x, 0, xs, 0, c * config.hidden());
        }
        attentionIn(l, c);
        attend(l, c);
        attentionOut(l, c);
        mlp(l, c);
      }
    }

    private void attend(int l, int c) {
      countAttention(l, c);
      if (owner[l] == l) {
        cache.prefill(l, c, pos, q, 0, k, 0, v, 0, att, 0);
      } else {
        cache.attendPrefill(owner[l], c, pos, q, 0, att, 0);
      }
    }

    /** Prompt rows that skip layer {@code l}: only its K/V, projected from the state entering {@link #single}. */
    private void kvOnly(int l, int c) {
      if (owner[l] != l) {
        return;
      }
      projectKV(l, xs, c);
      // These rows have no query here: store their K/V without an attention pass (none is counted).
      appended[l] += c;
      cache.append(l, c, pos, k, 0, v, 0);
    }

    private void attentionIn(int l, int c) {
      normIn(l, c);
      projectQ(l, c);
      if (owner[l] != l) {
        // AcrossKV: the group's first layer projected the K/V this layer reads.
        return;
      }
      if (l >= single) {
        projectKV(l, xs, c);
        return;
      }
      projectOwnKV(l, c);
    }

    /** Layer {@code l}'s input norm of the chunk's rows into {@code xb}. */
    private void normIn(int l, int c) {
      float[] norm = weights.layers[l].attnNorm;
      int h = config.hidden();
      for (int t = 0; t < c; t++) {
        rmsNorm(x, t * h, norm, xb, t * h, h, config.rmsEps());
      }
    }

    /** Layer {@code l}'s queries from {@code xb}, rotated. */
    private void projectQ(int l, int c) {
      LlamaWeights.Layer w = weights.layers[l];
      matmul(l, w.wq, xb, config.hidden(), c, q, config.qWidth());
      addBias(q, w.bq, c);
      applyRope(q, config.heads(), c);
    }

    /** Layer {@code l}'s own keys (rotated) and values from {@code xb}. */
    private void projectOwnKV(int l, int c) {
      LlamaWeights.Layer w = weights.layers[l];
      int h = config.hidden();
      matmul(l, w.wk, xb, h, c, k, config.kvWidth());
      matmul(l, w.wv, xb, h, c, v, config.kvWidth());
      addBias(k, w.bk, c);
      addBias(v, w.bv, c);
      applyRope(k, config.kvHeads(), c);
    }

    /**
     * SingleInputKV: layer {@code l}'s keys and values from {@code src}, the state entering layer
     * {@link #single}. A SwiftKV checkpoint normalises it with {@code norm_swiftkv} and projects with
     * the group owner's {@code _swiftkv} matrices; a plain model uses layer {@code l}'s own input norm
     * and projections. Overwrites {@code xb}.
     */
    private void projectKV(int l, float[] src, int c) {
      LlamaWeights.Layer w = weights.layers[kvFrom[l]];
      float[] norm = weights.swiftKVNorm != null ? weights.swiftKVNorm : weights.layers[l].attnNorm;
      int h = config.hidden();
      for (int t = 0; t < c; t++) {
        rmsNorm(src, t * h, norm, xb, t * h, h, config.rmsEps());
      }
      matmul(l, w.wk, xb, h, c, k, config.kvWidth());
      matmul(l, w.wv, xb, h, c, v, config.kvWidth());
      addBias(k, w.bk, c);
      addBias(v, w.bv, c);
      applyRope(k, config.kvHeads(), c);
    }

    /** {@code out[c][outW] = W · in[c][inW]}, its FLOPs counted against {@code slot} during prefill. */
    private void matmul(int slot, Weight wt, float[] in, int inW, int c, float[] out, int outW) {
      split.matmul(kernels, wt, in, 0, inW, c, out, 0, outW);
      if (counting) {
        flops[slot] += 2L * c * inW * outW;
      }
    }

    /** Counts the attention of {@code c} query rows at layer {@code l} against its cache (owner's for AcrossKV). */
    private void countAttention(int l, int c) {
      int o = owner[l];
      long before = owner[l] == l ? appended[o] : appended[o] - c;
      if (owner[l] == l) {
        appended[o] += c;
      }
      if (counting) {
        // Row t reaches the rows appended before the chunk plus rows 0..t of the chunk.
        long keys = c * before + (long) c * (c + 1) / 2;
        flops[l] += 4L * config.headDim() * config.heads() * keys;
      }
    }

    private void attentionOut(int l, int c) {
      LlamaWeights.Layer w = weights.layers[l];
      int h = config.hidden();
      matmul(l, w.wo, att, config.qWidth(), c, xb, h);
      for (int i = 0; i < c * h; i++) {
        x[i] += xb[i];
      }
    }

    private void mlp(int l, int c) {
      LlamaWeights.Layer w = weights.layers[l];
      int h = config.hidden();
      int f = config.intermediate();
      for (int t = 0; t < c; t++) {
        rmsNorm(x, t * h, w.mlpNorm, xb, t * h, h, config.rmsEps());
      }
      matmul(l, w.gate, xb, h, c, g, f);
      matmul(l, w.up, xb, h, c, u, f);
      // SwiGLU on the matrix threads: one scalar exp per element, on the calling thread alone, held a
      // 16-thread 8K-token prefill back by about an eighth (docs/prefill/prefill-8k-travelling-rows.txt).
      split.forRange(c * f, SWIGLU_PER_TASK, swiglu);
      matmul(l, w.down, g, f, c, xb, h);
      for (int i = 0; i < c * h; i++) {
        x[i] += xb[i];
      }
    }

    /** {@code g = silu(g) * u} over elements {@code [from, to)} of the chunk's MLP activations. */
    private void swiglu(int from, int to) {
      for (int i = from; i < to; i++) {
        float a = g[i];
        g[i] = a / (1f + (float) Math.exp(-a)) * u[i];
      }
    }

    private void head(float[] src, int off, float[] logits, int logitsOff) {
      int h = config.hidden();
      rmsNorm(src, off, weights.finalNorm, xb, 0, h, config.rmsEps());
      split.matmul(kernels, weights.output, xb, 0, h, 1, logits, logitsOff, config.vocabSize());
      if (counting) {
        flops[config.layers()] += 2L * h * config.vocabSize();
      }
    }

    private void embed(int token, float[] dst, int off) {
      weights.embedding.row(token, dst, off);
    }

    private void addBias(float[] a, float[] bias, int c) {
      if (bias == null) {
        return;
      }
      int w = bias.length;
      for (int t = 0; t < c; t++) {
        for (int i = 0; i < w; i++) {
          a[t * w + i] += bias[i];
        }
      }
    }

    /** Fills the cos/sin table for the chunk's positions in {@code pos}. */
    private void rope(int c) {
      float[] inv = weights.invFreq;
      int half = inv.length;
      for (int t = 0; t < c; t++) {
        for (int i = 0; i < half; i++) {
          // float32 angle, as Hugging Face computes it, so that parity holds at large positions too
          float angle = pos[t] * inv[i];
          cos[t * half + i] = (float) Math.cos(angle);
          sin[t * half + i] = (float) Math.sin(angle);
        }
      }
    }

    private void applyRope(float[] a, int heads, int c) {
      int hd = config.headDim();
      int half = hd / 2;
      boolean interleaved = config.ropeInterleaved();
      for (int t = 0; t < c; t++) {
        for (int head = 0; head < heads; head++) {
          int b = (t * heads + head) * hd;
          for (int i = 0; i < half; i++) {
            float cs = cos[t * half + i];
            float sn = sin[t * half + i];
            int i0 = interleaved ? b + 2 * i : b + i;
            int i1 = interleaved ? i0 + 1 : i0 + half;
            float a0 = a[i0];
            float a1 = a[i1];
            a[i0] = a0 * cs - a1 * sn;
            a[i1] = a1 * cs + a0 * sn;
          }
        }
      }
    }

    /** Frees the KV cache. Idempotent. */
    @Override
    public void close() {
      cache.close();
    }
  }

  /** Prompt rows whose attention scores the tokens for token-selective propagation (SnapKV's window). */

  static void rmsNorm(float[] src, int off, float[] weight, float[] dst, int dstOff, int n, float eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) {
      float a = src[off + i];
      ss += a * a;
    }
    float inv = (float) (1.0 / Math.sqrt((float) (ss / n) + eps));
    for (int i = 0; i < n; i++) {
      dst[dstOff + i] = weight[i] * (src[off + i] * inv);
    }
  }
}
