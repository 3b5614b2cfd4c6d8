package io.kvcache.gpu;

import io.kvcache.core.AttentionShape;
import io.kvcache.gpu.cl.ClBuffer;
import io.kvcache.gpu.cl.ClContext;
import io.kvcache.gpu.cl.ClEvent;
import io.kvcache.gpu.cl.ClException;
import io.kvcache.gpu.cl.ClKernel;
import io.kvcache.gpu.cl.OpenCl;
import java.util.ArrayList;
import java.util.List;

/**
 * The keys and values of one sequence in device memory, as binary16, with attention run there.
 *
 * <p>Each layer owns one buffer of pages of 16 slots per KV head, keys transposed as in the CPU's
 * {@code HeadStore} page, then values row-major (the CPU page keeps them in 16-channel column blocks
 * for its vector loops; the device kernels read a token's values as one row), and one buffer of slot positions.
 * Capacity is fixed at creation, so an append never reallocates or copies: a decode step uploads one
 * token's K and V per layer (2 · kvHeads · headDim halves) and the query, and reads back the output.
 * Tokens are appended in order; the causal mask is by position, as on the CPU.
 *
 * <p>Kernels: {@link #decode} is flash-decoding (the sequence split into chunks across work-groups,
 * one work-group per chunk and KV head serving the whole GQA group, then a reduction pass);
 * {@link #attend} is causal prefill attention with online softmax: on NVIDIA devices of compute
 * capability 8.0 or more by default on the tensor cores (binary16 {@code mma.sync} with the f32 side
 * split in two parts, f32-level accuracy), elsewhere by a portable f32 kernel; {@link GpuTuning} chooses.
 * One thread at a time; close it to free the device memory.
 */
public final class DeviceKVCache implements AutoCloseable {

  /** Slots per page, as in {@code HeadStore.PAGE_TOKENS}. */
  public static final int PAGE = 16;
  /**
   * Largest capacity (tokens per layer) a device cache takes: 2^30, so that page and slot counts, and
   * the kernels' int offsets within a KV head, stay clear of int overflow.
   */
  public static final int MAX_CAPACITY = 1 << 30;

  /** Checks a capacity argument against [1, MAX_CAPACITY]. */
  static void checkCapacity(int capacity) {
    if (capacity < 1 || capacity > MAX_CAPACITY) {
      throw new IllegalArgumentException("capacity must be in [1, " + MAX_CAPACITY + "] tokens, got " + capacity);
    }
  }

  /**
   * Work-group size of decode_reduce (its RWG): 512, or the largest power of two the device allows
   * below that. Each work-group merges 16 channels of one query head, RWG / 16 work-items per channel.
   *
   * @param cl the device
   * @return RWG, a power of two of at least 16
   */
  static int reduceGroup(ClContext cl) {
    return Math.max(16, Integer.highestOneBit(Math.min(512, cl.maxWorkGroupSize())));
  }

  /** Launches decode_reduce over {@code nsplit} splits into {@code out} ({@code hq * d} floats). */
  static void launchReduce(ClContext cl, ClKernel reduce, ClBuffer part, int nsplit, ClBuffer out, int hq, int d,
      List<ClEvent> events) {
    reduce.arg(0, part).arg(1, nsplit).arg(2, out);
    int rwg = reduceGroup(cl);
    launch(cl, reduce, new long[] {(long) hq * rwg, (d + 15) / 16}, new long[] {rwg, 1}, events);
  }

  /**
   * Enqueues a kernel: with an event kept for its device time where the context profiles, else without
   * one (an event costs host time per launch that nobody would read).
   */
  static void launch(ClContext cl, ClKernel k, long[] global, long[] local, List<ClEvent> events) {
    if (cl.profiling()) {
      events.add(k.launch(global, local));
    } else {
      k.run(global, local);
    }
  }

  /** Device times exist only on a profiling queue; say so rather than report zero. */
  static void requireProfiling(ClContext cl) {
    if (!cl.profiling()) {
      throw new IllegalStateException("kernel times need a context opened with profiling (OpenCl.open(binding, "
          + "platform, device, true) or -D" + OpenCl.PROFILING_PROPERTY + "=true)");
    }
  }

  /** The {@code kvcache.gpu.buildOptions} property with a leading space, or "" where it is unset. */
  static String extraBuildOptions() {
    String o = System.getProperty("kvcache.gpu.buildOptions", "");
    return o.isBlank() ? "" : " " + o;
  }

  /** The first {@code tokens} positions, the array itself where it holds exactly that many. */
  private static int[] firstPositions(int[] positions, int tokens) {
    return positions.length == tokens ? positions : java.util.Arrays.copyOf(positions, tokens);
  }

  /** Largest finite binary16 value. */
  static final float F16_MAX = 65504f;
  private static final String SOURCE = "/io/kvcache/gpu/attention.cl";

  private final ClContext cl;
  private final AttentionShape shape;
  private final int capacity;
  private final int capPages;
  private final int d;
  private final int kvh;
  private final int group;
  private final ClBuffer[] kv;
  private final ClBuffer[] pos;
  private final int[] size;
  private final short[] staged1; // one token's keys and values in binary16, for a decode's append
  private final ClKernel append;
  private final ClKernel partial;
  private final ClKernel reduce;
  private final ClKernel prefill;
  private final GpuTuning tuning;
  private final GpuTuning.Prefill prefillKind;
  /** Most tokens per decode work-group: the tuning's chunk, or the automatic one. */
  private final int chunkMax;
  private final ClBuffer dummyMap;
  private final String opts;
  private ClBuffer stage, stagePos, qBuf, outBuf, partBuf;
  private final List<ClEvent> events = new ArrayList<>();
  private long lastNanos;
  /** Set by the sparse path, which uploads the query itself before scoring pages. */
  boolean qOnDevice;
  private boolean closed;

  /**
   * A cache with the launch parameters of {@link GpuTuning#fromSystemProperties()}.
   *
   * @param cl       the device context (not closed by this cache)
   * @param shape    layers, query heads, KV heads, head dimension (a power of two in [16, 128])
   * @param capacity most tokens per layer, 1 to {@link #MAX_CAPACITY}
   * @throws IllegalArgumentException for a capacity below 1, a head dimension the kernels do not take,
   *     or a {@code kvcache.gpu.*} system property that is malformed or out of range
   */
  public DeviceKVCache(ClContext cl, AttentionShape shape, int capacity) {
    this(cl, shape, capacity, GpuTuning.fromSystemProperties());
  }

  /**
   * @param cl       the device context (not closed by this cache)
   * @param shape    layers, query heads, KV heads, head dimension (a power of two in [16, 128])
   * @param capacity most tokens per layer, 1 to {@link #MAX_CAPACITY}
   * @param tuning   launch parameters of the kernels
   * @throws IllegalArgumentException for a capacity below 1, a head dimension the kernels do not take, a
   *     tuning the device cannot run (local memory, work-group size), or {@link GpuTuning.Prefill#MMA}
   *     on a device without NVIDIA tensor-core support
   */
  public DeviceKVCache(ClContext cl, AttentionShape shape, int capacity, GpuTuning tuning) {
    if (cl == null || shape == null || tuning == null) {
      throw new IllegalArgumentException("cl, shape and tuning must not be null, got " + cl + ", " + shape + ", "
          + tuning);
    }
    checkCapacity(capacity);
    int hd = shape.headDim();
    if (hd < 16 || hd > 128 || Integer.bitCount(hd) != 1) {
      throw new IllegalArgumentException("headDim must be a power of two in [16, 128] for the GPU kernels, got " + hd);
    }
    this.cl = cl;
    this.shape = shape;
    this.d = shape.headDim();
    this.kvh = shape.kvHeads();
    this.group = shape.groupSize();
    this.capPages = (capacity + PAGE - 1) / PAGE;
    this.capacity = capPages * PAGE;
    this.tuning = tuning;
    int wg = tuning.decodeWorkGroup(), vw = tuning.decodeVector();
    if (d / vw > wg) {
      throw new IllegalArgumentException("decodeWorkGroup=" + wg + " must be at least headDim/decodeVector="
          + d / vw);
    }
    if (wg > cl.maxWorkGroupSize()) {
      throw new IllegalArgumentException("decodeWorkGroup=" + wg + " exceeds the device's largest work-group, "
          + cl.maxWorkGroupSize());
    }
    this.chunkMax = decodeChunkMax(cl, tuning, group, d, 0);
    long slen = decodeScoreFloats(group, d, wg, vw, chunkMax);
    if (tuning.prefill() == GpuTuning.Prefill.MMA && cl.computeCapability() < 80) {
      throw new IllegalArgumentException("prefill=" + tuning.prefill() + " needs an NVIDIA device of compute "
          + "capability 8.0 or more (inline PTX mma.sync); " + cl.deviceName() + " on " + cl.platformName()
          + " reports " + (cl.computeCapability() == 0 ? "none"
              : cl.computeCapability() / 10 + "." + cl.computeCapability() % 10));
    }
    GpuTuning.Prefill kind = switch (tuning.prefill()) {
      case SIMT -> GpuTuning.Prefill.SIMT;
      case AUTO -> cl.computeCapability() >= 80 ? GpuTuning.Prefill.MMA : GpuTuning.Prefill.SIMT;
      case MMA -> GpuTuning.Prefill.MMA;
    };
    if (kind == GpuTuning.Prefill.SIMT && portablePrefillLocalBytes(d) > cl.localMemBytes()) {
      // OpenCL only promises 32 KiB; the portable tile needs 35,904 bytes at head dim 128.
      throw new IllegalArgumentException("the portable prefill kernel at headDim " + d + " needs "
          + portablePrefillLocalBytes(d) + " bytes of local memory; " + cl.deviceName() + " has "
          + cl.localMemBytes());
    }
    opts = "-cl-mad-enable -DD=" + d + " -DG=" + group + " -DKVH=" + kvh + " -DWG=" + wg + " -DCHUNK="
        + chunkMax + " -DVW=" + vw + " -DSLEN=" + slen + " -DRWG=" + reduceGroup(cl) + extraBuildOptions();
    int layers = shape.layers();
    kv = new ClBuffer[layers];
    pos = new ClBuffer[layers];
    size = new int[layers];
    staged1 = new short[2 * kvh * d];
    ClKernel a = null, p = null, r = null, f = null;
    ClBuffer m = null;
    try {
      a = cl.kernel(SOURCE, opts, "append_kv");
      p = cl.kernel(SOURCE, opts, "decode_partial");
      r = cl.kernel(SOURCE, opts, "decode_reduce");
      f = kind == GpuTuning.Prefill.MMA ? mmaKernel(cl, opts, tuning.prefill() == GpuTuning.Prefill.AUTO) : null;
      if (f == null) {
        kind = GpuTuning.Prefill.SIMT;
        f = cl.kernel(SOURCE, opts, "prefill");
      }
      m = cl.buffer(4);
      for (int l = 0; l < layers; l++) {
        kv[l] = cl.buffer(2L * kvh * capPages * 2L * d * PAGE);
        pos[l] = cl.buffer(4L * this.capacity);
      }
    } catch (RuntimeException e) {
      for (AutoCloseable c : new AutoCloseable[] {a, p, r, f, m}) {
        closeQuietly(c);
      }
      for (int l = 0; l < layers; l++) {
        closeQuietly(kv[l]);
        closeQuietly(pos[l]);
      }
      throw e;
    }
    prefillKind = kind;
    append = a;
    partial = p;
    reduce = r;
    prefill = f;
    dummyMap = m;
  }

  /**
   * The tensor-core prefill kernel; when it was chosen automatically and the driver's compiler rejects
   * its inline PTX, null after one log line, so the portable kernel (also f32-accurate) runs instead.
   * Asked for explicitly, a build failure propagates.
   */
  private static ClKernel mmaKernel(ClContext cl, String opts, boolean automatic) {
    try {
      return cl.kernel(SOURCE, opts + " -DMMA", "prefill_mma");
    } catch (ClException e) {
      if (!automatic) {
        throw e;
      }
      System.getLogger(DeviceKVCache.class.getName()).log(System.Logger.Level.WARNING,
          "kvcache gpu: the tensor-core prefill kernel does not build on " + cl.deviceName()
              + "; using the portable kernel (" + e.getMessage().lines().findFirst().orElse("") + ")");
      return null;
    }
  }

  /**
   * The most tokens a decode work-group takes: the tuning's chunk, or automatically the largest multiple
   * of the work-group up to 2048 whose scores fit in local memory beside {@code extraLocalBytes}.
   *
   * @throws IllegalArgumentException when even that chunk does not fit
   */
  static int decodeChunkMax(ClContext cl, GpuTuning tuning, int group, int d, long extraLocalBytes) {
    int wg = tuning.decodeWorkGroup(), vw = tuning.decodeVector();
    // The scores of a chunk, later the value streams' partial outputs, share one local array.
    int chunkMax = tuning.decodeChunk();
    if (chunkMax == 0) {
      chunkMax = Math.max(wg, 2048 / wg * wg);
      while (chunkMax > wg && decodeLocalBytes(group, d, wg, vw, chunkMax) + extraLocalBytes > cl.localMemBytes()) {
        chunkMax -= wg;
      }
    }
    long localNeed = decodeLocalBytes(group, d, wg, vw, chunkMax) + extraLocalBytes;
    if (localNeed > cl.localMemBytes()) {
      throw new IllegalArgumentException("GQA group " + group + " with "
          + (tuning.decodeChunk() == 0 ? "the smallest automatic decode chunk, " : "decodeChunk=") + chunkMax + ", needs "
          + localNeed + " bytes of local memory for decode, the device has " + cl.localMemBytes());
    }
    return chunkMax;
  }

  /**
   * Closes every one of {@code cs} (nulls skipped), even when some fail, then throws the first failure:
   * one buffer the driver would not release must not leak all the others.
   */
  static void closeAll(java.util.List<? extends AutoCloseable> cs) {
    RuntimeException first = null;
    for (AutoCloseable c : cs) {
      if (c == null) {
        continue;
      }
      try {
        c.close();
      } catch (Exception e) {
        if (first == null) {
          first = e instanceof RuntimeException re ? re : new IllegalStateException(e);
        }
      }
    }
    if (first != null) {
      throw first;
    }
  }

  static void closeQuietly(AutoCloseable c) {
    if (c != null) {
      try {
        c.close();
      } catch (Exception ignored) {
        // already failing; the first exception is the one that matters
      }
    }
  }

  /** Local memory of the portable prefill kernel (attention.cl: Qs, Ks, Vs, S and the per-row arrays). */
  static long portablePrefillLocalBytes(int d) {
    int bq = 32, pt = PAGE;
    return 4L * (bq * (d + 4) + 2L * d * pt + bq * pt + 3 * bq) + 4L * (pt + bq);
  }

  /** Local memory of decode_partial: the query group, the scores (or the value streams' outputs), a reduction. */
  static long decodeLocalBytes(int group, int d, int wg, int vw, int chunk) {
    return 4L * (group * d + decodeScoreFloats(group, d, wg, vw, chunk) + (long) group * wg);
  }

  /** SLEN: floats of the local array holding a chunk's scores, later the value streams' partial outputs. */
  static long decodeScoreFloats(int group, int d, int wg, int vw, int chunk) {
    return Math.max((long) group * chunk, (long) group * (wg / (d / vw)) * d);
  }

  /** @return the launch parameters this cache was built with */
  public GpuTuning tuning() {
    return tuning;
  }

  /**
   * @return the causal prefill kernel in use: {@code "mma-2xf16"} (tensor cores) or {@code "simt-f32"}
   */
  public String prefillKernel() {
    return switch (prefillKind) {
      case MMA -> "mma-2xf16";
      default -> "simt-f32";
    };
  }

  /** @return the shape */
  public AttentionShape shape() {
    return shape;
  }

  /** @return tokens one layer holds at most */
  public int capacity() {
    return capacity;
  }

  /**
   * @param layer a layer
   * @return tokens stored in it
   */
  public int size(int layer) {
    checkLayer(layer);
    return size[layer];
  }

  /** @return bytes of device memory held for keys, values and positions */
  public long deviceBytes() {
    return keyValueBytes() + positionBytes();
  }

  /** @return bytes of device memory held for keys and values: every layer at capacity, from creation */
  long keyValueBytes() {
    long b = 0;
    for (ClBuffer buffer : kv) {
      b += buffer.bytes();
    }
    return b;
  }

  /** @return bytes of device memory held for the tokens' positions, 4 per slot of capacity */
  long positionBytes() {
    long b = 0;
    for (ClBuffer buffer : pos) {
      b += buffer.bytes();
    }
    return b;
  }

  /**
   * Device time of the kernels that the last {@link #decode} or {@link #attend} ran (profiling events),
   * excluding the uploads and the read-back.
   *
   * @return nanoseconds
   * @throws IllegalStateException when the context was opened without profiling
   */
  public long lastKernelNanos() {
    requireProfiling(cl);
    return lastNanos;
  }

  private void checkLayer(int layer) {
    if (closed) {
      throw new IllegalStateException("DeviceKVCache is closed");
    }
    if (layer < 0 || layer >= kv.length) {
      throw new IndexOutOfBoundsException("layer must be in [0, " + kv.length + "), got " + layer);
    }
  }

  private ClBuffer ensure(ClBuffer b, long bytes) {
    return ensure(cl, b, bytes);
  }

  /** {@code b} if it holds {@code bytes}, else a new buffer of at least that size ({@code b} closed). */
  static ClBuffer ensure(ClContext cl, ClBuffer b, long bytes) {
    if (b != null && b.bytes() >= bytes) {
      return b;
    }
    // The new buffer first: if it cannot be had, the caller keeps its old one, still open, rather than
    // a closed buffer that every later call would hand to the device.
    ClBuffer bigger = cl.buffer(Math.max(bytes, 64));
    if (b != null) {
      b.close();
    }
    return bigger;
  }

  /**
   * What {@link #append} would refuse, checked without storing anything: lengths, the layer's capacity,
   * the f16 range and the positions ({@code GpuKVCache} checks a decode's token before it ends the prompt).
   */
  void checkAppend(int layer, int tokens, float[] k, float[] v, int[] positions) {
    checkLayer(layer);
    int w = kvh * d;
    if (tokens < 0 || k.length < (long) tokens * w || v.length < (long) tokens * w || positions.length < tokens) {
      throw new IllegalArgumentException("append needs tokens >= 0 and k, v of tokens * " + w
          + " floats and tokens positions; got tokens=" + tokens + ", k=" + k.length + ", v=" + v.length
          + ", positions=" + positions.length);
    }
    if (size[layer] + tokens > capacity) {
      throw new IllegalArgumentException("layer " + layer + " holds " + size[layer] + " of " + capacity
          + " tokens; cannot append " + tokens);
    }
    // Checked before anything is stored, as the CPU cache does: f16 turns these into inf or NaN.
    for (int i = 0; i < tokens * w; i++) {
      if (!(Math.abs(k[i]) <= F16_MAX) || !(Math.abs(v[i]) <= F16_MAX)) {
        throw new IllegalArgumentException("k and v must be finite and within the f16 range (|x| <= 65504); "
            + "at index " + i + " k=" + k[i] + ", v=" + v[i]);
      }
    }
    for (int t = 0; t < tokens; t++) {
      // Integer.MAX_VALUE marks an empty slot in the kernels, as HeadStore.EMPTY does on the CPU.
      if (positions[t] < 0 || positions[t] == Integer.MAX_VALUE) {
        throw new IllegalArgumentException("positions[" + t + "] must be in [0, " + Integer.MAX_VALUE + "), got "
            + positions[t]);
      }
    }
  }

  /**
   * Appends tokens to a layer: their keys and values, {@code [t][kvHead][headDim]}, and positions.
   * Only these tokens travel to the device.
   *
   * @param layer     the layer
   * @param tokens    how many, at least 0
   * @param k         keys, {@code tokens * kvHeads * headDim} floats, finite and within the f16 range
   * @param v         values, same layout
   * @param positions positions, {@code tokens} of them, in {@code [0, Integer.MAX_VALUE)}
   * @throws IllegalArgumentException for wrong lengths, values outside the f16 range, a position out of
   *     range, or when the layer would exceed its capacity
   */
  public void append(int layer, int tokens, float[] k, float[] v, int[] positions) {
    checkAppend(layer, tokens, k, v, positions);
    appendChecked(layer, tokens, k, v, positions);
  }

  /** {@link #append} of what {@link #checkAppend} has passed. */
  void appendChecked(int layer, int tokens, float[] k, float[] v, int[] positions) {
    if (tokens == 0) {
      return;
    }
    int w = kvh * d;
    // A decode's one token reuses the cache's staging array; a prompt's chunk gets its own.
    short[] staged = tokens == 1 ? staged1 : new short[tokens * 2 * w];
    for (int t = 0; t < tokens; t++) {
      for (int h = 0; h < kvh; h++) {
        int dst = (t * kvh + h) * 2 * d;
        int src = t * w + h * d;
        for (int c = 0; c < d; c++) {
          staged[dst + c] = Float.floatToFloat16(k[src + c]);
          staged[dst + d + c] = Float.floatToFloat16(v[src + c]);
        }
      }
    }
    stage = ensure(stage, 2L * staged.length);
    stagePos = ensure(stagePos, 4L * tokens);
    cl.write(stage, 0, staged);
    cl.write(stagePos, 0, firstPositions(positions, tokens));
    long items = (long) tokens * w;
    append.arg(0, kv[layer]).arg(1, pos[layer]).arg(2, stage).arg(3, stagePos).arg(4, size[layer]).arg(5, tokens)
        .arg(6, capPages);
    append.run(new long[] {roundUp(items, 64)}, new long[] {64});
    int first = size[layer];
    size[layer] += tokens;
    for (AppendListener l : listeners) {
      l.appended(layer, first, tokens);
    }
  }

  /** Told after each append, so that derived device data (page summaries) follows the cache. */
  interface AppendListener {
    void appended(int layer, int firstSlot, int tokens);
  }

  private final List<AppendListener> listeners = new ArrayList<>();

  void listen(AppendListener l) {
    listeners.add(l);
  }

  static long roundUp(long x, long m) {
    return (x + m - 1) / m * m;
  }

  /**
   * Decode attention of one token's query heads over a layer.
   *
   * @param layer    the layer
   * @param q        queries, {@code queryHeads * headDim} floats
   * @param position the query's position: slots at or before it are visible
   * @param out      outputs, same layout as {@code q}
   */
  public void decode(int layer, float[] q, int position, float[] out) {
    checkLayer(layer);
    run(layer, q, position, out, partial, dummyMap, 0, size[layer]);
  }

  /** Runs decode_partial (dense or sparse) then decode_reduce; n is the number of logical tokens. */
  void run(int layer, float[] q, int position, float[] out, ClKernel part, ClBuffer map, int mapStride, int n) {
    discardEvents(events);
    checkLayer(layer);
    int hq = shape.queryHeads();
    checkQuery(q, out);
    if (q.length != hq * d || out.length != hq * d) {
      throw new IllegalArgumentException("q and out must have queryHeads * headDim = " + hq * d + " floats, got "
          + q.length + " and " + out.length);
    }
    // Enough splits to give every compute unit a few work-groups, no chunk over decodeChunk tokens.
    int wg = tuning.decodeWorkGroup();
    int target = Math.max(1, tuning.splitsPerCu() * cl.computeUnits() / kvh);
    int chunk = Math.max(wg, (int) roundUp((n + target - 1) / target, wg));
    chunk = Math.min(chunk, chunkMax);
    int nsplit = Math.max(1, (n + chunk - 1) / chunk);
    qBuf = ensure(qBuf, 4L * hq * d);
    outBuf = ensure(outBuf, 4L * hq * d);
    partBuf = ensure(partBuf, 4L * kvh * nsplit * group * (d + 2));
    if (!qOnDevice) {
      cl.write(qBuf, 0, q);
    }
    qOnDevice = false;
    part.arg(0, kv[layer]).arg(1, pos[layer]).arg(2, n).arg(3, capPages).arg(4, qBuf).arg(5, shape.scale())
        .arg(6, position).arg(7, chunk).arg(8, map).arg(9, mapStride).arg(10, size[layer]).arg(11, partBuf)
        .arg(12, 0).arg(13, nsplit);
    launch(cl, part, new long[] {(long) nsplit * wg, kvh}, new long[] {wg, 1}, events);
    launchReduce(cl, reduce, partBuf, nsplit, outBuf, hq, d, events);
    cl.read(outBuf, 0, out);
    collect();
  }

  void checkQuery(float[] q, float[] out) {
    int w = shape.queryHeads() * d;
    if (q.length != w || out.length != w) {
      throw new IllegalArgumentException("q and out must have queryHeads * headDim = " + w + " floats, got "
          + q.length + " and " + out.length);
    }
    // The CPU cache refuses a NaN or infinite query; the kernels would turn it into NaN outputs.
    io.kvcache.core.Checks.finite("q", q, 0, w);
  }

  ClBuffer queryBuffer(float[] q) {
    qBuf = ensure(qBuf, 4L * q.length);
    cl.write(qBuf, 0, q);
    qOnDevice = true;
    return qBuf;
  }

  String options() {
    return opts;
  }

  /** Enqueues a kernel of this cache's decode (the top-k decoder's passes), timed with the rest. */
  void launch(ClKernel k, long[] global, long[] local) {
    launch(cl, k, global, local, events);
  }

  /** Sums the device time of the events of this call, then releases them. */
  void collect() {
    long t = 0;
    try {
      for (ClEvent e : events) {
        t += e.elapsedNanos();
      }
      lastNanos = t;
    } finally {
      discardEvents(events); // also when a timing read failed: the next call starts with none
    }
  }

  /** Closes and forgets {@code events}: a call that failed half way must not leave its events to the next. */
  static void discardEvents(List<ClEvent> events) {
    for (ClEvent e : events) {
      closeQuietly(e);
    }
    events.clear();
  }

  /**
   * Causal attention of {@code tokens} query tokens over a layer (prefill): row {@code (t, head)} of
   * {@code q} and {@code out} is at {@code (t * queryHeads + head) * headDim}; token {@code t} sees the
   * slots whose position is at most {@code positions[t]}.
   *
   * @param layer     the layer
   * @param tokens    query tokens, at least 0
   * @param q         queries
   * @param positions their positions
   * @param out       outputs
   */
  public void attend(int layer, int tokens, float[] q, int[] positions, float[] out) {
    checkLayer(layer);
    int w = shape.queryHeads() * d;
    if (tokens < 0 || q.length < (long) tokens * w || out.length < (long) tokens * w || positions.length < tokens) {
      throw new IllegalArgumentException("attend needs q and out of tokens * " + w + " floats and tokens positions;"
          + " got tokens=" + tokens + ", q=" + q.length + ", out=" + out.length + ", positions=" + positions.length);
    }
    if (tokens == 0) {
      return;
    }
    io.kvcache.core.Checks.finite("q", q, 0, tokens * w);
    discardEvents(events);
    qBuf = ensure(qBuf, 4L * tokens * w);
    outBuf = ensure(outBuf, 4L * tokens * w);
    stagePos = ensure(stagePos, 4L * tokens);
    cl.write(qBuf, 0, tokens * w == q.length ? q : java.util.Arrays.copyOf(q, tokens * w));
    cl.write(stagePos, 0, firstPositions(positions, tokens));
    prefill.arg(0, kv[layer]).arg(1, pos[layer]).arg(2, size[layer]).arg(3, capPages).arg(4, qBuf).arg(5, stagePos)
        .arg(6, tokens).arg(7, shape.scale()).arg(8, outBuf);
    if (prefillKind != GpuTuning.Prefill.SIMT) { // (query head, 64-row block), blocks reversed in the kernel
      launch(cl, prefill, new long[] {128L * shape.queryHeads(), roundUp(tokens, 64) / 64}, new long[] {128, 1},
          events);
    } else {
      launch(cl, prefill, new long[] {roundUp(tokens, 32) / 32 * 128, shape.queryHeads()}, new long[] {128, 1}, events);
    }
    float[] res = new float[tokens * w];
    cl.read(outBuf, 0, res);
    System.arraycopy(res, 0, out, 0, res.length);
    collect();
  }

  ClContext context() {
    return cl;
  }

  ClBuffer kvBuffer(int layer) {
    return kv[layer];
  }

  ClBuffer posBuffer(int layer) {
    return pos[layer];
  }

  int capPages() {
    return capPages;
  }

  /** Releases the device memory and kernels; the context stays open. Idempotent. */
  @Override
  public void close() {
    if (closed) {
      return;
    }
    closed = true;
    discardEvents(events);
    // Buffers not yet grown are null (closeAll skips them).
    List<AutoCloseable> all = new ArrayList<>(java.util.Arrays.asList(append, partial, reduce, prefill, dummyMap,
        stage, stagePos, qBuf, outBuf, partBuf));
    for (int l = 0; l < kv.length; l++) {
      all.add(kv[l]);
      all.add(pos[l]);
    }
    closeAll(all);
  }
}
