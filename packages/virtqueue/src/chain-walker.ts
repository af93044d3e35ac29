/**
 * The descriptor chain walker: turns a head index into a DescriptorChain, or a fault.
 *
 * Pure and bounded: it reads each descriptor field once, writes only into the chain it is
 * given, and stops after at most `queue size` direct descriptors plus `maxIndirect` indirect
 * ones. Every malformed chain ends in a FAULT_* — never a silent, shorter chain — so a device
 * can tell "end" from "attack".
 *
 * Descriptor layout, read as four little-endian u32 words (virtio 1.2 §2.7.5):
 * ```
 *  word 0: addr low   word 1: addr high   word 2: len   word 3: flags (low 16) | next (high 16)
 * ```
 * @module
 */
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from './constants.js';
import type { DescriptorChain } from './descriptor-chain.js';
import {
  FAULT_ADDR_RANGE, FAULT_CHAIN_TOO_LONG, FAULT_INDIRECT_BAD_LENGTH, FAULT_INDIRECT_NOT_NEGOTIATED,
  FAULT_INDIRECT_TOO_LARGE, FAULT_INDIRECT_WITH_NEXT, FAULT_LENGTH_OVERFLOW, FAULT_NESTED_INDIRECT,
  FAULT_NEXT_OUT_OF_RANGE, FAULT_READABLE_AFTER_WRITABLE, FAULT_TOO_MANY_SEGMENTS,
} from './faults.js';
import type { GuestMemory } from './guest-memory.js';

/** addr high word limit: hi ≥ 2^21 means addr ≥ 2^53. */
const ADDR_HI_LIMIT = 0x200000;
const TWO_32 = 0x100000000;
/** virtio 1.2 §2.7.5.2: a chain's total length must fit in 32 bits. */
const MAX_CHAIN_BYTES = 0xffffffff;

/**
 * Default bound on one indirect table's entries. It is not the queue size: Linux's virtio_blk
 * sizes indirect tables by seg_max + 2 whatever the ring size (QEMU's default ring is 128 while
 * seg_max is often 254), and QEMU's own device side accepts tables up to VIRTQUEUE_MAX_SIZE
 * (1024). The bound only has to keep the walk finite; a device limits segments separately.
 */
export const DEFAULT_MAX_INDIRECT = 1024;

/** Options of a walker. */
export interface ChainWalkerOptions {
  /** VIRTIO_RING_F_INDIRECT_DESC negotiated. */
  indirect: boolean;
  /** Most entries accepted in one indirect table (default: max(queue size, 1024)). */
  maxIndirect?: number;
  /** Most segments accepted per chain (default: unlimited up to the chain's capacity). */
  maxSegments?: number;
}

/** Walks chains of one descriptor table. Built once per queue start. */
export class ChainWalker {
  readonly memory: GuestMemory;
  /** The descriptor table as u32 words (4 per descriptor). */
  readonly desc: Uint32Array;
  readonly size: number;
  readonly indirect: boolean;
  readonly maxIndirect: number;
  readonly maxSegments: number;
  /** Snapshot of an indirect table that is not word-aligned or spans slabs. */
  private readonly scratchBytes: Uint8Array;
  private readonly scratchWords: Uint32Array;

  constructor(memory: GuestMemory, desc: Uint32Array, size: number, opts: ChainWalkerOptions) {
    this.memory = memory;
    this.desc = desc;
    this.size = size;
    this.indirect = opts.indirect;
    // Default: at least 1024 entries. Linux builds indirect tables longer than a small queue
    // (virtio_ring only bounds direct chains by the ring size) and QEMU accepts up to 1024.
    this.maxIndirect = opts.maxIndirect ?? Math.max(size, 1024);
    this.maxSegments = opts.maxSegments ?? 0x7fffffff;
    if (!(this.maxSegments >= 1) || !(this.maxIndirect >= 1)) throw new RangeError('maxSegments and maxIndirect must be ≥ 1');
    this.scratchWords = new Uint32Array(opts.indirect ? this.maxIndirect * 4 : 0);
    this.scratchBytes = new Uint8Array(this.scratchWords.buffer);
  }

  /**
   * Fills `chain` with the chain starting at descriptor `head` (the caller checked head < size).
   * @returns 0, or a FAULT_* (the chain's contents are then unspecified).
   */
  walk(head: number, chain: DescriptorChain): number {
    const mem = this.memory;
    const slabGpa = mem.slabGpa, slabEnd = mem.slabEnd, slabCount = mem.slabCount;
    const segSlab = chain.segSlab, segOffset = chain.segOffset, segLen = chain.segLen, segGpa = chain.segGpa;
    const maxSeg = chain.capacity < this.maxSegments ? chain.capacity : this.maxSegments;
    chain.head = head;
    chain.memory = mem;
    chain.indirect = false;

    let table = this.desc;
    let base = 0;          // word index of descriptor 0 of the current table
    let limit = this.size; // `next` must be below this
    // virtio 1.2 §2.7.5.3.1: no chain longer than the queue size; this budget also ends loops.
    let budget = this.size;
    let idx = head;
    let inIndirect = false;
    let nSeg = 0, readableSegs = 0, descCount = 0;
    let readableBytes = 0, writableBytes = 0;
    let sawWritable = false;

    for (;;) {
      if (budget === 0) return FAULT_CHAIN_TOO_LONG;
      budget--;
      const w = base + (idx << 2);
      const lo = table[w], hi = table[w + 1], len = table[w + 2], fn = table[w + 3];
      const flags = fn & 0xffff;
      descCount++;

      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        // virtio 1.2 §2.7.5.3.2: zero or more direct descriptors followed by ONE indirect one.
        if (inIndirect) return FAULT_NESTED_INDIRECT;          // §2.7.5.3.1: one table per descriptor
        if (!this.indirect) return FAULT_INDIRECT_NOT_NEGOTIATED;
        if ((flags & VIRTQ_DESC_F_NEXT) !== 0) return FAULT_INDIRECT_WITH_NEXT; // §2.7.5.3.1
        if (len === 0 || (len & 15) !== 0) return FAULT_INDIRECT_BAD_LENGTH;
        const n = len >>> 4;
        if (n > this.maxIndirect) return FAULT_INDIRECT_TOO_LARGE;
        if (hi >= ADDR_HI_LIMIT) return FAULT_ADDR_RANGE;
        const addr = hi * TWO_32 + lo;
        const s = mem.gpaToSlab(addr, len);
        if (s < 0) return s;
        const off = mem.lastOffset;
        const words = mem.slabWords[s];
        if (mem.lastLen === len && (off & 3) === 0 && words.length !== 0) {
          table = words;       // read in place
          base = off >>> 2;
        } else {
          // Unaligned or spanning slabs: snapshot it (rare; never happens with Linux guests).
          mem.readIntoAt(addr, this.scratchBytes, 0, len);
          table = this.scratchWords;
          base = 0;
        }
        // §2.7.5.3.2: the WRITE flag of the descriptor pointing at the table is ignored.
        chain.indirect = true;
        inIndirect = true;
        limit = n;
        budget = n;
        idx = 0;
        continue;
      }

      if ((flags & VIRTQ_DESC_F_WRITE) !== 0) {
        sawWritable = true;
      } else if (sawWritable) {
        return FAULT_READABLE_AFTER_WRITABLE; // virtio 1.2 §2.7.5.2
      }

      if (len !== 0) {
        if (hi >= ADDR_HI_LIMIT) return FAULT_ADDR_RANGE;
        const addr = hi * TWO_32 + lo;
        if (sawWritable) writableBytes += len; else readableBytes += len;
        if (readableBytes + writableBytes > MAX_CHAIN_BYTES) return FAULT_LENGTH_OVERFLOW; // §2.7.5.2
        // Fast path, inlined: the buffer lies inside the slab hit last. addr and len are
        // integers < 2^53 by construction (u32 words), so gpaToSlab's argument checks (two
        // float modulos) and its call are skipped. Measured (bench:ring, device rate, median of
        // 5): 1desc 20.5 → 29.1 M/s, 3desc-blk 8.0 → 15.8 M/s, indirect-blk 3.8 → 9.3 M/s.
        const h = mem.hint;
        if (h < slabCount && addr >= slabGpa[h] && addr + len <= slabEnd[h]) {
          if (nSeg >= maxSeg) return FAULT_TOO_MANY_SEGMENTS;
          segSlab[nSeg] = h;
          segOffset[nSeg] = addr - slabGpa[h];
          segLen[nSeg] = len;
          segGpa[nSeg] = addr;
          nSeg++;
        } else if (mem.gpaToSlab(addr, len) < 0) {
          return mem.gpaToSlab(addr, len);
        } else {
          const k = mem.gpaSegments(addr, len, segSlab, segOffset, segLen, segGpa, nSeg, maxSeg);
          if (k < 0) return k;
          nSeg += k;
        }
        if (!sawWritable) readableSegs = nSeg;
      }

      if ((flags & VIRTQ_DESC_F_NEXT) === 0) break;
      idx = fn >>> 16;
      if (idx >= limit) return FAULT_NEXT_OUT_OF_RANGE;
    }

    chain.descCount = descCount;
    chain.readableSegs = readableSegs;
    chain.writableSegs = nSeg - readableSegs;
    chain.readableBytes = readableBytes;
    chain.writableBytes = writableBytes;
    return 0;
  }
}
