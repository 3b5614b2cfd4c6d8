package io.kvcache.gpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** Range checks of {@link GpuTuning} and its system properties; no device needed. */
class GpuTuningTest {

  private static void assertRejected(String expected, Runnable r) {
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, r::run);
    assertTrue(e.getMessage().contains(expected), e.getMessage());
  }

  @Test
  void rangesAreCheckedWithTheArgumentNamed() {
    assertRejected("decodeWorkGroup must be a power of two in [32, 1024], got 96",
        () -> new GpuTuning(96, 1024, 4, 4, GpuTuning.Prefill.AUTO));
    assertRejected("decodeWorkGroup must be a power of two in [32, 1024], got 2048",
        () -> new GpuTuning(2048, 4096, 4, 4, GpuTuning.Prefill.AUTO));
    assertRejected("decodeChunk must be 0 (automatic) or a multiple of decodeWorkGroup=128 in [128, 8192], got 200",
        () -> new GpuTuning(128, 200, 4, 4, GpuTuning.Prefill.AUTO));
    assertRejected("decodeChunk must be 0 (automatic) or a multiple of decodeWorkGroup=128 in [128, 8192], got 64",
        () -> new GpuTuning(128, 64, 4, 4, GpuTuning.Prefill.AUTO));
    assertRejected("decodeVector must be 4 or 8, got 2", () -> new GpuTuning(128, 1024, 2, 4, GpuTuning.Prefill.AUTO));
    assertRejected("splitsPerCu must be >= 1, got 0", () -> new GpuTuning(128, 1024, 4, 0, GpuTuning.Prefill.AUTO));
    assertRejected("prefill must not be null", () -> new GpuTuning(128, 1024, 4, 4, null));
  }

  @Test
  void systemPropertiesOverrideTheDefaults() {
    String[] keys = {"kvcache.gpu.decodeChunk", "kvcache.gpu.decodeVector", "kvcache.gpu.prefill"};
    try {
      System.setProperty(keys[0], "512");
      System.setProperty(keys[1], "8");
      System.setProperty(keys[2], "Simt");
      GpuTuning t = GpuTuning.fromSystemProperties();
      assertEquals(512, t.decodeChunk());
      assertEquals(8, t.decodeVector());
      assertEquals(GpuTuning.Prefill.SIMT, t.prefill());
      assertEquals(GpuTuning.defaults().decodeWorkGroup(), t.decodeWorkGroup());
      System.setProperty(keys[2], "tensor");
      assertRejected("kvcache.gpu.prefill must be auto, simt or mma, got \"tensor\"", GpuTuning::fromSystemProperties);
      System.setProperty(keys[2], "auto");
      System.setProperty(keys[0], "lots");
      assertRejected("kvcache.gpu.decodeChunk must be an integer, got \"lots\"", GpuTuning::fromSystemProperties);
    } finally {
      for (String k : keys) {
        System.clearProperty(k);
      }
    }
  }
}
