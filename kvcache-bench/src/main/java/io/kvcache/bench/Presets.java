package io.kvcache.bench;

import io.kvcache.codec.StorageCodec;
import io.kvcache.core.KVCacheStrategy;
import io.kvcache.core.Strategies;
import io.kvcache.retention.RetentionPolicy;
import io.kvcache.rocketkv.HybridSparseReader;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.function.IntFunction;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The strategies the bench tool knows: every preset by name, each sized to a token budget (for
 * RocketKV the tokens a decode step reads; it keeps more), and a
 * small grammar for combining axes by hand.
 *
 * <p>Combination grammar: axis choices joined by {@code +}, e.g. {@code f32+sinks(4,1020)}. Codecs:
 * {@code f16}, {@code f32}, {@code skvq} (K2/V1.5, the paper's default), {@code skvq(K,V,G)} (key and value
 * bits, channels per quantization group, the paper's window and sinks). Retention: {@code keepAll},
 * {@code sinks(S,W)}, {@code snapKV(B,W,P)} (budget, observation window, pooling kernel), {@code h2o(H,R)}
 * (heavy hitters, recent tokens), {@code kvCrush(B)} (budget, the defaults otherwise: SnapKV importance,
 * window 32, share 0.25), so that e.g. {@code skvq+kvCrush(1024)} runs KVCrush over SKVQ's codes.
 * Readers: {@code dense},
 * {@code hybrid(K)} (RocketKV's stage 2 attending to K tokens per step, a quarter of the channels for
 * the estimate, the 16 most recent tokens always).
 * Unnamed axes keep the full-cache defaults (f16, keep-all, dense, full schedule).
 */
final class Presets {

  private Presets() {}

  /** Presets by name; each takes the token budget per KV head (ignored by the full cache). */
  static Map<String, IntFunction<KVCacheStrategy>> all() {
    Map<String, IntFunction<KVCacheStrategy>> m = new LinkedHashMap<>();
    m.put("full-f16", b -> Strategies.full());
    m.put("full-f32", b -> Strategies.full(StorageCodec.f32()));
    m.put("streamingLLM", b -> Strategies.streamingLLM(Math.min(4, b - 1), Math.max(1, b - 4)));
    m.put("snapKV", b -> Strategies.snapKV(b, Math.min(32, b), 7));
    m.put("h2o", b -> Strategies.h2o(Math.max(1, b / 2), Math.max(1, b - b / 2)));
    // KVCrush holds its observation window and at least one representative inside the budget.
    m.put("kvCrush", b -> Strategies.kvCrush(io.kvcache.kvcrush.KVCrush.builder(b)
        .window(Math.max(1, Math.min(32, b - (int) Math.round(0.25 * b)))).build()));
    // KVCrush over H2O's accumulated attention (the authors' own pairing), each bucket represented by its
    // most important token: the configuration whose mean synthetic error is below SnapKV's and H2O's.
    m.put("kvCrush-h2o", b -> Strategies.kvCrush(io.kvcache.kvcrush.KVCrush.builder(b)
        .importance(io.kvcache.kvcrush.KVCrush.Importance.H2O)
        .representative(io.kvcache.kvcrush.KVCrush.Representative.MOST_IMPORTANT).build()));
    // RocketKV's budget is what a decode step reads; stage 1 keeps sqrt(T * budget) tokens.
    m.put("rocketKV", b -> Strategies.rocketKV(Math.max(32, b)));
    m.put("skvq-k2v1.5", b -> Strategies.skvq());
    m.put("skvq-k4v4", b -> Strategies.skvq(4, 4, 128));
    return m;
  }

  /**
   * The presets a model run can honour: {@link #all()} plus the prefill-schedule strategies, FastKV
   * (budget = KV tokens per KV head) and SwiftKV (skip from half the depth; AcrossKV pairs, or none).
   */
  static Map<String, IntFunction<KVCacheStrategy>> withSchedules() {
    Map<String, IntFunction<KVCacheStrategy>> m = all();
    m.put("fastKV", b -> Strategies.fastKV(b));
    m.put("swiftKV", b -> Strategies.swiftKV(0.5, 2));
    m.put("swiftKV-single", b -> Strategies.swiftKV(0.5, 1));
    return m;
  }

  /**
   * @param name a preset name
   * @return whether the preset takes a token budget (the others ignore it)
   */
  static boolean budgeted(String name) {
    return switch (name) {
      case "full-f16", "full-f32", "skvq-k2v1.5", "skvq-k4v4", "swiftKV", "swiftKV-single" -> false;
      default -> true;
    };
  }

  /**
   * Resolves a preset name or a combination against {@link #all()}.
   *
   * @param spec   a preset name from {@link #all()}, a name the tables print for one (such as
   *               {@code streamingLLM(4,1020)}), or a combination such as {@code f32+sinks(4,1020)}
   * @param budget tokens per KV head for budgeted presets
   * @return the strategy
   * @throws IllegalArgumentException naming the unknown part and what is accepted
   */
  static KVCacheStrategy resolve(String spec, int budget) {
    return resolve(spec, budget, all());
  }

  /**
   * Resolves as {@link #resolve(String, int)}, against the presets that need a model run too
   * ({@link #withSchedules()}).
   *
   * @param spec   a preset name, a printed name, or a combination
   * @param budget tokens per KV head for budgeted presets
   * @return the strategy
   * @throws IllegalArgumentException naming the unknown part and what is accepted
   */
  static KVCacheStrategy resolveWithSchedules(String spec, int budget) {
    return resolve(spec, budget, withSchedules());
  }

  /**
   * A preset's key, matched without regard to case, or null.
   *
   * @param spec a name
   * @param presets the presets to look in
   * @return the key as {@code presets} spells it, or null
   */
  static String presetKey(String spec, Map<String, IntFunction<KVCacheStrategy>> presets) {
    for (String key : presets.keySet()) {
      if (key.equalsIgnoreCase(spec.trim())) {
        return key;
      }
    }
    return null;
  }

  private static KVCacheStrategy resolve(String spec, int budget, Map<String, IntFunction<KVCacheStrategy>> presets) {
    String key = presetKey(spec, presets);
    if (key != null) {
      return presets.get(key).apply(budget);
    }
    KVCacheStrategy printed = printedName(spec, presets);
    if (printed != null) {
      return printed;
    }
    return combination(spec, presets);
  }

  /**
   * The preset whose strategy name, as the tables print it, is {@code spec}: the budget is among the
   * name's whole numbers, or is the sum of the first two ({@code streamingLLM(S,W)} holds {@code S + W}),
   * so each of those budgets is tried. Null when none matches.
   */
  private static KVCacheStrategy printedName(String spec, Map<String, IntFunction<KVCacheStrategy>> presets) {
    String want = spec.trim().replace(" ", "");
    Matcher numbers = Pattern.compile("\\d+").matcher(want);
    List<Integer> budgets = new ArrayList<>();
    List<Integer> seen = new ArrayList<>();
    while (numbers.find() && seen.size() < 8) {
      try {
        seen.add(Integer.parseInt(numbers.group()));
      } catch (NumberFormatException e) {
        return null;
      }
    }
    budgets.addAll(seen);
    if (seen.size() >= 2) {
      budgets.add(seen.get(0) + seen.get(1));
    }
    budgets.add(1024); // budget-free presets (SKVQ's names carry their widths, not a budget)
    for (int b : budgets) {
      for (IntFunction<KVCacheStrategy> f : presets.values()) {
        try {
          KVCacheStrategy s = f.apply(b);
          if (s.name().replace(" ", "").equalsIgnoreCase(want)) {
            return s;
          }
        } catch (IllegalArgumentException e) {
          // a budget this preset cannot take: not its name
        }
      }
    }
    return null;
  }

  private static KVCacheStrategy combination(String spec, Map<String, IntFunction<KVCacheStrategy>> presets) {
    KVCacheStrategy.Builder b = KVCacheStrategy.builder().name(spec);
    // Each axis may be chosen once: "sinks(4,1020)+keepAll" would otherwise run the last choice under
    // a name that says the first. (-1 keeps a trailing empty part, which is refused below.)
    java.util.Set<String> axes = new java.util.HashSet<>();
    try {
      for (String part : spec.split("\\+", -1)) {
        String p = part.trim().replace(" ", "").toLowerCase(Locale.ROOT);
        Matcher sinks = Pattern.compile("sinks\\((\\d+),(\\d+)\\)").matcher(p);
        Matcher hybrid = Pattern.compile("hybrid\\((\\d+)\\)").matcher(p);
        Matcher skvq = Pattern.compile("skvq\\(([0-9.]+),([0-9.]+),(\\d+)\\)").matcher(p);
        Matcher snap = Pattern.compile("snapkv\\((\\d+),(\\d+),(\\d+)\\)").matcher(p);
        Matcher h2o = Pattern.compile("h2o\\((\\d+),(\\d+)\\)").matcher(p);
        Matcher crush = Pattern.compile("kvcrush\\((\\d+)\\)").matcher(p);
        String axis;
        switch (p) {
          case "f16" -> {
            axis = "codec";
            b.codec(StorageCodec.f16());
          }
          case "f32" -> {
            axis = "codec";
            b.codec(StorageCodec.f32());
          }
          case "skvq" -> {
            axis = "codec";
            b.codec(io.kvcache.skvq.SkvqCodec.of(io.kvcache.skvq.SkvqConfig.paperDefault()));
          }
          case "keepall" -> {
            axis = "retention";
            b.retention(RetentionPolicy.keepAll());
          }
          case "dense" -> {
            axis = "reader";
            b.reader(io.kvcache.reader.AttentionReader.dense());
          }
          default -> {
            if (sinks.matches()) {
              axis = "retention";
              b.retention(RetentionPolicy.sinksAndWindow(Integer.parseInt(sinks.group(1)),
                  Integer.parseInt(sinks.group(2))));
            } else if (snap.matches()) {
              axis = "retention";
              b.retention(io.kvcache.retention.SnapKV.of(Integer.parseInt(snap.group(1)),
                  Integer.parseInt(snap.group(2)), Integer.parseInt(snap.group(3))));
            } else if (h2o.matches()) {
              axis = "retention";
              b.retention(new io.kvcache.retention.H2O(Integer.parseInt(h2o.group(1)),
                  Integer.parseInt(h2o.group(2))));
            } else if (crush.matches()) {
              axis = "retention";
              b.retention(io.kvcache.kvcrush.KVCrush.builder(Integer.parseInt(crush.group(1))).build());
            } else if (skvq.matches()) {
              axis = "codec";
              int g = Integer.parseInt(skvq.group(3));
              b.codec(io.kvcache.skvq.SkvqCodec.of(io.kvcache.skvq.SkvqConfig.of(Double.parseDouble(skvq.group(1)),
                  Double.parseDouble(skvq.group(2))).withGroups(g, g)));
            } else if (hybrid.matches()) {
              axis = "reader";
              b.reader(HybridSparseReader.of(Integer.parseInt(hybrid.group(1)), 0.25, 16));
            } else {
              throw new IllegalArgumentException("strategy '" + spec + "': unknown part '" + part.trim()
                  + "'; expected a preset (" + String.join(", ", presets.keySet()) + "), a name a table prints for "
                  + "one, such as streamingLLM(4,1020), or axis choices joined by "
                  + "'+': f16, f32, skvq, skvq(KBITS,VBITS,GROUP), keepAll, sinks(S,W), snapKV(B,W,P), h2o(H,R), "
                  + "kvCrush(B), dense, hybrid(K)");
            }
          }
        }
        if (!axes.add(axis)) {
          throw new IllegalArgumentException("strategy '" + spec + "': the " + axis + " is chosen twice");
        }
      }
    } catch (NumberFormatException e) {
      throw new IllegalArgumentException("strategy '" + spec + "': a number is out of range or malformed ("
          + e.getMessage() + ")");
    }
    return b.build();
  }

  /**
   * @param specs names or combinations; empty means every preset
   * @param budget tokens per KV head
   * @return the strategies, in order
   */
  static List<KVCacheStrategy> resolveAll(List<String> specs, int budget) {
    List<KVCacheStrategy> out = new ArrayList<>();
    if (specs == null || specs.isEmpty()) {
      for (IntFunction<KVCacheStrategy> f : all().values()) {
        out.add(f.apply(budget));
      }
    } else {
      for (String s : specs) {
        out.add(resolve(s, budget));
      }
    }
    return out;
  }
}
