package io.kvcache.core;

import io.kvcache.codec.HeadStore;
import io.kvcache.reader.AttentionReader;
import io.kvcache.reader.PagedAttention;
import io.kvcache.retention.LayerAccess;
import io.kvcache.retention.RetentionPolicy;
import java.util.Arrays;
import java.util.concurrent.Executor;

/**
 * The one {@link KVCache} implementation: a {@link HeadStore} per layer and KV head from the
 * strategy's codec, the retention policy's and reader's per-cache state, and per-KV-head scratch so
 * that heads can run on different threads.
 */
final class PagedKVCache implements KVCache {

  private final KVCacheStrategy strategy;
  private final AttentionShape shape;
  private final int d;
  private final int group;
  private final float scale;
  private final RetentionPolicy.State retention;
  private final AttentionReader.State reader;
  private final HeadParallel parallel;
  private final PagedAttention[] work; // one per KV head: heads may run concurrently
  private final int window;            // observation window length, 0 when unused
  private final boolean decodeWeights;
  // SKVQ's window step waits for the layer's next append only under policies that act at the end of
  // the prompt (keep-all, SnapKV): the others read, score and evict the store right after each
  // attention, and take the step first, as they always did.
  private final boolean deferWindowStep;
  private final boolean[] stepPending;

  private HeadStore[][] stores;
  private final int[] nextPos;
  private final long[] seen;
  private final float[][] windowQ;     // per layer: last 'window' query rows, [token][queryHead][dim]
  private final int[][] windowPos;
  private final int[] windowLen;
  private float[] weights = new float[0];
  private int[] scratchPos = new int[1];
  private boolean prefillEnded;
  // The prefill chunk being appended, for LayerAccess.chunkWeights during afterAppend only.
  private float[] chunkQ;
  private int chunkQOff;
  private int chunkTokens;
  private int[] chunkPos;
  private boolean inChunk;         // chunkQ is null in a chunk appended without queries
  private boolean closed;
  private final ThreadGuard guard = new ThreadGuard("cache");
  private float[] decodeQ = new float[0]; // a decode query the output overlaps (decode)

  PagedKVCache(KVCacheStrategy strategy, AttentionShape shape, Executor executor) {
    this.strategy = strategy;
    this.shape = shape;
    this.d = shape.headDim();
    this.group = shape.groupSize();
    this.scale = shape.scale();
    this.retention = strategy.retention().newState(shape);
    this.reader = strategy.reader().newState(shape);
    this.parallel = executor == null || shape.kvHeads() == 1 ? null : new HeadParallel(executor);
    this.work = new PagedAttention[shape.kvHeads()];
    for (int h = 0; h < work.length; h++) {
      work[h] = new PagedAttention(strategy.kernels(), d);
      // Where it waits (settle), a layer sharing this one's cache (attendPrefill / attendDecode) sees what
      // this layer's own queries saw.
      work[h].deferWindowStep(strategy.retention().actsAtEndOfPrompt());
    }
    this.window = strategy.retention().observationWindow();
    this.decodeWeights = strategy.retention().wantsDecodeWeights();
    this.deferWindowStep = strategy.retention().actsAtEndOfPrompt();
    this.stepPending = new boolean[shape.layers()];
    this.stores = new HeadStore[shape.layers()][shape.kvHeads()];
    for (HeadStore[] layer : stores) {
      for (int h = 0; h < layer.length; h++) {
        layer[h] = strategy.codec().newStore(d);
      }
    }
    this.nextPos = new int[shape.layers()];
    this.seen = new long[shape.layers()];
    this.windowQ = new float[window > 0 ? shape.layers() : 0][];
    this.windowPos = new int[window > 0 ? shape.layers() : 0][];
    this.windowLen = new int[shape.layers()];
    accessViews = new LayerAccess[shape.layers()];
    for (int l = 0; l < accessViews.length; l++) {
      accessViews[l] = newAccess(l);
    }
  }

  @Override
  public AttentionShape shape() {
    return shape;
  }

  @Override
  public void prefill(int layer, int tokens, int[] positions, float[] q, int qOff, float[] k, int kOff, float[] v,
      int vOff, float[] out, int outOff) {
    boolean entered = guard.enter();
    try {
      checkPrefill(layer, tokens);
      int qw = shape.queryWidth(), kw = shape.kvWidth();
      Checks.span("q", q, qOff, (long) tokens * qw);
      Checks.span("k", k, kOff, (long) tokens * kw);
      Checks.span("v", v, vOff, (long) tokens * kw);
      Checks.span("out", out, outOff, (long) tokens * qw);
      Checks.finite("q", q, qOff, tokens * qw);
      Checks.finite("k", k, kOff, tokens * kw);
      Checks.finite("v", v, vOff, tokens * kw);
      int[] pos = resolvePositions(layer, tokens, positions);
      checkEncodable(layer, tokens, k, kOff, v, vOff);

      float[] apart = queriesApart(q, qOff, out, outOff, tokens * qw, false);
      float[] qs = apart != null ? apart : q;
      int qo = apart != null ? 0 : qOff;
      store(layer, tokens, k, kOff, v, vOff, pos);
      runHeads(h -> work[h].attend(stores[layer][h], tokens, group, qs, qo + h * group * d, qw, pos, 0, scale, out,
          outOff + h * group * d, qw));
      stepPending[layer] = deferWindowStep;
      if (window > 0) {
        keepWindow(layer, tokens, qs, qo, pos);
      }
      afterChunk(layer, tokens, qs, qo, pos);
    } finally {
      guard.leave(entered);
    }
  }

  /**
   * Stores the rows as {@link #prefill} does, with the same checks and retention step, but computes
   * no attention. The rows have no queries: they stay out of the observation window, and
   * {@link LayerAccess#chunkWeights} adds nothing for them, so query-scored policies score the
   * prompt with the rows that came with queries.
   */
  @Override
  public void append(int layer, int tokens, int[] positions, float[] k, int kOff, float[] v, int vOff) {
    boolean entered = guard.enter();
    try {
      checkPrefill(layer, tokens);
      checkKV(tokens, k, kOff, v, vOff);
      int[] pos = resolvePositions(layer, tokens, positions);
      checkEncodable(layer, tokens, k, kOff, v, vOff);

      store(layer, tokens, k, kOff, v, vOff, pos);
      // The step a prefill's attention ends with (SKVQ quantizing what left its window), taken or deferred
      // as after a prefill's attention, so that rows appended and rows prefilled end up stored alike.
      stepPending[layer] = true;
      if (!deferWindowStep) {
        settle(layer);
      }
      afterChunk(layer, tokens, null, 0, pos);
    } finally {
      guard.leave(entered);
    }
  }

  private void checkPrefill(int layer, int tokens) {
    checkOpen();
    if (prefillEnded) {
      throw new IllegalStateException("prefill after endPrefill (or after the first decode): a cache takes one prompt;"
          + " start a new cache for a new sequence");
    }
    checkLayer(layer);
    Checks.inRange("tokens", tokens, 1, Integer.MAX_VALUE / Math.max(shape.queryWidth(), 1));
  }

  private void checkKV(int tokens, float[] k, int kOff, float[] v, int vOff) {
    int kw = shape.kvWidth();
    Checks.span("k", k, kOff, (long) tokens * kw);
    Checks.span("v", v, vOff, (long) tokens * kw);
    Checks.finite("k", k, kOff, tokens * kw);
    Checks.finite("v", v, vOff, tokens * kw);
  }

  /**
   * The stores' deferred step ({@link HeadStore#attentionDone}) for one layer, when its last attention
   * or append left one: taken before the layer's next append, at the end of the prompt before the
   * retention policy, and before the bytes are counted. Every attention then sees the store it would
   * see had the step been taken when the attention was done, and the layers that share this one's
   * cache see what it saw.
   */
  private void settle(int layer) {
    if (stepPending[layer]) {
      stepPending[layer] = false;
      for (int h = 0; h < shape.kvHeads(); h++) {
        stores[layer][h].attentionDone();
      }
    }
  }

  private void store(int layer, int tokens, float[] k, int kOff, float[] v, int vOff, int[] pos) {
    settle(layer);
    int kw = shape.kvWidth();
    for (int h = 0; h < shape.kvHeads(); h++) {
      HeadStore store = stores[layer][h];
      store.reserve(tokens);
      for (int t = 0; t < tokens; t++) {
        store.append(k, kOff + t * kw + h * d, v, vOff + t * kw + h * d, pos[t]);
      }
    }
  }

  /** A prefill chunk is stored: advance the layer and let the retention policy see it ({@code q} null: no queries). */
  private void afterChunk(int layer, int tokens, float[] q, int qOff, int[] pos) {
    nextPos[layer] = pos[tokens - 1] + 1;
    seen[layer] += tokens;
    inChunk = true;
    chunkQ = q;
    chunkQOff = qOff;
    chunkTokens = tokens;
    chunkPos = pos;
    try {
      retention.afterAppend(access(layer), false);
    } finally {
      inChunk = false;
      chunkQ = null;
      chunkPos = null;
    }
  }

  @Override
  public void endPrefill() {
    boolean entered = guard.enter();
    try {
      checkOpen();
      if (prefillEnded) {
        throw new IllegalStateException("endPrefill already called (the first decode ends the prompt implicitly)");
      }
      prefillEnded = true;
      for (int layer = 0; layer < shape.layers(); layer++) {
        settle(layer);
        retention.endPrefill(access(layer));
      }
      scratchPos = new int[1]; // sized by the largest prompt chunk; decode needs one entry
      for (int layer = 0; layer < windowQ.length; layer++) {
        windowQ[layer] = null;
        windowPos[layer] = null;
        windowLen[layer] = 0;
      }
    } finally {
      guard.leave(entered);
    }
  }

  @Override
  public void decode(int layer, float[] q, int qOff, float[] k, int kOff, float[] v, int vOff, float[] out,
      int outOff) {
    boolean entered = guard.enter();
    try {
      checkOpen();
      checkLayer(layer);
      int qw = shape.queryWidth(), kw = shape.kvWidth();
      Checks.span("q", q, qOff, qw);
      Checks.span("k", k, kOff, kw);
      Checks.span("v", v, vOff, kw);
      Checks.span("out", out, outOff, qw);
      Checks.finite("q", q, qOff, qw);
      Checks.finite("k", k, kOff, kw);
      Checks.finite("v", v, vOff, kw);
      if (nextPos[layer] >= Integer.MAX_VALUE - 1) {
        throw new IllegalStateException("layer " + layer + " has reached the largest position (next would be "
            + nextPos[layer] + ")");
      }
      checkEncodable(layer, 1, k, kOff, v, vOff);
      if (!prefillEnded) {
        endPrefill();
      }
      int pos = nextPos[layer];
      settle(layer);
      for (int h = 0; h < shape.kvHeads(); h++) {
        stores[layer][h].append(k, kOff + h * d, v, vOff + h * d, pos);
      }
      nextPos[layer] = pos + 1;
      seen[layer]++;
      retention.afterAppend(access(layer), true);
      float[] apart = queriesApart(q, qOff, out, outOff, qw, true);
      float[] qd = apart != null ? apart : q;
      int qdo = apart != null ? 0 : qOff;
      if (parallel == null) {
        // The common path: no lambda, so a decode step allocates nothing.
        for (int h = 0; h < shape.kvHeads(); h++) {
          reader.decode(layer, h, stores[layer][h], work[h], group, qd, qdo + h * group * d, pos, scale, out,
              outOff + h * group * d);
        }
      } else {
        float[] qf = qd;
        int qfo = qdo;
        parallel.run(shape.kvHeads(), h -> reader.decode(layer, h, stores[layer][h], work[h], group, qf,
            qfo + h * group * d, pos, scale, out, outOff + h * group * d));
      }
      stepPending[layer] = deferWindowStep;
      if (decodeWeights) {
        reportDecodeWeights(layer, qd, qdo, pos);
      }
    } finally {
      guard.leave(entered);
    }
  }

  @Override
  public void attendPrefill(int layer, int tokens, int[] positions, float[] q, int qOff, float[] out, int outOff) {
    boolean entered = guard.enter();
    try {
      checkOpen();
      checkLayer(layer);
      Checks.inRange("tokens", tokens, 1, Integer.MAX_VALUE / Math.max(shape.queryWidth(), 1));
      int qw = shape.queryWidth();
      Checks.span("q", q, qOff, (long) tokens * qw);
      Checks.span("out", out, outOff, (long) tokens * qw);
      Checks.finite("q", q, qOff, tokens * qw);
      Checks.attendPositions(positions, tokens, nextPos[layer] - 1, layer);
      // One head's output must not land on another head's queries before they are read.
      float[] apart = queriesApart(q, qOff, out, outOff, tokens * qw, false);
      float[] qs = apart != null ? apart : q;
      int qo = apart != null ? 0 : qOff;
      runHeads(h -> work[h].attend(stores[layer][h], tokens, group, qs, qo + h * group * d, qw, positions, 0, scale,
          out, outOff + h * group * d, qw));
    } finally {
      guard.leave(entered);
    }
  }

  @Override
  public void attendDecode(int layer, float[] q, int qOff, float[] out, int outOff) {
    boolean entered = guard.enter();
    try {
      checkOpen();
      checkLayer(layer);
      int qw = shape.queryWidth();
      Checks.span("q", q, qOff, qw);
      Checks.span("out", out, outOff, qw);
      Checks.finite("q", q, qOff, qw);
      int pos = nextPos[layer] - 1;
      if (pos < 0) {
        throw new IllegalStateException("layer " + layer + " holds no token to attend to");
      }
      float[] apart = queriesApart(q, qOff, out, outOff, qw, true);
      float[] qs = apart != null ? apart : q;
      int qo = apart != null ? 0 : qOff;
      runHeads(h -> reader.decode(layer, h, stores[layer][h], work[h], group, qs, qo + h * group * d, pos, scale, out,
          outOff + h * group * d));
    } finally {
      guard.leave(entered);
    }
  }

  @Override
  public CacheStats stats() {
    boolean entered = guard.enter();
    try {
      checkOpen();
      int[][] retained = new int[shape.layers()][shape.kvHeads()];
      long payload = 0, meta = 0;
      for (int layer = 0; layer < shape.layers(); layer++) {
        settle(layer); // bytes as they stand once the last attention's deferred step is taken
        for (int h = 0; h < shape.kvHeads(); h++) {
          HeadStore s = stores[layer][h];
          retained[layer][h] = s.size();
          payload += s.payloadBytes();
          meta += s.metadataBytes();
        }
      }
      return new CacheStats(strategy.name(), shape, seen.clone(), retained, payload, meta);
    } finally {
      guard.leave(entered);
    }
  }

  @Override
  public void close() {
    boolean entered = guard.enter();
    try {
      closed = true;
      stores = null;
    } finally {
      guard.leave(entered);
    }
  }

  /**
   * The {@code n} queries from {@code qOff} apart from the output, where the output overlaps them (attention
   * in place): each head's output would otherwise land on queries read later (another head's where the two
   * are offset, the observation window's, H2O's). Null where they do not overlap. A decode row goes into
   * scratch kept by the cache, so a decode step allocates nothing; a prompt chunk's copy is made per call
   * and not kept.
   */
  private float[] queriesApart(float[] q, int qOff, float[] out, int outOff, int n, boolean row) {
    if (q != out || qOff >= outOff + n || outOff >= qOff + n) {
      return null;
    }
    if (!row) {
      return Arrays.copyOfRange(q, qOff, qOff + n);
    }
    if (decodeQ.length < n) {
      decodeQ = new float[n];
    }
    System.arraycopy(q, qOff, decodeQ, 0, n);
    return decodeQ;
  }

  private void checkOpen() {
    if (closed) {
      throw new IllegalStateException("cache is closed");
    }
  }

  private void checkLayer(int layer) {
    if (layer < 0 || layer >= shape.layers()) {
      throw new IllegalArgumentException("layer must be in [0, " + (shape.layers() - 1) + "], got " + layer);
    }
  }

  private void checkEncodable(int layer, int tokens, float[] k, int kOff, float[] v, int vOff) {
    int kw = shape.kvWidth();
    for (int h = 0; h < shape.kvHeads(); h++) {
      HeadStore store = stores[layer][h];
      for (int t = 0; t < tokens; t++) {
        store.checkEncodable(k, kOff + t * kw + h * d, v, vOff + t * kw + h * d);
      }
    }
  }

  private int[] resolvePositions(int layer, int tokens, int[] positions) {
    if (scratchPos.length < tokens) {
      scratchPos = new int[tokens];
    }
    long first = nextPos[layer];
    if (positions == null) {
      if (first + tokens > Integer.MAX_VALUE - 1) {
        throw new IllegalArgumentException("tokens=" + tokens + " would pass the largest position after " + first);
      }
      for (int t = 0; t < tokens; t++) {
        scratchPos[t] = (int) first + t;
      }
      return scratchPos;
    }
    if (positions.length < tokens) {
      throw new IllegalArgumentException("positions must hold " + tokens + " entries, but its length is "
          + positions.length);
    }
    long prev = first - 1;
    for (int t = 0; t < tokens; t++) {
      int p = positions[t];
      if (p <= prev || p == HeadStore.EMPTY) {
        throw new IllegalArgumentException("positions must increase strictly from >= " + first + " (one past layer "
            + layer + "'s last position), got " + p + " at index " + t);
      }
      prev = p;
    }
    System.arraycopy(positions, 0, scratchPos, 0, tokens);
    return scratchPos;
  }

  private void keepWindow(int layer, int tokens, float[] q, int qOff, int[] pos) {
    int qw = shape.queryWidth();
    if (windowQ[layer] == null) {
      windowQ[layer] = new float[window * qw];
      windowPos[layer] = new int[window];
    }
    float[] wq = windowQ[layer];
    int[] wp = windowPos[layer];
    int keep = Math.min(window, windowLen[layer] + tokens);
    int fromOld = keep - Math.min(tokens, keep);
    // Shift the surviving old rows to the front, then append the chunk's last rows.
    int drop = windowLen[layer] - fromOld;
    System.arraycopy(wq, drop * qw, wq, 0, fromOld * qw);
    System.arraycopy(wp, drop, wp, 0, fromOld);
    int fromNew = keep - fromOld;
    System.arraycopy(q, qOff + (tokens - fromNew) * qw, wq, fromOld * qw, fromNew * qw);
    System.arraycopy(pos, tokens - fromNew, wp, fromOld, fromNew);
    windowLen[layer] = keep;
  }

  private void reportDecodeWeights(int layer, float[] q, int qOff, int pos) {
    LayerAccess access = access(layer);
    scratchPos[0] = pos;
    for (int h = 0; h < shape.kvHeads(); h++) {
      HeadStore store = stores[layer][h];
      int slots = store.pageCount() * HeadStore.PAGE_TOKENS;
      if (weights.length < group * slots) {
        weights = new float[group * slots * 2];
      }
      java.util.Arrays.fill(weights, 0, group * slots, 0f);
      work[h].weights(store, 1, group, q, qOff + h * group * d, shape.queryWidth(), scratchPos, 0, scale, weights,
          slots);
      for (int g = 1; g < group; g++) {
        for (int s = 0; s < slots; s++) {
          weights[s] += weights[g * slots + s];
        }
      }
      retention.afterDecodeWeights(access, h, weights);
    }
  }

  private void runHeads(java.util.function.IntConsumer task) {
    if (parallel == null) {
      for (int h = 0; h < shape.kvHeads(); h++) {
        task.accept(h);
      }
    } else {
      parallel.run(shape.kvHeads(), task);
    }
  }

  /** One view per layer, made in the constructor: a decode step hands the policy a view and allocates nothing. */
  private final LayerAccess[] accessViews;

  private LayerAccess access(int layer) {
    return accessViews[layer];
  }

  private LayerAccess newAccess(int layer) {
    return new LayerAccess() {
      @Override
      public int layer() {
        return layer;
      }

      @Override
      public AttentionShape shape() {
        return shape;
      }

      @Override
      public HeadStore store(int kvHead) {
        return stores[layer][kvHead];
      }

      @Override
      public int nextPosition() {
        return nextPos[layer];
      }

      @Override
      public void forEachKvHead(java.util.function.IntConsumer task) {
        runHeads(task);
      }

      @Override
      public int windowTokens() {
        return windowLen[layer];
      }

      @Override
      public void windowWeights(int kvHead, float[] acc, int accStride) {
        if (windowLen[layer] == 0) {
          return;
        }
        work[kvHead].weights(stores[layer][kvHead], windowLen[layer], group, windowQ[layer], kvHead * group * d,
            shape.queryWidth(), windowPos[layer], 0, scale, acc, accStride);
      }

      @Override
      public void chunkWeights(int kvHead, float[] acc, int accStride) {
        if (!inChunk) {
          throw new UnsupportedOperationException("chunkWeights is available only during afterAppend of a prefill"
              + " chunk");
        }
        if (chunkQ == null) {
          return; // appended rows have no queries: they add no weight
        }
        work[kvHead].weights(stores[layer][kvHead], chunkTokens, group, chunkQ, chunkQOff + kvHead * group * d,
            shape.queryWidth(), chunkPos, 0, scale, acc, accStride);
      }
    };
  }
}
