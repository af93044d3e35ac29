/**
 * The logical block size O_DIRECT needs for an image: the sector size of the block device that
 * holds it (or that it is), from sysfs. A 4 KiB-sector disk refuses 512-byte direct I/O, so the
 * device advertises this size in `blk_size` and Linux guests then issue whole blocks.
 * @module
 */
import { readFileSync, statSync } from 'node:fs';

/** What is assumed where sysfs has no answer (tmpfs, overlay, network file systems). */
export const DEFAULT_LOGICAL_BLOCK_SIZE = 512;

/**
 * Logical block size of the device behind `path` (a block device, or a file on one): 512 ..
 * 65536, a power of two; DEFAULT_LOGICAL_BLOCK_SIZE when it cannot be told.
 */
export function logicalBlockSizeOf(path: string): number {
  let dev: number;
  try {
    const st = statSync(path);
    dev = st.isBlockDevice() ? st.rdev : st.dev;
  } catch {
    return DEFAULT_LOGICAL_BLOCK_SIZE;
  }
  // glibc's dev_t encoding (major: bits 8–19 and 32–43, minor: bits 0–7 and 20–31).
  const lo = dev % 2 ** 32, hi = Math.floor(dev / 2 ** 32);
  const major = ((lo >>> 8) & 0xfff) | ((hi & 0xfffff000) >>> 0);
  const minor = ((lo & 0xff) | ((lo >>> 12) & 0xfff00) | ((hi & 0xfff) << 20)) >>> 0;
  // A partition's directory has no queue/: its disk's is one level up.
  for (const rel of ['queue/logical_block_size', '../queue/logical_block_size']) {
    try {
      const v = Number(readFileSync(`/sys/dev/block/${major}:${minor}/${rel}`, 'utf8').trim());
      if (Number.isInteger(v) && v >= 512 && v <= 65536 && (v & (v - 1)) === 0) return v;
    } catch { /* try the next */ }
  }
  return DEFAULT_LOGICAL_BLOCK_SIZE;
}
