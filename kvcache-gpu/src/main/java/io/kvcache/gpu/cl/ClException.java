package io.kvcache.gpu.cl;

/**
 * An OpenCL call failed. The message names the call, the error code and its symbolic name, so that a
 * failure deep in a kernel launch reads as "clEnqueueNDRangeKernel(decode_partial) failed: -54
 * CL_INVALID_WORK_GROUP_SIZE" rather than a bare number.
 */
public final class ClException extends RuntimeException {

  private static final long serialVersionUID = 1L;

  /** The OpenCL error code, or 0 where the failure was not an error code (e.g. no matching device). */
  private final int code;

  /**
   * @param call   the OpenCL call (and its object) that failed
   * @param code   the error code it returned
   * @param detail extra text (a build log), may be empty
   */
  public ClException(String call, int code, String detail) {
    super(call + " failed: " + code + " " + ClErrors.name(code) + (detail.isEmpty() ? "" : "\n" + detail));
    this.code = code;
  }

  /**
   * @param message the whole message, for failures that are not an OpenCL error code
   */
  public ClException(String message) {
    super(message);
    this.code = 0;
  }

  /** @return the OpenCL error code, 0 when there was none */
  public int code() {
    return code;
  }

  /**
   * Throws when {@code code} is not {@code CL_SUCCESS}.
   *
   * @param call the call that returned it
   * @param code its return code
   */
  public static void check(String call, int code) {
    if (code != 0) {
      throw new ClException(call, code, "");
    }
  }
}
