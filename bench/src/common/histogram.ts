/**
 * A preallocated log-linear latency histogram (HdrHistogram's idea, written small): exact
 * below 256 ns, then 128 sub-buckets per power of two, so every recorded value lands in a
 * bucket less than 0.8 % wide. Recording is one `Math.clz32`, a shift and an increment — no
 * allocation, so it can sit on a benchmark's completion path.
 *
 * ```
 *  index:  0 … 255 | 256 … 383     | 384 … 511     | …   (128 per octave)
 *  value:  0 … 255 | 256 … 510 (÷2)| 512 … 1020 (÷4)| …
 * ```
 * @module
 */

const SUB_BITS = 7;
const SUB = 1 << SUB_BITS; // 128 sub-buckets per octave
const LINEAR = SUB * 2; // values below 256 are exact
/** Highest octave kept: 2^31 ns ≈ 2.1 s; longer values are clamped into the last bucket. */
const MAX_EXP = 30;
const BUCKETS = LINEAR + (MAX_EXP - 7) * SUB;

/** Bucket index of a non-negative integer value. */
function indexOf(v: number): number {
  if (v < LINEAR) return v < 0 ? 0 : v;
  if (v >= 2 ** (MAX_EXP + 1)) return BUCKETS - 1;
  const e = 31 - Math.clz32(v); // ≥ 8
  const shift = e - SUB_BITS;
  return LINEAR + (e - 8) * SUB + ((v >>> shift) - SUB);
}

/** Lowest value that falls in bucket `i`. */
function lowOf(i: number): number {
  if (i < LINEAR) return i;
  const k = i - LINEAR;
  const e = 8 + Math.floor(k / SUB);
  const shift = e - SUB_BITS;
  return (SUB + (k % SUB)) * 2 ** shift;
}

/** Width of bucket `i`. */
function widthOf(i: number): number {
  if (i < LINEAR) return 1;
  return 2 ** (8 + Math.floor((i - LINEAR) / SUB) - SUB_BITS);
}

/** Latency histogram of integer nanoseconds. */
export class Histogram {
  private readonly counts = new Float64Array(BUCKETS);
  /** Values recorded. */
  count = 0;
  /** Sum of the values (for the mean). */
  sum = 0;
  /** Largest value recorded. */
  max = 0;

  /** Records one value in ns (rounded to an integer, negatives count as 0). */
  record(ns: number): void {
    const v = ns > 0 ? Math.round(ns) : 0;
    this.counts[indexOf(v)]++;
    this.count++;
    this.sum += v;
    if (v > this.max) this.max = v;
  }

  /** Adds every value of `other` (merging per-queue histograms). */
  add(other: Histogram): void {
    for (let i = 0; i < BUCKETS; i++) this.counts[i] += other.counts[i];
    this.count += other.count;
    this.sum += other.sum;
    if (other.max > this.max) this.max = other.max;
  }

  /** Forgets everything (end of warm-up). */
  reset(): void {
    this.counts.fill(0);
    this.count = 0;
    this.sum = 0;
    this.max = 0;
  }

  /**
   * Value at quantile `q` (0..1): the midpoint of the bucket holding the ⌈q·count⌉-th value,
   * capped at the largest value seen. 0 when empty.
   */
  quantile(q: number): number {
    if (this.count === 0) return 0;
    const rank = Math.max(1, Math.ceil(q * this.count));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i];
      if (seen >= rank) return Math.min(this.max, lowOf(i) + (widthOf(i) - 1) / 2);
    }
    return this.max;
  }

  /** Mean value, 0 when empty. */
  mean(): number {
    return this.count === 0 ? 0 : this.sum / this.count;
  }
}
