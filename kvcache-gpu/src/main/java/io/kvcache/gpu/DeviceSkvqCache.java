package io.kvcache.gpu;

import io.kvcache.codec.HeadStore;
import io.kvcache.core.AttentionShape;
import io.kvcache.gpu.cl.ClBuffer;
import io.kvcache.gpu.cl.ClContext;
import io.kvcache.gpu.cl.ClEvent;
import io.kvcache.gpu.cl.ClKernel;
import io.kvcache.skvq.SkvqCodec;
import io.kvcache.skvq.SkvqConfig;
import io.kvcache.skvq.SkvqPages;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * One sequence's keys and values under SKVQ (K 2 bits, V 1.5 bits) with decode attention on an OpenCL
 * device that reads the codes where they lie: SKVQ's fused decode (docs/skvq.md) on a device whose
 * f16 decode is bound by memory bandwidth, where reading 7x fewer bytes can pay.
 *
 * <p>The host keeps, per layer and KV head, the core codec's own store ({@link SkvqCodec#newStore}):
 * it calibrates, applies the window rule and chooses every code, so the device holds exactly the codes
 * the CPU path attends over. After each {@link #append} the device mirrors them: pages whose quantized
 * slots changed are uploaded as 2-bit code fields (the ternary value codes, 0 to 2, in 2-bit fields too:
 * 72 bytes per token and KV head at head dim 128 and groups of 128, against the CPU store's 66), with
 * binary16 scales and zero points, and the full-precision tokens (sinks and the window) go to a small
 * ring of binary16 pages. {@link #decode} runs a flash-decoding pass over the codes (on tensor cores on
 * NVIDIA devices of compute capability 8.0 or more, {@code skvq_decode_mma}; elsewhere in portable f32,
 * {@code skvq_decode_partial}), one over the ring (on tensor cores, the first work-groups of the same
 * launch), and the shared reduction; queries are permuted into
 * the stores' channel order and outputs permuted back. Both passes are exact up to f32 rounding against
 * attention over the dequantized cache ({@code DeviceSkvqCacheTest}).
 *
 * <p>Limits, each an {@link IllegalArgumentException} when crossed: key width 2 and value width 1.5 (the
 * paper's default; other widths run on the CPU codec); head dimension a power of two in [16, 128];
 * tokens appended in order, no retention policy (nothing is evicted); a decode query sees every token
 * held. One thread at a time; close it to free the device memory.
 */
public final class DeviceSkvqCache implements AutoCloseable {

  private static final int P = DeviceKVCache.PAGE;
  /**
   * Largest |value| the tensor-core pass takes: it forms code times scale in binary16, and codes reach 2,
   * so a value group's range must stay within 32768.
   */
  static final float MMA_VALUE_MAX = 16384f;

  private final ClContext cl;
  private final AttentionShape shape;
  private final SkvqConfig config;
  private final int d, kvh, group, capPages, capacity;
  private final int nkg, nvg, ring, ringPages;
  /** Whether decode runs the tensor-core code pass ({@code skvq_decode_mma}) rather than the portable one. */
  private final boolean mma;
  private final HeadStore[][] stores;
  private final int[][] uploadedMask;
  private final int[] quantPages;
  /** Per layer: pages [1, stable) are wholly quantized and uploaded; nothing appended changes them again. */
  private final int[] stable;
  private final int[] size;
  private final int[] maxPos;
  private final int[][] ringOwner;
  private final boolean[] calibrated;
  /** The stores' permutations per layer and KV head: identity until calibration, then final. */
  private final int[][][] kPerm, vPerm;
  /**
   * Per layer: whether every KV head's key (value) permutation is the identity, as it is whenever a
   * group spans the head (the default groups of 128 at head dim 128: nothing to reorder), so that decode
   * copies the query and reads the outputs straight into place instead of gathering and scattering.
   */
  private final boolean[] kIdentity, vIdentity;
  /** Decode scratch: the permuted query, its per-group sums and factors, the permuted output. */
  private final float[] qScratch, outScratch;
  private final ClBuffer[] kq, ksc, kzr, vq, vsc, vzr, qmask, ringKv, ringPos;
  private final ClKernel skvq, dense, reduce;
  private final ClBuffer dummyMap;
  private final GpuTuning tuning;
  private final int chunkMax;
  private ClBuffer qPerm, outBuf, partBuf;
  private final List<ClEvent> events = new ArrayList<>();
  private long lastNanos;
  private final long[] lastPass = new long[3];
  private boolean closed;

  /**
   * @param cl       the device context (not closed by this cache)
   * @param shape    layers, query heads, KV heads, head dimension (a power of two in [16, 128])
   * @param capacity most tokens per layer, 1 to {@link DeviceKVCache#MAX_CAPACITY}
   * @param config   SKVQ settings with {@code keyBits} 2 and {@code valueBits} 1.5
   * @throws IllegalArgumentException for another width, capacity or head dimension, as above
   */
  public DeviceSkvqCache(ClContext cl, AttentionShape shape, int capacity, SkvqConfig config) {
    this(cl, shape, capacity, config, GpuTuning.fromSystemProperties());
  }

  /**
   * @param cl       the device context (not closed by this cache)
   * @param shape    layers, query heads, KV heads, head dimension (a power of two in [16, 128])
   * @param capacity most tokens per layer, 1 to {@link DeviceKVCache#MAX_CAPACITY}
   * @param config   SKVQ settings with {@code keyBits} 2 and {@code valueBits} 1.5
   * @param tuning   launch parameters (work-group, chunk, splits per compute unit) of the decode kernels
   * @throws IllegalArgumentException for another width, capacity or head dimension, or a tuning the device
   *     cannot run
   */
  public DeviceSkvqCache(ClContext cl, AttentionShape shape, int capacity, SkvqConfig config, GpuTuning tuning) {
    if (cl == null || shape == null || config == null || tuning == null) {
      throw new IllegalArgumentException("cl, shape, config and tuning must not be null, got " + cl + ", " + shape
          + ", " + config + ", " + tuning);
    }
    if (config.keyBits() != 2 || config.valueBits() != 1.5) {
      throw new IllegalArgumentException("DeviceSkvqCache takes keyBits 2 and valueBits 1.5 (the paper's default),"
          + " got keyBits=" + config.keyBits() + " valueBits=" + config.valueBits());
    }
    DeviceKVCache.checkCapacity(capacity);
    int hd = shape.headDim();
    if (hd < 16 || hd > 128 || Integer.bitCount(hd) != 1) {
      throw new IllegalArgumentException("headDim must be a power of two in [16, 128] for the GPU kernels, got " + hd);
    }
    this.cl = cl;
    this.shape = shape;
    this.config = config;
    this.tuning = tuning;
    this.d = hd;
    this.kvh = shape.kvHeads();
    this.group = shape.groupSize();
    this.capPages = (capacity + P - 1) / P;
    this.capacity = capPages * P;
    int kGroup = Math.min(config.keyGroup(), d), vGroup = Math.min(config.valueGroup(), d);
    if (kGroup % P != 0) {
      throw new IllegalArgumentException("keyGroup must be a multiple of 16 (the device's key words hold 16 "
          + "channels) or at least headDim=" + d + ", got " + config.keyGroup());
    }
    if (config.sinks() > P) {
      // Sinks beyond the first page would keep a second page in binary16 for good, outside the ring.
      throw new IllegalArgumentException("sinks must be <= 16 for the device cache, got " + config.sinks());
    }
    this.nkg = (d + kGroup - 1) / kGroup;
    this.nvg = (d + vGroup - 1) / vGroup;
    // Pages that can hold full-precision tokens besides page 0 (the sinks): the window's positions span
    // at most ceil(window / 16) + 1 pages; a ring of one more never overwrites a page whose tokens are
    // not yet quantized (checked on every append).
    this.ring = (config.window() + 15) / P + 2;
    this.ringPages = 1 + ring;
    int wg = tuning.decodeWorkGroup(), vw = tuning.decodeVector();
    if (wg < d || wg > cl.maxWorkGroupSize()) {
      throw new IllegalArgumentException("decodeWorkGroup=" + wg + " must be in [headDim=" + d + ", "
          + cl.maxWorkGroupSize() + "] for the SKVQ value pass (a work-item per channel)");
    }
    // Beside decode_partial's local arrays, the code pass keeps sum(q) per head and key group.
    int chunk = DeviceKVCache.decodeChunkMax(cl, tuning, group, d, 4L * group * nkg);
    this.chunkMax = chunk;
    // Tensor cores where NVIDIA's OpenCL reaches them (compute capability 8.0+), for groups of whole
    // 16-channel steps and GQA groups of at most 8 (the product's 8 columns); the portable pass elsewhere.
    boolean mma = cl.computeCapability() >= 80 && kGroup % 16 == 0 && d % kGroup == 0 && vGroup % 16 == 0
        && d % vGroup == 0 && group <= 8 && !decodeForcedSimt();
    String opts = (mma ? "-DMMA " : "") + "-cl-mad-enable -DD=" + d + " -DG=" + group + " -DKVH=" + kvh
        + " -DWG=" + wg + " -DCHUNK=" + chunk
        + " -DVW=" + vw + " -DSLEN=" + DeviceKVCache.decodeScoreFloats(group, d, wg, vw, chunk) + " -DKGRP=" + kGroup + " -DNKG=" + nkg
        + " -DVGRP=" + vGroup + " -DNVG=" + nvg + " -DRWG=" + DeviceKVCache.reduceGroup(cl)
        + DeviceKVCache.extraBuildOptions();
    int layers = shape.layers();
    stores = new HeadStore[layers][kvh];
    SkvqCodec codec = SkvqCodec.of(config);
    for (int l = 0; l < layers; l++) {
      for (int h = 0; h < kvh; h++) {
        stores[l][h] = codec.newStore(d);
      }
    }
    uploadedMask = new int[layers][capPages];
    quantPages = new int[layers];
    stable = new int[layers];
    Arrays.fill(stable, 1);
    size = new int[layers];
    maxPos = new int[layers];
    Arrays.fill(maxPos, -1);
    ringOwner = new int[layers][ringPages];
    for (int[] o : ringOwner) {
      Arrays.fill(o, -1);
    }
    calibrated = new boolean[layers];
    kPerm = new int[layers][kvh][];
    vPerm = new int[layers][kvh][];
    kIdentity = new boolean[layers];
    vIdentity = new boolean[layers];
    for (int l = 0; l < layers; l++) {
      refreshPermutations(l);
    }
    int hq = shape.queryHeads();
    // The permuted queries, then (one upload with them) the kernels' per-head sums and factors.
    qScratch = new float[hq * d + hq * nkg + hq];
    outScratch = new float[hq * d];
    kq = new ClBuffer[layers];
    ksc = new ClBuffer[layers];
    kzr = new ClBuffer[layers];
    vq = new ClBuffer[layers];
    vsc = new ClBuffer[layers];
    vzr = new ClBuffer[layers];
    qmask = new ClBuffer[layers];
    ringKv = new ClBuffer[layers];
    ringPos = new ClBuffer[layers];
    List<AutoCloseable> made = new ArrayList<>();
    boolean useMma = mma;
    try {
      Object program;
      try {
        program = cl.program("skvq:" + opts, source("attention.cl") + "\n" + source("skvq.cl"), opts);
      } catch (io.kvcache.gpu.cl.ClException e) {
        if (!mma) {
          throw e;
        }
        // As the prefill kernel: where the driver's compiler rejects the inline PTX, the portable pass
        // (equally exact) runs instead, after one log line.
        System.getLogger(DeviceSkvqCache.class.getName()).log(System.Logger.Level.WARNING,
            "kvcache gpu: the tensor-core SKVQ kernel does not build on " + cl.deviceName()
                + "; using the portable one (" + e.getMessage().lines().findFirst().orElse("") + ")");
        useMma = false;
        String plain = opts.replace("-DMMA ", "");
        program = cl.program("skvq:" + plain, source("attention.cl") + "\n" + source("skvq.cl"), plain);
      }
      made.add(skvq = cl.kernel(program, useMma ? "skvq_decode_mma" : "skvq_decode_partial"));
      // (The tensor-core kernel takes the window itself.)
      made.add(dense = useMma ? null : cl.kernel(program, "decode_partial"));
      made.add(reduce = cl.kernel(program, "decode_reduce"));
      made.add(dummyMap = cl.buffer(4));
      long pages = (long) kvh * capPages;
      short[] zeroRing = new short[kvh * ringPages * 2 * d * P];
      int[] hiddenPos = new int[ringPages * P];
      Arrays.fill(hiddenPos, Integer.MAX_VALUE);
      for (int l = 0; l < layers; l++) {
        made.add(kq[l] = cl.buffer(4L * pages * d));
        made.add(ksc[l] = cl.buffer(2L * pages * nkg * P));
        made.add(kzr[l] = cl.buffer(2L * pages * nkg * P));
        made.add(vq[l] = cl.buffer(4L * pages * d));
        made.add(vsc[l] = cl.buffer(2L * pages * nvg * P));
        made.add(vzr[l] = cl.buffer(2L * pages * nvg * P));
        made.add(qmask[l] = cl.buffer(2L * pages));
        made.add(ringKv[l] = cl.buffer(2L * zeroRing.length));
        made.add(ringPos[l] = cl.buffer(4L * hiddenPos.length));
        // The dense kernel loads a ring slot's value whatever its weight (0 for a hidden one), so the
        // ring starts as zeros rather than whatever the allocation held (NaN times 0 is NaN).
        cl.write(ringKv[l], 0, zeroRing);
        cl.write(ringPos[l], 0, hiddenPos);
        // No slot counts as a code until its page is uploaded (page 0 never is while it holds sinks only).
        cl.write(qmask[l], 0, new short[kvh * capPages]);
        // Yet the code pass reads page 0 whenever later pages hold codes, and its hidden slots weigh 0:
        // with 16 sinks (a page of sinks only, never uploaded) its codes, scales and zero points must be
        // numbers, not whatever the allocation held (0 times NaN is NaN).
        for (int h = 0; h < kvh; h++) {
          long first = (long) h * capPages;
          cl.write(kq[l], 4L * first * P * (d / P), new int[P * (d / P)]);
          cl.write(vq[l], 4L * first * d, new int[d]);
          cl.write(ksc[l], 2L * first * nkg * P, new short[nkg * P]);
          cl.write(kzr[l], 2L * first * nkg * P, new short[nkg * P]);
          cl.write(vsc[l], 2L * first * nvg * P, new short[nvg * P]);
          cl.write(vzr[l], 2L * first * nvg * P, new short[nvg * P]);
        }
      }
    } catch (RuntimeException e) {
      for (AutoCloseable c : made) {
        DeviceKVCache.closeQuietly(c);
      }
      throw e;
    }
    this.mma = useMma;
  }

  private static String source(String name) {
    try (InputStream in = DeviceSkvqCache.class.getResourceAsStream("/io/kvcache/gpu/" + name)) {
      if (in == null) {
        throw new IllegalStateException("OpenCL source resource not found: /io/kvcache/gpu/" + name);
      }
      return new String(in.readAllBytes(), StandardCharsets.UTF_8);
    } catch (IOException e) {
      throw new UncheckedIOException("cannot read OpenCL source " + name, e);
    }
  }

  /** @return the shape */
  public AttentionShape shape() {
    return shape;
  }

  /**
   * @return the code pass decode runs: {@code "mma-f16"} (tensor cores, NVIDIA compute capability 8.0 or
   *     more) or {@code "simt-f32"} (portable; also chosen with {@code -Dkvcache.gpu.skvqDecode=simt})
   */
  public String decodeKernel() {
    return mma ? "mma-f16" : "simt-f32";
  }

  /** @return the SKVQ settings */
  public SkvqConfig config() {
    return config;
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

  /**
   * The host store of one layer and KV head: the codec's own, which chose every code the device holds
   * (for tests and for reading the dequantized cache back). Read it only: appending to it, evicting or
   * compacting would leave the device's copy behind.
   *
   * @param layer  a layer
   * @param kvHead a KV head
   * @return the store
   */
  public HeadStore store(int layer, int kvHead) {
    checkLayer(layer);
    if (kvHead < 0 || kvHead >= kvh) {
      throw new IndexOutOfBoundsException("kvHead must be in [0, " + kvh + "), got " + kvHead);
    }
    return stores[layer][kvHead];
  }

  /**
   * @param layer a layer
   * @return tokens of the layer the device holds as codes (the rest, sinks and window, as binary16)
   */
  public int quantizedTokens(int layer) {
    checkLayer(layer);
    int t = 0;
    for (int p = 0; p < quantPages[layer]; p++) {
      t += Integer.bitCount(uploadedMask[layer][p]);
    }
    return t;
  }

  /** @return bytes of device memory held: codes, scales and zero points at capacity, and the f16 ring */
  public long deviceBytes() {
    long b = 0;
    for (int l = 0; l < kq.length; l++) {
      b += kq[l].bytes() + ksc[l].bytes() + kzr[l].bytes() + vq[l].bytes() + vsc[l].bytes() + vzr[l].bytes()
          + qmask[l].bytes() + ringKv[l].bytes()
          + ringPos[l].bytes();
    }
    return b;
  }

  /**
   * Device time of the kernels of the last {@link #decode} (profiling events), without the upload of the
   * query and the read-back.
   *
   * @return nanoseconds
   * @throws IllegalStateException when the context was opened without profiling
   */
  public long lastKernelNanos() {
    DeviceKVCache.requireProfiling(cl);
    return lastNanos;
  }

  /**
   * The device time of each kernel of the last {@link #decode}: the pass over the codes (0 when there
   * are none), the pass over the binary16 window and sinks, and the reduction that merges them. The
   * tensor-core kernel ({@link #decodeKernel()} {@code "mma-f16"}) takes the window and the codes in one
   * launch: its time is the first count, and the second is 0.
   *
   * @return three nanosecond counts, a new array
   * @throws IllegalStateException when the context was opened without profiling
   */
  public long[] lastPassNanos() {
    DeviceKVCache.requireProfiling(cl);
    return lastPass.clone();
  }

  private void checkLayer(int layer) {
    if (closed) {
      throw new IllegalStateException("DeviceSkvqCache is closed");
    }
    if (layer < 0 || layer >= stores.length) {
      throw new IndexOutOfBoundsException("layer must be in [0, " + stores.length + "), got " + layer);
    }
  }

  /**
   * Appends tokens to a layer, in order: the host stores quantize what leaves the window, then the device
   * receives the changed pages' codes and the full-precision tokens.
   *
   * @param layer     the layer
   * @param tokens    how many, at least 0
   * @param k         keys, {@code [t][kvHead][headDim]}, finite and within the f16 range
   * @param v         values, same layout
   * @param positions positions, increasing and above every position held
   * @throws IllegalArgumentException for wrong lengths, values the codec cannot store, positions out of
   *     order, or when the layer would exceed its capacity; nothing is stored then
   */
  public void append(int layer, int tokens, float[] k, float[] v, int[] positions) {
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
    for (int t = 0, last = maxPos[layer]; t < tokens; last = positions[t++]) {
      if (positions[t] == Integer.MAX_VALUE) { // the ring marks its hidden slots with it
        throw new IllegalArgumentException("positions[" + t + "] must be < Integer.MAX_VALUE, got " + positions[t]);
      }
      if (positions[t] <= last) {
        throw new IllegalArgumentException("positions must increase past " + last + " (the newest held), got positions["
            + t + "]=" + positions[t]);
      }
    }
    for (int t = 0; t < tokens; t++) {
      for (int h = 0; h < kvh; h++) {
        int off = t * w + h * d;
        for (int c = 0; c < d; c++) {
          if (!(Math.abs(k[off + c]) <= DeviceKVCache.F16_MAX) || !(Math.abs(v[off + c]) <= DeviceKVCache.F16_MAX)) {
            throw new IllegalArgumentException("k and v must be finite and within the f16 range (|x| <= 65504); "
                + "at index " + (off + c) + " k=" + k[off + c] + ", v=" + v[off + c]);
          }
          if (mma && !(Math.abs(v[off + c]) <= MMA_VALUE_MAX)) {
            throw new IllegalArgumentException("v must be within +-" + (int) MMA_VALUE_MAX + " on the tensor-core "
                + "path (code x scale in binary16; -Dkvcache.gpu.skvqDecode=simt takes the f16 range); at index "
                + (off + c) + " v=" + v[off + c]);
          }
        }
        stores[layer][h].checkEncodable(k, off, v, off);
      }
    }
    if (tokens == 0) {
      return;
    }
    HeadStore[] st = stores[layer];
    for (int t = 0; t < tokens; t++) {
      for (int h = 0; h < kvh; h++) {
        st[h].append(k, t * w + h * d, v, t * w + h * d, positions[t]);
      }
    }
    for (HeadStore s : st) {
      s.attentionDone(); // the window rule: pages that left the window are quantized now
    }
    int first = size[layer];
    size[layer] += tokens;
    maxPos[layer] = positions[tokens - 1];
    boolean nowCalibrated = ((SkvqPages) st[0]).calibrated();
    boolean recalibrated = nowCalibrated && !calibrated[layer];
    calibrated[layer] = nowCalibrated;
    if (recalibrated) {
      refreshPermutations(layer);
    }
    uploadQuantized(layer);
    uploadRing(layer, recalibrated ? 0 : first);
    int pages = st[0].pageCount();
    // Only whole pages: with a window of 0 the newest, partly filled page is quantized at once and
    // changes again when the next token arrives.
    while (stable[layer] < pages && (long) (stable[layer] + 1) * P <= size[layer]
        && fullSlots(layer, stable[layer]) == 0) {
      stable[layer]++;
    }
  }

  private void refreshPermutations(int layer) {
    boolean ki = true, vi = true;
    for (int h = 0; h < kvh; h++) {
      kPerm[layer][h] = ((SkvqPages) stores[layer][h]).keyPermutation();
      vPerm[layer][h] = ((SkvqPages) stores[layer][h]).valuePermutation();
      ki &= isIdentity(kPerm[layer][h]);
      vi &= isIdentity(vPerm[layer][h]);
    }
    kIdentity[layer] = ki;
    vIdentity[layer] = vi;
  }

  /** |x| as its bits, which order like the floats for finite values. */
  private static int magnitude(float x) {
    return Float.floatToRawIntBits(x) & 0x7FFFFFFF;
  }

  private static boolean isIdentity(int[] perm) {
    for (int i = 0; i < perm.length; i++) {
      if (perm[i] != i) {
        return false;
      }
    }
    return true;
  }

  /** Uploads every page whose quantized slots changed, in runs of consecutive pages, one write per array. */
  private void uploadQuantized(int layer) {
    HeadStore[] st = stores[layer];
    int pages = st[0].pageCount();
    if (mask(layer, 0) != uploadedMask[layer][0]) {
      uploadPages(layer, 0, 1);
      uploadedMask[layer][0] = mask(layer, 0);
      quantPages[layer] = Math.max(quantPages[layer], 1);
    }
    int p = Math.max(1, stable[layer]);
    while (p < pages) {
      if (mask(layer, p) == uploadedMask[layer][p]) {
        p++;
        continue;
      }
      int end = p + 1;
      while (end < pages && mask(layer, end) != uploadedMask[layer][end]) {
        end++;
      }
      uploadPages(layer, p, end);
      for (int q = p; q < end; q++) {
        uploadedMask[layer][q] = mask(layer, q);
        if (uploadedMask[layer][q] != 0) {
          quantPages[layer] = Math.max(quantPages[layer], q + 1);
        }
      }
      p = end;
    }
  }

  /** The page's quantized slots, the same for every KV head (the window rule goes by position alone). */
  private int mask(int layer, int page) {
    HeadStore[] st = stores[layer];
    int m = ((SkvqPages) st[0]).quantizedSlots(page);
    for (int h = 1; h < kvh; h++) {
      if (((SkvqPages) st[h]).quantizedSlots(page) != m) {
        throw new IllegalStateException("KV heads of layer " + layer + " quantized different slots of page " + page);
      }
    }
    return m;
  }

  /** Bit of field {@code i} (0..15) of a code word: the fragment order skvq.cl describes. */
  static int field(int i) {
    return 16 * (i & 1) + 8 * (i >> 3) + 2 * ((i & 7) >> 1);
  }

  private void uploadPages(int layer, int from, int to) {
    int n = to - from, steps = d / P;
    int[] kc = new int[d * P], vc = new int[d * P];
    float[] ks = new float[nkg * P], kz = new float[nkg * P], vs = new float[P * nvg], vz = new float[P * nvg];
    int[] kWords = new int[n * P * steps];
    int[] vWords = new int[n * d];
    short[] kSc = new short[n * nkg * P], kZr = new short[n * nkg * P];
    short[] vSc = new short[n * nvg * P], vZr = new short[n * nvg * P];
    short[] masks = new short[n];
    for (int h = 0; h < kvh; h++) {
      SkvqPages sp = (SkvqPages) stores[layer][h];
      for (int i = 0; i < n; i++) {
        int page = from + i;
        sp.readQuantizedPage(page, kc, vc, ks, kz, vs, vz);
        masks[i] = (short) sp.quantizedSlots(page);
        for (int j = 0; j < P; j++) {
          for (int st = 0; st < steps; st++) {
            int word = 0;
            for (int f = 0; f < P; f++) {
              word |= kc[(P * st + f) * P + j] << field(f);
            }
            kWords[(i * P + j) * steps + st] = word;
          }
        }
        for (int c = 0; c < d; c++) {
          int word = 0;
          for (int j = 0; j < P; j++) {
            word |= vc[j * d + c] << field(j);
          }
          vWords[i * d + (c % 8) * (d / 8) + c / 8] = word;
        }
        for (int g = 0; g < nkg; g++) {
          for (int j = 0; j < P; j++) {
            kSc[(i * nkg + g) * P + j] = Float.floatToFloat16(ks[g * P + j]);
            kZr[(i * nkg + g) * P + j] = Float.floatToFloat16(kz[g * P + j]);
          }
        }
        for (int g = 0; g < nvg; g++) {
          for (int j = 0; j < P; j++) {
            vSc[(i * nvg + g) * P + j] = Float.floatToFloat16(vs[j * nvg + g]);
            vZr[(i * nvg + g) * P + j] = Float.floatToFloat16(vz[j * nvg + g]);
          }
        }
      }
      long page0 = (long) h * capPages + from;
      cl.write(kq[layer], 4L * page0 * P * steps, kWords);
      cl.write(vq[layer], 4L * page0 * d, vWords);
      cl.write(ksc[layer], 2L * page0 * nkg * P, kSc);
      cl.write(kzr[layer], 2L * page0 * nkg * P, kZr);
      cl.write(vsc[layer], 2L * page0 * nvg * P, vSc);
      cl.write(vzr[layer], 2L * page0 * nvg * P, vZr);
      cl.write(qmask[layer], 2L * page0, masks);
    }
  }

  /**
   * Brings the f16 ring up to date: the positions of every full-precision token (hiding the rest), and
   * the keys and values of the pages holding tokens from slot {@code firstNew} on (every ring page after
   * calibration, whose value permutation applies to them).
   */
  private void uploadRing(int layer, int firstNew) {
    HeadStore[] st = stores[layer];
    int pages = st[0].pageCount();
    int[] pos = new int[ringPages * P];
    Arrays.fill(pos, Integer.MAX_VALUE);
    boolean[] dirty = new boolean[ringPages];
    int[] owner = ringOwner[layer];
    int lowest = pages;
    for (int p = stable[layer]; p < pages && lowest == pages; p++) {
      if (fullSlots(layer, p) != 0) {
        lowest = p;
      }
    }
    for (int p = 0; p < pages; p = p == 0 ? Math.max(1, stable[layer]) : p + 1) {
      int full = fullSlots(layer, p);
      if (full == 0) {
        continue;
      }
      int r = p == 0 ? 0 : 1 + p % ring;
      if (p != 0 && p - lowest >= ring) {
        throw new IllegalStateException("full-precision pages of layer " + layer + " span more than the ring's "
            + ring + " pages (pages " + lowest + " to " + p + ")");
      }
      if (owner[r] != p) {
        owner[r] = p;
        dirty[r] = true;
      }
      if ((long) p * P + P > firstNew) {
        dirty[r] = true;
      }
      for (int j = 0; j < P; j++) {
        if ((full & (1 << j)) != 0) {
          pos[r * P + j] = st[0].position(p * P + j);
        }
      }
    }
    float[] kr = new float[d], vr = new float[d];
    short[] page = new short[2 * d * P];
    for (int h = 0; h < kvh; h++) {
      int[] kp = kPerm[layer][h], vp = vPerm[layer][h];
      for (int r = 0; r < ringPages; r++) {
        if (!dirty[r]) {
          continue;
        }
        Arrays.fill(page, (short) 0);
        int p = owner[r];
        int full = fullSlots(layer, p);
        for (int j = 0; j < P; j++) {
          if ((full & (1 << j)) == 0) {
            continue;
          }
          st[h].readKey(p * P + j, kr, 0);
          st[h].readValue(p * P + j, vr, 0);
          for (int c = 0; c < d; c++) {
            // Keys and values in the stores' permuted orders, as the codes: one permuted query serves
            // both passes, and the two passes' outputs merge channel by channel.
            page[c * P + j] = Float.floatToFloat16(kr[kp[c]]);
            page[d * P + j * d + c] = Float.floatToFloat16(vr[vp[c]]);
          }
        }
        cl.write(ringKv[layer], 2L * ((long) h * ringPages + r) * 2 * d * P, page);
      }
    }
    cl.write(ringPos[layer], 0, pos);
  }

  /** Live slots of a page that are not quantized (the same for every KV head). */
  private int fullSlots(int layer, int page) {
    HeadStore s = stores[layer][0];
    int live = 0;
    for (int j = 0; j < P; j++) {
      if (s.position(page * P + j) != HeadStore.EMPTY) {
        live |= 1 << j;
      }
    }
    return live & ~((SkvqPages) s).quantizedSlots(page);
  }

  /**
   * Decode attention of one token's query heads over every token of a layer.
   *
   * @param layer    the layer
   * @param q        queries, {@code queryHeads * headDim} floats
   * @param position the query's position, at least the newest position held
   * @param out      outputs, same layout as {@code q}; zeros for an empty layer
   * @throws IllegalArgumentException for wrong lengths or a position before a held token
   */
  public void decode(int layer, float[] q, int position, float[] out) {
    checkLayer(layer);
    int hq = shape.queryHeads();
    if (q.length != hq * d || out.length != hq * d) {
      throw new IllegalArgumentException("q and out must have queryHeads * headDim = " + hq * d + " floats, got "
          + q.length + " and " + out.length);
    }
    if (position == Integer.MAX_VALUE) {
      throw new IllegalArgumentException("position must be < Integer.MAX_VALUE (it marks hidden slots), got "
          + position);
    }
    io.kvcache.core.Checks.finite("q", q, 0, q.length);
    if (position < maxPos[layer]) {
      throw new IllegalArgumentException("position must be >= " + maxPos[layer]
          + " (the newest token held; the code pass has no causal mask), got " + position);
    }
    int wg = tuning.decodeWorkGroup();
    int nq = quantPages[layer] * P;
    int nsA = 0, chunkA = 0;
    if (nq > 0) {
      int target = Math.max(1, tuning.splitsPerCu() * cl.computeUnits() / kvh);
      if (mma) {
        // A warp walks a run of pages; about four warps per compute unit and KV head's share keep every SM busy.
        int pages = nq / P;
        chunkA = Math.max(1, (pages + 4 * target - 1) / (4 * target)); // pages per warp
        nsA = (pages + chunkA - 1) / chunkA;
      } else {
        chunkA = (int) Math.min(chunkMax, Math.max(64, DeviceKVCache.roundUp((nq + target - 1) / target, 64)));
        nsA = (nq + chunkA - 1) / chunkA;
      }
    }
    int nr = ringPages * P;
    // The ring is small (176 tokens at window 128): chunks of 32 spread it over a few work-groups per
    // KV head, where one work-group walking all of it was latency-bound (25 us on an H100).
    int chunkB = Math.min(chunkMax, 32);
    int nsB = (nr + chunkB - 1) / chunkB;
    if (mma) {
      nsB = ringPages; // a warp per ring page
    }
    // The tensor-core pass writes one split per work-group of four warps; the portable one per work-group.
    // Splits: the portable code pass's, then the window's; the tensor-core kernel's window first.
    int splitsA = mma ? (nsA + 3) / 4 : nsA;
    int nsplit = splitsA + nsB;
    float[] qp = qScratch;
    if (kIdentity[layer]) {
      System.arraycopy(q, 0, qp, 0, hq * d);
    } else {
      for (int h = 0; h < kvh; h++) {
        int[] kp = kPerm[layer][h];
        for (int g = 0; g < group; g++) {
          int row = (h * group + g) * d;
          for (int c = 0; c < d; c++) {
            qp[row + c] = q[row + kp[c]];
          }
        }
      }
    }
    // Per query head: sum(q * scale) over each key group (the zero points' term) and, for the tensor-core
    // pass, the power of two that brings max |q * scale| into [2^13, 2^14) before the f16 split.
    float scale = shape.scale();
    int a = hq * d; // in qp after the queries
    int kGroup = Math.min(config.keyGroup(), d);
    // Four running sums and the largest magnitude compared as bits (for finite non-negative floats the int
    // order is the float order): one sum and Math.max made a dependent chain through all 4,096 elements,
    // several microseconds of host time a call. Groups are multiples of 16 channels, so of 4.
    for (int r = 0; r < hq; r++) {
      int mq = 0;
      for (int kg = 0; kg < nkg; kg++) {
        float t0 = 0f, t1 = 0f, t2 = 0f, t3 = 0f;
        for (int c = r * d + kg * kGroup, e = r * d + Math.min(d, (kg + 1) * kGroup); c < e; c += 4) {
          float x0 = qp[c] * scale, x1 = qp[c + 1] * scale, x2 = qp[c + 2] * scale, x3 = qp[c + 3] * scale;
          t0 += x0;
          t1 += x1;
          t2 += x2;
          t3 += x3;
          mq = Math.max(mq, Math.max(Math.max(magnitude(x0), magnitude(x1)), Math.max(magnitude(x2), magnitude(x3))));
        }
        qp[a + r * nkg + kg] = (t0 + t1) + (t2 + t3);
      }
      float m = Float.intBitsToFloat(mq);
      // (Capped at 2^126 so that a query of subnormal size does not make the factor infinite.)
      qp[a + hq * nkg + r] = m > 0f && Float.isFinite(m) ? Math.scalb(1f, Math.min(126, 13 - Math.getExponent(m))) : 1f;
    }
    DeviceKVCache.discardEvents(events); // a call that failed before its timing left none behind
    qPerm = DeviceKVCache.ensure(cl, qPerm, 4L * qp.length);
    outBuf = DeviceKVCache.ensure(cl, outBuf, 4L * hq * d);
    partBuf = DeviceKVCache.ensure(cl, partBuf, 4L * kvh * nsplit * group * (d + 2));
    cl.write(qPerm, 0, qp);
    if (mma) {
      // One launch: the window's work-groups, a warp per ring page, then the code pass's (none without codes).
      skvq.arg(0, kq[layer]).arg(1, ksc[layer]).arg(2, kzr[layer]).arg(3, vq[layer]).arg(4, vsc[layer])
          .arg(5, vzr[layer]).arg(6, qmask[layer]).arg(7, nq).arg(8, capPages).arg(9, qPerm).arg(10, scale)
          .arg(11, Math.max(1, chunkA)).arg(12, nsA).arg(13, ringKv[layer]).arg(14, ringPos[layer]).arg(15, ringPages)
          .arg(16, position).arg(17, partBuf).arg(18, nsplit);
      DeviceKVCache.launch(cl, skvq, new long[] {((ringPages + 3) / 4 + splitsA) * 128L, kvh}, new long[] {128, 1},
          events);
    } else {
      if (nsA > 0) {
        skvq.arg(0, kq[layer]).arg(1, ksc[layer]).arg(2, kzr[layer]).arg(3, vq[layer]).arg(4, vsc[layer])
            .arg(5, vzr[layer]).arg(6, qmask[layer]).arg(7, nq).arg(8, capPages).arg(9, qPerm).arg(10, scale)
            .arg(11, chunkA).arg(12, partBuf).arg(13, 0).arg(14, nsplit);
        DeviceKVCache.launch(cl, skvq, new long[] {(long) nsA * wg, kvh}, new long[] {wg, 1}, events);
      }
      dense.arg(0, ringKv[layer]).arg(1, ringPos[layer]).arg(2, nr).arg(3, ringPages).arg(4, qPerm)
          .arg(5, scale).arg(6, position).arg(7, chunkB).arg(8, dummyMap).arg(9, 0).arg(10, nr)
          .arg(11, partBuf).arg(12, splitsA).arg(13, nsplit);
      DeviceKVCache.launch(cl, dense, new long[] {(long) nsB * wg, kvh}, new long[] {wg, 1}, events);
    }
    DeviceKVCache.launchReduce(cl, reduce, partBuf, nsplit, outBuf, hq, d, events);
    if (vIdentity[layer]) {
      cl.read(outBuf, 0, out);
    } else {
      float[] o = outScratch;
      cl.read(outBuf, 0, o);
      for (int h = 0; h < kvh; h++) {
        for (int g = 0; g < group; g++) {
          int row = (h * group + g) * d;
          for (int c = 0; c < d; c++) {
            out[row + vPerm[layer][h][c]] = o[row + c];
          }
        }
      }
    }
    long t = 0;
    Arrays.fill(lastPass, 0L);
    try {
      for (int i = 0; i < events.size(); i++) {
        long e = events.get(i).elapsedNanos();
        t += e;
        // The events: the code pass (absent without codes), the window pass, then the reduction; the
        // tensor-core kernel does the first two in one launch (its time in the first count).
        lastPass[i == events.size() - 1 ? 2 : mma || nsA > 0 ? i : 1] = e;
      }
      lastNanos = t;
    } finally {
      DeviceKVCache.discardEvents(events); // also when a timing read failed
    }
  }

  /** Releases the device memory and kernels; the context stays open. Idempotent. */
  @Override
  public void close() {
    if (closed) {
      return;
    }
    closed = true;
    for (ClEvent e : events) {
      e.close();
    }
    for (AutoCloseable c : new AutoCloseable[] {skvq, dense, reduce, dummyMap, qPerm, outBuf, partBuf}) {
      DeviceKVCache.closeQuietly(c);
    }
    for (ClBuffer[] bs : new ClBuffer[][] {kq, ksc, kzr, vq, vsc, vzr, qmask, ringKv, ringPos}) {
      for (ClBuffer b : bs) {
        DeviceKVCache.closeQuietly(b);
      }
    }
  }

  /**
   * {@code -Dkvcache.gpu.skvqDecode}: {@code simt} forces the portable pass, {@code auto} (or unset) lets
   * the device choose; anything else is refused by name rather than read as {@code auto}.
   */
  static boolean decodeForcedSimt() {
    String v = System.getProperty("kvcache.gpu.skvqDecode", "auto").trim().toLowerCase(java.util.Locale.ROOT);
    if (!v.equals("simt") && !v.equals("auto")) {
      throw new IllegalArgumentException("kvcache.gpu.skvqDecode must be simt or auto, got '"
          + System.getProperty("kvcache.gpu.skvqDecode") + "'");
    }
    return v.equals("simt");
  }
}
