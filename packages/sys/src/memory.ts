// Shared memory: memfd + mmap. Guest RAM arrives as memfds over vhost-user
// and is mapped here; tests build fake guests the same way.
import { constants as bufferConstants } from 'node:buffer';
import { invalidArgument } from './errors.js';
import { addon } from './native.js';
import { assertFd, assertInt, assertPath, MAX_SAFE, optionalBool } from './validate.js';

/**
 * Largest mapping one ArrayBuffer can wrap on this Node (4 GiB on Node 20).
 * Larger regions must be mapped in pieces (offset + length).
 */
export const MAX_MAPPING_LENGTH = Math.min(bufferConstants.MAX_LENGTH, MAX_SAFE);

/** `memfd_create(name, MFD_CLOEXEC)`: an anonymous file for shared memory. */
export function memfdCreate(name: string): number {
  assertPath(name, 'name', 'memfd_create');
  return addon.memfdCreate(name);
}

/** `ftruncate(fd, size)`. */
export function ftruncate(fd: number, size: number): void {
  assertFd(fd, 'ftruncate');
  assertInt(size, 0, MAX_SAFE, 'size', 'ftruncate');
  addon.ftruncate(fd, size);
}

/**
 * `mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset)` as an
 * ArrayBuffer over the mapping. Release it with {@link munmap}; a buffer that
 * is simply dropped is unmapped when garbage-collected.
 *
 * With `writable = false` the mapping is MAP_PRIVATE (still PROT_WRITE): an
 * ArrayBuffer cannot be read-only and a store into a PROT_READ page would
 * kill the process, so local writes are allowed but never reach the file.
 * A range past the end of a regular file is refused (EINVAL): touching it
 * would raise SIGBUS.
 */
export function mmap(fd: number, length: number, offset: number, writable = true): ArrayBuffer {
  assertFd(fd, 'mmap');
  assertInt(length, 1, MAX_MAPPING_LENGTH, 'length', 'mmap');
  assertInt(offset, 0, MAX_SAFE, 'offset', 'mmap');
  return addon.mmap(fd, length, offset, optionalBool(writable, true, 'writable', 'mmap'));
}

/**
 * Unmaps a buffer returned by {@link mmap}. The ArrayBuffer is detached first:
 * its `byteLength` becomes 0 and every view over it reads as empty, so stale
 * views cannot touch the unmapped address.
 */
export function munmap(buffer: ArrayBuffer): void {
  if (!(buffer instanceof ArrayBuffer)) throw invalidArgument('munmap', 'buffer must be an ArrayBuffer');
  addon.munmap(buffer);
}

/**
 * Copies byte ranges from `src` to `dst` in one native call: `plan` holds `count` triples
 * `[srcOffset, dstOffset, length]`, offsets relative to each view. Every range is checked
 * against both views before anything is copied (EINVAL, nothing copied, when one lies outside);
 * ranges may overlap (memmove). For data paths that move a burst of frames: one call per burst
 * instead of a `subarray` + `set` per frame. The check pass also prefetches the first and last
 * source line of every range, so the cache misses of a burst whose bytes another CPU just wrote
 * overlap instead of being taken one memmove at a time. With `prefetchDst`, every line of the
 * next range's destination is prefetched for writing (PREFETCHW on x86-64) while a range is
 * copied: for destinations another CPU last touched, such as a guest's receive buffers.
 * Arguments are checked natively only — this sits on the hot path.
 */
export function copyRanges(dst: ArrayBufferView, src: ArrayBufferView, plan: Float64Array, count: number, prefetchDst = false): void {
  addon.copyRanges(dst, src, plan, count, prefetchDst);
}
