/**
 * Constants of the split virtqueue format (virtio 1.2 §2.7) and the vhost dirty log,
 * with the spec's names kept verbatim.
 * @module
 */

/** This marks a buffer as continuing via the `next` field (virtio 1.2 §2.7.5). */
export const VIRTQ_DESC_F_NEXT = 1;
/** This marks a buffer as device write-only (otherwise device read-only). */
export const VIRTQ_DESC_F_WRITE = 2;
/** The buffer contains a table of descriptors (virtio 1.2 §2.7.5.3). */
export const VIRTQ_DESC_F_INDIRECT = 4;

/** avail.flags: the driver asks the device not to interrupt it (virtio 1.2 §2.7.7). */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
/** used.flags: the device asks the driver not to kick it (virtio 1.2 §2.7.10). */
export const VIRTQ_USED_F_NO_NOTIFY = 1;

/** Feature bit: indirect descriptor tables. */
export const VIRTIO_RING_F_INDIRECT_DESC = 28;
/** Feature bit: used_event / avail_event notification suppression. */
export const VIRTIO_RING_F_EVENT_IDX = 29;
/**
 * Feature bit: the device uses buffers in the order they were made available (virtio 1.2
 * §2.7.9 / §2.8.20). The rings do not enforce it; a device that offers it must keep that order.
 */
export const VIRTIO_F_IN_ORDER = 35;
/** vhost feature bit: log every write to guest memory in the dirty bitmap. */
export const VHOST_F_LOG_ALL = 26;

/** Largest queue size of a split virtqueue (virtio 1.2 §2.7: Queue Size ≤ 32768). */
export const MAX_QUEUE_SIZE = 32768;
/** Size of one descriptor (addr u64, len u32, flags u16, next u16). */
export const DESC_SIZE = 16;
/** Required alignment of the ring parts, virtio 1.2 §2.7 (table "Virtqueue Part Alignment"). */
export const DESC_ALIGN = 16;
export const AVAIL_ALIGN = 2;
export const USED_ALIGN = 4;

/** Page size of the vhost-user dirty log: one bit per 4 KiB page (bit n = gpa / 4096). */
export const DIRTY_LOG_PAGE_SIZE = 4096;

/** Numbers at or above this are not exact integers; every address must stay below it. */
export const ADDR_LIMIT = 2 ** 53;

/** Largest piece of guest memory one slab (one Uint8Array) covers; bigger regions are split. */
export const SLAB_MAX = 2 ** 30;

/** Bytes of the available ring for `size` entries (flags, idx, ring, used_event when EVENT_IDX). */
export function availRingBytes(size: number, eventIdx: boolean): number {
  return 4 + 2 * size + (eventIdx ? 2 : 0);
}

/** Bytes of the used ring for `size` entries (flags, idx, ring of {id u32, len u32}, avail_event). */
export function usedRingBytes(size: number, eventIdx: boolean): number {
  return 4 + 8 * size + (eventIdx ? 2 : 0);
}

/** Bytes of the descriptor table for `size` entries. */
export function descTableBytes(size: number): number {
  return DESC_SIZE * size;
}
