/**
 * SplitQueueDevice — the device side of a split virtqueue (virtio 1.2 §2.7).
 *
 * Typical handler loop (correct with and without EVENT_IDX):
 * ```ts
 * for (;;) {
 *   let r;
 *   while ((r = q.pop(chain)) === 1) { handle(chain); q.pushUsed(chain.head, written); }
 *   if (r < 0) { ctx.broken(q.error!.message); break; }
 *   q.publishUsed();
 *   if (q.shouldNotify()) ctx.notify();
 *   if (!q.enableNotify()) break;   // true = more arrived while re-enabling: go again
 * }
 * ```
 * Guest-shared indices are read and written only with `Atomics` (seq-cst), everything else
 * through the views validated once by SplitRingViews.
 * @module
 */
import { VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_F_WRITE, VIRTQ_USED_F_NO_NOTIFY } from './constants.js';
import { ChainWalker } from './chain-walker.js';
import type { DescriptorChain } from './descriptor-chain.js';
import { ChainError, QueueError } from './errors.js';
import type { DeviceQueue } from './device-queue.js';
import { vringNeedEvent } from './event-idx.js';
import { FAULT_AVAIL_IDX_JUMP, FAULT_HEAD_OUT_OF_RANGE, isMemoryFault } from './faults.js';
import type { GuestMemory } from './guest-memory.js';
import { AVAIL_FLAGS, AVAIL_IDX, AVAIL_RING, SplitRingViews, USED_FLAGS, USED_IDX, type SplitQueueLayout } from './ring-views.js';

/** Options of the device side. */
export interface SplitQueueDeviceOptions {
  /** VIRTIO_RING_F_EVENT_IDX negotiated. */
  eventIdx: boolean;
  /** VIRTIO_RING_F_INDIRECT_DESC negotiated. */
  indirect: boolean;
  /** Most segments per chain (a longer chain is a `too-many-segments` fault). */
  maxSegments?: number;
  /** Most entries per indirect table (default: max(queue size, 1024)). */
  maxIndirect?: number;
  /** Initial next-available index (SET_VRING_BASE); default 0. */
  nextAvail?: number;
  /** VIRTIO_F_IN_ORDER negotiated: `pushUsedInOrder` may be used (default false). */
  inOrder?: boolean;
}

/** The device side of one split virtqueue. */
export class SplitQueueDevice implements DeviceQueue {
  /** Discriminant shared with PackedQueueDevice (`true` there). */
  readonly packed = false as const;
  readonly memory: GuestMemory;
  readonly layout: SplitQueueLayout;
  readonly size: number;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
  /** VIRTIO_F_IN_ORDER negotiated (see pushUsedInOrder). */
  readonly inOrder: boolean;
  /** Memory generation the views were built for. */
  readonly generation: number;
  /** True once a guest fault was seen; every later pop returns `fault`. */
  isBroken: boolean;
  /** The fault that broke the queue (FAULT_*), or 0. */
  fault: number;
  /** Head index involved in the fault, or -1. */
  faultHead: number;
  /** Chains popped since construction. */
  popped: number;
  /** Whether the device currently asks for kicks. */
  notifyEnabled: boolean;

  private readonly views: SplitRingViews;
  private readonly walker: ChainWalker;
  private readonly mask: number;
  private readonly avail: Uint16Array;
  private readonly desc: Uint32Array;
  private readonly used16: Uint16Array;
  private readonly used32: Uint32Array;
  /** Used elements pushed and not yet published, at their ring positions (see pushUsed). */
  private readonly pendingUsed: Uint32Array;
  private readonly usedEventIndex: number;
  private readonly availEventIndex: number;
  private readonly usedGpa: number;
  /** Next avail ring entry to consume (16-bit, wraps). */
  private nextAvailIdx: number;
  /** avail.idx as last read; entries in [nextAvailIdx, availShadow) are known published. */
  private availShadow: number;
  /** Last touchAvailable result (see there). */
  private touched = 0;
  /** used.idx the next pushUsed writes at. */
  private usedShadow: number;
  /** used.idx as last stored in the ring. */
  private usedPublished: number;
  /** used.idx at the last notification decision (EVENT_IDX "old"). */
  private signalledUsed: number;
  private signalledValid: boolean;

  /** @throws QueueError when the layout is invalid (see SplitRingViews). */
  constructor(memory: GuestMemory, layout: SplitQueueLayout, opts: SplitQueueDeviceOptions) {
    const views = new SplitRingViews(memory, layout, opts.eventIdx);
    this.memory = memory;
    this.layout = { ...layout };
    this.size = views.size;
    this.eventIdx = opts.eventIdx;
    this.indirect = opts.indirect;
    this.inOrder = opts.inOrder ?? false;
    this.generation = memory.generation;
    this.isBroken = false;
    this.fault = 0;
    this.faultHead = -1;
    this.popped = 0;
    this.notifyEnabled = true;
    this.views = views;
    this.walker = new ChainWalker(memory, views.desc, views.size, {
      indirect: opts.indirect, maxIndirect: opts.maxIndirect, maxSegments: opts.maxSegments,
    });
    this.mask = views.mask;
    this.avail = views.avail;
    this.desc = views.desc;
    this.used16 = views.used16;
    this.used32 = views.used32;
    this.pendingUsed = new Uint32Array(views.size * 2);
    this.usedEventIndex = views.usedEventIndex;
    this.availEventIndex = views.availEventIndex;
    this.usedGpa = layout.usedGpa;
    const start = (opts.nextAvail ?? 0) & 0xffff;
    this.nextAvailIdx = start;
    this.availShadow = start;
    // Resume from whatever the ring says was already used (as libvhost-user does at
    // SET_VRING_ADDR); setUsedIdx() overrides it for inflight recovery.
    const used = Atomics.load(this.used16, USED_IDX);
    this.usedShadow = used;
    this.usedPublished = used;
    this.signalledUsed = used;
    this.signalledValid = false;
  }

  /** Next available-ring index the device will consume (GET/SET_VRING_BASE). */
  get nextAvail(): number {
    return this.nextAvailIdx;
  }

  set nextAvail(value: number) {
    this.nextAvailIdx = value & 0xffff;
    this.availShadow = this.nextAvailIdx; // forces a fresh, checked read of avail.idx
    this.signalledValid = false;
  }

  /** used.idx the device will write next (pushed, maybe not yet published). */
  get usedIdx(): number {
    return this.usedShadow;
  }

  /** Published used.idx (the value stored in the ring). */
  get publishedUsedIdx(): number {
    return this.usedPublished;
  }

  /** Sets the used index (inflight recovery) without writing the ring. */
  setUsedIdx(value: number): void {
    this.usedShadow = value & 0xffff;
    this.usedPublished = this.usedShadow;
    this.signalledValid = false;
  }

  /** Re-reads used.idx from the ring into the device's shadow (restart). */
  syncUsedIdxFromRing(): number {
    this.setUsedIdx(Atomics.load(this.used16, USED_IDX));
    return this.usedShadow;
  }

  /** Entries published by the driver and not yet popped (reads avail.idx; no fault check). */
  availableCount(): number {
    return (Atomics.load(this.avail, AVAIL_IDX) - this.nextAvailIdx) & 0xffff;
  }

  /**
   * Pops the next available chain into `chain`.
   * @returns 1 when a chain was popped, 0 when the ring is empty, or a FAULT_* (< 0); after a
   *   fault the queue is broken and every call returns the same fault.
   */
  pop(chain: DescriptorChain): number {
    if (this.isBroken) return this.fault;
    const next = this.nextAvailIdx;
    if (next === this.availShadow) {
      // One Atomics load of avail.idx per batch, not per chain.
      const r = this.refreshAvail(next);
      if (r <= 0) return r;
    }
    // The seq-cst load of avail.idx above orders these plain reads after it (virtio 1.2 §2.7.13.3
    // has the driver write the ring entry before the index).
    const head = this.avail[AVAIL_RING + (next & this.mask)];
    this.nextAvailIdx = (next + 1) & 0xffff;
    if (head >= this.size) return this.breakQueue(FAULT_HEAD_OUT_OF_RANGE, head);
    // Fast path for the most common chain shape: one direct descriptor (flags 0 or WRITE, no
    // NEXT/INDIRECT), len > 0, inside the slab hit last. Same checks as the walker, without
    // the call and its loop set-up. Measured (bench:ring 1desc, device rate, best of 5, three
    // interleaved A/B pairs on a loaded 2-core host): 35.6/31.0/33.4 → 39.6/41.2/32.1 M/s,
    // i.e. about +10 %. Chains of any other shape fall through to the walker unchanged.
    const desc = this.desc, w = head << 2;
    const fn = desc[w + 3];
    if ((fn & ~VIRTQ_DESC_F_WRITE & 0xffff) === 0) {
      const lo = desc[w], hi = desc[w + 1], len = desc[w + 2];
      const mem = this.memory;
      const h = mem.hint;
      const addr = hi * 4294967296 + lo;
      if (len !== 0 && hi < 0x200000 && h < mem.slabCount && addr >= mem.slabGpa[h] && addr + len <= mem.slabEnd[h]
        && this.walker.maxSegments !== 0) {
        chain.head = head;
        chain.memory = mem;
        chain.indirect = false;
        chain.descCount = 1;
        chain.segSlab[0] = h;
        chain.segOffset[0] = addr - mem.slabGpa[h];
        chain.segLen[0] = len;
        chain.segGpa[0] = addr;
        if ((fn & VIRTQ_DESC_F_WRITE) === 0) {
          chain.readableSegs = 1; chain.writableSegs = 0; chain.readableBytes = len; chain.writableBytes = 0;
        } else {
          chain.readableSegs = 0; chain.writableSegs = 1; chain.readableBytes = 0; chain.writableBytes = len;
        }
        this.popped++;
        return 1;
      }
    }
    const r = this.walker.walk(head, chain);
    if (r !== 0) return this.breakQueue(r, head);
    this.popped++;
    return 1;
  }

  /**
   * See DeviceQueue.unpop: the last `count` chains popped (and not pushed) are taken again by
   * the next pops. Unlike setting `nextAvail` this keeps the notification state: giving back
   * chains is not a reason to signal the driver.
   */
  unpop(count: number): void {
    if (!(Number.isInteger(count) && count >= 0 && count <= this.size)) throw new RangeError(`unpop(${count}): 0..${this.size}`);
    this.nextAvailIdx = (this.nextAvailIdx - count) & 0xffff;
    this.popped -= count;
  }

  /** See DeviceQueue.markDeviceReadOnly: nothing on split rings. */
  markDeviceReadOnly(): void {}

  /**
   * See DeviceQueue.touchAvailable. Only heads in range and first buffers inside the memory's
   * most recently used slab are read (what `popDirect` assumes too); avail.idx is read plainly
   * and a distance beyond the ring size touches nothing — `pop` judges it.
   */
  touchAvailable(max: number): void {
    if (this.isBroken) return;
    const mem = this.memory;
    const h = mem.hint;
    if (h >= mem.slabCount) return;
    const avail = this.avail, desc = this.desc, mask = this.mask, size = this.size;
    const next = this.nextAvailIdx;
    let n = (avail[AVAIL_IDX] - next) & 0xffff;
    if (n > size) return;
    if (n > max) n = max;
    const slab = mem.slabs[h], slabGpa = mem.slabGpa[h], slabEnd = mem.slabEnd[h];
    let sink = 0;
    for (let k = 0; k < n; k++) {
      const head = avail[AVAIL_RING + ((next + k) & mask)];
      if (head >= size) break;
      const w = head << 2;
      const addr = desc[w + 1] * 4294967296 + desc[w];
      if (addr >= slabGpa && addr < slabEnd) sink ^= slab[addr - slabGpa];
    }
    // Kept so the compiler cannot drop the loads as unused.
    this.touched = sink;
  }

  /**
   * See DeviceQueue.popDirect: pop's one-descriptor fast path for a run of chains, one call per
   * run instead of one per chain and no DescriptorChain traffic — for data paths that handle
   * bursts (devices-net RX). Same checks as that fast path; a chain it cannot take (several
   * descriptors, indirect, other direction, outside the last-hit slab) ends the run untouched.
   */
  popDirect(out: Float64Array, max: number, writable: boolean): number {
    if (this.isBroken) return this.fault;
    if (this.walker.maxSegments === 0) return 0;
    if (max > out.length >>> 2) max = out.length >>> 2;
    const want = writable ? VIRTQ_DESC_F_WRITE : 0;
    const mem = this.memory, desc = this.desc, avail = this.avail, mask = this.mask, size = this.size;
    const h = mem.hint;
    if (h >= mem.slabCount) return 0;
    const slabGpa = mem.slabGpa[h], slabEnd = mem.slabEnd[h];
    let next = this.nextAvailIdx;
    let n = 0;
    while (n < max) {
      if (next === this.availShadow) {
        // Chains already taken are returned before avail.idx is read again: a bad index then
        // breaks the queue on the next call (as pop returns each good chain before a fault),
        // so no chain is lost between the ring and the caller.
        if (n > 0) break;
        this.nextAvailIdx = next;
        const r = this.refreshAvail(next);
        if (r < 0) return r;
        if (r === 0) break;
      }
      const head = avail[AVAIL_RING + (next & mask)];
      if (head >= size) {
        if (n > 0) break; // the same: report the bad head on the next call
        this.nextAvailIdx = (next + 1) & 0xffff;
        return this.breakQueue(FAULT_HEAD_OUT_OF_RANGE, head);
      }
      const w = head << 2;
      if ((desc[w + 3] & 0xffff) !== want) break;
      const lo = desc[w], hi = desc[w + 1], len = desc[w + 2];
      const addr = hi * 4294967296 + lo;
      if (!(len !== 0 && hi < 0x200000 && addr >= slabGpa && addr + len <= slabEnd)) break;
      const o = n << 2;
      out[o] = head;
      out[o + 1] = h;
      out[o + 2] = addr - slabGpa;
      out[o + 3] = len;
      next = (next + 1) & 0xffff;
      n++;
    }
    this.nextAvailIdx = next;
    this.popped += n;
    return n;
  }

  /** Reads avail.idx and checks it; 1 = entries available, 0 = empty, < 0 = fault. */
  private refreshAvail(next: number): number {
    let idx = Atomics.load(this.avail, AVAIL_IDX);
    if (idx === next) {
      if (!(this.eventIdx && this.notifyEnabled)) return 0;
      // EVENT_IDX (virtio 1.2 §2.7.10): ask for a kick when the driver adds entry `idx`, then
      // re-check so an entry added meanwhile is not missed (store → load, both seq-cst).
      this.writeAvailEvent(idx);
      idx = Atomics.load(this.avail, AVAIL_IDX);
      if (idx === next) return 0;
    }
    // The driver may have at most `size` entries outstanding; anything else is a corrupt or
    // hostile index (a backwards move shows up as a huge forward distance).
    if (((idx - next) & 0xffff) > this.size) return this.breakQueue(FAULT_AVAIL_IDX_JUMP, -1);
    this.availShadow = idx;
    return 1;
  }

  private writeAvailEvent(value: number): void {
    Atomics.store(this.used16, this.availEventIndex, value);
    if (this.memory.dirtyLog !== null) this.memory.markDirty(this.usedGpa + this.availEventIndex * 2, 2);
  }

  private breakQueue(fault: number, head: number): number {
    this.isBroken = true;
    this.fault = fault;
    this.faultHead = head;
    return fault;
  }

  /** The typed error for the fault that broke the queue, or null. */
  get error(): ChainError | QueueError | null {
    if (!this.isBroken) return null;
    if (this.fault === FAULT_AVAIL_IDX_JUMP) return new QueueError(this.fault);
    return new ChainError(this.fault, this.faultHead);
  }

  /** True if the fault that broke the queue was a memory translation failure. */
  get faultIsMemory(): boolean {
    return this.isBroken && isMemoryFault(this.fault);
  }

  /**
   * Records a used element {head, len}; it reaches the ring at `publishUsed`.
   * virtio 1.2 §2.7.8.2: `len` is the number of bytes written into the writable buffers.
   *
   * Why not store into the ring right away: the driver reads those lines on its own CPU, so the
   * first store into each is a cache miss that waits for the line to come back; in JS, one such
   * store per element stalls the per-chain work behind it. Written together in `publishUsed`,
   * the misses of a whole batch overlap (the same effect as the RX headers of devices-net).
   * Interleaved system-bench pairs (devices-net, back-end CPU per frame): guest→host 64 B
   * 112/100 → 96/95 ns, host→guest 64 B 107/118 → 108/102 ns.
   * @throws RangeError if `head` is not a descriptor index (a device bug, not a guest fault).
   */
  pushUsed(head: number, len: number): void {
    if (!(head >= 0 && head < this.size)) throw new RangeError(`pushUsed: head ${head} out of range`);
    const p = (this.usedShadow & this.mask) << 1;
    this.pendingUsed[p] = head;
    this.pendingUsed[p + 1] = len;
    this.usedShadow = (this.usedShadow + 1) & 0xffff;
  }

  /**
   * VIRTIO_F_IN_ORDER (virtio 1.2 §2.7.9): the next `count` chains in avail order were used,
   * the last of them `lastHead`, with `len` bytes written into the last one. One used element
   * {lastHead, len} goes at the batch's first position and used.idx moves by `count`.
   * @throws RangeError without IN_ORDER, or for a count outside 1..size
   */
  pushUsedInOrder(count: number, lastHead: number, len: number): void {
    if (!this.inOrder) throw new RangeError('pushUsedInOrder: VIRTIO_F_IN_ORDER not negotiated');
    // Never more positions waiting than the ring has: a later batch would overwrite an earlier
    // one's slot and publishUsed would follow its stale skip count.
    const waiting = (this.usedShadow - this.usedPublished) & 0xffff;
    if (!(Number.isInteger(count) && count >= 1 && waiting + count <= this.size)) {
      throw new RangeError(`pushUsedInOrder: count ${count} with ${waiting} waiting, ring of ${this.size}`);
    }
    if (!(lastHead >= 0 && lastHead < this.size)) throw new RangeError(`pushUsedInOrder: head ${lastHead} out of range`);
    const p = (this.usedShadow & this.mask) << 1;
    // Heads are below 2^15: the high half says how many positions publishUsed skips after it.
    this.pendingUsed[p] = lastHead | ((count - 1) << 16);
    this.pendingUsed[p + 1] = len;
    this.usedShadow = (this.usedShadow + count) & 0xffff;
  }

  /**
   * Makes every pushed element visible: the elements, then one seq-cst store of used.idx
   * (virtio 1.2 §2.7.8.2: the device MUST set len prior to updating the used idx).
   */
  publishUsed(): void {
    const end = this.usedShadow;
    if (end === this.usedPublished) return;
    const used32 = this.used32, pending = this.pendingUsed, mask = this.mask;
    const logged = this.memory.dirtyLog !== null;
    // Bounded by the distance, not by reaching `end`: a skip count can never carry it past.
    let k = this.usedPublished;
    for (let left = (end - k) & 0xffff; left > 0;) {
      const i = k & mask;
      const id = pending[i << 1];
      used32[1 + (i << 1)] = id & 0xffff;
      used32[2 + (i << 1)] = pending[(i << 1) + 1];
      if (logged) this.memory.markDirty(this.usedGpa + 4 + i * 8, 8);
      const step = 1 + (id >>> 16);
      k = (k + step) & 0xffff;
      left -= step;
    }
    Atomics.store(this.used16, USED_IDX, end);
    this.usedPublished = end;
    if (logged) this.memory.markDirty(this.usedGpa + 2, 2);
  }

  /**
   * Whether to signal the driver now for what was published since the last call.
   * EVENT_IDX: vring_need_event(used_event, new, old) (virtio 1.2 §2.7.7.2); otherwise the
   * driver's VIRTQ_AVAIL_F_NO_INTERRUPT flag, and never when nothing new was published.
   */
  shouldNotify(): boolean {
    const newIdx = this.usedPublished;
    const old = this.signalledUsed;
    const valid = this.signalledValid;
    this.signalledUsed = newIdx;
    this.signalledValid = true;
    if (this.eventIdx) {
      // §2.7.7.2: with EVENT_IDX the device MUST ignore avail.flags and use used_event.
      if (!valid) return true;
      return vringNeedEvent(Atomics.load(this.avail, this.usedEventIndex), newIdx, old);
    }
    if (valid && newIdx === old) return false;
    return (Atomics.load(this.avail, AVAIL_FLAGS) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
  }

  /**
   * Asks the driver for kicks again (clears VIRTQ_USED_F_NO_NOTIFY, or sets avail_event to the
   * current avail.idx with EVENT_IDX).
   * @returns true when entries are already waiting — the caller must pop again, since the
   *   driver may have skipped its kick for them.
   */
  enableNotify(): boolean {
    this.notifyEnabled = true;
    if (this.eventIdx) {
      this.writeAvailEvent(Atomics.load(this.avail, AVAIL_IDX));
    } else {
      Atomics.store(this.used16, USED_FLAGS, 0);
      if (this.memory.dirtyLog !== null) this.memory.markDirty(this.usedGpa, 2);
    }
    return Atomics.load(this.avail, AVAIL_IDX) !== this.nextAvailIdx;
  }

  /** Asks the driver not to kick (a hint: drivers may still kick). */
  disableNotify(): void {
    // Already off: no store. The flag shares a line with used.idx, which the driver polls —
    // a data path that disables once per batch would otherwise write it (a seq-cst store) every time.
    if (!this.notifyEnabled) return;
    this.notifyEnabled = false;
    if (!this.eventIdx) {
      Atomics.store(this.used16, USED_FLAGS, VIRTQ_USED_F_NO_NOTIFY);
      if (this.memory.dirtyLog !== null) this.memory.markDirty(this.usedGpa, 2);
    }
    // With EVENT_IDX avail_event is simply left behind: the driver stops kicking once past it.
  }

  /** The ring views (for tests and tools). */
  get ringViews(): SplitRingViews {
    return this.views;
  }
}
