package io.kvcache.model;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;

/**
 * Writes a Llama model as a Hugging Face checkpoint directory ({@code config.json} +
 * {@code model.safetensors}), plain or in the layout of Snowflake's released SwiftKV checkpoints:
 * architecture {@code LlamaSwiftKVForCausalLM}, {@code model_type: llama_swiftkv}, {@code swiftkv:
 * true}, {@code num_key_value_layers}, {@code key_value_group_size}, the base model's tensors, and
 * the extra {@code model.norm_swiftkv.weight}, {@code model.layers.L.self_attn.q_proj_swiftkv.*} for
 * every layer {@code L >= num_key_value_layers} and {@code k_proj_swiftkv.* / v_proj_swiftkv.*} for
 * the first layer of each group (see {@code docs/swiftkv.md}).
 *
 * <p>The {@code _swiftkv} tensors start as copies of the base model's: each layer's q/k/v projections
 * (and biases), and layer {@code num_key_value_layers}'s input norm as {@code norm_swiftkv}; replace
 * any tensor with {@link #tensor}. Rows of a GGUF model's q/k projections are put back in the Hugging
 * Face (half-split RoPE) order.
 */
public final class CheckpointWriter {

  private final LlamaConfig config;
  private final SwiftKVConfig swift;
  private final Map<String, float[]> tensors = new LinkedHashMap<>();
  private final Map<String, int[]> shapes = new LinkedHashMap<>();
  private DType type = DType.F32;

  private CheckpointWriter(LlamaWeights base, SwiftKVConfig swift) {
    if (base == null) {
      throw new IllegalArgumentException("base must not be null");
    }
    if (base.swiftKV != null) {
      throw new IllegalArgumentException("base must be a plain model, got a SwiftKV checkpoint "
          + base.swiftKV);
    }
    LlamaConfig c = base.config();
    if (!Arrays.equals(base.invFreq, c.inverseFrequencies())) {
      throw new IllegalArgumentException("base's RoPE frequencies come from a rope_freqs tensor, which a config.json"
          + " cannot express; expected frequencies that follow from its config");
    }
    if (swift != null && swift.keyValueLayers() >= c.layers()) {
      throw new IllegalArgumentException("num_key_value_layers must be < num_hidden_layers = " + c.layers()
          + " for a SwiftKV checkpoint, got " + swift.keyValueLayers());
    }
    if (swift != null && (c.layers() - swift.keyValueLayers()) % swift.groupSize() != 0) {
      throw new IllegalArgumentException("key_value_group_size = " + swift.groupSize() + " must divide "
          + (c.layers() - swift.keyValueLayers()) + " (num_hidden_layers - num_key_value_layers)");
    }
    this.config = c;
    this.swift = swift;
    boolean permute = c.ropeInterleaved();
    put("embed", -1, base.embedding.toFloats(), c.vocabSize(), c.hidden());
    for (int i = 0; i < c.layers(); i++) {
      LlamaWeights.Layer l = base.layers[i];
      float[] wq = permute ? halfSplit(l.wq.toFloats(), c.heads(), c.headDim(), c.hidden()) : l.wq.toFloats();
      float[] wk = permute ? halfSplit(l.wk.toFloats(), c.kvHeads(), c.headDim(), c.hidden()) : l.wk.toFloats();
      float[] wv = l.wv.toFloats();
      put("attn_norm", i, l.attnNorm.clone(), c.hidden());
      put("wq", i, wq, c.qWidth(), c.hidden());
      put("wk", i, wk, c.kvWidth(), c.hidden());
      put("wv", i, wv, c.kvWidth(), c.hidden());
      float[] bq = null;
      float[] bk = null;
      if (c.attentionBias()) {
        bq = permute ? halfSplit(l.bq, c.heads(), c.headDim(), 1) : l.bq.clone();
        bk = permute ? halfSplit(l.bk, c.kvHeads(), c.headDim(), 1) : l.bk.clone();
        put("bq", i, bq, c.qWidth());
        put("bk", i, bk, c.kvWidth());
        put("bv", i, l.bv.clone(), c.kvWidth());
      }
      if (swift != null && i >= swift.keyValueLayers()) {
        put("wq_swiftkv", i, wq.clone(), c.qWidth(), c.hidden());
        if (c.attentionBias()) {
          put("bq_swiftkv", i, bq.clone(), c.qWidth());
        }
        if (swift.kvSource(i) == i) {
          put("wk_swiftkv", i, wk.clone(), c.kvWidth(), c.hidden());
          put("wv_swiftkv", i, wv.clone(), c.kvWidth(), c.hidden());
          if (c.attentionBias()) {
            put("bk_swiftkv", i, bk.clone(), c.kvWidth());
            put("bv_swiftkv", i, l.bv.clone(), c.kvWidth());
          }
        }
      }
      put("wo", i, l.wo.toFloats(), c.hidden(), c.qWidth());
      put("mlp_norm", i, l.mlpNorm.clone(), c.hidden());
      put("gate", i, l.gate.toFloats(), c.intermediate(), c.hidden());
      put("up", i, l.up.toFloats(), c.intermediate(), c.hidden());
      put("down", i, l.down.toFloats(), c.hidden(), c.intermediate());
    }
    put("norm", -1, base.finalNorm.clone(), c.hidden());
    if (swift != null) {
      put("norm_swiftkv", -1, base.layers[swift.keyValueLayers()].attnNorm.clone(), c.hidden());
    }
    if (!c.tieEmbeddings()) {
      put("output", -1, base.output.toFloats(), c.vocabSize(), c.hidden());
    }
  }

  /**
   * A plain checkpoint of {@code base}.
   *
   * @param base the model, any layout
   * @return the writer
   */
  public static CheckpointWriter plain(LlamaWeights base) {
    return new CheckpointWriter(base, null);
  }

  /**
   * A SwiftKV checkpoint of {@code base} in Snowflake's released layout.
   *
   * @param base  the plain model, any layout
   * @param swift {@code num_key_value_layers} (below the depth) and {@code key_value_group_size}
   *              (dividing the layers past it)
   * @return the writer, its {@code _swiftkv} tensors copies of the base model's
   */
  public static CheckpointWriter swiftKV(LlamaWeights base, SwiftKVConfig swift) {
    if (swift == null) {
      throw new IllegalArgumentException("swift must not be null");
    }
    return new CheckpointWriter(base, swift);
  }

  private void put(String logical, int layer, float[] data, int... shape) {
    String name = LlamaWeights.hfName(logical, layer);
    tensors.put(name, data);
    shapes.put(name, shape);
  }

  /** @return the names of the tensors that will be written, in the Hugging Face layout */
  public Set<String> tensorNames() {
    return Collections.unmodifiableSet(tensors.keySet());
  }

  /**
   * Replaces a tensor's elements.
   *
   * @param name   one of {@link #tensorNames()}, e.g. {@code model.layers.8.self_attn.k_proj_swiftkv.weight}
   * @param values its elements, row-major, as many as it has (copied)
   * @return this writer
   */
  public CheckpointWriter tensor(String name, float[] values) {
    float[] old = tensors.get(name);
    if (old == null) {
      throw new IllegalArgumentException("name must be one of this checkpoint's tensors, got " + name);
    }
    if (values == null || values.length != old.length) {
      throw new IllegalArgumentException("values for " + name + " must hold " + old.length + " floats, got "
          + (values == null ? "null" : values.length));
    }
    tensors.put(name, values.clone());
    return this;
  }

  /**
   * @param type the stored dtype of every tensor: F32 (default), F16 or BF16
   * @return this writer
   */
  public CheckpointWriter dtype(DType type) {
    if (type != DType.F32 && type != DType.F16 && type != DType.BF16) {
      throw new IllegalArgumentException("type must be F32, F16 or BF16, got " + type);
    }
    this.type = type;
    return this;
  }

  /**
   * Writes {@code config.json} and {@code model.safetensors} into {@code dir}, created if needed.
   *
   * @param dir the checkpoint directory
   * @throws IOException when a file cannot be written
   */
  public void write(Path dir) throws IOException {
    Files.createDirectories(dir);
    SafetensorsWriter st = new SafetensorsWriter();
    for (Map.Entry<String, float[]> e : tensors.entrySet()) {
      st.add(e.getKey(), type, shapes.get(e.getKey()), e.getValue());
    }
    st.write(dir.resolve("model.safetensors"));
    Files.writeString(dir.resolve("config.json"), configJson(), StandardCharsets.UTF_8);
  }

  private String configJson() {
    LlamaConfig c = config;
    String dtype = switch (type) {
      case F16 -> "float16";
      case BF16 -> "bfloat16";
      default -> "float32";
    };
    StringBuilder j = new StringBuilder("{\n");
    j.append("  \"architectures\": [\"").append(swift != null ? "LlamaSwiftKVForCausalLM" : "LlamaForCausalLM")
        .append("\"],\n");
    j.append("  \"model_type\": \"").append(swift != null ? "llama_swiftkv" : "llama").append("\",\n");
    j.append("  \"torch_dtype\": \"").append(dtype).append("\",\n");
    j.append("  \"vocab_size\": ").append(c.vocabSize()).append(",\n");
    j.append("  \"hidden_size\": ").append(c.hidden()).append(",\n");
    j.append("  \"intermediate_size\": ").append(c.intermediate()).append(",\n");
    j.append("  \"num_hidden_layers\": ").append(c.layers()).append(",\n");
    j.append("  \"num_attention_heads\": ").append(c.heads()).append(",\n");
    j.append("  \"num_key_value_heads\": ").append(c.kvHeads()).append(",\n");
    j.append("  \"head_dim\": ").append(c.headDim()).append(",\n");
    j.append("  \"hidden_act\": \"silu\",\n");
    j.append("  \"rms_norm_eps\": ").append(c.rmsEps()).append(",\n");
    j.append("  \"rope_theta\": ").append(c.ropeTheta()).append(",\n");
    if (c.ropeScaling() != null) {
      LlamaConfig.RopeScaling s = c.ropeScaling();
      j.append("  \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": ").append(s.factor())
          .append(", \"low_freq_factor\": ").append(s.lowFreqFactor()).append(", \"high_freq_factor\": ")
          .append(s.highFreqFactor()).append(", \"original_max_position_embeddings\": ")
          .append(s.originalMaxPositions()).append("},\n");
    }
    j.append("  \"attention_bias\": ").append(c.attentionBias()).append(",\n");
    j.append("  \"mlp_bias\": false,\n");
    j.append("  \"tie_word_embeddings\": ").append(c.tieEmbeddings()).append(",\n");
    if (c.bosId() >= 0) {
      j.append("  \"bos_token_id\": ").append(c.bosId()).append(",\n");
    }
    if (c.eosId() >= 0) {
      j.append("  \"eos_token_id\": ").append(c.eosId()).append(",\n");
    }
    if (swift != null) {
      j.append("  \"swiftkv\": true,\n");
      j.append("  \"num_key_value_layers\": ").append(swift.keyValueLayers()).append(",\n");
      j.append("  \"key_value_group_size\": ").append(swift.groupSize()).append(",\n");
    }
    j.append("  \"max_position_embeddings\": ").append(c.maxPositions()).append("\n}\n");
    return j.toString();
  }

  /** The inverse of GGUF's RoPE row order: row {@code 2i} of a head goes to {@code i}, {@code 2i+1} to {@code i + d/2}. */
  static float[] halfSplit(float[] src, int heads, int headDim, int cols) {
    float[] dst = new float[src.length];
    int half = headDim / 2;
    for (int h = 0; h < heads; h++) {
      for (int i = 0; i < half; i++) {
        for (int s = 0; s < 2; s++) {
          int from = h * headDim + 2 * i + s;
          int to = h * headDim + s * half + i;
          System.arraycopy(src, from * cols, dst, to * cols, cols);
        }
      }
    }
    return dst;
  }
}
