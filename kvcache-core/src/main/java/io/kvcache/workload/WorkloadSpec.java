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
 * @param needles         planted needle tokens, spread over {@code needleDepths}: needle {@code i} at depth
 *                        {@code needleDepths[i % needleDepths.length]}, so with more needles than depths
 *                        several land on one token, whose needle direction is then added once per needle
 * @param needleDepths    depths of the needles as fractions of the prompt, each in [0, 1)
 * @param regions         topical regions the prompt is split into (contiguous, equal length), {@code >= 1}
 * @param outlierChannels draws of key channels (per head) given a large offset and range, as in real
 *                        models; drawn with replacement, so a channel drawn twice gets the transform twice
 *                        (kept as it is: every fidelity figure in the docs was measured on it)
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
    if (needleDepths == null) {
      throw new IllegalArgumentException("needleDepths must not be null (pass an empty array for none)");
    }
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

  /** Equal when every field is, the depths compared by content (a record compares arrays by identity). */
  @Override
  public boolean equals(Object o) {
    return o instanceof WorkloadSpec w && promptTokens == w.promptTokens && decodeTokens == w.decodeTokens
        && seed == w.seed && sinks == w.sinks && Double.compare(localHeadShare, w.localHeadShare) == 0
        && needles == w.needles && java.util.Arrays.equals(needleDepths, w.needleDepths) && regions == w.regions
        && outlierChannels == w.outlierChannels;
  }

  @Override
  public int hashCode() {
    return java.util.Objects.hash(promptTokens, decodeTokens, seed, sinks, localHeadShare, needles,
        java.util.Arrays.hashCode(needleDepths), regions, outlierChannels);
  }

  @Override
  public String toString() {
    return "WorkloadSpec[promptTokens=" + promptTokens + ", decodeTokens=" + decodeTokens + ", seed=" + seed
        + ", sinks=" + sinks + ", localHeadShare=" + localHeadShare + ", needles=" + needles + ", needleDepths="
        + java.util.Arrays.toString(needleDepths) + ", regions=" + regions + ", outlierChannels=" + outlierChannels
        + "]";
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
