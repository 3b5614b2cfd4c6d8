package io.kvcache.bench;

import java.io.PrintStream;
import java.util.Locale;

/**
 * A one-line progress bar on stderr for runs longer than a few seconds; silent when disabled, so
 * that stdout stays clean for tables, CSV and JSON.
 */
final class Progress {
  private final PrintStream err;
  private final boolean enabled;
  private final int total;
  private final long start = System.nanoTime();
  private int done;

  Progress(int total, boolean enabled) {
    this.err = System.err;
    this.enabled = enabled;
    this.total = Math.max(1, total);
  }

  /** Marks one step done, with a label for what comes next. */
  synchronized void step(String label) {
    done++;
    draw(label);
  }

  synchronized void draw(String label) {
    if (!enabled) {
      return;
    }
    int width = 30;
    int filled = (int) ((long) width * done / total);
    double secs = (System.nanoTime() - start) / 1e9;
    err.printf(Locale.ROOT, "\r[%s%s] %d/%d %5.1fs %-40.40s", "#".repeat(filled), " ".repeat(width - filled), done,
        total, secs, label);
    err.flush();
  }

  synchronized void finish() {
    if (enabled) {
      err.print("\r" + " ".repeat(100) + "\r");
      err.flush();
    }
  }
}
