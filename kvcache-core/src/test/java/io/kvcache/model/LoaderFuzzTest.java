package io.kvcache.model;

import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import io.kvcache.core.TestData;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Corrupted files, byte by byte: a checkpoint with a few random bytes changed in its header (where every
 * length, offset, type and key lives) or anywhere else either loads or is refused with a
 * {@link ModelFormatException} that names the file. Never another exception (an index out of bounds, a
 * negative array size, an out-of-memory error from a length taken on trust) and never a hang. The
 * targeted cases are in {@link LoaderErrorsTest}; this one looks for the cases nobody thought of, with a
 * fresh seed per run ({@code -Dkvcache.test.seed} replays one).
 */
class LoaderFuzzTest {

  /** Trials per format; {@code -Dkvcache.test.fuzzTrials} runs more. */
  private static final int TRIALS = Integer.getInteger("kvcache.test.fuzzTrials", 300);

  @TempDir
  Path tmp;

  @Test
  void aGgufWithRandomBytesChangedLoadsOrIsRefusedByName() throws IOException {
    Path original = TinyModels.write(tmp.resolve("original.gguf"), 3, 2, DType.F16);
    byte[] good = Files.readAllBytes(original);
    // The header (metadata and tensor infos) is what precedes the tensors' bytes, up to alignment padding.
    long data = 0;
    for (Weight w : GgufFile.read(original).tensors().values()) {
      data += w.byteSize();
    }
    int header = (int) (good.length - data);
    assertTrue(header > 64 && header < good.length, "header of " + header + " bytes");
    Path f = tmp.resolve("fuzz.gguf");
    long seed = TestData.seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    assertTimeoutPreemptively(Duration.ofSeconds(120), () -> {
      for (int trial = 0; trial < TRIALS; trial++) {
        String what = corrupt(good, header, rnd, f);
        check(() -> {
          try (LlamaWeights w = LlamaWeights.loadGguf(f)) {
            run(w); // a changed byte that still makes a model (a weight, a norm's epsilon)
          }
        }, "fuzz.gguf", "trial " + trial + " (" + what + "), seed " + seed);
      }
    }, "a corrupted GGUF made the loader hang; seed " + seed);
    assertTrue(loaded > 0 && refused > 0, "loaded " + loaded + ", refused " + refused + " of " + TRIALS + ", seed " + seed);
  }

  @Test
  void aSafetensorsCheckpointWithRandomBytesChangedLoadsOrIsRefusedByName() throws IOException {
    Path tiny = LoaderErrorsTest.TINY;
    byte[] good = Files.readAllBytes(tiny.resolve("model.safetensors"));
    int header = (int) Math.min(good.length, 8 + ByteBuffer.wrap(good).order(ByteOrder.LITTLE_ENDIAN).getLong(0));
    byte[] config = Files.readAllBytes(tiny.resolve("config.json"));
    Path dir = Files.createDirectories(tmp.resolve("ckpt"));
    Path weights = dir.resolve("model.safetensors");
    Path cfg = dir.resolve("config.json");
    long seed = TestData.seed();
    SplittableRandom rnd = new SplittableRandom(seed);
    assertTimeoutPreemptively(Duration.ofSeconds(120), () -> {
      for (int trial = 0; trial < TRIALS; trial++) {
        String what;
        if (rnd.nextInt(4) == 0) { // the config's text
          Files.write(weights, good);
          what = "config.json " + corrupt(config, config.length, rnd, cfg);
        } else {
          Files.write(cfg, config);
          what = "model.safetensors " + corrupt(good, header, rnd, weights);
        }
        // A refusal names the file, or the checkpoint where the fault is in no one file (a tensor missing).
        check(() -> {
          try (LlamaWeights w = LlamaWeights.loadHuggingFace(dir)) {
            run(w);
          }
        }, "ckpt", "trial " + trial + " (" + what + "), seed " + seed);
      }
    }, "a corrupted checkpoint made the loader hang; seed " + seed);
    assertTrue(loaded > 0 && refused > 0, "loaded " + loaded + ", refused " + refused + " of " + TRIALS + ", seed " + seed);
  }

  /**
   * Writes {@code good} with one to four bytes changed to {@code to}: mostly inside the first
   * {@code header} bytes, sometimes anywhere. Returns where, for the failure message.
   */
  private static String corrupt(byte[] good, int header, SplittableRandom rnd, Path to) throws IOException {
    byte[] b = good.clone();
    int n = 1 + rnd.nextInt(4);
    StringBuilder what = new StringBuilder();
    for (int i = 0; i < n; i++) {
      int at = rnd.nextInt(10) < 8 ? rnd.nextInt(header) : rnd.nextInt(b.length);
      // Half the changes are small (a length or count off by a little), half any byte.
      byte old = b[at];
      b[at] = rnd.nextBoolean() ? (byte) (old + (rnd.nextBoolean() ? 1 : -1)) : (byte) rnd.nextInt(256);
      what.append(i == 0 ? "" : ", ").append("byte ").append(at).append(' ').append(old & 0xff).append("->")
          .append(b[at] & 0xff);
    }
    Files.write(to, b);
    return what.toString();
  }

  /**
   * What loaded must run: a prompt and a decode step. A weight changed to infinity or NaN may be refused
   * on the way (the cache refuses non-finite keys and values, the generator non-finite logits), by name;
   * nothing else may go wrong.
   */
  private static void run(LlamaWeights w) {
    LlamaModel m = LlamaModel.of(w);
    float[] logits = new float[m.config().vocabSize()];
    try (LlamaModel.Sequence s = m.newSequence(io.kvcache.core.Strategies.full(), 4)) {
      s.prefill(new int[] {1, 2, 3}, logits);
      s.decode(4, logits);
    } catch (IllegalArgumentException | IllegalStateException e) {
      assertTrue(e.getMessage() != null && (e.getMessage().contains("NaN") || e.getMessage().contains("Infinity")
          || e.getMessage().contains("finite")), "a run-time refusal of what loaded must be about a non-finite value: " + e);
    }
  }

  private interface Load {
    void run() throws IOException;
  }

  /** Outcomes of the trials: both must occur, or the test exercised one path only. */
  private int loaded, refused;

  private void check(Load load, String name, String context) {
    try {
      load.run();
      loaded++;
    } catch (ModelFormatException e) {
      refused++;
      assertTrue(e.getMessage() != null && e.getMessage().contains(name),
          "the refusal names " + name + ": '" + e.getMessage() + "', " + context);
    } catch (Throwable t) {
      AssertionError err = new AssertionError("expected a load or a ModelFormatException, got " + t + ", " + context);
      err.initCause(t);
      throw err;
    }
  }

  @Test
  void theFuzzerChangesBytes() throws IOException {
    // The harness itself: a corruption differs from the original, or the trials above test nothing.
    byte[] good = new byte[64];
    Path f = tmp.resolve("x");
    SplittableRandom rnd = new SplittableRandom(TestData.seed());
    int changed = 0;
    for (int i = 0; i < 100; i++) {
      corrupt(good, 16, rnd, f);
      if (!java.util.Arrays.equals(good, Files.readAllBytes(f))) {
        changed++;
      }
    }
    if (changed < 90) {
      fail("only " + changed + " of 100 corruptions changed a byte");
    }
  }
}
