package io.kvcache.gpu;

import io.kvcache.core.AttentionShape;
import io.kvcache.core.CacheStats;
import io.kvcache.core.Checks;
import io.kvcache.core.KVCache;
import java.util.Arrays;

/** {@link KVCache} over a {@link DeviceKVCache}: what {@link GpuAttentionBackend} hands out. */
final class GpuKVCache implements KVCache {

  private final String strategy;
  private final DeviceKVCache dev;
  private final TopKDecoder topk;
  private final AttentionShape shape;
  private final int[] next;
  // One decoded token's key, value, query and output, and its position (reused by every decode).
  private final float[] kTok, vTok, qTok, oTok;
  private final int[] posTok = new int[1];
  // Every cache of a backend shares its OpenCL context (queue, pinned staging, program cache), which
  // takes one thread at a time: each call holds the context for its whole device work, so that distinct
  // caches may be used from distinct threads, as KVCache promises.
  private final Object lock;
  private boolean ended;
  private boolean closed;

  GpuKVCache(String strategy, DeviceKVCache dev, TopKDecoder.Config topK) {
    this.strategy = strategy;
    this.dev = dev;
    this.lock = dev.context();
    this.shape = dev.shape();
    TopKDecoder t = null;
    if (topK != null) {
      try {
        t = new TopKDecoder(dev, topK);
      } catch (RuntimeException e) {
        dev.close();
        throw e;
      }
    }
    this.topk = t;
    this.next = new int[shape.layers()];
    this.kTok = new float[shape.kvWidth()];
    this.vTok = new float[shape.kvWidth()];
    this.qTok = new float[shape.queryWidth()];
    this.oTok = new float[shape.queryWidth()];
  }

  @Override
  public AttentionShape shape() {
    return shape;
  }

  private void checkOpen() {
    if (closed) {
      throw new IllegalStateException("cache is closed");
    }
  }

  private void checkLayer(int layer) {
    if (layer < 0 || layer >= shape.layers()) {
      throw new IllegalArgumentException("layer must be in [0, " + shape.layers() + "), got " + layer);
    }
  }

  @Override
  public void prefill(int layer, int tokens, int[] positions, float[] q, int qOff, float[] k, int kOff, float[] v,
      int vOff, float[] out, int outOff) {
    synchronized (lock) {
      checkPrompt("prefill", layer, tokens);
      int qw = shape.queryWidth(), kw = shape.kvWidth();
      Checks.span("q", q, qOff, (long) tokens * qw);
      Checks.span("k", k, kOff, (long) tokens * kw);
      Checks.span("v", v, vOff, (long) tokens * kw);
      Checks.span("out", out, outOff, (long) tokens * qw);
      Checks.finite("q", q, qOff, tokens * qw); // before the append, so that a refused call changes nothing
      int[] pos = positions(layer, tokens, positions);
      dev.append(layer, tokens, Arrays.copyOfRange(k, kOff, kOff + tokens * kw),
          Arrays.copyOfRange(v, vOff, vOff + tokens * kw), pos);
      next[layer] = pos[tokens - 1] + 1;
      float[] o = new float[tokens * qw];
      dev.attend(layer, tokens, Arrays.copyOfRange(q, qOff, qOff + tokens * qw), pos, o);
      System.arraycopy(o, 0, out, outOff, o.length);
    }
  }

  /** The checks {@code prefill} and {@code append} share: open, still in the prompt, a layer, a token. */
  private void checkPrompt(String call, int layer, int tokens) {
    checkOpen();
    if (ended) {
      throw new IllegalStateException(call + " after endPrefill (or after the first decode): a cache takes one prompt");
    }
    checkLayer(layer);
    if (tokens < 1) {
      throw new IllegalArgumentException("tokens must be >= 1, got " + tokens);
    }
  }

  /**
   * Uploads the rows as {@link #prefill} does and runs no attention kernel: this cache keeps every
   * token and has no query-scored retention, so the stored cache is the same as after a prefill.
   */
  @Override
  public void append(int layer, int tokens, int[] positions, float[] k, int kOff, float[] v, int vOff) {
    synchronized (lock) {
      checkPrompt("append", layer, tokens);
      int kw = shape.kvWidth();
      Checks.span("k", k, kOff, (long) tokens * kw);
      Checks.span("v", v, vOff, (long) tokens * kw);
      Checks.finite("k", k, kOff, tokens * kw);
      Checks.finite("v", v, vOff, tokens * kw);
      int[] pos = positions(layer, tokens, positions);
      dev.append(layer, tokens, Arrays.copyOfRange(k, kOff, kOff + tokens * kw),
          Arrays.copyOfRange(v, vOff, vOff + tokens * kw), pos);
      next[layer] = pos[tokens - 1] + 1;
    }
  }

  /** The chunk's positions: given (checked to increase strictly after the layer's last) or consecutive. */
  private int[] positions(int layer, int tokens, int[] positions) {
    if (positions != null && positions.length < tokens) {
      throw new IllegalArgumentException("positions must hold " + tokens + " entries, but its length is "
          + positions.length);
    }
    int[] pos = new int[tokens];
    for (int t = 0; t < tokens; t++) {
      long implicit = (long) next[layer] + t;
      if (positions == null && implicit >= Integer.MAX_VALUE) {
        throw new IllegalArgumentException("positions would pass " + (Integer.MAX_VALUE - 1) + " (layer " + layer
            + " is at " + next[layer] + ")");
      }
      int p = positions == null ? (int) implicit : positions[t];
      if (p < (t == 0 ? next[layer] : pos[t - 1] + 1)) {
        throw new IllegalArgumentException("positions must increase strictly from >= " + next[layer] + ", got " + p
            + " at index " + t);
      }
      pos[t] = p;
    }
    return pos;
  }

  @Override
  public void endPrefill() {
    synchronized (lock) {
      checkOpen();
      if (ended) {
        throw new IllegalStateException("endPrefill already called (the first decode ends the prompt implicitly)");
      }
      ended = true; // keep-all: nothing to compress
    }
  }

  @Override
  public void decode(int layer, float[] q, int qOff, float[] k, int kOff, float[] v, int vOff, float[] out,
      int outOff) {
    synchronized (lock) {
      checkOpen();
      checkLayer(layer);
      int qw = shape.queryWidth(), kw = shape.kvWidth();
      Checks.span("q", q, qOff, qw);
      Checks.span("k", k, kOff, kw);
      Checks.span("v", v, vOff, kw);
      Checks.span("out", out, outOff, qw);
      Checks.finite("q", q, qOff, qw); // before the append, so that a refused call changes nothing
      if (next[layer] >= Integer.MAX_VALUE - 1) { // as the CPU cache: no decode at the last position
        throw new IllegalStateException("layer " + layer + " has reached the largest position (next would be "
            + next[layer] + ")");
      }
      int p = next[layer];
      // One token's arrays at offset 0 for the device calls, in scratch kept by the cache: nothing is
      // allocated per decoded token.
      System.arraycopy(k, kOff, kTok, 0, kw);
      System.arraycopy(v, vOff, vTok, 0, kw);
      posTok[0] = p;
      // What the device append would refuse (f16 range, capacity), checked before endPrefill, so that a
      // refused decode leaves the prompt open and nothing stored.
      dev.checkAppend(layer, 1, kTok, vTok, posTok);
      if (!ended) {
        endPrefill();
      }
      dev.appendChecked(layer, 1, kTok, vTok, posTok);
      next[layer] = p + 1;
      attendOne(layer, q, qOff, p, out, outOff);
    }
  }

  /** One query at position {@code p} against what {@code layer} holds, top-k or dense, through the scratch. */
  private void attendOne(int layer, float[] q, int qOff, int p, float[] out, int outOff) {
    int qw = shape.queryWidth();
    System.arraycopy(q, qOff, qTok, 0, qw);
    if (topk != null) {
      topk.decode(layer, qTok, p, oTok);
    } else {
      dev.decode(layer, qTok, p, oTok);
    }
    System.arraycopy(oTok, 0, out, outOff, qw);
  }

  /** Attention of the chunk against what {@code layer} holds on the device, uploading nothing (AcrossKV). */
  @Override
  public void attendPrefill(int layer, int tokens, int[] positions, float[] q, int qOff, float[] out, int outOff) {
    synchronized (lock) {
      checkOpen();
      checkLayer(layer);
      if (tokens < 1) {
        throw new IllegalArgumentException("tokens must be >= 1, got " + tokens);
      }
      int qw = shape.queryWidth();
      Checks.span("q", q, qOff, (long) tokens * qw);
      Checks.span("out", out, outOff, (long) tokens * qw);
      Checks.finite("q", q, qOff, tokens * qw);
      Checks.attendPositions(positions, tokens, next[layer] - 1, layer);
      float[] o = new float[tokens * qw];
      dev.attend(layer, tokens, Arrays.copyOfRange(q, qOff, qOff + tokens * qw), Arrays.copyOf(positions, tokens), o);
      System.arraycopy(o, 0, out, outOff, o.length);
    }
  }

  /** One query against what {@code layer} holds, at its last stored position, storing nothing (AcrossKV). */
  @Override
  public void attendDecode(int layer, float[] q, int qOff, float[] out, int outOff) {
    synchronized (lock) {
      checkOpen();
      checkLayer(layer);
      int qw = shape.queryWidth();
      Checks.span("q", q, qOff, qw);
      Checks.span("out", out, outOff, qw);
      Checks.finite("q", q, qOff, qw);
      int p = next[layer] - 1;
      if (p < 0) {
        throw new IllegalStateException("layer " + layer + " holds no token to attend to");
      }
      attendOne(layer, q, qOff, p, out, outOff);
    }
  }

  @Override
  public CacheStats stats() {
    synchronized (lock) {
      checkOpen();
      int layers = shape.layers();
      long[] seen = new long[layers];
      int[][] retained = new int[layers][shape.kvHeads()];
      for (int l = 0; l < layers; l++) {
        int n = dev.size(l);
        seen[l] = n;
        Arrays.fill(retained[l], n);
      }
      // What the device holds: its buffers are allocated at capacity when the cache is made, so a server
      // that admits sequences by bytes held counts the device memory really taken, not the pages in use.
      // A top-k decoder's page summaries are held for the same capacity: bookkeeping, so metadata.
      long meta = dev.positionBytes() + (topk != null ? topk.deviceBytes() : 0);
      return new CacheStats(strategy, shape, seen, retained, dev.keyValueBytes(), meta);
    }
  }

  @Override
  public void close() {
    synchronized (lock) {
      if (closed) {
        return;
      }
      closed = true;
      try {
        if (topk != null) {
          topk.close();
        }
      } finally {
        dev.close(); // even when the top-k buffers failed to release
      }
    }
  }
}
