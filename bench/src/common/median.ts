/**
 * Medians of bench repetitions, shared by the net and blk matrices.
 * @module
 */

/** Median element by `key` (lower median for even counts), or null for none. */
export function median<T>(xs: readonly T[], key: (x: T) => number): T | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => key(a) - key(b));
  return s[Math.floor((s.length - 1) / 2)];
}

/** Median of numbers (the mean of the middle two for even counts); NaN for none. */
export function medianValue(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}
