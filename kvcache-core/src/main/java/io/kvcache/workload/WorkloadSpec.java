package io.kvcache.workload;

import io.kvcache.core.Checks;

/**
 * What a {@link SyntheticWorkload} plants in its keys, values and queries. Every feature is one that
 * real long-context attention shows and that some KV-cache method exploits or must survive.
 *
 * @param promptTokens    prompt length, {@code >= 1}
 * @param decodeTokens    tokens generated after the prompt, {@code >= 0}
 * @param seed            the random seed; equal specs generate equal workloads
 * @param sinks           attention-sink tokens at the start whose keys every query favours
 * @param localHeadShare  share of KV heads whose queries favour recent tokens, in [0, 1]
 * @param needles         planted needle tokens, spread over {@code needleDepths}
 * @param needleDepths    depths of the needles as fractions of the prompt, each in [0, 1)
 * @param regions         topical regions the prompt is split into (contiguous, equal length), {@code >= 1}
 * @param outlierChannels key channels (per head) with a large offset and range, as in real models
 */
public record WorkloadSpec(int promptTokens, int decodeTokens, long seed, int sinks, double localHeadShare,
    int needles, double[] needleDepths, int regions, int outlierChannels) {

  /** Validates ranges; messages name the field, the value and the range. */
  public WorkloadSpec {
    Checks.inRange("promptTokens", promptTokens, 1, Integer.MAX_VALUE / 2);
    Checks.inRange("decodeTokens", decodeTokens, 0, Integer.MAX_VALUE / 2);
    Checks.inRange("sinks", sinks, 0, promptTokens);
    if (!(localHeadShare >= 0 && localHeadShare <= 1)) {
      throw new IllegalArgumentException("localHeadShare must be in [0, 1], got " + localHeadShare);
    }
    Checks.inRange("needles", needles, 0, promptTokens);
    needleDepths = needleDepths.clone();
    if (needles > 0 && needleDepths.length == 0) {
      throw new IllegalArgumentException("needleDepths must not be empty when needles=" + needles);
    }
    for (double dpt : needleDepths) {
      if (!(dpt >= 0 && dpt < 1)) {
        throw new IllegalArgumentException("needleDepths must be in [0, 1), got " + dpt);
      }
    }
    Checks.inRange("regions", regions, 1, promptTokens);
    Checks.inRange("outlierChannels", outlierChannels, 0, 1024);
  }

  /**
   * The default mix: 4 sinks, a quarter of the heads local, 4 needles at 10%, 35%, 60% and 85%
   * depth, 8 regions, 4 outlier key channels.
   *
   * @param promptTokens prompt length
   * @param decodeTokens decode length
   * @param seed         seed
   * @return the spec
   */
  public static WorkloadSpec standard(int promptTokens, int decodeTokens, long seed) {
    return new WorkloadSpec(promptTokens, decodeTokens, seed, Math.min(4, promptTokens), 0.25,
        Math.min(4, promptTokens), new double[] {0.10, 0.35, 0.60, 0.85}, Math.min(8, promptTokens), 4);
  }

  /** @return a copy of the needle depths */
  @Override
  public double[] needleDepths() {
    return needleDepths.clone();
  }

  /** @return total tokens, prompt plus decode */
  public int totalTokens() {
    return promptTokens + decodeTokens;
  }
}
