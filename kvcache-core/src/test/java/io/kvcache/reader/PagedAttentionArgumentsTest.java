package io.kvcache.reader;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvcache.codec.HeadStore;
import io.kvcache.codec.StorageCodec;
import io.kvcache.kernel.Kernels;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;

/** {@link PagedAttention}'s public entry points refuse bad arguments by name, and leave the output alone. */
class PagedAttentionArgumentsTest {

  private static final int D = 8;

  @Test
  void badArgumentsAreNamedBeforeAnythingIsWritten() {
    HeadStore store = StorageCodec.f32().newStore(D);
    float[] kv = new float[D];
    for (int t = 0; t < 20; t++) {
      store.append(kv, 0, kv, 0, t);
    }
    PagedAttention a = new PagedAttention(Kernels.scalar(), D);
    float[] q = new float[2 * D];
    float[] out = new float[2 * D];
    java.util.Arrays.fill(out, 7f);
    float[] before = out.clone();
    expect("group", () -> a.decode(store, 0, q, 0, 19, 1f, out, 0));
    expect("q", () -> a.decode(store, 2, q, 1, 19, 1f, out, 0));
    expect("out", () -> a.decode(store, 2, q, 0, 19, 1f, new float[D], 0));
    expect("tokens", () -> a.attend(store, -1, 1, q, 0, D, new int[1], 0, 1f, out, 0, D));
    expect("positions", () -> a.attend(store, 2, 1, q, 0, D, new int[1], 0, 1f, out, 0, D));
    expect("q", () -> a.attend(store, 2, 1, q, 0, 2 * D, new int[2], 0, 1f, out, 0, D));
    expect("pageCount", () -> a.decodePages(store, 2, q, 0, 19, 1f, out, 0, new int[] {0}, 2));
    expect("pageList[1]", () -> a.decodePages(store, 2, q, 0, 19, 1f, out, 0, new int[] {0, 2}, 2));
    expect("acc", () -> a.weights(store, 1, 2, q, 0, 2 * D, new int[] {19}, 0, 1f, new float[32], 32));
    assertArrayEquals(before, out, "nothing written");
  }

  private static void expect(String name, Executable call) {
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, call);
    assertTrue(e.getMessage().startsWith(name + " must"), e.getMessage());
  }
}
