package io.kvcache.model;

import io.kvcache.core.AttentionShape;
import java.util.Map;

/**
 * The hyper-parameters of a Llama-family decoder (Llama, Mistral, Qwen2), validated.
 *
 * @param architecture     the source's architecture name, for logs
 * @param vocabSize        vocabulary size, 1 to 2^24
 * @param hidden           model width, 1 to 65536
 * @param intermediate     MLP width, 1 to 262144
 * @param layers           decoder layers, 1 to 1024
 * @param heads            query heads, a multiple of {@code kvHeads}
 * @param kvHeads          key/value heads
 * @param headDim          channels per head, even, 2 to 1024
 * @param rmsEps           RMSNorm epsilon, in (0, 1)
 * @param ropeTheta        RoPE base, {@code > 1}
 * @param ropeScaling      the "llama3" frequency scaling, or null
 * @param ropeInterleaved  true when rotated pairs are adjacent channels (GGUF "llama" layout), false
 *                         when they are {@code i} and {@code i + headDim/2} (Hugging Face layout)
 * @param tieEmbeddings    whether the output head is the token embedding
 * @param attentionBias    whether q/k/v projections carry a bias (Qwen2)
 * @param bosId            beginning-of-sequence id, or -1
 * @param eosId            end-of-sequence id, or -1
 * @param maxPositions     positions the model was trained for
 */
public record LlamaConfig(String architecture, int vocabSize, int hidden, int intermediate, int layers, int heads,
    int kvHeads, int headDim, float rmsEps, double ropeTheta, RopeScaling ropeScaling, boolean ropeInterleaved,
    boolean tieEmbeddings, boolean attentionBias, int bosId, int eosId, int maxPositions) {

  /**
   * The "llama3" RoPE frequency rule: wavelengths longer than {@code originalMaxPositions /
   * lowFreqFactor} are divided by {@code factor}, shorter than {@code originalMaxPositions /
   * highFreqFactor} are kept, and those between are interpolated smoothly.
   *
   * @param factor               scaling factor, {@code >= 1}
   * @param lowFreqFactor        low-frequency factor, {@code > 0}
   * @param highFreqFactor       high-frequency factor, {@code > lowFreqFactor}
   * @param originalMaxPositions the pre-training context, {@code >= 1}
   */
  public record RopeScaling(double factor, double lowFreqFactor, double highFreqFactor, int originalMaxPositions) {
    /** Validates the ranges, naming the field, its value and the range. */
    public RopeScaling {
      if (!(factor >= 1) || !Double.isFinite(factor)) {
        throw new IllegalArgumentException("rope scaling factor must be finite and >= 1, got " + factor);
      }
      if (!(lowFreqFactor > 0) || !Double.isFinite(lowFreqFactor)) {
        throw new IllegalArgumentException("rope scaling low_freq_factor must be finite and > 0, got " + lowFreqFactor);
      }
      if (!(highFreqFactor > lowFreqFactor) || !Double.isFinite(highFreqFactor)) {
        throw new IllegalArgumentException("rope scaling high_freq_factor must be finite and > low_freq_factor="
            + lowFreqFactor + ", got " + highFreqFactor);
      }
      if (originalMaxPositions < 1) {
        throw new IllegalArgumentException("rope scaling original_max_position_embeddings must be >= 1, got "
            + originalMaxPositions);
      }
    }
  }

  /** Validates every field; the message names the field, its value and the accepted range. */
  public LlamaConfig {
    in("vocab_size", vocabSize, 1, 1 << 24);
    in("hidden_size", hidden, 1, 65536);
    in("intermediate_size", intermediate, 1, 262144);
    in("num_hidden_layers", layers, 1, 1024);
    in("num_key_value_heads", kvHeads, 1, 4096);
    in("num_attention_heads", heads, 1, 4096);
    in("head_dim", headDim, 2, 1024);
    in("max_position_embeddings", maxPositions, 1, Integer.MAX_VALUE);
    if (heads % kvHeads != 0) {
      throw new IllegalArgumentException("num_attention_heads (" + heads + ") must be a multiple of num_key_value_heads ("
          + kvHeads + ")");
    }
    if ((headDim & 1) != 0) {
      throw new IllegalArgumentException("head_dim must be even for RoPE, got " + headDim);
    }
    if (!(rmsEps > 0 && rmsEps < 1)) {
      throw new IllegalArgumentException("rms_norm_eps must be in (0, 1), got " + rmsEps);
    }
    if (!(ropeTheta > 1) || Double.isInfinite(ropeTheta)) {
      throw new IllegalArgumentException("rope_theta must be a finite number > 1, got " + ropeTheta);
    }
    if (bosId < -1 || bosId >= vocabSize || eosId < -1 || eosId >= vocabSize) {
      throw new IllegalArgumentException("bos/eos ids must be -1 or in [0, vocab_size=" + vocabSize + "), got bos="
          + bosId + ", eos=" + eosId);
    }
  }

  private static void in(String name, int v, int lo, int hi) {
    if (v < lo || v > hi) {
      throw new IllegalArgumentException(name + " must be in [" + lo + ", " + hi + "], got " + v);
    }
  }

  /** @return the attention geometry for a {@link io.kvcache.core.KVCache} */
  public AttentionShape shape() {
    return new AttentionShape(layers, heads, kvHeads, headDim);
  }

  /** @return floats in one token's query row */
  public int qWidth() {
    return heads * headDim;
  }

  /** @return floats in one token's key row */
  public int kvWidth() {
    return kvHeads * headDim;
  }

  /**
   * The rotary inverse frequencies {@code theta^(-2i/headDim)}, with the "llama3" rule applied when
   * configured, in float32 as Hugging Face computes them.
   *
   * @return {@code headDim / 2} inverse frequencies
   */
  public float[] inverseFrequencies() {
    int half = headDim / 2;
    float[] f = new float[half];
    for (int i = 0; i < half; i++) {
      float exponent = (float) (2 * i) / headDim;
      float inv = (float) (1.0 / Math.pow(ropeTheta, exponent));
      if (ropeScaling != null) {
        RopeScaling s = ropeScaling;
        double lowWavelen = s.originalMaxPositions() / s.lowFreqFactor();
        double highWavelen = s.originalMaxPositions() / s.highFreqFactor();
        double wavelen = 2 * Math.PI / inv;
        if (wavelen > lowWavelen) {
          inv = (float) (inv / s.factor());
        } else if (wavelen >= highWavelen) {
          double smooth = (s.originalMaxPositions() / wavelen - s.lowFreqFactor())
              / (s.highFreqFactor() - s.lowFreqFactor());
          inv = (float) ((1 - smooth) * inv / s.factor() + smooth * inv);
        }
      }
      f[i] = inv;
    }
    return f;
  }

  /**
   * Reads a Hugging Face {@code config.json} already parsed into maps.
   *
   * @param m      the JSON object
   * @param source the file, for messages
   * @return the config
   * @throws IllegalArgumentException naming the file and key for a missing, mistyped or unsupported entry
   */
  static LlamaConfig fromHuggingFace(Map<String, Object> m, String source) {
    String arch = "LlamaForCausalLM";
    Object archs = m.get("architectures");
    if (archs instanceof java.util.List<?> l && !l.isEmpty()) {
      arch = String.valueOf(l.get(0));
    }
    if (!arch.equals("LlamaForCausalLM") && !arch.equals("MistralForCausalLM") && !arch.equals("Qwen2ForCausalLM")
        && !arch.equals("LlamaSwiftKVForCausalLM")) {
      throw new IllegalArgumentException(source + ": architectures[0] is '" + arch
          + "', expected LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM or LlamaSwiftKVForCausalLM");
    }
    boolean qwen2 = arch.equals("Qwen2ForCausalLM");
    if (Boolean.TRUE.equals(m.get("mlp_bias"))) {
      throw new IllegalArgumentException(source + ": mlp_bias=true is not supported, expected false");
    }
    String act = str(m, "hidden_act", "silu", source);
    if (!act.equals("silu")) {
      throw new IllegalArgumentException(source + ": hidden_act is '" + act + "', expected 'silu'");
    }
    int hidden = integer(m, "hidden_size", null, source);
    int heads = integer(m, "num_attention_heads", null, source);
    int kvHeads = integer(m, "num_key_value_heads", heads, source);
    int headDim = m.get("head_dim") == null ? hidden / Math.max(1, heads) : integer(m, "head_dim", null, source);
    @SuppressWarnings("unchecked")
    Map<String, Object> rope = m.get("rope_parameters") instanceof Map<?, ?> rp ? (Map<String, Object>) rp
        : m.get("rope_scaling") instanceof Map<?, ?> rs ? (Map<String, Object>) rs : Map.of();
    double theta = m.get("rope_theta") != null ? dbl(m, "rope_theta", null, source)
        : dbl(rope, "rope_theta", 10000.0, source);
    String ropeType = str(rope, "rope_type", str(rope, "type", "default", source), source);
    RopeScaling scaling = switch (ropeType) {
      case "default" -> null;
      case "llama3" -> new RopeScaling(dbl(rope, "factor", null, source), dbl(rope, "low_freq_factor", null, source),
          dbl(rope, "high_freq_factor", null, source), integer(rope, "original_max_position_embeddings", null, source));
      default -> throw new IllegalArgumentException(source + ": rope type '" + ropeType
          + "' is not supported, expected 'default' or 'llama3'");
    };
    // The decoder attends to every held token. A model trained with a sliding window (Mistral v0.1, Qwen2
    // with use_sliding_window) is refused: past its window the outputs would drift without a word.
    int maxPositions = integer(m, "max_position_embeddings", 4096, source);
    if (m.get("sliding_window") != null && (!qwen2 || Boolean.TRUE.equals(m.get("use_sliding_window")))) {
      int window = integer(m, "sliding_window", null, source);
      if (window < maxPositions) {
        throw new IllegalArgumentException(source + ": sliding_window is " + window + ", below max_position_embeddings="
            + maxPositions + "; sliding-window attention is not supported (expected null or >= "
            + "max_position_embeddings)");
      }
    }
    boolean bias = qwen2 || Boolean.TRUE.equals(m.get("attention_bias"));
    boolean tie = m.get("tie_word_embeddings") == null ? false : Boolean.TRUE.equals(m.get("tie_word_embeddings"));
    return new LlamaConfig(arch, integer(m, "vocab_size", null, source), hidden,
        integer(m, "intermediate_size", null, source), integer(m, "num_hidden_layers", null, source), heads, kvHeads,
        headDim, (float) dbl(m, "rms_norm_eps", 1e-6, source), theta, scaling, false, tie, bias,
        optionalId(m, "bos_token_id", source), optionalId(m, "eos_token_id", source), maxPositions);
  }

  private static int optionalId(Map<String, Object> m, String key, String source) {
    Object v = m.get(key);
    if (v instanceof java.util.List<?> l) {
      v = l.isEmpty() ? null : l.get(0);
    }
    if (v == null) {
      return -1;
    }
    if (!(v instanceof Long n) || n < -1 || n > Integer.MAX_VALUE) {
      throw new IllegalArgumentException(source + ": key " + key + " must be a token id (an integer from 0 to "
          + Integer.MAX_VALUE + "), got " + v);
    }
    return (int) (long) n;
  }

  private static int integer(Map<String, Object> m, String key, Integer dflt, String source) {
    Object v = m.get(key);
    if (v == null) {
      if (dflt == null) {
        throw new IllegalArgumentException(source + ": missing key " + key + ", expected an integer");
      }
      return dflt;
    }
    if (!(v instanceof Long n) || n < Integer.MIN_VALUE || n > Integer.MAX_VALUE) {
      throw new IllegalArgumentException(source + ": key " + key + " must be a 32-bit integer, got " + v);
    }
    return (int) (long) n;
  }

  private static double dbl(Map<String, Object> m, String key, Double dflt, String source) {
    Object v = m.get(key);
    if (v == null) {
      if (dflt == null) {
        throw new IllegalArgumentException(source + ": missing key " + key + ", expected a number");
      }
      return dflt;
    }
    if (!(v instanceof Number n)) {
      throw new IllegalArgumentException(source + ": key " + key + " must be a number, got " + v);
    }
    return n.doubleValue();
  }

  private static String str(Map<String, Object> m, String key, String dflt, String source) {
    Object v = m.get(key);
    if (v == null) {
      return dflt;
    }
    if (!(v instanceof String s)) {
      throw new IllegalArgumentException(source + ": key " + key + " must be a string, got " + v);
    }
    return s;
  }
}
