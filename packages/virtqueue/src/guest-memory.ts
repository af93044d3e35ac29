/**
 * GuestMemory — the only door to guest memory.
 *
 * Every range a guest or a frontend names is checked whole (`[addr, addr + len)`) against the
 * memory table before a byte is touched. Addresses are Numbers; any address or end ≥ 2^53 is
 * out of range (no BigInt anywhere on the data path).
 *
 * ```
 *  region (from SET_MEM_TABLE)            slabs (≤ 1 GiB each, sorted by GPA)
 *  ┌────────────── 2.5 GiB ──────────────┐  ┌── 1 GiB ──┐┌── 1 GiB ──┐┌ 0.5 ┐
 *  │ buffer[bufferOffset, +size)         │→ │ slab 0    ││ slab 1    ││ s 2 │
 *  └─────────────────────────────────────┘  └───────────┘└───────────┘└─────┘
 *  guestPhysAddr … guestPhysAddr+size        slabGpa[i] … slabEnd[i]
 * ```
 *
 * Slabs exist because one Uint8Array must stay small enough for every Node 20 engine limit; a
 * slab index is also the io_uring buffer index of that piece (see `slabBuffers`).
 *
 * Hot-path methods return a slab index / value ≥ 0 or a `FAULT_*` number < 0 and never allocate;
 * `translate()` / `translateUva()` are the throwing boundary versions.
 * @module
 */
import { ADDR_LIMIT, DIRTY_LOG_PAGE_SIZE, SLAB_MAX } from './constants.js';
import { GuestMemoryError } from './errors.js';
import {
  FAULT_ADDR_RANGE, FAULT_DISCONTIGUOUS, FAULT_GAP, FAULT_TOO_MANY_SEGMENTS, FAULT_UNMAPPED,
} from './faults.js';

/** One entry of the memory table (vhost-user `VhostUserMemoryRegion` plus its mapping). */
export interface MemoryRegion {
  /** Guest-physical address of the first byte. */
  guestPhysAddr: number;
  /** Size in bytes (> 0). */
  size: number;
  /** Frontend (QEMU) virtual address of the first byte — vring addresses use this space. */
  userAddr: number;
  /** Offset of the region in the fd the frontend sent (kept for reference; not used here). */
  mmapOffset: number;
  /** The mapping; `buffer[bufferOffset, bufferOffset + size)` is the region. */
  buffer: ArrayBuffer;
  /** Byte offset of the region's first byte inside `buffer`. */
  bufferOffset: number;
}

/** One contiguous piece of a translated range (boundary API). */
export interface MemorySegment {
  /** Slab index (`memory.slabs[slab]`). */
  slab: number;
  /** Offset inside the slab's Uint8Array. */
  offset: number;
  /** Bytes in this piece. */
  len: number;
  /** Guest-physical address of the piece's first byte. */
  gpa: number;
}

/** Accesses up to this many bytes copy byte by byte instead of creating subarray views. */
const SMALL_COPY = 64;

const isU53 = (v: number): boolean => Number.isInteger(v) && v >= 0 && v < ADDR_LIMIT;

let nextGeneration = 1;

/**
 * The guest's memory table as seen by the device. Immutable: a new memory table is a new
 * GuestMemory with a new `generation`, so anything that cached views can tell it is stale.
 */
export class GuestMemory {
  /** Unique per instance; compare with a cached value to know whether views are stale. */
  readonly generation: number;
  /** The regions as given (sorted by guest-physical address). */
  readonly regions: readonly MemoryRegion[];
  /** One byte view per slab. */
  readonly slabs: Uint8Array[];
  /** DataView per slab (little-endian accessors for the helpers). */
  readonly slabViews: DataView[];
  /** Uint32Array per slab when the slab starts 4-byte aligned in its buffer, else empty. */
  readonly slabWords: Uint32Array[];
  /** The ArrayBuffer behind each slab (register these as io_uring buffers by slab index). */
  readonly slabBuffers: ArrayBuffer[];
  /** Byte offset of each slab inside its ArrayBuffer (absolute offset = this + segment offset). */
  readonly slabByteOffset: Float64Array;
  /** Guest-physical base of each slab. */
  readonly slabGpa: Float64Array;
  /** Guest-physical end (exclusive) of each slab. */
  readonly slabEnd: Float64Array;
  /** Frontend-virtual base of each slab. */
  readonly slabUva: Float64Array;
  /** Number of slabs. */
  readonly slabCount: number;
  /** Slab offset of the last successful `gpaToSlab` / `uvaToGpa` start. */
  lastOffset: number;
  /** Bytes of the last successful `gpaToSlab` range that lie in the returned slab. */
  lastLen: number;
  /** Dirty bitmap (VHOST_F_LOG_ALL) or null when logging is off. */
  dirtyLog: Uint8Array | null;
  /** Pages that could not be logged because they lie beyond the bitmap (should stay 0). */
  dirtyLogOverflow: number;
  /**
   * Page bits set in the dirty log over this instance's life (a bit set twice counts twice):
   * evidence that logging really happened, for logs and tests. Never reset.
   */
  dirtyPagesMarked: number;
  /** Slab index hit last; tried first (most accesses stay in one region). */
  hint: number;
  /** 8-byte scratch for multi-byte accessors that straddle slabs. */
  private readonly scratch: Uint8Array;
  private readonly scratchView: DataView;
  private readonly scratch2: Uint8Array;
  private readonly scratch4: Uint8Array;

  /**
   * @throws GuestMemoryError `invalid-region` for zero/negative sizes, values ≥ 2^53, a buffer
   *   too small for the region; `overlap` when two regions overlap in GPA or UVA space.
   */
  constructor(regions: readonly MemoryRegion[]) {
    const sorted = [...regions].sort((a, b) => a.guestPhysAddr - b.guestPhysAddr);
    for (const r of sorted) {
      if (!isU53(r.guestPhysAddr) || !isU53(r.userAddr) || !isU53(r.mmapOffset) || !isU53(r.bufferOffset)
        || !Number.isInteger(r.size) || r.size <= 0
        || r.guestPhysAddr + r.size >= ADDR_LIMIT || r.userAddr + r.size >= ADDR_LIMIT) {
        throw new GuestMemoryError('invalid-region',
          `invalid memory region gpa=0x${r.guestPhysAddr.toString(16)} size=${r.size}`);
      }
      if (!(r.buffer instanceof ArrayBuffer) || r.bufferOffset + r.size > r.buffer.byteLength) {
        throw new GuestMemoryError('invalid-region',
          `memory region gpa=0x${r.guestPhysAddr.toString(16)}: buffer too small for size ${r.size}`);
      }
    }
    // Sorted by start, ranges overlap only if some neighbours do: O(n log n), not a pair-wise
    // O(n²) — a table of terabytes arrives here as thousands of 1 GiB pieces.
    const byUva = [...sorted].sort((a, b) => a.userAddr - b.userAddr);
    for (let i = 1; i < sorted.length; i++) {
      const ga = sorted[i - 1], gb = sorted[i];
      const ua = byUva[i - 1], ub = byUva[i];
      const a = ga.guestPhysAddr + ga.size > gb.guestPhysAddr ? ga : ua.userAddr + ua.size > ub.userAddr ? ua : null;
      if (a !== null) {
        const b = a === ga ? gb : ub;
        throw new GuestMemoryError('overlap',
          `memory regions at 0x${a.guestPhysAddr.toString(16)} and 0x${b.guestPhysAddr.toString(16)} overlap`);
      }
    }
    this.generation = nextGeneration++;
    this.regions = sorted;
    const slabs: Uint8Array[] = [];
    const gpa: number[] = [], uva: number[] = [];
    for (const r of sorted) {
      for (let off = 0; off < r.size; off += SLAB_MAX) {
        const len = Math.min(SLAB_MAX, r.size - off);
        slabs.push(new Uint8Array(r.buffer, r.bufferOffset + off, len));
        gpa.push(r.guestPhysAddr + off);
        uva.push(r.userAddr + off);
      }
    }
    this.slabCount = slabs.length;
    this.slabs = slabs;
    this.slabViews = slabs.map((s) => new DataView(s.buffer, s.byteOffset, s.byteLength));
    this.slabWords = slabs.map((s) => ((s.byteOffset & 3) === 0
      ? new Uint32Array(s.buffer, s.byteOffset, s.byteLength >>> 2) : new Uint32Array(0)));
    this.slabBuffers = slabs.map((s) => s.buffer as ArrayBuffer);
    this.slabByteOffset = Float64Array.from(slabs, (s) => s.byteOffset);
    this.slabGpa = Float64Array.from(gpa);
    this.slabEnd = Float64Array.from(slabs, (s, i) => gpa[i] + s.byteLength);
    this.slabUva = Float64Array.from(uva);
    this.lastOffset = 0;
    this.lastLen = 0;
    this.dirtyLog = null;
    this.dirtyLogOverflow = 0;
    this.dirtyPagesMarked = 0;
    this.hint = 0;
    this.scratch = new Uint8Array(8);
    this.scratchView = new DataView(this.scratch.buffer);
    this.scratch2 = this.scratch.subarray(0, 2);
    this.scratch4 = this.scratch.subarray(0, 4);
  }

  /** Total bytes mapped. */
  get totalSize(): number {
    let n = 0;
    for (const r of this.regions) n += r.size;
    return n;
  }

  /**
   * Finds the slab holding `gpa` and checks the whole range `[gpa, gpa + len)` is mapped
   * (possibly across adjacent slabs).
   * @returns the slab index of the first byte, with `lastOffset` (offset in that slab) and
   *   `lastLen` (bytes of the range inside that slab, < len when the range spans slabs); or
   *   FAULT_ADDR_RANGE / FAULT_UNMAPPED / FAULT_GAP.
   */
  gpaToSlab(gpa: number, len: number): number {
    const end = gpa + len;
    // `!(x >= 0)` also catches NaN. Integers only: a fractional address is a bug or an attack.
    if (!(gpa >= 0 && len >= 0 && end < ADDR_LIMIT) || gpa % 1 !== 0 || len % 1 !== 0) return FAULT_ADDR_RANGE;
    const slabGpa = this.slabGpa, slabEnd = this.slabEnd;
    let s = this.hint;
    if (!(s < this.slabCount && gpa >= slabGpa[s] && gpa < slabEnd[s])) {
      s = this.findSlab(gpa);
      if (s < 0) return FAULT_UNMAPPED;
      this.hint = s;
    }
    this.lastOffset = gpa - slabGpa[s];
    if (end <= slabEnd[s]) {
      this.lastLen = len;
      return s;
    }
    // The range continues past this slab: every following slab must start where the previous
    // ends until the range is covered, otherwise the range runs into a gap.
    let k = s;
    while (end > slabEnd[k]) {
      if (k + 1 >= this.slabCount || slabGpa[k + 1] !== slabEnd[k]) return FAULT_GAP;
      k++;
    }
    this.lastLen = slabEnd[s] - gpa;
    return s;
  }

  /** Slab containing `gpa`, or -1. Slabs are few (one or two per region): a linear scan. */
  private findSlab(gpa: number): number {
    const slabGpa = this.slabGpa, slabEnd = this.slabEnd;
    for (let i = 0; i < this.slabCount; i++) {
      if (gpa >= slabGpa[i] && gpa < slabEnd[i]) return i;
    }
    return -1;
  }

  /**
   * Translates `[gpa, gpa + len)` into slab pieces written to the output arrays from index
   * `start`. A range spanning N adjacent slabs yields N pieces; len 0 yields none.
   * @returns the number of pieces written, or a FAULT_* (FAULT_TOO_MANY_SEGMENTS when more than
   *   `max - start` pieces would be needed).
   */
  gpaSegments(gpa: number, len: number, outSlab: Int32Array, outOffset: Float64Array,
    outLen: Float64Array, outGpa: Float64Array, start: number, max: number): number {
    if (len === 0) {
      const r = this.gpaToSlab(gpa, 0);
      return r < 0 ? r : 0;
    }
    let s = this.gpaToSlab(gpa, len);
    if (s < 0) return s;
    let n = start, at = gpa, left = len, off = this.lastOffset;
    for (;;) {
      if (n >= max) return FAULT_TOO_MANY_SEGMENTS;
      const piece = Math.min(left, this.slabEnd[s] - at);
      outSlab[n] = s; outOffset[n] = off; outLen[n] = piece; outGpa[n] = at;
      n++;
      left -= piece;
      if (left === 0) return n - start;
      at += piece; s++; off = 0; // gpaToSlab proved the following slabs are contiguous
    }
  }

  /**
   * Translates a frontend-virtual range (vring addresses are given in this space) to the
   * guest-physical address of its first byte. The whole range must be mapped; if it spans
   * regions they must be contiguous in both spaces.
   * @returns the GPA or FAULT_ADDR_RANGE / FAULT_UNMAPPED / FAULT_GAP / FAULT_DISCONTIGUOUS.
   */
  uvaToGpa(uva: number, len: number): number {
    const end = uva + len;
    if (!(uva >= 0 && len >= 0 && end < ADDR_LIMIT) || uva % 1 !== 0 || len % 1 !== 0) return FAULT_ADDR_RANGE;
    let s = this.findUva(uva);
    if (s < 0) return FAULT_UNMAPPED;
    const gpa = this.slabGpa[s] + (uva - this.slabUva[s]);
    let at = this.slabUva[s] + (this.slabEnd[s] - this.slabGpa[s]);
    while (end > at) {
      const k = this.findUva(at);
      if (k < 0) return FAULT_GAP;
      if (this.slabGpa[k] !== this.slabEnd[s]) return FAULT_DISCONTIGUOUS;
      s = k;
      at = this.slabUva[s] + (this.slabEnd[s] - this.slabGpa[s]);
    }
    return gpa;
  }

  private findUva(uva: number): number {
    for (let i = 0; i < this.slabCount; i++) {
      const base = this.slabUva[i];
      if (uva >= base && uva < base + (this.slabEnd[i] - this.slabGpa[i])) return i;
    }
    return -1;
  }

  /** Boundary version of `gpaSegments`: the pieces of `[gpa, gpa + len)`, or throws. */
  translate(gpa: number, len: number): MemorySegment[] {
    const max = this.slabCount + 1;
    const sl = new Int32Array(max), of = new Float64Array(max), ln = new Float64Array(max), gp = new Float64Array(max);
    const n = this.gpaSegments(gpa, len, sl, of, ln, gp, 0, max);
    if (n < 0) throw GuestMemoryError.fromFault(n, gpa, len);
    const out: MemorySegment[] = [];
    for (let i = 0; i < n; i++) out.push({ slab: sl[i], offset: of[i], len: ln[i], gpa: gp[i] });
    return out;
  }

  /** Boundary version for a frontend-virtual range: its guest-physical pieces, or throws. */
  translateUva(uva: number, len: number): MemorySegment[] {
    const gpa = this.uvaToGpa(uva, len);
    if (gpa < 0) throw GuestMemoryError.fromFault(gpa, uva, len);
    return this.translate(gpa, len);
  }

  // --- copies ----------------------------------------------------------------------------------

  /**
   * Copies guest memory `[gpa, gpa + dst.length)` into `dst`.
   * @returns dst.length or a FAULT_* (nothing copied then).
   */
  readInto(gpa: number, dst: Uint8Array): number {
    return this.readIntoAt(gpa, dst, 0, dst.length);
  }

  /**
   * Copies guest memory `[gpa, gpa + len)` into `dst[dstOff, dstOff + len)` (the caller keeps
   * `dstOff + len ≤ dst.length`).
   * @returns len or a FAULT_* (nothing copied then).
   */
  readIntoAt(gpa: number, dst: Uint8Array, dstOff: number, len: number): number {
    let s = this.gpaToSlab(gpa, len);
    if (s < 0) return s;
    let off = this.lastOffset, done = 0;
    while (done < len) {
      const slab = this.slabs[s];
      const take = Math.min(len - done, slab.length - off);
      copyBytes(dst, dstOff + done, slab, off, take);
      done += take; s++; off = 0;
    }
    return len;
  }

  /**
   * Copies `src` into guest memory at `gpa` (and marks the pages dirty when logging).
   * @returns src.length or a FAULT_* (nothing written then).
   */
  writeFrom(gpa: number, src: Uint8Array): number {
    const n = src.length;
    let s = this.gpaToSlab(gpa, n);
    if (s < 0) return s;
    let off = this.lastOffset, done = 0;
    while (done < n) {
      const slab = this.slabs[s];
      const take = Math.min(n - done, slab.length - off);
      copyBytes(slab, off, src, done, take);
      done += take; s++; off = 0;
    }
    if (this.dirtyLog !== null) this.markDirty(gpa, n);
    return n;
  }

  /** Byte at `gpa`, or a FAULT_*. */
  getU8(gpa: number): number {
    const s = this.gpaToSlab(gpa, 1);
    return s < 0 ? s : this.slabs[s][this.lastOffset];
  }

  /** Little-endian u16 at `gpa` (may straddle slabs), or a FAULT_*. */
  getU16(gpa: number): number {
    const s = this.gpaToSlab(gpa, 2);
    if (s < 0) return s;
    if (this.lastLen === 2) return this.slabViews[s].getUint16(this.lastOffset, true);
    this.readInto(gpa, this.scratch2);
    return this.scratchView.getUint16(0, true);
  }

  /** Little-endian u32 at `gpa`, or a FAULT_*. */
  getU32(gpa: number): number {
    const s = this.gpaToSlab(gpa, 4);
    if (s < 0) return s;
    if (this.lastLen === 4) return this.slabViews[s].getUint32(this.lastOffset, true);
    this.readInto(gpa, this.scratch4);
    return this.scratchView.getUint32(0, true);
  }

  /** Little-endian u64 at `gpa` as a Number; FAULT_ADDR_RANGE when the value is ≥ 2^53. */
  getU64(gpa: number): number {
    const lo = this.getU32(gpa);
    if (lo < 0) return lo;
    const hi = this.getU32(gpa + 4);
    if (hi < 0) return hi;
    if (hi >= 0x200000) return FAULT_ADDR_RANGE;
    return hi * 0x100000000 + lo;
  }

  /** Stores a byte; 0 or a FAULT_*. */
  setU8(gpa: number, value: number): number {
    const s = this.gpaToSlab(gpa, 1);
    if (s < 0) return s;
    this.slabs[s][this.lastOffset] = value;
    if (this.dirtyLog !== null) this.markDirty(gpa, 1);
    return 0;
  }

  /** Stores a little-endian u16; 0 or a FAULT_*. */
  setU16(gpa: number, value: number): number {
    this.scratchView.setUint16(0, value, true);
    const r = this.writeFrom(gpa, this.scratch2);
    return r < 0 ? r : 0;
  }

  /** Stores a little-endian u32; 0 or a FAULT_*. */
  setU32(gpa: number, value: number): number {
    this.scratchView.setUint32(0, value >>> 0, true);
    const r = this.writeFrom(gpa, this.scratch4);
    return r < 0 ? r : 0;
  }

  /** Stores a little-endian u64 from a Number < 2^53; 0 or a FAULT_*. */
  setU64(gpa: number, value: number): number {
    if (!isU53(value)) return FAULT_ADDR_RANGE;
    this.scratchView.setUint32(0, value % 0x100000000, true);
    this.scratchView.setUint32(4, Math.floor(value / 0x100000000), true);
    const r = this.writeFrom(gpa, this.scratch);
    return r < 0 ? r : 0;
  }

  // --- dirty log -------------------------------------------------------------------------------

  /**
   * Turns dirty logging on (VHOST_F_LOG_ALL with the SET_LOG_BASE bitmap) or off (null).
   * Bit `n` of the bitmap (byte n >> 3, bit n & 7) covers guest-physical page n of 4 KiB.
   */
  setDirtyLog(log: Uint8Array | null): void {
    this.dirtyLog = log;
    this.dirtyLogOverflow = 0;
  }

  /**
   * Marks every 4 KiB page touched by `[gpa, gpa + len)` dirty. Uses `Atomics.or` on bytes
   * because the frontend reads and clears the bitmap concurrently. No-op when logging is off.
   */
  markDirty(gpa: number, len: number): void {
    const log = this.dirtyLog;
    if (log === null || !(len > 0) || !(gpa >= 0) || gpa + len > ADDR_LIMIT) return;
    const first = Math.floor(gpa / DIRTY_LOG_PAGE_SIZE);
    const last = Math.floor((gpa + len - 1) / DIRTY_LOG_PAGE_SIZE);
    for (let page = first; page <= last; page++) {
      const byte = Math.floor(page / 8);
      if (byte >= log.length) {
        this.dirtyLogOverflow += last - page + 1;
        return;
      }
      Atomics.or(log, byte, 1 << (page % 8));
      this.dirtyPagesMarked++;
    }
  }
}

/** Copies `len` bytes; small copies loop (no subarray view objects on the hot path). */
export function copyBytes(dst: Uint8Array, dstOff: number, src: Uint8Array, srcOff: number, len: number): void {
  if (len <= SMALL_COPY) {
    for (let i = 0; i < len; i++) dst[dstOff + i] = src[srcOff + i];
  } else {
    dst.set(src.subarray(srcOff, srcOff + len), dstOff);
  }
}
