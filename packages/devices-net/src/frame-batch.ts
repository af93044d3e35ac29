/**
 * Preallocated frame storage: a batch of fixed-size slots in one ArrayBuffer. Each slot holds
 * one frame as it travels between a device and a backend: the 12-byte virtio_net_hdr_v1
 * followed by the Ethernet frame. Slot views are built once so the data path never allocates.
 *
 * ```
 *  data: | slot 0 ............. | slot 1 ............. | ... | slot capacity-1 |
 *         ^hdr(12)^frame...       lengths[1] bytes used
 *         |<----- stride ------>|  (slotSize rounded up to 8: slots start word-aligned)
 * ```
 * @module
 */
import { VIRTIO_NET_HDR_V1_SIZE } from './constants.js';
import { wordsOf } from './word-copy.js';

/** Slot spacing for `slotSize`: rounded up to 8 so every slot starts word-aligned (see word-copy.ts). */
export function slotStride(slotSize: number): number {
  return (slotSize + 7) & ~7;
}

/** A batch of up to `capacity` frames of at most `slotSize` bytes each (header included). */
export class FrameBatch {
  readonly capacity: number;
  /** Largest frame + header a slot holds. */
  readonly slotSize: number;
  /** Distance between slots: slot i starts at `i * stride` (≥ slotSize, a multiple of 8). */
  readonly stride: number;
  /** All slots, back to back. */
  readonly data: Uint8Array;
  /** Int32 view of `data`'s buffer, for word copies. */
  readonly data32: Int32Array;
  /** Bytes used in each slot (header + frame). */
  readonly lengths: Uint32Array;
  /** One full-slot view per slot, built once. */
  readonly views: Uint8Array[];
  /** Frames currently in the batch (slots 0..count-1). */
  count = 0;

  constructor(capacity: number, slotSize: number) {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 65535) throw new RangeError(`batch capacity ${capacity}`);
    if (!Number.isInteger(slotSize) || slotSize <= VIRTIO_NET_HDR_V1_SIZE) throw new RangeError(`slot size ${slotSize}`);
    this.capacity = capacity;
    this.slotSize = slotSize;
    this.stride = slotStride(slotSize);
    this.data = new Uint8Array(capacity * this.stride);
    this.data32 = wordsOf(this.data.buffer);
    this.lengths = new Uint32Array(capacity);
    this.views = [];
    for (let i = 0; i < capacity; i++) this.views.push(this.data.subarray(i * this.stride, i * this.stride + slotSize));
  }

  /** Byte offset of slot `i` in `data`. */
  offsetOf(i: number): number {
    return i * this.stride;
  }

  get full(): boolean {
    return this.count === this.capacity;
  }

  /** Appends a copy of `src[offset, offset+length)`; false when full or too long. Test/control helper. */
  push(src: Uint8Array, offset = 0, length = src.length - offset): boolean {
    if (this.count === this.capacity || length > this.slotSize) return false;
    const i = this.count++;
    this.data.set(src.subarray(offset, offset + length), i * this.stride);
    this.lengths[i] = length;
    return true;
  }

  /** Copy of frame `i` (header included) — for tests and diagnostics. */
  frame(i: number): Uint8Array {
    const o = i * this.stride;
    return this.data.slice(o, o + this.lengths[i]);
  }

  clear(): void {
    this.count = 0;
  }
}

/**
 * A bounded FIFO of frames with the same slot layout, used to hold frames for an RX queue whose
 * guest has posted no buffers yet. Copy in, read out in order; nothing allocates after
 * construction.
 */
export class FrameRing {
  readonly capacity: number;
  readonly slotSize: number;
  /** Slot i starts at `i * stride` (a multiple of 8). */
  readonly stride: number;
  readonly data: Uint8Array;
  /** Int32 view of `data`'s buffer, for word copies. */
  readonly data32: Int32Array;
  readonly lengths: Uint32Array;
  private head = 0;
  /** Frames held. */
  size = 0;

  constructor(capacity: number, slotSize: number) {
    this.capacity = capacity;
    this.slotSize = slotSize;
    this.stride = slotStride(slotSize);
    this.data = new Uint8Array(capacity * this.stride);
    this.data32 = wordsOf(this.data.buffer);
    this.lengths = new Uint32Array(Math.max(capacity, 1));
  }

  /** Copies frame `i` of `batch` in; false (nothing copied) when full or the frame does not fit. */
  pushFrom(batch: FrameBatch, i: number): boolean {
    const len = batch.lengths[i];
    if (this.size === this.capacity || len > this.slotSize) return false;
    const slot = (this.head + this.size) % this.capacity;
    const from = i * batch.stride;
    this.data.set(batch.data.subarray(from, from + len), slot * this.stride);
    this.lengths[slot] = len;
    this.size++;
    return true;
  }

  /** Byte offset of the oldest frame in `data` (valid when size > 0). */
  get frontOffset(): number {
    return this.head * this.stride;
  }

  get frontLength(): number {
    return this.lengths[this.head];
  }

  shift(): void {
    if (this.size === 0) return;
    this.head = (this.head + 1) % this.capacity;
    this.size--;
  }

  clear(): void {
    this.head = 0;
    this.size = 0;
  }
}
