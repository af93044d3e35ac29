/**
 * Errors of the vhost-user domain.
 * @module
 */

/** Stable codes carried by {@link ProtocolError}. */
export type ProtocolErrorCode =
  /** Header version bits are not 1, or a reply flag where a request was expected. */
  | 'BAD_HEADER'
  /** `size` does not fit the request type. */
  | 'BAD_SIZE'
  /** Number of fds attached does not fit the request. */
  | 'BAD_FD_COUNT'
  /** Request type unknown to the codec. */
  | 'UNKNOWN_REQUEST'
  /** A 64-bit address, size or offset is ≥ 2^53 (or an end overflows). */
  | 'ADDRESS_RANGE'
  /** Payload fields are inconsistent (reserved bits, counts, config size...). */
  | 'BAD_PAYLOAD'
  /** The peer closed in the middle of a message. */
  | 'TRUNCATED'
  /** The request needs a feature that was not negotiated. */
  | 'NOT_NEGOTIATED'
  /** A request argument is invalid in the current state (ring index, ring size, ...). */
  | 'INVALID_ARGUMENT'
  /** A memory table or region is unusable (overlap, fd too small, too many regions, ...). */
  | 'BAD_MEMORY'
  /** The request is understood but not implemented here. */
  | 'UNSUPPORTED'
  /** The peer does not read its socket and our send queue overflowed. */
  | 'PEER_NOT_READING'
  /** A reply did not match the request (front-end side). */
  | 'BAD_REPLY'
  /** The device reported a failure. */
  | 'DEVICE_FAILED'
  /** The connection is closed. */
  | 'CLOSED'
  /** A request timed out (front-end side). */
  | 'TIMEOUT';

/** Any protocol-level failure: malformed message, invalid request, or negotiation failure. */
export class ProtocolError extends Error {
  /** Stable machine-readable code. */
  readonly code: ProtocolErrorCode;
  /**
   * True when the connection must be closed even if a REPLY_ACK could report the failure
   * (e.g. vhost-user.rst asks to close on INBAND_NOTIFICATIONS without BACKEND_REQ + REPLY_ACK).
   */
  readonly fatal: boolean;
  constructor(code: ProtocolErrorCode, message: string, opts: { fatal?: boolean } = {}) {
    super(message);
    this.name = 'ProtocolError';
    this.code = code;
    this.fatal = opts.fatal ?? false;
  }
}
