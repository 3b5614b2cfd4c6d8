package io.kvcache.model;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

/**
 * The weights of a Llama-family decoder, views of memory-mapped files (weights are never copied to
 * the heap; norms and biases, a few KiB, are). Each tensor is its own mapping, so a tensor may hold
 * up to 2 GiB and a file any size. At release 21 the JDK cannot unmap a region on demand (the
 * {@code MemorySegment} API is a preview there): {@link #close()} only marks the weights closed,
 * so that later reads fail; the mappings (and a {@code RandomWeights} model's direct buffers) are
 * released when these weights become unreachable and the garbage collector frees them.
 */
public final class LlamaWeights implements AutoCloseable {

  /** One decoder layer's tensors. */
  static final class Layer {
    float[] attnNorm;
    Weight wq;
    Weight wk;
    Weight wv;
    Weight wo;
    float[] bq;
    float[] bk;
    float[] bv;
    float[] mlpNorm;
    Weight gate;
    Weight up;
    Weight down;
  }

  final LlamaConfig config;
  final Weight embedding;
  final float[] finalNorm;
  final Weight output;
  final Layer[] layers;
  final float[] invFreq;
  /** The SwiftKV settings of a SwiftKV checkpoint, or null for a plain model. */
  final SwiftKVConfig swiftKV;
  /** {@code model.norm_swiftkv}: the norm before the SingleInputKV projections, or null. */
  final float[] swiftKVNorm;
  private volatile boolean closed;

  private LlamaWeights(LlamaConfig config, Weight embedding, float[] finalNorm, Weight output, Layer[] layers,
      float[] invFreq, SwiftKVConfig swiftKV, float[] swiftKVNorm) {
    this.swiftKV = swiftKV;
    this.swiftKVNorm = swiftKVNorm;
    this.config = config;
    this.embedding = embedding;
    this.finalNorm = finalNorm;
    this.output = output;
    this.layers = layers;
    this.invFreq = invFreq;
  }

  /** @return the model's hyper-parameters */
  public LlamaConfig config() {
    return config;
  }

  /**
   * @return the SwiftKV settings when this is a SwiftKV checkpoint ({@code swiftkv: true}): its layers
   *     from {@code num_key_value_layers} on then take keys and values from one earlier hidden state,
   *     for every token; empty for a plain model
   */
  public java.util.Optional<SwiftKVConfig> swiftKV() {
    return java.util.Optional.ofNullable(swiftKV);
  }

  /** @return bytes of the weight matrices read per decoded token (every matrix once; the embedding row not counted) */
  public long decodeWeightBytes() {
    long b = output.byteSize();
    for (Layer l : layers) {
      // A SwiftKV layer that shares its group's K/V projection has none of its own.
      b += l.wq.byteSize() + (l.wk == null ? 0 : l.wk.byteSize() + l.wv.byteSize()) + l.wo.byteSize()
          + l.gate.byteSize() + l.up.byteSize() + l.down.byteSize();
    }
    return b;
  }

  /**
   * Loads a model: a directory in the Hugging Face layout, or a {@code .gguf} file.
   *
   * @param path a directory with {@code config.json} and {@code *.safetensors}, or a GGUF file
   * @return the mapped weights
   * @throws IOException          when a file cannot be read
   * @throws ModelFormatException naming the file, tensor or key, offset and expectation
   */
  public static LlamaWeights load(Path path) throws IOException {
    return Files.isDirectory(path) ? loadHuggingFace(path) : loadGguf(path);
  }

  /**
   * Loads {@code config.json} and every {@code *.safetensors} of a Hugging Face checkpoint directory.
   *
   * @param dir the checkpoint directory
   * @return the mapped weights
   * @throws IOException          when a file cannot be read
   * @throws ModelFormatException naming the file, tensor or key, offset and expectation
   */
  public static LlamaWeights loadHuggingFace(Path dir) throws IOException {
    Path cfgFile = dir.resolve("config.json");
    if (!Files.isRegularFile(cfgFile)) {
      throw new ModelFormatException(cfgFile + ": missing; expected a Hugging Face config.json");
    }
    if (Files.size(cfgFile) > (16 << 20)) { // a config is a few KiB: read no more than 16 MiB of one
      throw new ModelFormatException(cfgFile + ": " + Files.size(cfgFile) + " bytes; a config.json is at most 16 MiB");
    }
    Object cfgJson;
    try {
      cfgJson = Json.parse(Files.readString(cfgFile, StandardCharsets.UTF_8), cfgFile.toString());
    } catch (ModelFormatException e) {
      throw e;
    } catch (IllegalArgumentException e) {
      throw new ModelFormatException(e.getMessage());
    } catch (java.nio.charset.CharacterCodingException e) {
      throw new ModelFormatException(cfgFile + ": not UTF-8 text (" + e + ")");
    }
    if (!(cfgJson instanceof Map<?, ?> m)) {
      throw new ModelFormatException(cfgFile + ": offset 0: expected a JSON object");
    }
    @SuppressWarnings("unchecked")
    Map<String, Object> cfgMap = (Map<String, Object>) m;
    LlamaConfig config;
    try {
      config = LlamaConfig.fromHuggingFace(cfgMap, cfgFile.toString());
    } catch (ModelFormatException e) {
      throw e;
    } catch (IllegalArgumentException e) {
      throw new ModelFormatException(cfgFile + ": " + e.getMessage());
    }
    SwiftKVConfig swift = SwiftKVConfig.fromHuggingFace(cfgMap, config.layers(), cfgFile.toString());
    List<Path> shards;
    try (Stream<Path> s = Files.list(dir)) {
      shards = s.filter(p -> p.getFileName().toString().endsWith(".safetensors")).sorted().toList();
    }
    if (shards.isEmpty()) {
      throw new ModelFormatException(dir + ": no *.safetensors files");
    }
    Map<String, Weight> tensors = new HashMap<>();
    Map<String, String> fileOf = new HashMap<>();
    for (Path p : shards) {
      Safetensors.read(p, tensors, fileOf);
    }
    return assemble(config, tensors, fileOf, LlamaWeights::hfName, null, dir.toString(), swift);
  }

  /**
   * Loads a GGUF v3 file with {@code llama} architecture metadata.
   *
   * @param file the {@code .gguf} file
   * @return the mapped weights
   * @throws IOException          when the file cannot be read
   * @throws ModelFormatException naming the file, tensor or key, offset and expectation
   */
  public static LlamaWeights loadGguf(Path file) throws IOException {
    {
      GgufFile g = GgufFile.read(file);
      LlamaConfig config = g.llamaConfig();
      Map<String, String> fileOf = new HashMap<>();
      for (String k : g.tensors().keySet()) {
        fileOf.put(k, file.toString());
      }
      float[] invFreq = null;
      Weight rf = g.tensors().get("rope_freqs.weight");
      if (rf != null) {
        // llama.cpp stores the llama3 rule as per-frequency divisors rather than metadata.
        if ((long) rf.rows() * rf.cols() != config.headDim() / 2) {
          throw new ModelFormatException(file + ": tensor rope_freqs.weight has " + (long) rf.rows() * rf.cols()
              + " elements, expected head_dim/2 = " + config.headDim() / 2);
        }
        float[] factors = rf.toFloats();
        invFreq = config.inverseFrequencies();
        for (int i = 0; i < invFreq.length; i++) {
          if (!(factors[i] > 0) || Float.isInfinite(factors[i])) { // a divisor: positive and finite
            throw new ModelFormatException(file + ": tensor rope_freqs.weight element " + i + " is " + factors[i]
                + ", expected a positive finite divisor");
          }
          invFreq[i] = invFreq[i] / factors[i];
        }
      }
      return assemble(config, g.tensors(), fileOf, LlamaWeights::ggufName, invFreq, file.toString(), null);
    }
  }

  /**
   * Weights from tensors already in memory, named as in GGUF (for tests and benchmarks).
   *
   * @param config  the hyper-parameters
   * @param tensors tensors by GGUF name
   * @return the weights
   */
  static LlamaWeights fromGgufTensors(LlamaConfig config, Map<String, Weight> tensors) {
    Map<String, String> fileOf = new HashMap<>();
    for (String k : tensors.keySet()) {
      fileOf.put(k, "memory");
    }
    return assemble(config, tensors, fileOf, LlamaWeights::ggufName, null, "memory", null);
  }

  static String hfName(String logical, int layer) {
    String p = "model.layers." + layer + ".";
    return switch (logical) {
      case "embed" -> "model.embed_tokens.weight";
      case "norm" -> "model.norm.weight";
      case "output" -> "lm_head.weight";
      case "attn_norm" -> p + "input_layernorm.weight";
      case "wq" -> p + "self_attn.q_proj.weight";
      case "wk" -> p + "self_attn.k_proj.weight";
      case "wv" -> p + "self_attn.v_proj.weight";
      case "wo" -> p + "self_attn.o_proj.weight";
      case "bq" -> p + "self_attn.q_proj.bias";
      case "bk" -> p + "self_attn.k_proj.bias";
      case "bv" -> p + "self_attn.v_proj.bias";
      case "mlp_norm" -> p + "post_attention_layernorm.weight";
      case "gate" -> p + "mlp.gate_proj.weight";
      case "up" -> p + "mlp.up_proj.weight";
      case "down" -> p + "mlp.down_proj.weight";
      case "norm_swiftkv" -> "model.norm_swiftkv.weight";
      case "wq_swiftkv" -> p + "self_attn.q_proj_swiftkv.weight";
      case "wk_swiftkv" -> p + "self_attn.k_proj_swiftkv.weight";
      case "wv_swiftkv" -> p + "self_attn.v_proj_swiftkv.weight";
      case "bq_swiftkv" -> p + "self_attn.q_proj_swiftkv.bias";
      case "bk_swiftkv" -> p + "self_attn.k_proj_swiftkv.bias";
      case "bv_swiftkv" -> p + "self_attn.v_proj_swiftkv.bias";
      default -> throw new AssertionError(logical);
    };
  }

  static String ggufName(String logical, int layer) {
    String p = "blk." + layer + ".";
    return switch (logical) {
      case "embed" -> "token_embd.weight";
      case "norm" -> "output_norm.weight";
      case "output" -> "output.weight";
      case "attn_norm" -> p + "attn_norm.weight";
      case "wq" -> p + "attn_q.weight";
      case "wk" -> p + "attn_k.weight";
      case "wv" -> p + "attn_v.weight";
      case "wo" -> p + "attn_output.weight";
      case "bq" -> p + "attn_q.bias";
      case "bk" -> p + "attn_k.bias";
      case "bv" -> p + "attn_v.bias";
      case "mlp_norm" -> p + "ffn_norm.weight";
      case "gate" -> p + "ffn_gate.weight";
      case "up" -> p + "ffn_up.weight";
      case "down" -> p + "ffn_down.weight";
      default -> throw new AssertionError(logical);
    };
  }

  interface Names {
    String name(String logical, int layer);
  }

  private static LlamaWeights assemble(LlamaConfig c, Map<String, Weight> t, Map<String, String> fileOf, Names names,
      float[] invFreq, String source, SwiftKVConfig swift) {
    Getter g = new Getter(t, fileOf, names, source);
    int q = c.qWidth();
    int kv = c.kvWidth();
    Weight embed = g.matrix("embed", -1, c.vocabSize(), c.hidden());
    float[] norm = g.vector("norm", -1, c.hidden());
    Weight out = c.tieEmbeddings() ? embed : g.matrix("output", -1, c.vocabSize(), c.hidden());
    // A SwiftKV layer's own q/k/v projections are never used (the checkpoint keeps them from the base
    // model); it runs on its _swiftkv tensors instead.
    int firstSwift = swift == null ? c.layers() : swift.keyValueLayers();
    float[] swiftNorm = firstSwift < c.layers() ? g.vector("norm_swiftkv", -1, c.hidden()) : null;
    Layer[] layers = new Layer[c.layers()];
    for (int i = 0; i < layers.length; i++) {
      Layer l = new Layer();
      l.attnNorm = g.vector("attn_norm", i, c.hidden());
      if (i < firstSwift) {
        l.wq = g.matrix("wq", i, q, c.hidden());
        l.wk = g.matrix("wk", i, kv, c.hidden());
        l.wv = g.matrix("wv", i, kv, c.hidden());
        if (c.attentionBias()) {
          l.bq = g.vector("bq", i, q);
          l.bk = g.vector("bk", i, kv);
          l.bv = g.vector("bv", i, kv);
        }
      } else {
        l.wq = g.matrix("wq_swiftkv", i, q, c.hidden());
        boolean projects = swift.kvSource(i) == i;
        if (projects) {
          l.wk = g.matrix("wk_swiftkv", i, kv, c.hidden());
          l.wv = g.matrix("wv_swiftkv", i, kv, c.hidden());
        }
        if (c.attentionBias()) {
          l.bq = g.vector("bq_swiftkv", i, q);
          if (projects) {
            l.bk = g.vector("bk_swiftkv", i, kv);
            l.bv = g.vector("bv_swiftkv", i, kv);
          }
        }
      }
      l.wo = g.matrix("wo", i, c.hidden(), q);
      l.mlpNorm = g.vector("mlp_norm", i, c.hidden());
      l.gate = g.matrix("gate", i, c.intermediate(), c.hidden());
      l.up = g.matrix("up", i, c.intermediate(), c.hidden());
      l.down = g.matrix("down", i, c.hidden(), c.intermediate());
      layers[i] = l;
    }
    return new LlamaWeights(c, embed, norm, out, layers, invFreq != null ? invFreq : c.inverseFrequencies(),
        firstSwift < c.layers() ? swift : null, swiftNorm);
  }

  private static String swiftNote(String tensor) {
    return tensor.contains("_swiftkv") ? " (config.json has swiftkv: true, so every layer from num_key_value_layers on"
        + " needs its _swiftkv tensors)" : "";
  }

  private record Getter(Map<String, Weight> t, Map<String, String> fileOf, Names names, String source) {
    Weight matrix(String logical, int layer, int rows, int cols) {
      String n = names.name(logical, layer);
      Weight w = t.get(n);
      if (w == null) {
        throw new ModelFormatException(source + ": missing tensor " + n + ", expected [" + rows + ", " + cols + "]"
            + swiftNote(n));
      }
      if (w.rows() != rows || w.cols() != cols) {
        throw new ModelFormatException(fileOf.get(n) + ": tensor " + n + " has shape [" + w.rows() + ", " + w.cols()
            + "], expected [" + rows + ", " + cols + "] from the config");
      }
      return w;
    }

    float[] vector(String logical, int layer, int n) {
      String name = names.name(logical, layer);
      Weight w = t.get(name);
      if (w == null) {
        throw new ModelFormatException(source + ": missing tensor " + name + ", expected [" + n + "]" + swiftNote(name));
      }
      if ((long) w.rows() * w.cols() != n) {
        throw new ModelFormatException(fileOf.get(name) + ": tensor " + name + " has " + (long) w.rows() * w.cols()
            + " elements, expected [" + n + "] from the config");
      }
      return w.toFloats();
    }
  }

  /**
   * Marks the weights closed: models and sequences over them then refuse to run (an
   * {@link IllegalStateException}); the mappings go when the model and these weights are unreachable.
   * Idempotent.
   */
  @Override
  public void close() {
    closed = true;
  }

  /** @return whether {@link #close()} was called */
  public boolean isClosed() {
    return closed;
  }

  /** Throws if closed: a model must not go on running on weights its owner has released. */
  void checkOpen() {
    if (closed) {
      throw new IllegalStateException("LlamaWeights are closed");
    }
  }

  /** @return the tensor names a full model of this config holds, in the Hugging Face layout */
  static List<String> hfNames(LlamaConfig c) {
    List<String> l = new ArrayList<>();
    l.add(hfName("embed", -1));
    for (int i = 0; i < c.layers(); i++) {
      for (String s : new String[] {"attn_norm", "wq", "wk", "wv", "wo", "mlp_norm", "gate", "up", "down"}) {
        l.add(hfName(s, i));
      }
    }
    l.add(hfName("norm", -1));
    if (!c.tieEmbeddings()) {
      l.add(hfName("output", -1));
    }
    return l;
  }
}
