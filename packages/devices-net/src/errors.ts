/**
 * Typed errors of the net device package. Each has a stable `code` string.
 * @module
 */

/** A configuration or control-plane error of the net device or one of its backends. */
export class NetError extends Error {
  /** Stable machine-readable code, e.g. `'bad-mac'`, `'bad-option'`. */
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'NetError';
    this.code = code;
  }
}
