package io.kvcache.bench;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;

/**
 * The project's trained byte-level model ({@code models/kvcache-byte-4m}) and its held-out code,
 * packed into the bench jar so that the tool needs no files. The loader memory-maps weights, which a
 * jar entry cannot be, so the model is copied once per JVM into a temporary directory.
 */
final class EmbeddedModel {

  /** Resource folder inside the jar. */
  static final String ROOT = "/models/kvcache-byte-4m/";

  private static Path extracted;

  private EmbeddedModel() {}

  /**
   * @return a directory holding the embedded model's {@code config.json} and {@code model.safetensors}
   * @throws UncheckedIOException when the jar lacks the model or the copy fails
   */
  static synchronized Path directory() {
    if (extracted == null) {
      try {
        Path dir = Files.createTempDirectory("kvcache-model-");
        for (String f : new String[] {"config.json", "model.safetensors"}) {
          try (InputStream in = open(f)) {
            Files.copy(in, dir.resolve(f), StandardCopyOption.REPLACE_EXISTING);
          }
          dir.resolve(f).toFile().deleteOnExit();
        }
        dir.toFile().deleteOnExit();
        extracted = dir;
      } catch (IOException e) {
        throw new UncheckedIOException("cannot extract the embedded model: " + e.getMessage(), e);
      }
    }
    return extracted;
  }

  /**
   * @return held-out source code the model never saw in training (see models/kvcache-byte-4m/README.md)
   * @throws UncheckedIOException when the jar lacks the text
   */
  static byte[] heldOutText() {
    try (InputStream in = open("heldout/heldout.txt")) {
      return in.readAllBytes();
    } catch (IOException e) {
      throw new UncheckedIOException("cannot read the embedded held-out text: " + e.getMessage(), e);
    }
  }

  private static InputStream open(String file) throws IOException {
    InputStream in = EmbeddedModel.class.getResourceAsStream(ROOT + file);
    if (in == null) {
      throw new IOException("resource " + ROOT + file + " is missing from the bench jar (built without models/?)");
    }
    return in;
  }
}
