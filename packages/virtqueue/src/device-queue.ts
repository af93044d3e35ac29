/**
 * DeviceQueue — what a device handler sees of a queue, whichever ring format the driver
 * negotiated: SplitQueueDevice (virtio 1.2 §2.7) and PackedQueueDevice (§2.8, with
 * VIRTIO_F_RING_PACKED) both implement it with the same return codes and the same
 * DescriptorChain output, so a handler written against it runs on both.
 *
 * Index-like members (`nextAvail`, `usedIdx`, `publishedUsedIdx`) are opaque positions: a
 * 16-bit ring index on split rings, slot | wrap << 15 on packed rings. Handlers may save one and
 * set it back (to un-pop chains), or compare two for equality; nothing else.
 * @module
 */
import type { DescriptorChain } from './descriptor-chain.js';
import type { ChainError, QueueError } from './errors.js';
import type { GuestMemory } from './guest-memory.js';

/** The device side of one virtqueue, split or packed. */
export interface DeviceQueue {
  /** True for a packed ring. */
  readonly packed: boolean;
  readonly memory: GuestMemory;
  readonly size: number;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
  /**
   * `pushUsedInOrder` is available: VIRTIO_F_IN_ORDER was negotiated on a split ring (packed
   * rings push one element per chain; always false there).
   */
  readonly inOrder: boolean;
  /** Memory generation the queue's views were built for. */
  readonly generation: number;
  isBroken: boolean;
  fault: number;
  faultHead: number;
  popped: number;
  notifyEnabled: boolean;
  /** Next available position (GET/SET_VRING_BASE on split rings; see the module note). */
  nextAvail: number;
  readonly usedIdx: number;
  readonly publishedUsedIdx: number;
  setUsedIdx(value: number): void;
  syncUsedIdxFromRing(): number;
  availableCount(): number;
  /** 1 = popped, 0 = empty, < 0 = FAULT_* (the queue is then broken). */
  pop(chain: DescriptorChain): number;
  /**
   * Pops up to `max` chains that are one direct descriptor, writable or not as asked, with no
   * chain object: chain k is `out[4k .. 4k+3]` = head, slab index, offset in the slab, length.
   * Stops before the first chain of another shape (left for `pop`), at the end of the available
   * entries, or — once it holds chains — at the end of the entries it last read (avail.idx is
   * read again by the next call): a short count does not mean the ring is empty. A queue kind
   * without this fast form returns 0. A fault found after some chains were taken is reported by
   * the next call: the chains taken are always returned.
   * @returns chains popped, or a FAULT_* (< 0: the queue is broken, nothing was popped)
   */
  popDirect(out: Float64Array, max: number, writable: boolean): number;
  /**
   * Gives back the last `count` chains `popDirect` returned and that were not pushed (a caller
   * that could not use the end of a run): the next pops return them again, in order. The
   * notification state is kept. Packed rings give back only chains of their last `popDirect`
   * (a RangeError beyond); chains from `pop` go back by position there (`nextAvail`).
   */
  unpop(count: number): void;
  /**
   * A cache hint, no state change: reads one byte at the first buffer of up to `max` available
   * chains without taking them. A driver writes each request's header just before making it
   * available, so `pop` after `pop` then meets one cache miss per request, one at a time; loads
   * issued together here overlap. Entries it cannot resolve cheaply are skipped, and `pop`
   * checks everything again. Packed rings do nothing.
   */
  touchAvailable(max: number): void;
  /**
   * Declares a queue the device only reads (virtio-net TX). Packed rings then read
   * device-writable entries of indirect tables as device-readable instead of refusing the chain:
   * DPDK's virtio-user driver flags every entry of its packed TX indirect tables writable, the
   * net header it fills included (DPDK's vhost library never looks at the flag on TX). Such a
   * chain is all readable; the flag stays checked everywhere else. Split rings: nothing (DPDK's
   * split tables are flagged right).
   */
  markDeviceReadOnly(): void;
  pushUsed(head: number, len: number): void;
  /**
   * With `inOrder`: the next `count` chains, in the order they were made available, were used;
   * one used element for the batch (virtio 1.2 §2.7.9). Throws when `inOrder` is false.
   */
  pushUsedInOrder(count: number, lastHead: number, len: number): void;
  publishUsed(): void;
  shouldNotify(): boolean;
  enableNotify(): boolean;
  disableNotify(): void;
  readonly error: ChainError | QueueError | null;
  readonly faultIsMemory: boolean;
  /** The descriptor table (split) or ring (packed) as u32 words. */
  readonly ringViews: { readonly desc: Uint32Array };
}
