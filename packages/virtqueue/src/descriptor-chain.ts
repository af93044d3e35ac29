/**
 * DescriptorChain — one popped request, as slab pieces, reused for every pop.
 *
 * ```
 *  index:   0 … readableSegs-1 | readableSegs … readableSegs+writableSegs-1
 *           device-readable     | device-writable            (virtio 1.2 §2.7.5.2 order)
 *  segSlab[i]   slab index in GuestMemory.slabs (= io_uring buffer index)
 *  segOffset[i] byte offset in that slab   (absolute in the ArrayBuffer: + slabByteOffset[slab])
 *  segLen[i]    bytes (> 0)                 segGpa[i] guest-physical address of the piece
 * ```
 *
 * One descriptor whose buffer spans two adjacent slabs becomes two segments. Nothing here is
 * allocated per pop: the arrays are sized once (`capacity`).
 * @module
 */
import { copyBytes, type GuestMemory } from './guest-memory.js';

/** Default number of segments a DescriptorChain holds. */
export const DEFAULT_CHAIN_CAPACITY = 1024;

/** A descriptor chain popped from a queue (see the module comment for the layout). */
export class DescriptorChain {
  /** Head descriptor index (the id to hand back in `pushUsed`). */
  head: number;
  /** Descriptors walked, including the one that points at an indirect table. */
  descCount: number;
  /** Number of device-readable segments (they come first). */
  readableSegs: number;
  /** Number of device-writable segments (after the readable ones). */
  writableSegs: number;
  /** Total bytes the device may read. */
  readableBytes: number;
  /** Total bytes the device may write. */
  writableBytes: number;
  /** True when the chain came (partly) from an indirect table. */
  indirect: boolean;
  /** The memory the segments refer to (set by the queue that filled the chain). */
  memory: GuestMemory | null;
  /** Most segments this chain can hold. */
  readonly capacity: number;
  readonly segSlab: Int32Array;
  readonly segOffset: Float64Array;
  readonly segLen: Float64Array;
  readonly segGpa: Float64Array;

  constructor(capacity = DEFAULT_CHAIN_CAPACITY) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError('DescriptorChain capacity must be ≥ 1');
    this.head = -1;
    this.descCount = 0;
    this.readableSegs = 0;
    this.writableSegs = 0;
    this.readableBytes = 0;
    this.writableBytes = 0;
    this.indirect = false;
    this.memory = null;
    this.capacity = capacity;
    this.segSlab = new Int32Array(capacity);
    this.segOffset = new Float64Array(capacity);
    this.segLen = new Float64Array(capacity);
    this.segGpa = new Float64Array(capacity);
  }

  /** Total number of segments. */
  get segCount(): number {
    return this.readableSegs + this.writableSegs;
  }

  /**
   * Copies device-readable bytes, starting `skip` bytes into the readable data, into `dst`.
   * @returns bytes copied (less than dst.length when the readable data ends first).
   */
  copyFromReadable(skip: number, dst: Uint8Array): number {
    const mem = this.memory;
    if (mem === null) return 0;
    let done = 0;
    const want = dst.length;
    for (let i = 0; i < this.readableSegs && done < want; i++) {
      const len = this.segLen[i];
      if (skip >= len) { skip -= len; continue; }
      const take = Math.min(len - skip, want - done);
      copyBytes(dst, done, mem.slabs[this.segSlab[i]], this.segOffset[i] + skip, take);
      done += take;
      skip = 0;
    }
    return done;
  }

  /**
   * Copies `src` into the device-writable data, starting `skip` bytes into it; marks the
   * written pages dirty when the memory is logging.
   * @returns bytes copied (less than src.length when the writable space ends first).
   */
  copyToWritable(skip: number, src: Uint8Array): number {
    const mem = this.memory;
    if (mem === null) return 0;
    let done = 0;
    const want = src.length;
    const end = this.readableSegs + this.writableSegs;
    for (let i = this.readableSegs; i < end && done < want; i++) {
      const len = this.segLen[i];
      if (skip >= len) { skip -= len; continue; }
      const take = Math.min(len - skip, want - done);
      copyBytes(mem.slabs[this.segSlab[i]], this.segOffset[i] + skip, src, done, take);
      if (mem.dirtyLog !== null) mem.markDirty(this.segGpa[i] + skip, take);
      done += take;
      skip = 0;
    }
    return done;
  }

  /**
   * Marks `len` bytes of the writable data, from `skip`, dirty — for devices that wrote into
   * the segments directly (io_uring reads into guest memory). No-op when not logging.
   */
  markWritableDirty(skip: number, len: number): void {
    const mem = this.memory;
    if (mem === null || mem.dirtyLog === null) return;
    const end = this.readableSegs + this.writableSegs;
    for (let i = this.readableSegs; i < end && len > 0; i++) {
      const segLen = this.segLen[i];
      if (skip >= segLen) { skip -= segLen; continue; }
      const take = Math.min(segLen - skip, len);
      mem.markDirty(this.segGpa[i] + skip, take);
      len -= take;
      skip = 0;
    }
  }
}
