/**
 * Typed-array views over the three parts of a split virtqueue, validated once at start.
 *
 * ```
 *  descriptor table (align 16)      available ring (align 2)        used ring (align 4)
 *  ┌──────────────────────────┐     ┌───────┬─────┬──────────┬─────────────┐
 *  │ size × 16 B descriptors  │     │ flags │ idx │ ring[sz] │ used_event  │  (u16 each)
 *  └──────────────────────────┘     └───────┴─────┴──────────┴─────────────┘
 *                                   ┌───────┬─────┬───────────────────────┬──────────────┐
 *                                   │ flags │ idx │ ring[sz] {id, len} u32 │ avail_event  │
 *                                   └───────┴─────┴───────────────────────┴──────────────┘
 * ```
 * used_event / avail_event exist only with VIRTIO_RING_F_EVENT_IDX.
 * Typed arrays use the host byte order; virtio rings are little-endian, so this module refuses
 * to load on a big-endian host.
 * @module
 */
import {
  AVAIL_ALIGN, DESC_ALIGN, MAX_QUEUE_SIZE, USED_ALIGN, availRingBytes, descTableBytes, usedRingBytes,
} from './constants.js';
import { QueueError } from './errors.js';
import {
  FAULT_BAD_QUEUE_SIZE, FAULT_RING_MISALIGNED, FAULT_RING_NOT_CONTIGUOUS,
} from './faults.js';
import type { GuestMemory } from './guest-memory.js';

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error('@vhost-ts/virtqueue needs a little-endian host');
}

/** Guest-physical placement of a split virtqueue. */
export interface SplitQueueLayout {
  /** Queue size: a power of two, 1 … 32768. */
  size: number;
  /** GPA of the descriptor table. */
  descGpa: number;
  /** GPA of the available ring (driver area). */
  availGpa: number;
  /** GPA of the used ring (device area). */
  usedGpa: number;
}

/** Index of avail.flags in `avail`. */
export const AVAIL_FLAGS = 0;
/** Index of avail.idx in `avail`. */
export const AVAIL_IDX = 1;
/** Index of avail.ring[0] in `avail`. */
export const AVAIL_RING = 2;
/** Index of used.flags in `used16`. */
export const USED_FLAGS = 0;
/** Index of used.idx in `used16`. */
export const USED_IDX = 1;

/** The validated views of one queue. */
export class SplitRingViews {
  readonly size: number;
  readonly mask: number;
  readonly eventIdx: boolean;
  /** Descriptor table as u32 words, 4 per descriptor. */
  readonly desc: Uint32Array;
  /** Available ring as u16: flags, idx, ring[size], used_event (with EVENT_IDX). */
  readonly avail: Uint16Array;
  /** Used ring as u16: flags, idx, …, avail_event at index `availEventIndex`. */
  readonly used16: Uint16Array;
  /** Used ring as u32: element i is words 1 + 2i (id) and 2 + 2i (len). */
  readonly used32: Uint32Array;
  /** Index of used_event in `avail` (meaningful with EVENT_IDX). */
  readonly usedEventIndex: number;
  /** Index of avail_event in `used16` (meaningful with EVENT_IDX). */
  readonly availEventIndex: number;

  /** @throws QueueError bad-queue-size / ring-misaligned / ring-not-contiguous / unmapped … */
  constructor(memory: GuestMemory, layout: SplitQueueLayout, eventIdx: boolean) {
    const size = layout.size;
    if (!Number.isInteger(size) || size < 1 || size > MAX_QUEUE_SIZE || (size & (size - 1)) !== 0) {
      throw new QueueError(FAULT_BAD_QUEUE_SIZE, `size ${size}`);
    }
    this.size = size;
    this.mask = size - 1;
    this.eventIdx = eventIdx;
    // virtio 1.2 §2.7.1: each part starts at a multiple of its alignment; it must also lie in
    // one slab and at a matching byte alignment inside the mapping (the frontend picks the
    // mmap offset, so a GPA-aligned ring can still be misaligned in our buffer).
    const desc = place(memory, 'descriptor table', layout.descGpa, descTableBytes(size), DESC_ALIGN, 4);
    const avail = place(memory, 'available ring', layout.availGpa, availRingBytes(size, eventIdx), AVAIL_ALIGN, 2);
    const used = place(memory, 'used ring', layout.usedGpa, usedRingBytes(size, eventIdx), USED_ALIGN, 4);
    this.desc = new Uint32Array(desc.buffer, desc.byteOffset, size * 4);
    this.avail = new Uint16Array(avail.buffer, avail.byteOffset, avail.byteLength >>> 1);
    this.used16 = new Uint16Array(used.buffer, used.byteOffset, used.byteLength >>> 1);
    this.used32 = new Uint32Array(used.buffer, used.byteOffset, 1 + 2 * size);
    this.usedEventIndex = AVAIL_RING + size;
    this.availEventIndex = 2 + 4 * size;
  }
}

/** Checks one ring part and returns a byte view of it. */
function place(memory: GuestMemory, what: string, gpa: number, bytes: number, align: number,
  bufferAlign: number): Uint8Array {
  if (!Number.isInteger(gpa) || gpa % align !== 0) {
    throw new QueueError(FAULT_RING_MISALIGNED, `${what} at 0x${gpa.toString(16)} not ${align}-byte aligned`);
  }
  const s = memory.gpaToSlab(gpa, bytes);
  if (s < 0) throw new QueueError(s, `${what} at 0x${gpa.toString(16)} (+${bytes})`);
  if (memory.lastLen !== bytes) {
    throw new QueueError(FAULT_RING_NOT_CONTIGUOUS, `${what} at 0x${gpa.toString(16)} spans two mappings`);
  }
  const slab = memory.slabs[s];
  const byteOffset = slab.byteOffset + memory.lastOffset;
  if (byteOffset % bufferAlign !== 0) {
    throw new QueueError(FAULT_RING_MISALIGNED, `${what} at 0x${gpa.toString(16)} misaligned in its mapping`);
  }
  return new Uint8Array(slab.buffer, byteOffset, bytes);
}
