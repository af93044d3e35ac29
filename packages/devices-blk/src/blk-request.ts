/**
 * BlkRequest — one preallocated request slot — and the parser that fills it from a popped
 * descriptor chain (virtio 1.2 §5.2.6).
 *
 * ```
 *  device-readable                              device-writable
 *  ┌──────────┬──────────┬──────────────┬──────┐┌───────────────────────┬────────┐
 *  │ type u32 │ rsvd u32 │ sector u64   │ data ││ data (IN, GET_ID)     │ status │
 *  └──────────┴──────────┴──────────────┴──────┘└───────────────────────┴────────┘
 *   header: 16 bytes, may be split over any number of descriptors      last writable byte
 * ```
 * The parser never trusts a length or an index from the chain: it works on the segments the
 * chain walker already translated and bounds-checked, so the data segments it records are
 * always inside guest memory. Nothing is allocated per request: every slot owns its typed arrays.
 * @module
 */
import type { DescriptorChain, GuestMemory } from '@vhost-ts/virtqueue';
import {
  BLK_REQ_HEADER_SIZE, DISCARD_SEGMENT_SIZE, SECTOR_SIZE, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
} from './constants.js';

// --- operations (what an engine executes) ----------------------------------------------------
/** Nothing to execute: the parser already decided the status (error, UNSUPP, empty I/O). */
export const BLK_OP_NONE = 0;
/** Read `length` bytes at `offset` into the data segments. */
export const BLK_OP_READ = 1;
/** Write `length` bytes at `offset` from the data segments. */
export const BLK_OP_WRITE = 2;
/** Make completed writes durable. */
export const BLK_OP_FLUSH = 3;
/** Deallocate the ranges (advisory). */
export const BLK_OP_DISCARD = 4;
/** Zero the ranges (deallocating those flagged UNMAP). */
export const BLK_OP_WRITE_ZEROES = 5;
/** Answer the serial into the data segments (done by the queue, never by an engine). */
export const BLK_OP_GET_ID = 6;

/** Result of {@link parseBlkRequest}. */
export const PARSE_OK = 0;
/** The chain has no writable byte for the status: it cannot be answered (virtio 1.2 §5.2.6). */
export const PARSE_NO_STATUS = -1;

/** What the parser must know about the device. All sizes are counts, not bytes, unless named so. */
export interface BlkLimits {
  /** Capacity in 512-byte sectors. */
  capacity: number;
  readOnly: boolean;
  /** VIRTIO_BLK_F_DISCARD negotiated. */
  discard: boolean;
  /** VIRTIO_BLK_F_WRITE_ZEROES negotiated. */
  writeZeroes: boolean;
  maxDiscardSectors: number;
  maxDiscardSeg: number;
  maxWriteZeroesSectors: number;
  maxWriteZeroesSeg: number;
}

/** One request slot: filled by the parser, executed by an engine, completed by the queue. */
export class BlkRequest {
  /** Slot index (stable; engines use it as io_uring userData). */
  readonly index: number;
  /** Most data segments this slot holds. */
  readonly segCapacity: number;
  /** Most discard / write-zeroes ranges this slot holds. */
  readonly rangeCapacity: number;
  /** Descriptor head to hand back in the used ring. */
  head: number;
  /** Raw request type from the header. */
  type: number;
  /** BLK_OP_*. */
  op: number;
  /** First sector (header). */
  sector: number;
  /** Byte offset in the image (sector × 512). */
  offset: number;
  /** Data bytes to transfer (read, write, get-id). */
  length: number;
  /** Data segments: slab index, offset in slab, length, guest-physical address. */
  segCount: number;
  readonly segSlab: Int32Array;
  readonly segOffset: Float64Array;
  readonly segLen: Float64Array;
  readonly segGpa: Float64Array;
  /** Discard / write-zeroes ranges in bytes, with their raw flags. */
  rangeCount: number;
  readonly rangeOffset: Float64Array;
  readonly rangeLen: Float64Array;
  readonly rangeFlags: Uint32Array;
  /** Where the status byte goes. */
  statusSlab: number;
  statusOffset: number;
  statusGpa: number;
  /** VIRTIO_BLK_S_* once known. */
  status: number;
  /** Bytes written into the guest's data buffers, from the start of the writable part. */
  written: number;
  /** Device-writable bytes of the chain, the status byte (the last) included. */
  writableBytes: number;
  /** Engine scratch: bytes transferred so far. */
  done: number;
  /** Engine scratch: operations still outstanding. */
  pending: number;
  /** Engine scratch: current phase (engine-defined). */
  phase: number;
  /** The memory the segments refer to. */
  memory: GuestMemory | null;
  /** True while the slot belongs to a request being processed. */
  busy: boolean;

  constructor(index: number, segCapacity: number, rangeCapacity: number) {
    this.index = index;
    this.segCapacity = segCapacity;
    this.rangeCapacity = rangeCapacity;
    this.head = -1;
    this.type = 0;
    this.op = BLK_OP_NONE;
    this.sector = 0;
    this.offset = 0;
    this.length = 0;
    this.segCount = 0;
    this.segSlab = new Int32Array(segCapacity);
    this.segOffset = new Float64Array(segCapacity);
    this.segLen = new Float64Array(segCapacity);
    this.segGpa = new Float64Array(segCapacity);
    this.rangeCount = 0;
    this.rangeOffset = new Float64Array(rangeCapacity);
    this.rangeLen = new Float64Array(rangeCapacity);
    this.rangeFlags = new Uint32Array(rangeCapacity);
    this.statusSlab = -1;
    this.statusOffset = 0;
    this.statusGpa = 0;
    this.status = VIRTIO_BLK_S_OK;
    this.written = 0;
    this.writableBytes = 0;
    this.done = 0;
    this.pending = 0;
    this.phase = 0;
    this.memory = null;
    this.busy = false;
  }

  /** Finishes parsing with a status decided up front (nothing to execute). */
  fail(status: number): number {
    this.op = BLK_OP_NONE;
    this.status = status;
    this.length = 0;
    this.segCount = 0;
    this.rangeCount = 0;
    return PARSE_OK;
  }

  /**
   * Copies `n` bytes of `src` into the data segments (GET_ID, memory engine reads).
   * @returns bytes copied.
   */
  copyToData(srcOffset: number, src: Uint8Array, n: number, dataSkip = 0): number {
    const mem = this.memory;
    if (mem === null) return 0;
    let done = 0, skip = dataSkip;
    for (let i = 0; i < this.segCount && done < n; i++) {
      const len = this.segLen[i];
      if (skip >= len) { skip -= len; continue; }
      const take = Math.min(len - skip, n - done);
      const slab = mem.slabs[this.segSlab[i]];
      const at = this.segOffset[i] + skip;
      if (take <= 64) {
        for (let k = 0; k < take; k++) slab[at + k] = src[srcOffset + done + k];
      } else {
        slab.set(src.subarray(srcOffset + done, srcOffset + done + take), at);
      }
      done += take;
      skip = 0;
    }
    return done;
  }

  /** Fills the data segments with zeros (null engine reads). */
  zeroData(): void {
    const mem = this.memory;
    if (mem === null) return;
    for (let i = 0; i < this.segCount; i++) {
      mem.slabs[this.segSlab[i]].fill(0, this.segOffset[i], this.segOffset[i] + this.segLen[i]);
    }
  }

  /** Marks the data segments dirty (after the device wrote them) when the memory logs. */
  markDataDirty(): void {
    const mem = this.memory;
    if (mem === null || mem.dirtyLog === null) return;
    for (let i = 0; i < this.segCount; i++) mem.markDirty(this.segGpa[i], this.segLen[i]);
  }
}

/** Per-queue parser: owns the scratch buffers (no allocation per request). */
export class BlkRequestParser {
  readonly limits: BlkLimits;
  private readonly header: Uint8Array;
  private readonly headerView: DataView;
  private readonly ranges: Uint8Array;
  private readonly rangesView: DataView;

  constructor(limits: BlkLimits) {
    this.limits = limits;
    this.header = new Uint8Array(BLK_REQ_HEADER_SIZE);
    this.headerView = new DataView(this.header.buffer);
    const maxSeg = Math.max(limits.maxDiscardSeg, limits.maxWriteZeroesSeg, 1);
    this.ranges = new Uint8Array(maxSeg * DISCARD_SEGMENT_SIZE);
    this.rangesView = new DataView(this.ranges.buffer);
  }

  /**
   * Parses `chain` into `req`.
   * @returns PARSE_OK (then `req.op` says what to execute, or BLK_OP_NONE with `req.status`
   *   already decided) or PARSE_NO_STATUS when the chain has no writable byte.
   */
  parse(chain: DescriptorChain, req: BlkRequest): number {
    req.head = chain.head;
    req.memory = chain.memory;
    req.status = VIRTIO_BLK_S_OK;
    req.written = 0;
    req.done = 0;
    req.pending = 0;
    req.phase = 0;
    req.segCount = 0;
    req.rangeCount = 0;
    req.length = 0;
    req.offset = 0;
    req.sector = 0;
    req.type = -1;
    // virtio 1.2 §5.2.6: the status is the last byte the device may write. Without one the
    // request cannot be answered at all.
    if (chain.writableSegs === 0 || chain.writableBytes === 0) {
      req.op = BLK_OP_NONE;
      return PARSE_NO_STATUS;
    }
    const last = chain.readableSegs + chain.writableSegs - 1;
    req.writableBytes = chain.writableBytes;
    req.statusSlab = chain.segSlab[last];
    req.statusOffset = chain.segOffset[last] + chain.segLen[last] - 1;
    req.statusGpa = chain.segGpa[last] + chain.segLen[last] - 1;

    // The header may be split over several descriptors: read it through the chain.
    if (chain.readableBytes < BLK_REQ_HEADER_SIZE || chain.copyFromReadable(0, this.header) !== BLK_REQ_HEADER_SIZE) {
      return req.fail(VIRTIO_BLK_S_IOERR);
    }
    const h = this.headerView;
    const type = h.getUint32(0, true);
    const lo = h.getUint32(8, true), hi = h.getUint32(12, true);
    req.type = type;
    // Sectors ≥ 2^53 cannot be represented and are far past any capacity.
    const sector = hi >= 0x200000 ? -1 : hi * 0x100000000 + lo;
    req.sector = sector;
    const lim = this.limits;

    switch (type) {
      case VIRTIO_BLK_T_IN: {
        const len = chain.writableBytes - 1;
        if (!this.dataRange(req, sector, len)) return PARSE_OK;
        if (!this.collectWritable(chain, req, len)) return req.fail(VIRTIO_BLK_S_IOERR);
        req.op = len === 0 ? BLK_OP_NONE : BLK_OP_READ;
        return PARSE_OK;
      }
      case VIRTIO_BLK_T_OUT: {
        // virtio 1.2 §5.2.6.2: a write to a read-only device fails with IOERR, nothing written.
        if (lim.readOnly) return req.fail(VIRTIO_BLK_S_IOERR);
        const len = chain.readableBytes - BLK_REQ_HEADER_SIZE;
        if (!this.dataRange(req, sector, len)) return PARSE_OK;
        if (!this.collectReadable(chain, req, len)) return req.fail(VIRTIO_BLK_S_IOERR);
        req.op = len === 0 ? BLK_OP_NONE : BLK_OP_WRITE;
        return PARSE_OK;
      }
      case VIRTIO_BLK_T_FLUSH:
        req.op = BLK_OP_FLUSH;
        return PARSE_OK;
      case VIRTIO_BLK_T_GET_ID: {
        const len = chain.writableBytes - 1;
        if (!this.collectWritable(chain, req, len)) return req.fail(VIRTIO_BLK_S_IOERR);
        req.length = len;
        req.op = BLK_OP_GET_ID;
        return PARSE_OK;
      }
      case VIRTIO_BLK_T_DISCARD:
        if (!lim.discard) return req.fail(VIRTIO_BLK_S_UNSUPP);
        return this.parseRanges(chain, req, BLK_OP_DISCARD, lim.maxDiscardSeg, lim.maxDiscardSectors);
      case VIRTIO_BLK_T_WRITE_ZEROES:
        if (!lim.writeZeroes) return req.fail(VIRTIO_BLK_S_UNSUPP);
        return this.parseRanges(chain, req, BLK_OP_WRITE_ZEROES, lim.maxWriteZeroesSeg, lim.maxWriteZeroesSectors);
      default:
        // virtio 1.2 §5.2.6.2: unknown (or not offered) request types get UNSUPP.
        return req.fail(VIRTIO_BLK_S_UNSUPP);
    }
  }

  /** Checks a read/write range; on failure fails `req` and returns false. Overflow-safe. */
  private dataRange(req: BlkRequest, sector: number, len: number): boolean {
    // Data must be whole 512-byte sectors (virtio 1.2 §5.2.6: data length a multiple of 512).
    if (len % SECTOR_SIZE !== 0) { req.fail(VIRTIO_BLK_S_IOERR); return false; }
    const sectors = len / SECTOR_SIZE;
    const cap = this.limits.capacity;
    // sector > cap - sectors, written so no sum can overflow or lose precision.
    if (sector < 0 || sector > cap || sectors > cap - sector) { req.fail(VIRTIO_BLK_S_IOERR); return false; }
    req.offset = sector * SECTOR_SIZE;
    req.length = len;
    return true;
  }

  /** Records the writable data segments (all writable bytes but the status byte). */
  private collectWritable(chain: DescriptorChain, req: BlkRequest, len: number): boolean {
    let n = 0, left = len;
    const end = chain.readableSegs + chain.writableSegs;
    for (let i = chain.readableSegs; i < end && left > 0; i++) {
      const take = Math.min(chain.segLen[i], left);
      if (n >= req.segCapacity) return false;
      req.segSlab[n] = chain.segSlab[i];
      req.segOffset[n] = chain.segOffset[i];
      req.segLen[n] = take;
      req.segGpa[n] = chain.segGpa[i];
      n++;
      left -= take;
    }
    req.segCount = n;
    return true;
  }

  /** Records the readable data segments after the 16-byte header. */
  private collectReadable(chain: DescriptorChain, req: BlkRequest, len: number): boolean {
    let n = 0, left = len, skip = BLK_REQ_HEADER_SIZE;
    for (let i = 0; i < chain.readableSegs && left > 0; i++) {
      const segLen = chain.segLen[i];
      if (skip >= segLen) { skip -= segLen; continue; }
      const take = Math.min(segLen - skip, left);
      if (n >= req.segCapacity) return false;
      req.segSlab[n] = chain.segSlab[i];
      req.segOffset[n] = chain.segOffset[i] + skip;
      req.segLen[n] = take;
      req.segGpa[n] = chain.segGpa[i] + skip;
      n++;
      left -= take;
      skip = 0;
    }
    req.segCount = n;
    return true;
  }

  /**
   * Parses the `virtio_blk_discard_write_zeroes` segments after the header
   * (virtio 1.2 §5.2.6.2 device requirements for discard and write zeroes).
   */
  private parseRanges(chain: DescriptorChain, req: BlkRequest, op: number, maxSeg: number, maxSectors: number): number {
    const lim = this.limits;
    if (lim.readOnly) return req.fail(VIRTIO_BLK_S_IOERR);
    const len = chain.readableBytes - BLK_REQ_HEADER_SIZE;
    if (len <= 0 || len % DISCARD_SEGMENT_SIZE !== 0) return req.fail(VIRTIO_BLK_S_IOERR);
    const count = len / DISCARD_SEGMENT_SIZE;
    if (count > maxSeg || count > req.rangeCapacity || len > this.ranges.length) return req.fail(VIRTIO_BLK_S_IOERR);
    if (chain.copyFromReadable(BLK_REQ_HEADER_SIZE, this.ranges) < len) return req.fail(VIRTIO_BLK_S_IOERR);
    const v = this.rangesView;
    const cap = lim.capacity;
    let n = 0;
    for (let i = 0; i < count; i++) {
      const o = i * DISCARD_SEGMENT_SIZE;
      const lo = v.getUint32(o, true), hi = v.getUint32(o + 4, true);
      const num = v.getUint32(o + 8, true);
      const flags = v.getUint32(o + 12, true);
      // Unknown flags → UNSUPP; UNMAP on a discard → UNSUPP (virtio 1.2 §5.2.6.2).
      if ((flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0) return req.fail(VIRTIO_BLK_S_UNSUPP);
      if (op === BLK_OP_DISCARD && flags !== 0) return req.fail(VIRTIO_BLK_S_UNSUPP);
      if (num > maxSectors) return req.fail(VIRTIO_BLK_S_IOERR);
      if (hi >= 0x200000) return req.fail(VIRTIO_BLK_S_IOERR);
      const sector = hi * 0x100000000 + lo;
      if (sector > cap || num > cap - sector) return req.fail(VIRTIO_BLK_S_IOERR);
      if (num === 0) continue; // nothing to do for an empty range
      req.rangeOffset[n] = sector * SECTOR_SIZE;
      req.rangeLen[n] = num * SECTOR_SIZE;
      req.rangeFlags[n] = flags;
      n++;
    }
    req.rangeCount = n;
    req.op = n === 0 ? BLK_OP_NONE : op;
    return PARSE_OK;
  }
}
