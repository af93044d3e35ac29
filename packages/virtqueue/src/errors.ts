/**
 * Typed errors of the virtqueue layer, built at the boundary from the hot path's fault numbers.
 * @module
 */
import { faultName } from './faults.js';

/** A guest-memory access or translation failed. `code` is stable (`'unmapped'` ...). */
export class GuestMemoryError extends Error {
  override readonly name = 'GuestMemoryError';
  /** Stable string code, e.g. `'runs-into-gap'`. */
  readonly code: string;
  /** The fault number (`FAULT_*`), or 0 for construction errors that have no fault number. */
  readonly fault: number;
  constructor(code: string, message: string, fault = 0) {
    super(message);
    this.code = code;
    this.fault = fault;
  }

  /** Builds the error for a `FAULT_*` number returned by a translation. */
  static fromFault(fault: number, addr: number, len: number): GuestMemoryError {
    const code = faultName(fault);
    return new GuestMemoryError(code, `guest memory: ${code} at 0x${addr.toString(16)} (+${len})`, fault);
  }
}

/** A descriptor chain the guest published is malformed. The queue is broken afterwards. */
export class ChainError extends Error {
  override readonly name = 'ChainError';
  /** Stable string code, e.g. `'chain-too-long'`. */
  readonly code: string;
  /** The fault number (`FAULT_*`). */
  readonly fault: number;
  /** Head descriptor index of the chain, or -1 if unknown. */
  readonly head: number;
  constructor(fault: number, head = -1) {
    const code = faultName(fault);
    super(`descriptor chain${head >= 0 ? ` (head ${head})` : ''}: ${code}`);
    this.code = code;
    this.fault = fault;
    this.head = head;
  }
}

/** A queue's layout or index state is invalid (bad size, misaligned ring, avail index jump). */
export class QueueError extends Error {
  override readonly name = 'QueueError';
  /** Stable string code, e.g. `'ring-misaligned'`. */
  readonly code: string;
  /** The fault number (`FAULT_*`). */
  readonly fault: number;
  constructor(fault: number, detail = '') {
    const code = faultName(fault);
    super(`virtqueue: ${code}${detail ? ` (${detail})` : ''}`);
    this.code = code;
    this.fault = fault;
  }
}
