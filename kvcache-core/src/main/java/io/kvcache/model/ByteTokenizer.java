package io.kvcache.model;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;

/**
 * The project's byte-level tokenizer: ids 0 to 255 are the bytes of UTF-8 text, 256 is BOS and 257
 * EOS (vocabulary 258; models may have a larger vocabulary whose extra ids decode to nothing).
 */
public final class ByteTokenizer {

  /** Beginning of sequence. */
  public static final int BOS = 256;
  /** End of sequence. */
  public static final int EOS = 257;
  /** Ids this tokenizer uses. */
  public static final int VOCAB = 258;

  private ByteTokenizer() {}

  /**
   * @param text       the text
   * @param prependBos whether the first id is {@link #BOS}
   * @return the ids
   */
  public static int[] encode(String text, boolean prependBos) {
    byte[] b = text.getBytes(StandardCharsets.UTF_8);
    int o = prependBos ? 1 : 0;
    int[] ids = new int[b.length + o];
    if (prependBos) {
      ids[0] = BOS;
    }
    for (int i = 0; i < b.length; i++) {
      ids[o + i] = b[i] & 0xff;
    }
    return ids;
  }

  /**
   * @param ids token ids; ids from 256 up are skipped
   * @return the text, malformed UTF-8 replaced by U+FFFD
   */
  public static String decode(int[] ids) {
    ByteArrayOutputStream out = new ByteArrayOutputStream(ids.length);
    for (int id : ids) {
      if (id < 0) {
        throw new IllegalArgumentException("token ids must be >= 0, got " + id);
      }
      if (id < 256) {
        out.write(id);
      }
    }
    return out.toString(StandardCharsets.UTF_8);
  }
}
