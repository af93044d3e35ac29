/**
 * Packed virtqueue format (virtio 1.2 §2.8): constants, placement, validated views, and the
 * vhost-user encoding of a packed ring's position.
 *
 * One descriptor ring shared by both sides plus two 4-byte event suppression structures:
 * ```
 *  descriptor ring (align 16), `size` × 16 B         driver area (align 4)     device area (align 4)
 *  ┌────────────┬──────────┬──────────┬──────────┐    ┌──────────┬───────┐     ┌──────────┬───────┐
 *  │ addr (u64) │ len (u32)│ id (u16) │flags(u16)│ …  │ off_wrap │ flags │     │ off_wrap │ flags │
 *  └────────────┴──────────┴──────────┴──────────┘    └──────────┴───────┘     └──────────┴───────┘
 *   as u32 words: 0 addr lo, 1 addr hi, 2 len,        written by the driver:    written by the device:
 *   3 = id | flags << 16                              "device, notify me"       "driver, kick me"
 * ```
 * Ownership of a slot is encoded in two flag bits against each side's wrap counter
 * (virtio 1.2 §2.8.1): available when AVAIL == wrap and USED != wrap; used when
 * AVAIL == USED == the used wrap counter. Both counters start at 1 and flip every lap.
 * @module
 */
import { QueueError } from './errors.js';
import { FAULT_BAD_QUEUE_SIZE, FAULT_RING_MISALIGNED, FAULT_RING_NOT_CONTIGUOUS } from './faults.js';
import type { GuestMemory } from './guest-memory.js';

/** Feature bit: the packed virtqueue layout (virtio 1.2 §6). */
export const VIRTIO_F_RING_PACKED = 34;
/** Descriptor flag bit 7: available (compared with the driver's wrap counter). */
export const VIRTQ_DESC_F_AVAIL = 1 << 7;
/** Descriptor flag bit 15: used (compared with the device's wrap counter). */
export const VIRTQ_DESC_F_USED = 1 << 15;
/** Event suppression flags: notifications enabled (virtio 1.2 §2.8.10). */
export const RING_EVENT_FLAGS_ENABLE = 0;
/** Event suppression flags: notifications disabled. */
export const RING_EVENT_FLAGS_DISABLE = 1;
/** Event suppression flags: notify at the descriptor named by off_wrap (needs EVENT_IDX). */
export const RING_EVENT_FLAGS_DESC = 2;
/** Largest packed queue size (virtio 1.2 §2.8: 2^15, any value, not only powers of two). */
export const MAX_PACKED_QUEUE_SIZE = 32768;
/** Alignment of the descriptor ring and of the two event suppression areas (virtio 1.2 §2.8.2). */
export const PACKED_DESC_ALIGN = 16;
export const PACKED_EVENT_ALIGN = 4;
/** Bytes of one event suppression structure. */
export const PACKED_EVENT_BYTES = 4;

/** Guest-physical placement of a packed virtqueue (vhost-user: desc / avail / used addresses). */
export interface PackedQueueLayout {
  /** Queue size: 1 … 32768 (need not be a power of two). */
  size: number;
  /** GPA of the descriptor ring (vring "desc" address). */
  descGpa: number;
  /** GPA of the driver event suppression area (vring "avail" address). */
  driverGpa: number;
  /** GPA of the device event suppression area (vring "used" address). */
  deviceGpa: number;
}

/** Index of off_wrap in an event area's u16 view. */
export const EVENT_OFF_WRAP = 0;
/** Index of flags in an event area's u16 view. */
export const EVENT_FLAGS = 1;

/** The validated views of one packed queue. */
export class PackedRingViews {
  readonly size: number;
  /** Descriptor ring as u32 words, 4 per descriptor (word 3 = id | flags << 16). */
  readonly desc: Uint32Array;
  /** Driver event suppression as u16 [off_wrap, flags] and as one u32 (off_wrap | flags << 16). */
  readonly driver16: Uint16Array;
  readonly driver32: Uint32Array;
  /** Device event suppression, same shapes. */
  readonly device16: Uint16Array;
  readonly device32: Uint32Array;

  /** @throws QueueError bad-queue-size / ring-misaligned / ring-not-contiguous / unmapped … */
  constructor(memory: GuestMemory, layout: PackedQueueLayout) {
    const size = layout.size;
    if (!Number.isInteger(size) || size < 1 || size > MAX_PACKED_QUEUE_SIZE) {
      throw new QueueError(FAULT_BAD_QUEUE_SIZE, `size ${size}`);
    }
    this.size = size;
    const d = place(memory, 'descriptor ring', layout.descGpa, size * 16, PACKED_DESC_ALIGN);
    const drv = place(memory, 'driver event area', layout.driverGpa, PACKED_EVENT_BYTES, PACKED_EVENT_ALIGN);
    const dev = place(memory, 'device event area', layout.deviceGpa, PACKED_EVENT_BYTES, PACKED_EVENT_ALIGN);
    this.desc = new Uint32Array(d.buffer, d.byteOffset, size * 4);
    this.driver16 = new Uint16Array(drv.buffer, drv.byteOffset, 2);
    this.driver32 = new Uint32Array(drv.buffer, drv.byteOffset, 1);
    this.device16 = new Uint16Array(dev.buffer, dev.byteOffset, 2);
    this.device32 = new Uint32Array(dev.buffer, dev.byteOffset, 1);
  }
}

/** Checks one ring part (aligned, in one slab, word-aligned in its mapping) and returns a byte view. */
function place(memory: GuestMemory, what: string, gpa: number, bytes: number, align: number): Uint8Array {
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
  // The frontend picks mmap offsets: a GPA-aligned ring can still be misaligned in our buffer.
  if (byteOffset % 4 !== 0) {
    throw new QueueError(FAULT_RING_MISALIGNED, `${what} at 0x${gpa.toString(16)} misaligned in its mapping`);
  }
  return new Uint8Array(slab.buffer, byteOffset, bytes);
}

/** A packed ring position: slot index (0 … size-1) and wrap counter (0 | 1). */
export interface PackedPosition {
  index: number;
  wrap: number;
}

/** Encodes a position as vhost-user does: index in bits 0–14, wrap counter in bit 15. */
export function encodePackedIndex(index: number, wrap: number): number {
  return (index & 0x7fff) | ((wrap & 1) << 15);
}

/**
 * The VHOST_USER_GET/SET_VRING_BASE value of a packed queue (QEMU docs/interop/vhost-user.rst,
 * "vring descriptor indices"): bits 0–14 next available slot, bit 15 avail wrap counter,
 * bits 16–30 next used slot, bit 31 used wrap counter. Returned as an unsigned 32-bit Number.
 */
export function encodePackedVringBase(availIndex: number, availWrap: number, usedIndex: number, usedWrap: number): number {
  return (encodePackedIndex(availIndex, availWrap) | (encodePackedIndex(usedIndex, usedWrap) << 16)) >>> 0;
}

/** Decoded VHOST_USER_SET_VRING_BASE value of a packed queue. */
export interface PackedVringBase {
  availIndex: number;
  availWrap: number;
  usedIndex: number;
  usedWrap: number;
}

/**
 * Decodes a packed vring base. Frontends written before the used half existed (and DPDK's
 * vhost library) send only the low 16 bits; when bits 16–31 are all zero the used position is
 * taken equal to the available one — what such a frontend means (nothing in flight). The one
 * state this misreads is "used slot 0 with wrap 0 while buffers are in flight", which a
 * 16-bit-only frontend cannot express anyway.
 */
export function decodePackedVringBase(base: number): PackedVringBase {
  const lo = base & 0xffff;
  const hi = Math.floor(base / 0x10000) & 0xffff;
  const availIndex = lo & 0x7fff, availWrap = lo >>> 15;
  if (hi === 0) return { availIndex, availWrap, usedIndex: availIndex, usedWrap: availWrap };
  return { availIndex, availWrap, usedIndex: hi & 0x7fff, usedWrap: hi >>> 15 };
}

/**
 * EVENT_IDX rule of the packed ring (virtio 1.2 §2.8.10.1), on positions unrolled to a
 * "lap parity" line of length 2 × size: true when the event position lies in the `advanced`
 * slots that end just before `newIndex`/`newWrap`. `advanced` is the exact slot count since the
 * last decision; at or beyond `size` the answer is always true (no information is lost).
 */
export function packedNeedEvent(size: number, offWrap: number, newIndex: number, newWrap: number, advanced: number): boolean {
  if (advanced <= 0) return false;
  if (advanced >= size) return true;
  const m = 2 * size;
  const ev = (offWrap & 0x7fff) + ((offWrap >>> 15) & 1 ? 0 : size);
  const nw = newIndex + (newWrap ? 0 : size);
  // Distance from the event forward to new - 1; the event was crossed iff it is < advanced.
  const d = (((nw - ev - 1) % m) + m) % m;
  return d < advanced;
}
