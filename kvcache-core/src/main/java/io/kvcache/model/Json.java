package io.kvcache.model;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A small JSON reader for config.json and safetensors headers: objects become {@link LinkedHashMap},
 * arrays {@link ArrayList}, numbers {@link Double} (or {@link Long} when integral and exact), plus
 * strings, booleans and null. Errors name the source and the character offset.
 */
final class Json {

  private final String s;
  private final String source;
  private int i;

  private Json(String s, String source) {
    this.s = s;
    this.source = source;
  }

  static Object parse(String text, String source) {
    Json j = new Json(text, source);
    j.ws();
    Object v = j.value(0);
    j.ws();
    if (j.i != text.length()) {
      throw j.error("end of input");
    }
    return v;
  }

  private IllegalArgumentException error(String expected) {
    String near = s.substring(i, Math.min(s.length(), i + 20));
    return new IllegalArgumentException(source + ": malformed JSON at offset " + i + ": expected " + expected
        + ", found '" + near + "'");
  }

  private void ws() {
    while (i < s.length() && Character.isWhitespace(s.charAt(i))) {
      i++;
    }
  }

  private Object value(int depth) {
    if (depth > 64) {
      throw error("nesting depth <= 64");
    }
    if (i >= s.length()) {
      throw error("a value");
    }
    char c = s.charAt(i);
    switch (c) {
      case '{': {
        i++;
        Map<String, Object> m = new LinkedHashMap<>();
        ws();
        if (peek('}')) {
          i++;
          return m;
        }
        while (true) {
          ws();
          if (!peek('"')) {
            throw error("a string key");
          }
          int keyAt = i;
          String k = string();
          ws();
          expect(':');
          ws();
          if (m.containsKey(k)) {
            // Which of two values a reader takes is up to the reader: a file that says both is refused.
            i = keyAt;
            throw error("each key once, but \"" + k + "\" appears again");
          }
          m.put(k, value(depth + 1));
          ws();
          if (peek(',')) {
            i++;
          } else {
            expect('}');
            return m;
          }
        }
      }
      case '[': {
        i++;
        List<Object> l = new ArrayList<>();
        ws();
        if (peek(']')) {
          i++;
          return l;
        }
        while (true) {
          ws();
          l.add(value(depth + 1));
          ws();
          if (peek(',')) {
            i++;
          } else {
            expect(']');
            return l;
          }
        }
      }
      case '"':
        return string();
      default:
        if (s.startsWith("true", i)) {
          i += 4;
          return Boolean.TRUE;
        }
        if (s.startsWith("false", i)) {
          i += 5;
          return Boolean.FALSE;
        }
        if (s.startsWith("null", i)) {
          i += 4;
          return null;
        }
        if (s.startsWith("NaN", i) || s.startsWith("Infinity", i) || s.startsWith("-Infinity", i)) {
          throw error("a finite number");
        }
        return number();
    }
  }

  private boolean peek(char c) {
    return i < s.length() && s.charAt(i) == c;
  }

  private void expect(char c) {
    if (!peek(c)) {
      throw error("'" + c + "'");
    }
    i++;
  }

  private String string() {
    expect('"');
    StringBuilder b = new StringBuilder();
    while (true) {
      if (i >= s.length()) {
        throw error("closing '\"'");
      }
      char c = s.charAt(i++);
      if (c == '"') {
        return b.toString();
      }
      if (c == '\\') {
        if (i >= s.length()) {
          throw error("an escape");
        }
        char e = s.charAt(i++);
        switch (e) {
          case 'n' -> b.append('\n');
          case 't' -> b.append('\t');
          case 'r' -> b.append('\r');
          case 'b' -> b.append('\b');
          case 'f' -> b.append('\f');
          case 'u' -> {
            if (i + 4 > s.length()) {
              throw error("4 hex digits");
            }
            try {
              b.append((char) Integer.parseInt(s.substring(i, i + 4), 16));
            } catch (NumberFormatException ex) {
              throw error("4 hex digits");
            }
            i += 4;
          }
          default -> b.append(e);
        }
      } else {
        b.append(c);
      }
    }
  }

  private Object number() {
    int start = i;
    while (i < s.length() && "+-0123456789.eE".indexOf(s.charAt(i)) >= 0) {
      i++;
    }
    String t = s.substring(start, i);
    if (t.isEmpty()) {
      throw error("a value");
    }
    try {
      if (t.indexOf('.') < 0 && t.indexOf('e') < 0 && t.indexOf('E') < 0) {
        return Long.parseLong(t);
      }
      return Double.parseDouble(t);
    } catch (NumberFormatException ex) {
      i = start;
      throw error("a number");
    }
  }
}
