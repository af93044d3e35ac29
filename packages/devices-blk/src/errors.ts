/**
 * Errors of the block device: one class, stable `code`s.
 * @module
 */

/** Stable codes of {@link BlkError}. */
export type BlkErrorCode =
  | 'image-not-found'
  | 'image-access'
  | 'image-open'
  | 'image-too-small'
  | 'image-not-writable'
  | 'bad-option'
  | 'too-many-buffers'
  | 'config-read-only';

/** A block device setup failure (bad option, unusable image). The data path never throws these. */
export class BlkError extends Error {
  override readonly name = 'BlkError';
  readonly code: BlkErrorCode;

  constructor(code: BlkErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}
