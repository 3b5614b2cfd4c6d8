package io.kvcache.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.codec.HeadStore;
import io.kvcache.codec.StorageCodec;
import io.kvcache.retention.RetentionPolicy;
import java.util.SplittableRandom;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import org.junit.jupiter.api.function.Executable;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** The {@link KVCache} contract: equivalences, byte accounting, and how bad input is refused. */
class KVCacheApiTest {

  static final AttentionShape SHAPE = new AttentionShape(2, 8, 2, 32);

  record Inputs(float[] q, float[] k, float[] v) {}

  static Inputs inputs(long seed, int tokens) {
    SplittableRandom rnd = new SplittableRandom(seed);
    return new Inputs(TestData.gaussian(rnd, tokens * SHAPE.queryWidth(), 1),
        TestData.gaussian(rnd, tokens * SHAPE.kvWidth(), 1), TestData.gaussian(rnd, tokens * SHAPE.kvWidth(), 1));
  }

  @ParameterizedTest
  @ValueSource(strings = {"f32", "f16"})
  void chunkedPrefillAndDecodesEqualOneLongPrefill(String codecName) {
    StorageCodec codec = codecName.equals("f32") ? StorageCodec.f32() : StorageCodec.f16();
    long seed = TestData.seed();
    int n = 300;
    Inputs in = inputs(seed, n);
    int qw = SHAPE.queryWidth(), kw = SHAPE.kvWidth();
    float[] whole = new float[n * qw];
    float[] parts = new float[n * qw];
    KVCacheStrategy strategy = Strategies.full(codec);
    try (KVCache a = strategy.newCache(SHAPE); KVCache b = strategy.newCache(SHAPE)) {
      for (int layer = 0; layer < SHAPE.layers(); layer++) {
        a.prefill(layer, n, null, in.q, 0, in.k, 0, in.v, 0, whole, 0);
      }
      // 3 prompt chunks of odd sizes, then decode tokens, layer by layer as a model runs.
      int[] chunks = {1, 37, 150};
      int t = 0;
      for (int c : chunks) {
        for (int layer = 0; layer < SHAPE.layers(); layer++) {
          b.prefill(layer, c, null, in.q, t * qw, in.k, t * kw, in.v, t * kw, parts, t * qw);
        }
        t += c;
      }
      b.endPrefill();
      for (; t < n; t++) {
        for (int layer = 0; layer < SHAPE.layers(); layer++) {
          b.decode(layer, in.q, t * qw, in.k, t * kw, in.v, t * kw, parts, t * qw);
        }
      }
      assertEquals(a.stats().totalRetained(), b.stats().totalRetained());
    }
    // Same rows, same visible keys; only the blocking of the online softmax differs.
    double worst = 0;
    for (int i = 0; i < whole.length; i++) {
      worst = Math.max(worst, Math.abs(whole[i] - parts[i]));
    }
    double w = worst;
    assertTrue(w <= 1e-5, () -> "max difference " + w + " (seed " + seed + ")");
  }

  @Test
  void headsOnAnExecutorGiveTheSameOutputAsOneThread() throws Exception {
    long seed = TestData.seed();
    int n = 200;
    Inputs in = inputs(seed, n + 1);
    int qw = SHAPE.queryWidth(), kw = SHAPE.kvWidth();
    float[] serial = new float[(n + 1) * qw];
    float[] parallel = new float[(n + 1) * qw];
    ExecutorService pool = Executors.newFixedThreadPool(3);
    try (KVCache a = Strategies.full().newCache(SHAPE); KVCache b = Strategies.full().newCache(SHAPE, pool)) {
      for (KVCache c : new KVCache[] {a, b}) {
        float[] out = c == a ? serial : parallel;
        c.prefill(0, n, null, in.q, 0, in.k, 0, in.v, 0, out, 0);
        c.decode(0, in.q, n * qw, in.k, n * kw, in.v, n * kw, out, n * qw);
      }
    } finally {
      pool.shutdown();
    }
    // Bit for bit: the same kernels add in the same order (the vector exp and lane sums are written so
    // that the JIT tier running them does not change their rounding).
    assertArrayEquals(serial, parallel, "seed " + seed);
  }

  /**
   * A shut-down pool rejects every helper, an interrupted caller used to give up waiting, and an
   * executor may queue helpers it never starts: in each case the call must still run every KV head and
   * return the single-threaded result, with the cache consistent (positions advanced once) and the
   * interrupt status kept.
   */
  @Test
  void aRejectingExecutorOrAnInterruptedCallerStillRunsEveryHead() {
    long seed = TestData.seed();
    int n = 50;
    Inputs in = inputs(seed, n + 1);
    int qw = SHAPE.queryWidth(), kw = SHAPE.kvWidth();
    float[] serial = new float[(n + 1) * qw];
    float[] rejected = new float[(n + 1) * qw];
    float[] interrupted = new float[(n + 1) * qw];
    ExecutorService dead = Executors.newSingleThreadExecutor();
    dead.shutdown();
    // Runs each helper on its own thread a little later, so the caller is waiting when interrupted.
    java.util.concurrent.Executor slow = r -> new Thread(() -> {
      try {
        Thread.sleep(20);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
      r.run();
    }).start();
    float[] neverRun = new float[(n + 1) * qw];
    java.util.concurrent.Executor queuedForever = r -> { }; // accepts every helper and never starts one
    try (KVCache a = Strategies.full().newCache(SHAPE); KVCache b = Strategies.full().newCache(SHAPE, dead);
        KVCache c = Strategies.full().newCache(SHAPE, slow);
        KVCache d = Strategies.full().newCache(SHAPE, queuedForever)) {
      for (KVCache cache : new KVCache[] {a, b, c, d}) {
        float[] out = cache == a ? serial : cache == b ? rejected : cache == c ? interrupted : neverRun;
        if (cache == c) {
          Thread.currentThread().interrupt();
        }
        cache.prefill(0, n, null, in.q, 0, in.k, 0, in.v, 0, out, 0);
        if (cache == c) {
          assertTrue(Thread.interrupted(), "the interrupt status is kept (and cleared here)");
        }
        cache.decode(0, in.q, n * qw, in.k, n * kw, in.v, n * kw, out, n * qw);
        assertEquals(n + 1, cache.stats().tokensSeen()[0], "positions advanced once");
      }
    }
    assertArrayEquals(serial, rejected, "seed " + seed);
    assertArrayEquals(serial, interrupted, "seed " + seed);
    assertArrayEquals(serial, neverRun, "seed " + seed);
  }

  /** A decode past the largest position is refused before it ends the prompt or stores anything. */
  @Test
  void decodePastTheLargestPositionIsRefusedAndChangesNothing() {
    Inputs in = inputs(1, 2);
    int qw = SHAPE.queryWidth(), kw = SHAPE.kvWidth();
    for (int last : new int[] {Integer.MAX_VALUE - 2, Integer.MAX_VALUE - 1}) {
      try (KVCache cache = Strategies.full().newCache(SHAPE)) {
        float[] out = new float[2 * qw];
        cache.prefill(0, 1, new int[] {last}, in.q, 0, in.k, 0, in.v, 0, out, 0);
        IllegalStateException e = assertThrows(IllegalStateException.class,
            () -> cache.decode(0, in.q, qw, in.k, kw, in.v, kw, out, qw));
        assertTrue(e.getMessage().contains("largest position"), e.getMessage());
        assertEquals(1, cache.stats().tokensSeen()[0], "nothing appended");
        cache.endPrefill(); // the failed decode did not end the prompt
      }
    }
  }

  @ParameterizedTest
  @ValueSource(strings = {"f32", "f16"})
  void statsCountBytesExactly(String codecName) {
    StorageCodec codec = codecName.equals("f32") ? StorageCodec.f32() : StorageCodec.f16();
    int bytes = codecName.equals("f32") ? 4 : 2;
    Inputs in = inputs(1, 40);
    try (KVCache cache = Strategies.full(codec).newCache(SHAPE)) {
      float[] out = new float[40 * SHAPE.queryWidth()];
      cache.prefill(0, 40, in.q, in.k, in.v, out); // layer 1 left empty on purpose
      CacheStats s = cache.stats();
      int pages = 3; // ceil(40 / 16)
      long payload = (long) pages * HeadStore.PAGE_TOKENS * SHAPE.headDim() * 2 * bytes * SHAPE.kvHeads();
      long meta = (long) pages * HeadStore.PAGE_TOKENS * 4 * SHAPE.kvHeads();
      assertEquals(payload, s.payloadBytes());
      assertEquals(meta, s.metadataBytes());
      assertEquals(40L * SHAPE.kvHeads() * SHAPE.headDim() * 2 * 2, s.denseF16Bytes());
      assertEquals((double) s.denseF16Bytes() / (payload + meta), s.compressionRatio(), 1e-12);
      assertEquals(80L, s.totalRetained());
      assertEquals(40, s.retained()[0][1]);
      assertEquals(0, s.retained()[1][0]);
      assertEquals(payload * 8.0 / (80.0 * SHAPE.headDim() * 2), s.bitsPerValue(), 1e-12);
    }
  }

  /** Asserts the call throws {@code type} with a message containing every fragment. */
  static void assertRefused(Class<? extends RuntimeException> type, Executable call, String... fragments) {
    RuntimeException e = assertThrows(type, call);
    for (String f : fragments) {
      assertTrue(e.getMessage().contains(f), () -> "message '" + e.getMessage() + "' lacks '" + f + "'");
    }
  }

  @Test
  void badInputIsRefusedWithANamedMessageAndLeavesTheCacheUsable() {
    int qw = SHAPE.queryWidth(), kw = SHAPE.kvWidth();
    Inputs in = inputs(3, 4);
    Inputs one = inputs(33, 1);
    float[] out = new float[4 * qw];
    float[] out1 = new float[qw];
    try (KVCache cache = Strategies.full().newCache(SHAPE)) {
      cache.prefill(0, 2, null, in.q, 0, in.k, 0, in.v, 0, out, 0);
      CacheStats before = cache.stats();

      assertRefused(IllegalArgumentException.class, () -> cache.prefill(2, 4, in.q, in.k, in.v, out), "layer", "[0, 1]",
          "2");
      assertRefused(IllegalArgumentException.class, () -> cache.prefill(-1, 4, in.q, in.k, in.v, out), "layer", "-1");
      assertRefused(IllegalArgumentException.class, () -> cache.prefill(0, 0, in.q, in.k, in.v, out), "tokens", "0");
      assertRefused(IllegalArgumentException.class,
          () -> cache.prefill(0, 1, null, new float[qw - 1], 0, in.k, 0, in.v, 0, out, 0), "q", String.valueOf(qw),
          String.valueOf(qw - 1));
      assertRefused(IllegalArgumentException.class, () -> cache.decode(0, in.q, 0, in.k, 3 * kw + 1, in.v, 0, out, 0),
          "k", "offset");
      assertRefused(IllegalArgumentException.class, () -> cache.decode(0, one.q, one.k, one.v, new float[2]), "out");
      assertRefused(IllegalArgumentException.class, () -> cache.decode(0, null, one.k, one.v, out1), "q", "null");
      // Negative offsets are named as the parameters are.
      assertRefused(IllegalArgumentException.class, () -> cache.decode(0, in.q, -1, in.k, 0, in.v, 0, out, 0), "qOff",
          "-1");
      assertRefused(IllegalArgumentException.class, () -> cache.decode(0, in.q, 0, in.k, 0, in.v, 0, out, -2),
          "outOff", "-2");
      // Without offsets an array must be exactly its size: a longer one is a mistake, not a buffer.
      assertRefused(IllegalArgumentException.class, () -> cache.prefill(0, 1, in.q, in.k, in.v, out), "q", "exactly",
          String.valueOf(qw), String.valueOf(4 * qw));
      assertRefused(IllegalArgumentException.class, () -> cache.decode(0, one.q, one.k, one.v, out), "out", "exactly",
          String.valueOf(qw), String.valueOf(4 * qw));
      assertRefused(IllegalArgumentException.class, () -> cache.append(0, 1, in.k, one.v), "k", "exactly",
          String.valueOf(kw), String.valueOf(4 * kw));
      // Keys laid out per query head (repeat_kv) get a hint.
      assertRefused(IllegalArgumentException.class, () -> cache.decode(0, one.q, new float[qw], one.v, out1), "k",
          "kvHeads (2)", "queryHeads (8)");
      assertRefused(IllegalArgumentException.class,
          () -> cache.prefill(0, 4, in.q, new float[4 * qw], new float[4 * qw], out), "k", "kvHeads (2)");

      float[] nanK = one.k.clone();
      nanK[5] = Float.NaN;
      assertRefused(IllegalArgumentException.class, () -> cache.decode(0, one.q, nanK, one.v, out1), "k", "finite",
          "NaN", "index 5");
      float[] infV = one.v.clone();
      infV[kw - 1] = Float.POSITIVE_INFINITY;
      assertRefused(IllegalArgumentException.class, () -> cache.decode(0, one.q, one.k, infV, out1), "v", "finite",
          "Infinity");
      float[] bigV = one.v.clone();
      bigV[0] = 1e6f;
      assertRefused(IllegalArgumentException.class, () -> cache.decode(0, one.q, one.k, bigV, out1), "v", "65504");
      assertRefused(IllegalArgumentException.class,
          () -> cache.prefill(0, 2, new int[] {5, 5}, in.q, 0, in.k, 0, in.v, 0, out, 0), "positions", "increase",
          "index 1");
      assertRefused(IllegalArgumentException.class,
          () -> cache.prefill(0, 1, new int[] {1}, in.q, 0, in.k, 0, in.v, 0, out, 0), "positions", ">= 2");

      CacheStats after = cache.stats();
      assertEquals(before.totalRetained(), after.totalRetained(), "a refused call stores nothing");
      assertArrayEquals(before.tokensSeen(), after.tokensSeen());

      // Still usable: a valid decode works and attends to what was there.
      cache.decode(0, in.q, 2 * qw, in.k, 2 * kw, in.v, 2 * kw, out, 2 * qw);
      assertEquals(3, cache.stats().retained()[0][0]);
      assertRefused(IllegalStateException.class, () -> cache.prefill(0, 4, in.q, in.k, in.v, out), "prefill",
          "endPrefill");
      assertRefused(IllegalStateException.class, cache::endPrefill, "endPrefill");
    }
  }

  /**
   * A keep-all policy whose retention step, once (the first append, or the first decode append when
   * {@code decodeOnly}), counts {@code inside} down and waits for {@code release}: it holds a thread inside
   * the cache for as long as a test needs.
   */
  static RetentionPolicy holding(boolean decodeOnly, CountDownLatch inside, CountDownLatch release) {
    AtomicBoolean armed = new AtomicBoolean(true);
    return new RetentionPolicy() {
      @Override
      public String name() {
        return "holding";
      }

      @Override
      public State newState(AttentionShape shape) {
        return (layer, decode) -> {
          if ((decode || !decodeOnly) && armed.getAndSet(false)) {
            inside.countDown();
            try {
              release.await();
            } catch (InterruptedException e) {
              Thread.currentThread().interrupt();
            }
          }
        };
      }
    };
  }

  @Test
  void aCallWhileAnotherThreadIsInsideOneIsRefusedAndChangesNothing() throws Exception {
    CountDownLatch inside = new CountDownLatch(1);
    CountDownLatch release = new CountDownLatch(1);
    // Holds the first append's thread inside the cache until released: a certain overlap.
    KVCacheStrategy strategy = KVCacheStrategy.builder().retention(holding(false, inside, release)).build();
    Inputs a = inputs(6, 1), b = inputs(7, 1);
    float[] outA = new float[SHAPE.queryWidth()], outB = new float[SHAPE.queryWidth()];
    ExecutorService other = Executors.newSingleThreadExecutor(r -> new Thread(r, "prompt-writer"));
    try (KVCache cache = strategy.newCache(SHAPE)) {
      Future<?> first = other.submit(() -> cache.prefill(0, 1, a.q, a.k, a.v, outA));
      assertTrue(inside.await(30, TimeUnit.SECONDS), "the first call reached the policy");
      assertRefused(IllegalStateException.class, () -> cache.decode(1, b.q, b.k, b.v, outB), "in use by another thread",
          "prompt-writer");
      assertRefused(IllegalStateException.class, () -> cache.prefill(0, 1, b.q, b.k, b.v, outB), "in use");
      assertRefused(IllegalStateException.class, cache::stats, "in use");
      assertRefused(IllegalStateException.class, cache::close, "in use");
      release.countDown();
      first.get(30, TimeUnit.SECONDS);

      assertArrayEquals(new long[] {1, 0}, cache.stats().tokensSeen(), "only the first call stored anything");
      cache.decode(1, b.q, b.k, b.v, outB); // the thread that was refused may call once the other is out
      assertArrayEquals(new long[] {1, 1}, cache.stats().tokensSeen());
    } finally {
      release.countDown();
      other.shutdownNow();
    }
  }

  @Test
  void theCacheStaysClaimedAfterACallNestedInTheSameThreadsCall() throws Exception {
    // The first decode ends the prompt through endPrefill, a call nested in the decode: leaving it must
    // not release the cache while the decode goes on (here, held inside its retention step).
    CountDownLatch inside = new CountDownLatch(1);
    CountDownLatch release = new CountDownLatch(1);
    KVCacheStrategy strategy = KVCacheStrategy.builder().retention(holding(true, inside, release)).build();
    Inputs a = inputs(9, 1);
    float[] out = new float[SHAPE.queryWidth()];
    ExecutorService other = Executors.newSingleThreadExecutor(r -> new Thread(r, "decoder"));
    try (KVCache cache = strategy.newCache(SHAPE)) {
      Future<?> first = other.submit(() -> cache.decode(0, a.q, a.k, a.v, out)); // no prefill: ends the prompt
      assertTrue(inside.await(30, TimeUnit.SECONDS), "the decode reached its retention step");
      assertRefused(IllegalStateException.class, cache::stats, "in use by another thread", "decoder");
      release.countDown();
      first.get(30, TimeUnit.SECONDS);
      assertEquals(1, cache.stats().retained()[0][0]);
    } finally {
      release.countDown();
      other.shutdownNow();
    }
  }

  @Test
  void closingTheCpuBackendLeavesItUsable() {
    try (AttentionBackend cpu = AttentionBackend.cpu()) {
      assertEquals("cpu", cpu.name());
    }
    KVCacheStrategy s = Strategies.full().toBuilder().backend(AttentionBackend.cpu()).build();
    Inputs in = inputs(8, 1);
    float[] out = new float[SHAPE.queryWidth()];
    try (KVCache cache = s.newCache(SHAPE)) {
      cache.decode(0, in.q, in.k, in.v, out);
      assertEquals(1, cache.stats().retained()[0][0]);
    }
  }

  @Test
  void everyCallAfterCloseIsRefused() {
    Inputs in = inputs(4, 1);
    float[] out = new float[SHAPE.queryWidth()];
    KVCache cache = Strategies.full().newCache(SHAPE);
    cache.decode(0, in.q, in.k, in.v, out);
    cache.close();
    cache.close(); // idempotent
    assertRefused(IllegalStateException.class, () -> cache.decode(0, in.q, in.k, in.v, out), "closed");
    assertRefused(IllegalStateException.class, () -> cache.prefill(0, 1, in.q, in.k, in.v, out), "closed");
    assertRefused(IllegalStateException.class, cache::endPrefill, "closed");
    assertRefused(IllegalStateException.class, cache::stats, "closed");
    assertRefused(IllegalStateException.class, () -> cache.append(0, 1, in.k, in.v), "closed");
    assertRefused(IllegalStateException.class, () -> cache.attendPrefill(0, 1, new int[] {1}, in.q, 0, out, 0),
        "closed");
    assertRefused(IllegalStateException.class, () -> cache.attendDecode(0, in.q, 0, out, 0), "closed");
    assertEquals(SHAPE, cache.shape(), "the shape still answers");
  }

  @Test
  void thousandsOfCachesOpenAndClose() {
    Inputs in = inputs(5, 1);
    float[] out = new float[SHAPE.queryWidth()];
    KVCacheStrategy s = Strategies.streamingLLM(4, 8);
    for (int i = 0; i < 5000; i++) {
      try (KVCache cache = s.newCache(SHAPE)) {
        cache.decode(0, in.q, in.k, in.v, out);
        assertEquals(1, cache.stats().retained()[0][0]);
      }
    }
  }

  @Test
  void shapeRejectsBadGeometry() {
    assertRefused(IllegalArgumentException.class, () -> new AttentionShape(0, 8, 2, 64), "layers", "0");
    assertRefused(IllegalArgumentException.class, () -> new AttentionShape(1, 6, 4, 64), "multiple", "queryHeads=6",
        "kvHeads=4");
    assertRefused(IllegalArgumentException.class, () -> new AttentionShape(1, 8, 2, 0), "headDim", "0");
  }
}
