package io.kvcache.gpu;

import io.kvcache.gpu.cl.ClBuffer;
import io.kvcache.gpu.cl.ClContext;
import io.kvcache.gpu.cl.ClKernel;
import java.util.ArrayList;
import java.util.List;

/**
 * Top-k sparse decode attention over a {@link DeviceKVCache}, the RocketKV stage-2 contract (see
 * ALGORITHMS.md), all on the device but for the choice of channels:
 *
 * <ol>
 *   <li>per page of 16 slots and KV head, the element-wise min and max of its keys, kept up to date
 *       as tokens are appended (only the pages an append touched are recomputed);</li>
 *   <li>per query head, the {@code channels} channels of largest {@code |q|} (chosen on the host: the
 *       query is there anyway); a page's score is the Quest bound over those channels,
 *       {@code Σ max(q_c·min_c, q_c·max_c)}, summed over the KV head's query heads so the group shares
 *       one selection;</li>
 *   <li>top-k pages by that score on the device, the last {@code recentTokens} always included;</li>
 *   <li>exact attention (the dense flash-decoding kernel reading pages through the selection).</li>
 * </ol>
 *
 * With a budget at least the cache's size every page is selected and the result is dense decode's, up to float
 * rounding (the sparse pass splits the pages into chunks at other boundaries).
 * Close it to free its device buffers (the cache stays open).
 */
public final class TopKDecoder implements AutoCloseable {

  /**
   * @param budgetTokens tokens attended per KV head, rounded up to whole pages; 16 to {@link DeviceKVCache#MAX_CAPACITY}
   * @param channels     channels per query head used to estimate page scores, 1..headDim
   * @param recentTokens most recent tokens always attended, 0..budgetTokens
   */
  public record Config(int budgetTokens, int channels, int recentTokens) {
    /** Validates the ranges that do not depend on the head dimension. */
    public Config {
      if (budgetTokens < DeviceKVCache.PAGE || budgetTokens > DeviceKVCache.MAX_CAPACITY) {
        throw new IllegalArgumentException("budgetTokens must be in [" + DeviceKVCache.PAGE + ", "
            + DeviceKVCache.MAX_CAPACITY + "], got " + budgetTokens);
      }
      if (channels < 1) {
        throw new IllegalArgumentException("channels must be >= 1, got " + channels);
      }
      if (recentTokens < 0 || recentTokens > budgetTokens) {
        throw new IllegalArgumentException("recentTokens must be in [0, budgetTokens=" + budgetTokens + "], got "
            + recentTokens);
      }
    }
  }

  private static final String SOURCE = "/io/kvcache/gpu/attention.cl";

  private final DeviceKVCache cache;
  private final ClContext cl;
  private final Config config;
  private final int d;
  private final int kvh;
  private final ClBuffer[] summ;
  private final ClBuffer scores;
  private final ClBuffer map;
  private final ClBuffer chan;
  private final ClKernel summary;
  private final ClKernel score;
  private final ClKernel topk;
  private final ClKernel sparse;
  private final int[] channelIdx;
  private final long[] keys;
  private boolean closed;

  /**
   * Summarises the pages already in {@code cache} and follows its later appends.
   *
   * @param cache  the device cache (not closed by this decoder)
   * @param config budget, channels, recent window
   * @throws IllegalArgumentException when {@code channels} exceeds the head dimension
   */
  public TopKDecoder(DeviceKVCache cache, Config config) {
    if (cache == null || config == null) {
      throw new IllegalArgumentException("cache and config must not be null, got " + cache + ", " + config);
    }
    this.cache = cache;
    this.cl = cache.context();
    this.config = config;
    this.d = cache.shape().headDim();
    this.kvh = cache.shape().kvHeads();
    if (config.channels() > d) {
      throw new IllegalArgumentException("channels must be <= headDim=" + d + ", got " + config.channels());
    }
    // topk_pages holds up to 8192 page keys and 256 counters in local memory (attention.cl, TOPK_LOCAL).
    long topkLocal = 4L * (8192 + 256 + 2);
    if (topkLocal > cl.localMemBytes()) {
      throw new IllegalArgumentException("top-k decode needs " + topkLocal + " bytes of local memory; "
          + cl.deviceName() + " has " + cl.localMemBytes());
    }
    int layers = cache.shape().layers();
    int capPages = cache.capPages();
    // What is made so far, released if a later step throws (a build error, a closed cache or context).
    List<AutoCloseable> made = new ArrayList<>();
    try {
      summ = new ClBuffer[layers];
      for (int l = 0; l < layers; l++) {
        made.add(summ[l] = cl.buffer(2L * kvh * capPages * 2 * d));
      }
      made.add(scores = cl.buffer(4L * kvh * capPages));
      made.add(map = cl.buffer(4L * kvh * capPages));
      made.add(chan = cl.buffer(4L * cache.shape().queryHeads() * config.channels()));
      String opts = cache.options();
      made.add(summary = cl.kernel(SOURCE, opts, "page_summary"));
      made.add(score = cl.kernel(SOURCE, opts, "page_scores"));
      made.add(topk = cl.kernel(SOURCE, opts, "topk_pages"));
      made.add(sparse = cl.kernel(SOURCE, opts + " -DSPARSE", "decode_partial"));
      channelIdx = new int[cache.shape().queryHeads() * config.channels()];
      keys = new long[d];
      for (int l = 0; l < layers; l++) {
        summarise(l, 0, cache.size(l));
      }
    } catch (RuntimeException e) {
      for (AutoCloseable c : made) {
        DeviceKVCache.closeQuietly(c);
      }
      throw e;
    }
    cache.listen(this::summarise);
  }

  /** @return bytes of device memory this decoder holds: page summaries at capacity, scores, page map */
  public long deviceBytes() {
    long b = scores.bytes() + map.bytes() + chan.bytes();
    for (ClBuffer s : summ) {
      b += s.bytes();
    }
    return b;
  }

  /** @return the configuration */
  public Config config() {
    return config;
  }

  private void summarise(int layer, int firstSlot, int tokens) {
    if (closed || tokens == 0) {
      return;
    }
    int p0 = firstSlot / DeviceKVCache.PAGE;
    int p1 = (firstSlot + tokens - 1) / DeviceKVCache.PAGE;
    int pages = p1 - p0 + 1;
    summary.arg(0, cache.kvBuffer(layer)).arg(1, cache.size(layer)).arg(2, cache.capPages()).arg(3, p0).arg(4, pages)
        .arg(5, summ[layer]);
    summary.run(new long[] {DeviceKVCache.roundUp((long) pages * kvh * d, 64)}, new long[] {64});
  }

  /**
   * Sparse decode attention of one token's query heads over a layer.
   *
   * @param layer    the layer
   * @param q        queries, {@code queryHeads * headDim} floats
   * @param position the query's position
   * @param out      outputs, same layout
   */
  public void decode(int layer, float[] q, int position, float[] out) {
    if (closed) {
      throw new IllegalStateException("TopKDecoder is closed");
    }
    int n = cache.size(layer);
    cache.checkQuery(q, out);
    if (n == 0) {
      cache.decode(layer, q, position, out);
      return;
    }
    int pages = (n + DeviceKVCache.PAGE - 1) / DeviceKVCache.PAGE;
    int k = Math.min(pages, (config.budgetTokens() + DeviceKVCache.PAGE - 1) / DeviceKVCache.PAGE);
    int recent = Math.min(k, (config.recentTokens() + DeviceKVCache.PAGE - 1) / DeviceKVCache.PAGE);
    int r = config.channels();
    int hq = cache.shape().queryHeads();
    for (int h = 0; h < hq; h++) {
      int base = h * d;
      // |q| bits (order-preserving for non-negative floats) above the channel: one primitive sort.
      for (int c = 0; c < d; c++) {
        keys[c] = ((long) Float.floatToRawIntBits(Math.abs(q[base + c])) << 32) | c;
      }
      java.util.Arrays.sort(keys);
      for (int i = 0; i < r; i++) {
        channelIdx[h * r + i] = (int) keys[d - 1 - i];
      }
    }
    cl.write(chan, 0, channelIdx);
    ClBuffer qb = cache.queryBuffer(q);
    try {
      int capPages = cache.capPages();
      score.arg(0, summ[layer]).arg(1, capPages).arg(2, pages).arg(3, qb).arg(4, chan).arg(5, r).arg(6, recent)
          .arg(7, scores);
      cache.launch(score, new long[] {DeviceKVCache.roundUp(pages, 64), kvh}, new long[] {64, 1});
      topk.arg(0, scores).arg(1, capPages).arg(2, pages).arg(3, k).arg(4, map);
      cache.launch(topk, new long[] {256L * kvh}, new long[] {256});
      cache.run(layer, q, position, out, sparse, map, capPages, k * DeviceKVCache.PAGE);
    } finally {
      cache.qOnDevice = false; // run() clears it; a failure before run() must not leave it set
    }
  }

  /**
   * Reads the pages selected by the last {@link #decode} (for tests and diagnostics).
   *
   * @param kvHead a KV head
   * @param count  how many selected pages to read
   * @return their indices, in no particular order
   */
  public int[] selectedPages(int kvHead, int count) {
    if (closed) {
      throw new IllegalStateException("TopKDecoder is closed");
    }
    if (kvHead < 0 || kvHead >= kvh) {
      throw new IndexOutOfBoundsException("kvHead must be in [0, " + kvh + "), got " + kvHead);
    }
    if (count < 0 || count > cache.capPages()) {
      throw new IllegalArgumentException("count must be in [0, " + cache.capPages() + "] pages, got " + count);
    }
    int[] res = new int[count];
    cl.read(map, 4L * kvHead * cache.capPages(), res);
    return res;
  }

  /** Releases the summaries, scores, selection and kernels. Idempotent. */
  @Override
  public void close() {
    if (closed) {
      return;
    }
    closed = true;
    java.util.List<AutoCloseable> all = new java.util.ArrayList<>(java.util.Arrays.asList(summ));
    all.addAll(java.util.List.of(scores, map, chan, summary, score, topk, sparse));
    DeviceKVCache.closeAll(all); // every buffer and kernel, even when one fails to release
  }
}
