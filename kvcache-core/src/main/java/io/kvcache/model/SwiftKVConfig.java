package io.kvcache.model;

import io.kvcache.swiftkv.SwiftKVSchedule;
import java.util.Map;

/**
 * The SwiftKV part of a checkpoint's {@code config.json}, in the layout of Snowflake's released
 * SwiftKV models ({@code LlamaSwiftKVForCausalLM}, model type {@code llama_swiftkv}): with
 * {@code swiftkv: true}, layers from {@code num_key_value_layers} on take their keys and values from
 * the one hidden state entering that layer, through the model-wide {@code model.norm_swiftkv} and the
 * {@code k_proj_swiftkv}/{@code v_proj_swiftkv} of the first layer of each group of
 * {@code key_value_group_size} layers; their queries come from {@code q_proj_swiftkv}. See
 * {@code docs/swiftkv.md} for the tensor names and the source they were read from.
 *
 * @param keyValueLayers {@code num_key_value_layers}: the layers that run for every prompt token and
 *                       the first SingleInputKV layer, in {@code [1, num_hidden_layers]}
 * @param groupSize      {@code key_value_group_size}: layers past that point per shared K/V,
 *                       {@code >= 1}
 */
public record SwiftKVConfig(int keyValueLayers, int groupSize) {

  /** Validates the ranges, naming the config key. */
  public SwiftKVConfig {
    if (keyValueLayers < 1) {
      throw new IllegalArgumentException("num_key_value_layers must be >= 1, got " + keyValueLayers);
    }
    if (groupSize < 1) {
      throw new IllegalArgumentException("key_value_group_size must be >= 1, got " + groupSize);
    }
  }

  /** @return the prefill schedule the checkpoint was trained for: skip from {@link #keyValueLayers}, AcrossKV groups of {@link #groupSize} */
  public SwiftKVSchedule schedule() {
    return SwiftKVSchedule.atLayer(keyValueLayers, groupSize);
  }

  /**
   * The layer whose {@code _swiftkv} K/V projections compute {@code layer}'s keys and values: itself
   * below {@link #keyValueLayers}, else the first layer of its group.
   *
   * @param layer a layer index
   * @return the projecting layer, {@code <= layer}
   */
  public int kvSource(int layer) {
    return layer < keyValueLayers ? layer : keyValueLayers + (layer - keyValueLayers) / groupSize * groupSize;
  }

  /**
   * Reads the SwiftKV keys of a parsed {@code config.json}.
   *
   * @param m      the JSON object
   * @param layers {@code num_hidden_layers}, already validated
   * @param source the file, for messages
   * @return the settings, or null when the config does not enable SwiftKV ({@code swiftkv} absent or
   *     false: the checkpoint then runs as the plain model, as its own modelling code does)
   * @throws ModelFormatException naming the file, the key, its value and what was expected
   */
  static SwiftKVConfig fromHuggingFace(Map<String, Object> m, int layers, String source) {
    Object kvMap = m.get("kv_sharing_map");
    if (kvMap instanceof Map<?, ?> km && !km.isEmpty()) {
      throw new ModelFormatException(source + ": key kv_sharing_map = " + kvMap + " is not supported: it is not part"
          + " of the released SwiftKV layout (num_key_value_layers + key_value_group_size); expected it absent or {}");
    }
    Object on = m.get("swiftkv");
    if (on != null && !(on instanceof Boolean)) {
      throw new ModelFormatException(source + ": key swiftkv must be true or false, got " + on);
    }
    if (!Boolean.TRUE.equals(on)) {
      return null;
    }
    int kvLayers = optionalInt(m, "num_key_value_layers", layers, source);
    int group = optionalInt(m, "key_value_group_size", 1, source);
    if (kvLayers < 1 || kvLayers > layers) {
      throw new ModelFormatException(source + ": num_key_value_layers = " + kvLayers + ", expected 1 to"
          + " num_hidden_layers = " + layers);
    }
    if (group < 1) {
      throw new ModelFormatException(source + ": key_value_group_size = " + group + ", expected >= 1");
    }
    if ((layers - kvLayers) % group != 0) {
      throw new ModelFormatException(source + ": key_value_group_size = " + group + " must divide num_hidden_layers"
          + " - num_key_value_layers = " + layers + " - " + kvLayers + " = " + (layers - kvLayers));
    }
    return new SwiftKVConfig(kvLayers, group);
  }

  private static int optionalInt(Map<String, Object> m, String key, int dflt, String source) {
    Object v = m.get(key);
    if (v == null) {
      return dflt;
    }
    if (!(v instanceof Long n) || n < Integer.MIN_VALUE || n > Integer.MAX_VALUE) {
      throw new ModelFormatException(source + ": key " + key + " must be a 32-bit integer, got " + v);
    }
    return (int) (long) n;
  }
}
