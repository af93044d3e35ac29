/**
 * The packed-ring chain walker: turns the descriptors starting at one ring slot into a
 * DescriptorChain, or a fault (virtio 1.2 §2.8.6, §2.8.19).
 *
 * A packed chain is consecutive ring slots linked by VIRTQ_DESC_F_NEXT (wrapping at the ring's
 * end), so loops are impossible by construction; what remains to bound is the length — no chain
 * may span more slots than the ring has. The buffer id is read from the chain's last descriptor
 * (§2.8.6: the driver may leave it unset in the others). Same output, same checks and same
 * fault codes as the split walker, so devices cannot tell the formats apart.
 *
 * Descriptor words (little-endian u32): 0 addr lo, 1 addr hi, 2 len, 3 = id | flags << 16.
 * @module
 */
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from './constants.js';
import type { DescriptorChain } from './descriptor-chain.js';
import {
  FAULT_ADDR_RANGE, FAULT_CHAIN_TOO_LONG, FAULT_INDIRECT_BAD_LENGTH, FAULT_INDIRECT_NOT_NEGOTIATED,
  FAULT_INDIRECT_TOO_LARGE, FAULT_INDIRECT_WITH_NEXT, FAULT_LENGTH_OVERFLOW, FAULT_NESTED_INDIRECT,
  FAULT_READABLE_AFTER_WRITABLE, FAULT_TOO_MANY_SEGMENTS,
} from './faults.js';
import type { GuestMemory } from './guest-memory.js';
import type { ChainWalkerOptions } from './chain-walker.js';

const ADDR_HI_LIMIT = 0x200000; // hi ≥ 2^21 means addr ≥ 2^53
const TWO_32 = 0x100000000;
const MAX_CHAIN_BYTES = 0xffffffff;
const F_NEXT = VIRTQ_DESC_F_NEXT << 16;
const F_WRITE = VIRTQ_DESC_F_WRITE << 16;
const F_INDIRECT = VIRTQ_DESC_F_INDIRECT << 16;

/** Walks chains of one packed descriptor ring. Built once per queue start. */
export class PackedChainWalker {
  readonly memory: GuestMemory;
  readonly desc: Uint32Array;
  readonly size: number;
  readonly indirect: boolean;
  readonly maxIndirect: number;
  readonly maxSegments: number;
  /** After a successful walk: ring slots the chain occupies (what the used side skips). */
  ringCount: number;
  /** After a successful walk: the buffer id (from the last ring descriptor). */
  id: number;
  /** Entries of indirect tables count as device-readable whatever their WRITE flag (see DeviceQueue.markDeviceReadOnly). */
  indirectReadable = false;
  private readonly scratchBytes: Uint8Array;
  private readonly scratchWords: Uint32Array;

  constructor(memory: GuestMemory, desc: Uint32Array, size: number, opts: ChainWalkerOptions) {
    this.memory = memory;
    this.desc = desc;
    this.size = size;
    this.indirect = opts.indirect;
    this.maxIndirect = opts.maxIndirect ?? Math.max(size, 1024);
    this.maxSegments = opts.maxSegments ?? 0x7fffffff;
    if (!(this.maxSegments >= 1) || !(this.maxIndirect >= 1)) throw new RangeError('maxSegments and maxIndirect must be ≥ 1');
    this.ringCount = 0;
    this.id = 0;
    this.scratchWords = new Uint32Array(opts.indirect ? this.maxIndirect * 4 : 0);
    this.scratchBytes = new Uint8Array(this.scratchWords.buffer);
  }

  /**
   * Fills `chain` with the chain whose first descriptor is ring slot `slot` (< size).
   * @returns 0 (with `ringCount` and `id` set), or a FAULT_*.
   */
  walk(slot: number, chain: DescriptorChain): number {
    const mem = this.memory;
    const segSlab = chain.segSlab, segOffset = chain.segOffset, segLen = chain.segLen, segGpa = chain.segGpa;
    const maxSeg = chain.capacity < this.maxSegments ? chain.capacity : this.maxSegments;
    const size = this.size;
    chain.memory = mem;
    chain.indirect = false;

    let table = this.desc;
    let w = slot << 2;     // word index of the current descriptor
    let inIndirect = false;
    let left = 0;          // entries left in the indirect table
    // virtio 1.2 §2.8.6 / §2.7.5.3.1: a chain may not be longer than the ring.
    let ringLeft = size;
    let ring = 0, id = 0;
    let nSeg = 0, readableSegs = 0, descCount = 0;
    let readableBytes = 0, writableBytes = 0;
    let sawWritable = false;

    for (;;) {
      const lo = table[w], hi = table[w + 1], len = table[w + 2], fw = table[w + 3];
      descCount++;
      if (!inIndirect) {
        if (ringLeft === 0) return FAULT_CHAIN_TOO_LONG;
        ringLeft--;
        ring++;
        id = fw & 0xffff;
        if ((fw & F_INDIRECT) !== 0) {
          if (!this.indirect) return FAULT_INDIRECT_NOT_NEGOTIATED;
          // virtio 1.2 §2.8.19.1: the driver MUST NOT set both INDIRECT and NEXT.
          if ((fw & F_NEXT) !== 0) return FAULT_INDIRECT_WITH_NEXT;
          // §2.8.19: the table is len / 16 descriptors — non-empty, whole entries.
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
            table = words;
            w = off >>> 2; // read the table in place
          } else {
            mem.readIntoAt(addr, this.scratchBytes, 0, len);
            table = this.scratchWords;
            w = 0;
          }
          chain.indirect = true;
          inIndirect = true;
          left = n;
          continue;
        }
      } else if ((fw & F_INDIRECT) !== 0) {
        // §2.8.19.1: only one table per descriptor, never a table inside a table.
        return FAULT_NESTED_INDIRECT;
      }

      if ((fw & F_WRITE) !== 0 && !(inIndirect && this.indirectReadable)) {
        sawWritable = true;
      } else if (sawWritable) {
        return FAULT_READABLE_AFTER_WRITABLE; // virtio 1.2 §2.8.6 (device-writable after readable)
      }

      if (len !== 0) {
        if (hi >= ADDR_HI_LIMIT) return FAULT_ADDR_RANGE;
        const addr = hi * TWO_32 + lo;
        if (sawWritable) writableBytes += len; else readableBytes += len;
        if (readableBytes + writableBytes > MAX_CHAIN_BYTES) return FAULT_LENGTH_OVERFLOW;
        const h = mem.hint;
        if (h < mem.slabCount && addr >= mem.slabGpa[h] && addr + len <= mem.slabEnd[h]) {
          if (nSeg >= maxSeg) return FAULT_TOO_MANY_SEGMENTS;
          segSlab[nSeg] = h;
          segOffset[nSeg] = addr - mem.slabGpa[h];
          segLen[nSeg] = len;
          segGpa[nSeg] = addr;
          nSeg++;
        } else {
          // Another slab, or across adjacent slabs (one segment per slab), or a fault.
          const k = mem.gpaSegments(addr, len, segSlab, segOffset, segLen, segGpa, nSeg, maxSeg);
          if (k < 0) return k;
          nSeg += k;
        }
        if (!sawWritable) readableSegs = nSeg;
      }

      if (inIndirect) {
        // §2.8.19: table entries follow each other; only WRITE is meaningful in them (NEXT and
        // the id are reserved and ignored), the table's length ends the chain.
        if (--left === 0) break;
        w += 4;
        continue;
      }
      if ((fw & F_NEXT) === 0) break;
      slot++;
      if (slot === size) slot = 0;
      w = slot << 2;
    }

    chain.head = id;
    chain.descCount = descCount;
    chain.readableSegs = readableSegs;
    chain.writableSegs = nSeg - readableSegs;
    chain.readableBytes = readableBytes;
    chain.writableBytes = writableBytes;
    this.ringCount = ring;
    this.id = id;
    return 0;
  }
}
