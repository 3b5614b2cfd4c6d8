package io.kvcache.codec;

/**
 * Storage codec, the first axis: how one retained token's key and value are stored.
 *
 * <p>A codec makes one {@link HeadStore} per layer and KV head. The store owns the bytes; the
 * attention kernels read them through {@link HeadStore#page} (a page decoded to floats) or, for
 * stores that attend in their own encoding, {@link HeadStore.FusedPages}, one page at a time.
 * Implementations are immutable and thread-safe; stores are not.
 */
public interface StorageCodec {

  /**
   * A short name for tables and logs, e.g. {@code "f16"}.
   *
   * @return the name
   */
  String name();

  /**
   * Makes an empty store for one layer and KV head.
   *
   * @param headDim channels per head
   * @return a new store
   */
  HeadStore newStore(int headDim);

  /**
   * Whether what attention reads back for a stored token is the same however the prompt was split
   * into {@code prefill} and {@code append} calls, and in whatever order of calls its rows came: true
   * for f32 and f16, which encode each token alone. A model runner may then store rows out of their
   * prompt chunks (token-selective propagation's selection layer does). Default false, the safe
   * answer: SKVQ quantizes pages as they leave its window and calibrates on the first.
   *
   * @return true when stored values do not depend on how the prompt was split into calls
   */
  default boolean splitInvariant() {
    return false;
  }

  /** 32-bit floats: exact, 4 bytes per value. */
  static StorageCodec f32() {
    return F32Codec.INSTANCE;
  }

  /** IEEE binary16: 2 bytes per value; values must lie within +-65504. */
  static StorageCodec f16() {
    return F16Codec.INSTANCE;
  }
}
