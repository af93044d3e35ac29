/**
 * Mapping the front-end's memory regions (SET_MEM_TABLE / ADD_MEM_REG) into this process.
 *
 * Each region's fd is mapped MAP_SHARED at its `mmap_offset` (rounded down to 2 MiB so that
 * hugetlbfs-backed fds work too), checked against the fd's size first — touching a mapping past
 * the end of its file raises SIGBUS, which would take the whole process down. Regions larger than
 * one ArrayBuffer may hold are mapped as several pieces. The fd is closed once mapped.
 * @module
 */
import { MAX_MAPPING_LENGTH, close, fstatSize, mmap, munmap } from '@vhost-ts/sys';
import type { MemoryRegion } from '@vhost-ts/virtqueue';
import type { MemoryRegionDesc } from '../codec/payloads.js';
import { ProtocolError } from '../errors.js';

/** Mapping offsets are rounded down to this (covers 4 KiB pages and 2 MiB huge pages). */
const MAP_ALIGN = 2 * 1024 * 1024;
/** Largest piece mapped as one ArrayBuffer (GuestMemory splits further into ≤ 1 GiB slabs). */
const PIECE = Math.min(1024 * 1024 * 1024, MAX_MAPPING_LENGTH - MAP_ALIGN);

/** One front-end region as mapped here. */
export interface MappedRegion {
  readonly desc: MemoryRegionDesc;
  /** The GuestMemory regions (one per piece). */
  readonly pieces: readonly MemoryRegion[];
}

/** Unmaps every piece of `region` (its views read as empty afterwards). */
export function unmapRegion(region: MappedRegion): void {
  for (const p of region.pieces) {
    try { munmap(p.buffer); } catch { /* already unmapped */ }
  }
}

/**
 * Pieces mapped per event-loop turn. A mapping costs ~0.25 ms per GiB piece; a region of
 * terabytes (a front-end's sparse memfd costs it nothing) would otherwise hold the thread for
 * seconds — every other connection and queue of the process with it.
 */
const PIECES_PER_TURN = 16;

/**
 * Maps one region from `fd`, then closes `fd` (also on failure). Large regions are mapped over
 * several event-loop turns; `abandoned()` is asked after each and ends the mapping (all of it
 * unmapped) when the session went away meanwhile.
 * @throws ProtocolError BAD_MEMORY for a zero size, an end ≥ 2^53, or an fd smaller than
 *   `mmap_offset + size`.
 */
export async function mapRegion(desc: MemoryRegionDesc, fd: number, abandoned: () => boolean = () => false): Promise<MappedRegion> {
  const pieces: MemoryRegion[] = [];
  try {
    const { guestPhysAddr: gpa, size, userAddr: uva, mmapOffset } = desc;
    if (size <= 0 || gpa + size > Number.MAX_SAFE_INTEGER || uva + size > Number.MAX_SAFE_INTEGER
      || mmapOffset + size > Number.MAX_SAFE_INTEGER) {
      throw new ProtocolError('BAD_MEMORY', `region gpa=0x${gpa.toString(16)} size=${size}: bad size or range`);
    }
    const fileSize = fstatSize(fd);
    if (mmapOffset + size > fileSize) {
      throw new ProtocolError('BAD_MEMORY',
        `region gpa=0x${gpa.toString(16)}: mmap_offset+size 0x${(mmapOffset + size).toString(16)} exceeds fd size 0x${fileSize.toString(16)}`);
    }
    for (let off = 0; off < size; off += PIECE) {
      if (pieces.length > 0 && pieces.length % PIECES_PER_TURN === 0) {
        await new Promise((resolve) => setImmediate(resolve));
        if (abandoned()) throw new ProtocolError('BAD_MEMORY', 'the session ended while its memory was being mapped');
      }
      const len = Math.min(PIECE, size - off);
      const fileOff = mmapOffset + off;
      const mapOff = fileOff - (fileOff % MAP_ALIGN);
      const buffer = mmap(fd, len + (fileOff - mapOff), mapOff, true);
      pieces.push({
        guestPhysAddr: gpa + off, size: len, userAddr: uva + off, mmapOffset: fileOff,
        buffer, bufferOffset: fileOff - mapOff,
      });
    }
    return { desc, pieces };
  } catch (e) {
    for (const p of pieces) munmap(p.buffer);
    if (e instanceof ProtocolError) throw e;
    throw new ProtocolError('BAD_MEMORY', `cannot map region gpa=0x${desc.guestPhysAddr.toString(16)}: ${(e as Error).message}`);
  } finally {
    try { close(fd); } catch { /* ignore */ }
  }
}
