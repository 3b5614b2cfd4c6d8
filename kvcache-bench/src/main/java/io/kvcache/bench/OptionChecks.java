package io.kvcache.bench;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;

/**
 * Checks of file options made before any work starts (numbers go through
 * {@link io.kvcache.core.Checks#inRange}), so that a mistake costs a one-line
 * message (picocli prints an {@link IllegalArgumentException}'s message and exits 2), not a stack
 * trace after a run of minutes.
 */
final class OptionChecks {

  private OptionChecks() {}

  /** An output file: its directory must exist. */
  static void outputFile(String option, Path file) {
    if (file == null) {
      return;
    }
    Path dir = file.toAbsolutePath().getParent();
    if (dir == null || !Files.isDirectory(dir)) {
      throw new IllegalArgumentException(option + " " + file + ": directory " + dir + " does not exist");
    }
  }

  /** A PNG the chart library writes: as {@link #outputFile}, and named .png (the library appends it otherwise). */
  static void pngFile(String option, Path file) {
    outputFile(option, file);
    if (file != null && !file.getFileName().toString().toLowerCase(Locale.ROOT).endsWith(".png")) {
      throw new IllegalArgumentException(option + " " + file + ": expected a file name ending in .png");
    }
  }

  /** An input file: it must exist and be readable. */
  static void inputFile(String option, Path file) {
    if (file != null && !Files.isReadable(file)) {
      throw new IllegalArgumentException(option + " " + file + ": no such file, or not readable");
    }
  }
}
