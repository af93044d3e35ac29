// Large memory fills shared with helper threads (native/fill-ranges.cc).
import { addon } from './native.js';

/**
 * Fills at least this large (in total) are shared with the helper threads; smaller ones are
 * done by the caller alone, so a caller with a cheaper fill of its own may keep it below this.
 */
export const FILL_SHARED_FROM: number = addon.fillSharedFrom;

/**
 * Fills byte ranges of `views` with `value` in one native call. `plan` holds `count` triples
 * `[viewIndex, byteOffset, byteLength]`, offsets relative to the view. Every range is checked
 * first (EINVAL, nothing written, when one names no view or lies outside it).
 *
 * A fill of 128 KiB or more is laid end to end in 64 KiB pieces that the calling thread shares with up to
 * two helper threads (one fewer than the CPUs this process may use): one thread's stores run at about its
 * own bandwidth, and a null disk's 1 MiB reads of zeros are bound by exactly that. The call
 * still returns only when every byte is written, so callers see a plain synchronous fill.
 * Helpers are started on the first shared fill, look for the next one for 50 µs after each,
 * then sleep. Arguments are checked natively only: this sits on the hot path.
 */
export function fillRanges(views: readonly ArrayBufferView[], plan: Float64Array, count: number, value = 0): void {
  addon.fillRanges(views, plan, count, value);
}

/** What the shared fills have done so far, process-wide. */
export interface FillStats {
  /** Helper threads running (0 before the first shared fill, or on one CPU). */
  helpers: number;
  /** Fills shared with the helpers (one per 64 MiB of a larger fill). */
  sharedFills: number;
  /** 64 KiB pieces the helpers wrote. */
  helperPieces: number;
}

/** Counters of {@link fillRanges}' shared fills. */
export function fillStats(): FillStats {
  const [helpers, sharedFills, helperPieces] = addon.fillStats();
  return { helpers, sharedFills, helperPieces };
}
