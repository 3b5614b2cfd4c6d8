package io.kvcache.model;

/**
 * A model file or directory that cannot be read as what it claims to be: truncated, corrupt, an
 * unknown dtype, a missing tensor or an absurd size. The message names the file, the tensor or key,
 * the offset where known, and what was expected.
 */
public class ModelFormatException extends IllegalArgumentException {
  private static final long serialVersionUID = 1L;

  /** @param message what was found and what was expected, with file and offset */
  public ModelFormatException(String message) {
    super(message);
  }
}
