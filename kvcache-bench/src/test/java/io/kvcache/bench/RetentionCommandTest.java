package io.kvcache.bench;

import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** The retention, decode, jmh and gpu commands name a bad option, its value and the range, before any work. */
class RetentionCommandTest {

  @Test
  void badOptionsAreNamed() {
    String err = CompareCommandTest.refused("retention", "--prompt", "100");
    assertTrue(err.contains("--prompt must be in [256,") && err.contains("got 100"), err);
    err = CompareCommandTest.refused("retention", "--budget-share", "NaN");
    assertTrue(err.contains("--budget-share must be in (0, 1], got NaN"), err);
    err = CompareCommandTest.refused("retention", "--decode", "0");
    assertTrue(err.contains("--decode must be in [1,") && err.contains("got 0"), err);
    err = CompareCommandTest.refused("retention", "--seeds", "-1");
    assertTrue(err.contains("--seeds must be in [0,"), err);
    err = CompareCommandTest.refused("retention", "--first-seed", "-1");
    assertTrue(err.contains("--first-seed must be in [0,") && err.contains("got -1"), err);
    err = CompareCommandTest.refused("retention", "--seeds", "0", "--overhead-prompt", "100");
    assertTrue(err.contains("--overhead-prompt must be in [1024,") && err.contains("got 100"), err);
    err = CompareCommandTest.refused("retention", "--prompt", "256", "--budget-share", "0.1");
    assertTrue(err.contains("at least 64 tokens, got 26"), err);
    err = CompareCommandTest.refused("decode", "--contexts", "0");
    assertTrue(err.contains("--contexts must be in [1,") && err.contains("got 0"), err);
    err = CompareCommandTest.refused("jmh", "--iterations", "0");
    assertTrue(err.contains("--iterations must be in [1,") && err.contains("got 0"), err);
    err = CompareCommandTest.refused("jmh", "--include", "NoSuchBenchmark");
    assertTrue(err.contains("--include 'NoSuchBenchmark' matches no benchmark"), err);
    err = CompareCommandTest.refused("gpu", "--budget", "16");
    assertTrue(err.contains("--budget must be in [64,") && err.contains("got 16"), err);
  }
}
