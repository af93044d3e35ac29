/**
 * The block-device checks the e2e tests run in a guest, and their host-side verification.
 *
 * Test data travels on a second, QEMU-served (trusted) read-only virtio disk filled by the host
 * with seeded pseudo-random bytes. The guest copies slices of it onto the disk under test with
 * `dd` (O_DIRECT, or buffered + fsync), reads them back, and prints SHA-256 digests; the host
 * then checks three things against the bytes it generated itself: the digests of the guest's
 * O_DIRECT read-back, the digests of a buffered read-back after dropping the page cache, and
 * the image file byte for byte (written ranges carry the pattern, everything else is untouched).
 *
 * busybox 1.35 `dd` supports `iflag=direct`/`oflag=direct` with `skip_bytes`/`seek_bytes`, so
 * no helper binary is needed; offsets and lengths stay multiples of 512 (the logical block size
 * O_DIRECT requires).
 */
import { createCipheriv, createHash } from 'node:crypto';

/** One slice copied from the source disk to the disk under test. */
export interface PatternWrite {
  /** Byte offset on the disk under test (multiple of 512). */
  readonly offset: number;
  /** Bytes (multiple of 512). */
  readonly length: number;
  /** Byte offset on the source disk (multiple of 512). */
  readonly srcOffset: number;
  /** `direct`: O_DIRECT write; `fsync`: buffered write through the page cache, then fsync (a FLUSH). */
  readonly mode: 'direct' | 'fsync';
}

/** A range the guest discards (`blkdiscard -o OFFSET -l LENGTH`). */
export interface DiscardRange {
  readonly offset: number;
  readonly length: number;
}

const KiB = 1024;
const MiB = 1024 * KiB;

/** Size of the source (pattern) disk. */
export const SRC_SIZE = 4 * MiB;

/**
 * Deterministic pseudo-random bytes: AES-128-CTR keystream keyed by the seed. Fast (GB/s) and
 * reproducible on any host, so a failure can be replayed from the seed in the test name.
 */
export function patternBytes(seed: string, length: number): Buffer {
  const key = createHash('sha256').update(seed).digest().subarray(0, 16);
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  return Buffer.concat([cipher.update(Buffer.alloc(length)), cipher.final()]);
}

/** SHA-256 hex of a buffer. */
export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * The write plan for a disk of `imageSize` bytes (≥ 12 MiB): small and large, 4 KiB-aligned and
 * only sector-aligned, one crossing a 4 KiB boundary, one ending exactly at the end of the disk,
 * one buffered + fsync.
 */
export function defaultPlan(imageSize: number): PatternWrite[] {
  if (imageSize < 12 * MiB || imageSize % 512 !== 0) throw new RangeError('image must be ≥ 12 MiB and a multiple of 512');
  return [
    { offset: 0, length: 512, srcOffset: 0, mode: 'direct' },
    { offset: 3584, length: 1536, srcOffset: 4 * KiB, mode: 'direct' }, // crosses the 4 KiB boundary
    { offset: 64 * KiB, length: 4 * KiB, srcOffset: 8 * KiB, mode: 'direct' },
    { offset: MiB + 512, length: MiB, srcOffset: MiB, mode: 'direct' }, // large, not 4 KiB-aligned
    { offset: 5 * MiB, length: 128 * KiB + 512, srcOffset: 2 * MiB + 512, mode: 'direct' },
    { offset: 6 * MiB + 4 * KiB, length: 12 * KiB + 1536, srcOffset: 3 * MiB + 512, mode: 'fsync' },
    { offset: 8 * MiB, length: MiB, srcOffset: 2 * MiB + 512 * KiB, mode: 'direct' }, // later discarded in blk tests
    { offset: imageSize - 64 * KiB, length: 64 * KiB, srcOffset: 3 * MiB + 256 * KiB, mode: 'direct' }, // ends at the last sector
  ];
}

/**
 * Shell fragment that performs `plan` from `src` to `dev`, spreading the writes over the guest's
 * CPUs (so a multi-queue device sees I/O on every queue), then prints per write
 * `W<i>.rc`, `W<i>.direct` (digest of an O_DIRECT read-back) and `W<i>.cached` (digest of a
 * buffered read-back after `drop_caches`).
 */
export function patternScript(plan: readonly PatternWrite[], dev: string, src: string): string {
  const lines = [
    `DEV=${dev}`,
    `SRC=${src}`,
    'NCPU=$(nproc)',
    'pw() { # index offset length srcOffset mode',
    '  cpu=$(( $1 % NCPU ))',
    '  if [ "$5" = direct ]; then',
    '    taskset -c $cpu dd if=$SRC of=$DEV bs=$3 count=1 skip=$4 seek=$2 iflag=skip_bytes,direct oflag=seek_bytes,direct conv=notrunc status=none',
    '  else',
    '    taskset -c $cpu dd if=$SRC of=$DEV bs=$3 count=1 skip=$4 seek=$2 iflag=skip_bytes oflag=seek_bytes conv=notrunc,fsync status=none',
    '  fi',
    '  echo "W$1.rc=$?"',
    '}',
    'pr() { # index offset length flags label',
    '  cpu=$(( $1 % NCPU ))',
    '  echo "W$1.$5=$(taskset -c $cpu dd if=$DEV bs=$3 count=1 skip=$2 iflag=$4 status=none | sha256sum | cut -d" " -f1)"',
    '}',
  ];
  plan.forEach((w, i) => lines.push(`pw ${i} ${w.offset} ${w.length} ${w.srcOffset} ${w.mode}`));
  plan.forEach((w, i) => lines.push(`pr ${i} ${w.offset} ${w.length} skip_bytes,direct direct`));
  lines.push('sync; echo 3 > /proc/sys/vm/drop_caches');
  plan.forEach((w, i) => lines.push(`pr ${i} ${w.offset} ${w.length} skip_bytes cached`));
  return lines.join('\n') + '\n';
}

/** The image the host expects after `plan` (and then `discards`, which must read as zeros). */
export function expectedImage(initial: Buffer, src: Buffer, plan: readonly PatternWrite[], discards: readonly DiscardRange[] = []): Buffer {
  const img = Buffer.from(initial);
  for (const w of plan) src.copy(img, w.offset, w.srcOffset, w.srcOffset + w.length);
  for (const d of discards) img.fill(0, d.offset, d.offset + d.length);
  return img;
}

/** Describes the first difference between two buffers (or returns null when equal). */
export function firstDifference(actual: Buffer, expected: Buffer): string | null {
  if (actual.length !== expected.length) return `length ${actual.length} != expected ${expected.length}`;
  if (actual.equals(expected)) return null;
  // Scan in 4 KiB steps first (fast), then bytewise inside the first differing block.
  for (let off = 0; off < actual.length; off += 4096) {
    const end = Math.min(off + 4096, actual.length);
    if (actual.subarray(off, end).equals(expected.subarray(off, end))) continue;
    for (let i = off; i < end; i++) {
      if (actual[i] !== expected[i]) {
        let n = 0;
        for (let j = i; j < actual.length && actual[j] !== expected[j]; j++) n++;
        return `first difference at byte ${i} (sector ${Math.floor(i / 512)}): got 0x${actual[i].toString(16)}, want 0x${expected[i].toString(16)}; ${n} differing bytes in a row`;
      }
    }
  }
  return 'buffers differ';
}
