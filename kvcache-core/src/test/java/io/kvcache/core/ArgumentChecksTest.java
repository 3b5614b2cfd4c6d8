package io.kvcache.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.codec.HeadStore;
import io.kvcache.codec.StorageCodec;
import io.kvcache.model.LlamaConfig;
import io.kvcache.retention.SnapKV;
import io.kvcache.retention.TokenSelection;
import io.kvcache.workload.Fidelity;
import io.kvcache.workload.SyntheticWorkload;
import io.kvcache.workload.WorkloadSpec;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;

/**
 * Public entry points outside the cache itself refuse arguments that would otherwise compute nonsense
 * or fail far from the call, with a message naming the argument and the value; snapshots and
 * references do not change when a caller edits the arrays it passed in or got back.
 */
class ArgumentChecksTest {

  static void refused(Executable call, String... mentions) {
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, call);
    for (String m : mentions) {
      assertTrue(e.getMessage().contains(m), "message \"" + e.getMessage() + "\" should mention " + m);
    }
  }

  @Test
  void poolingAndRanksRefuseKernelsAndRanksOutOfRange() {
    float[] in = {1, 2, 3, 4}, out = new float[4];
    refused(() -> TokenSelection.pool(in, 0, 4, 2, true, out, 0), "kernel", "2");
    refused(() -> TokenSelection.pool(in, 0, 4, 0, false, out, 0), "kernel", "0");
    refused(() -> TokenSelection.pool(in, 0, 4, -3, true, out, 0), "kernel", "-3");
    TokenSelection.pool(in, 0, 4, 3, true, out, 0);
    assertEquals(4f, out[3]);
    refused(() -> TokenSelection.kthLargest(in, 0, 4, 0, new float[4]), "k", "0");
    refused(() -> TokenSelection.kthLargest(in, 0, 4, 5, new float[4]), "k", "5");
    assertEquals(3f, TokenSelection.kthLargest(in, 0, 4, 2, new float[4]));
    refused(() -> SnapKV.aggregate(new float[8], 2, 4, null, new float[4]), "aggregation", "null");
  }

  @Test
  void storeRefusesPositionsItWouldNeverAttend() {
    HeadStore store = StorageCodec.f32().newStore(4);
    float[] row = {1, 2, 3, 4};
    refused(() -> store.append(row, 0, row, 0, HeadStore.EMPTY), "position", "" + HeadStore.EMPTY);
    refused(() -> store.append(row, 0, row, 0, -1), "position", "-1");
    assertEquals(0, store.size(), "a refused append stores nothing");
    store.append(row, 0, row, 0, 7);
    assertEquals(1, store.size());
  }

  @Test
  void aReaderRefusesAStoreOfAnotherHeadDimension() {
    refused(() -> new io.kvcache.reader.PagedAttention(io.kvcache.kernel.Kernels.scalar(), 0), "headDim", "0");
    io.kvcache.reader.PagedAttention reader = new io.kvcache.reader.PagedAttention(io.kvcache.kernel.Kernels.scalar(), 8);
    HeadStore store = StorageCodec.f32().newStore(16);
    float[] row = new float[16];
    store.append(row, 0, row, 0, 0);
    refused(() -> reader.decode(store, 1, new float[8], 0, 0, 1f, new float[8], 0), "headDim 16", "8");
  }

  @Test
  void aWorkloadRefusesLayersItDoesNotHave() {
    SyntheticWorkload w = new SyntheticWorkload(new AttentionShape(2, 2, 1, 4), WorkloadSpec.standard(16, 1, 1));
    refused(() -> w.layer(2), "layer", "2");
    refused(() -> w.layer(-1), "layer", "-1");
    assertEquals(17 * 2 * 4, w.layer(1).q().length);
    refused(() -> new SyntheticWorkload(new AttentionShape(1, 32, 8, 128), WorkloadSpec.standard(1 << 20, 0, 1)),
        "totalTokens * queryWidth");
  }

  @Test
  void ropeScalingNamesTheFieldThatIsOutOfRange() {
    refused(() -> new LlamaConfig.RopeScaling(Double.POSITIVE_INFINITY, 1, 4, 8192), "factor", "Infinity");
    refused(() -> new LlamaConfig.RopeScaling(8, 0, 4, 8192), "low_freq_factor", "0.0");
    refused(() -> new LlamaConfig.RopeScaling(8, 1, Double.NaN, 8192), "high_freq_factor", "NaN");
    refused(() -> new LlamaConfig.RopeScaling(8, 1, 4, 0), "original_max_position_embeddings", "0");
    new LlamaConfig.RopeScaling(8, 1, 4, 8192);
  }

  @Test
  void statsAreASnapshotTheCallerCannotEdit() {
    long[] seen = {5};
    int[][] held = {{3, 4}};
    CacheStats s = new CacheStats("x", new AttentionShape(1, 2, 2, 4), seen, held, 10, 2);
    seen[0] = 99;
    held[0][1] = 99;
    s.retained()[0][0] = 77;
    s.tokensSeen()[0] = 77;
    assertEquals(5, s.tokensSeen()[0]);
    assertEquals(3, s.retained()[0][0]);
    assertEquals(4, s.retained()[0][1]);
    assertEquals(7, s.totalRetained());
  }

  @Test
  void statsMustMatchTheirShapeAndCompareByContent() {
    AttentionShape shape = new AttentionShape(1, 2, 2, 4);
    refused(() -> new CacheStats("x", shape, new long[] {100, 100, 100}, new int[][] {{1, 1}}, 10, 0), "tokensSeen",
        "one entry per layer (1)", "3");
    refused(() -> new CacheStats("x", shape, new long[] {5}, new int[][] {{1}}, 10, 0), "retained[0]",
        "one entry per KV head (2)", "1");
    refused(() -> new CacheStats("x", shape, new long[] {-1}, new int[][] {{1, 1}}, 10, 0), "tokensSeen[0]", "-1");
    refused(() -> new CacheStats("x", shape, new long[] {5}, new int[][] {{1, -2}}, 10, 0), "retained[0][1]", "-2");
    refused(() -> new CacheStats("x", shape, new long[] {5}, new int[][] {{1, 1}}, -10, 0), "payloadBytes", "-10");
    refused(() -> new CacheStats("x", shape, null, new int[][] {{1, 1}}, 10, 0), "must not be null");
    CacheStats a = new CacheStats("x", shape, new long[] {5}, new int[][] {{3, 4}}, 10, 2);
    CacheStats b = new CacheStats("x", shape, new long[] {5}, new int[][] {{3, 4}}, 10, 2);
    assertEquals(a, b);
    assertEquals(a.hashCode(), b.hashCode());
    assertTrue(a.toString().contains("retained=[[3, 4]]"), a.toString());
    org.junit.jupiter.api.Assertions.assertNotEquals(a, new CacheStats("x", shape, new long[] {5}, new int[][] {{3, 5}},
        10, 2));
    refused(() -> a.maxRetained(1), "layer", "1");
  }

  @Test
  void aFidelityReferenceNeedsOneOutputRowPerDecodeStep() {
    AttentionShape shape = new AttentionShape(1, 2, 1, 4);
    SyntheticWorkload w = new SyntheticWorkload(shape, WorkloadSpec.standard(16, 2, 1));
    refused(() -> new Fidelity.Reference(w, 4, new float[1][8]), "outputs", "2", "1");
    refused(() -> new Fidelity.Reference(w, 4, new float[][] {new float[8], new float[7]}), "outputs[1]", "8", "7");
    assertThrows(NullPointerException.class, () -> new Fidelity.Reference(w, 4, null));
    float[][] rows = {new float[8], new float[8]};
    Fidelity.Reference r = new Fidelity.Reference(w, 4, rows);
    rows[0][0] = 1f;
    r.outputs()[1][1] = 1f;
    assertEquals(0f, r.outputs()[0][0], "the reference copied its rows");
    assertEquals(0f, r.outputs()[1][1], "and hands out copies");
    // The real reference, compared with the strategy that made it: zero error, not a missing row's.
    Fidelity.Reference real = Fidelity.reference(w, 4);
    assertEquals(0.0, Fidelity.compare(Strategies.full(StorageCodec.f32()), real).meanError(), 0.0);
  }
}
