/**
 * PackedQueueDevice — the device side of a packed virtqueue (virtio 1.2 §2.8), with the same
 * shape, return codes and DescriptorChain output as SplitQueueDevice, so device handlers run
 * unchanged on either format. The handler loop is the same:
 * ```ts
 * for (;;) {
 *   let r;
 *   while ((r = q.pop(chain)) === 1) { handle(chain); q.pushUsed(chain.head, written); }
 *   if (r < 0) { ctx.broken(q.error!.message); break; }
 *   q.publishUsed();
 *   if (q.shouldNotify()) ctx.notify();
 *   if (!q.enableNotify()) break;
 * }
 * ```
 * `chain.head` is the buffer id. Used descriptors are written one per chain at the device's
 * used position, which then skips the slots the chain occupied (§2.8.7, §2.8.21); completion may
 * be in any order. A batch becomes visible at once: the flags of its first used descriptor are
 * stored last, with one seq-cst Atomics store in `publishUsed` (§2.8.21.3 / §2.8.22), and the
 * driver reads in ring order, so it never sees part of a batch.
 *
 * Positions (`nextAvail`, `usedIdx` …) are encoded as vhost-user does: slot | wrap << 15.
 * @module
 */
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from './constants.js';
import type { DescriptorChain } from './descriptor-chain.js';
import type { DeviceQueue } from './device-queue.js';
import { ChainError, QueueError } from './errors.js';
import { FAULT_CHAIN_TOO_LONG, FAULT_HEAD_OUT_OF_RANGE, isMemoryFault } from './faults.js';
import type { GuestMemory } from './guest-memory.js';
import { PackedChainWalker } from './packed-chain-walker.js';
import {
  EVENT_FLAGS, EVENT_OFF_WRAP, PackedRingViews, RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE, VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED, decodePackedVringBase, encodePackedIndex,
  encodePackedVringBase, packedNeedEvent, type PackedQueueLayout,
} from './packed-ring.js';

/** Options of the packed device side. */
export interface PackedQueueDeviceOptions {
  /** VIRTIO_RING_F_EVENT_IDX negotiated. */
  eventIdx: boolean;
  /** VIRTIO_RING_F_INDIRECT_DESC negotiated. */
  indirect: boolean;
  /** Most segments per chain (a longer chain is a `too-many-segments` fault). */
  maxSegments?: number;
  /** Most entries per indirect table (default: max(queue size, 1024)). */
  maxIndirect?: number;
  /** Next available position, slot | wrap << 15 (default 0x8000: slot 0, wrap 1 — a fresh ring). */
  nextAvail?: number;
  /** Next used position, slot | wrap << 15 (default: equal to nextAvail). */
  nextUsed?: number;
}

// Flags as they sit in word 3 (id | flags << 16).
const W_NEXT = VIRTQ_DESC_F_NEXT << 16;
const W_WRITE = VIRTQ_DESC_F_WRITE << 16;
const W_INDIRECT = VIRTQ_DESC_F_INDIRECT << 16;
const W_AVAIL = VIRTQ_DESC_F_AVAIL << 16;
const W_USED = VIRTQ_DESC_F_USED << 16;
/** Both ownership bits, as a used descriptor written with wrap counter 1 carries them. */
const W_USED_BOTH = (W_AVAIL | W_USED) >>> 0;

/** The device side of one packed virtqueue. */
export class PackedQueueDevice implements DeviceQueue {
  /** Discriminant shared with SplitQueueDevice (`false` there). */
  readonly packed = true as const;
  readonly memory: GuestMemory;
  readonly layout: PackedQueueLayout;
  readonly size: number;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
  /** Packed rings push one used descriptor per chain (DeviceQueue.inOrder). */
  readonly inOrder = false as const;
  /** Memory generation the views were built for. */
  readonly generation: number;
  /** True once a guest fault was seen; every later pop returns `fault`. */
  isBroken: boolean;
  /** The fault that broke the queue (FAULT_*), or 0. */
  fault: number;
  /** Buffer id (or -1) involved in the fault. */
  faultHead: number;
  /** Chains popped since construction. */
  popped: number;
  /** Whether the device currently asks for kicks. */
  notifyEnabled: boolean;
  /**
   * Ring slot where the chain returned by the last successful `pop` starts, and how many ring
   * slots it takes: an inflight tracker copies those descriptors right after the pop, before a
   * used descriptor may overwrite them (vhost-user.rst "Inflight I/O tracking", packed).
   */
  lastPopSlot: number;
  lastPopSlots: number;
  /** Chains the last `popDirect` took that `unpop` may still give back. */
  private directTaken: number;

  private readonly views: PackedRingViews;
  private readonly walker: PackedChainWalker;
  private readonly desc: Uint32Array;
  private readonly driver16: Uint16Array;
  private readonly device16: Uint16Array;
  private readonly device32: Uint32Array;
  /** Ring slots of the chain last popped under each buffer id (what its used descriptor skips). */
  private readonly idSlots: Uint16Array;
  /** Walker over saved descriptors (`walkSaved`), built on first use. */
  private savedWalker: PackedChainWalker | null;
  private readonly maxSegments: number | undefined;
  private readonly maxIndirect: number | undefined;
  private availSlot: number;
  /** Avail wrap counter as the AVAIL bit value it expects in word 3 (0 or W_AVAIL). */
  private availWrap: number;
  private usedSlot: number;
  private usedWrap: number;
  private pubSlot: number;
  private pubWrap: number;
  /** Slot of the first used descriptor of the unpublished batch, or -1, and its word 3. */
  private pendingSlot: number;
  private pendingWord: number;
  /** Slots advanced by the used side in total, published, and at the last notification decision. */
  private usedTotal: number;
  private pubTotal: number;
  private signalledTotal: number;
  private signalledValid: boolean;

  /** @throws QueueError when the layout is invalid (see PackedRingViews). */
  constructor(memory: GuestMemory, layout: PackedQueueLayout, opts: PackedQueueDeviceOptions) {
    const views = new PackedRingViews(memory, layout);
    this.memory = memory;
    this.layout = { ...layout };
    this.size = views.size;
    this.eventIdx = opts.eventIdx;
    this.indirect = opts.indirect;
    this.generation = memory.generation;
    this.isBroken = false;
    this.fault = 0;
    this.faultHead = -1;
    this.popped = 0;
    this.notifyEnabled = true;
    this.lastPopSlot = 0;
    this.lastPopSlots = 0;
    this.directTaken = 0;
    this.savedWalker = null;
    this.maxSegments = opts.maxSegments;
    this.maxIndirect = opts.maxIndirect;
    this.views = views;
    this.walker = new PackedChainWalker(memory, views.desc, views.size, {
      indirect: opts.indirect, maxIndirect: opts.maxIndirect, maxSegments: opts.maxSegments,
    });
    this.desc = views.desc;
    this.driver16 = views.driver16;
    this.device16 = views.device16;
    this.device32 = views.device32;
    this.idSlots = new Uint16Array(views.size);
    this.availSlot = 0; this.availWrap = W_AVAIL;
    this.usedSlot = 0; this.usedWrap = 1;
    this.pubSlot = 0; this.pubWrap = 1;
    this.pendingSlot = -1; this.pendingWord = 0;
    this.usedTotal = 0; this.pubTotal = 0; this.signalledTotal = 0;
    this.signalledValid = false;
    const avail = opts.nextAvail ?? 0x8000;
    this.nextAvail = avail;
    this.setUsedIdx(opts.nextUsed ?? avail);
  }

  /** Next available position, slot | wrap << 15 (the low half of GET_VRING_BASE). */
  get nextAvail(): number {
    return encodePackedIndex(this.availSlot, this.availWrap !== 0 ? 1 : 0);
  }

  /** Sets the next available position (slot | wrap << 15; a slot ≥ size is taken modulo size). */
  set nextAvail(value: number) {
    this.availSlot = (value & 0x7fff) % this.size;
    this.availWrap = (value & 0x8000) !== 0 ? W_AVAIL : 0;
    this.signalledValid = false;
    this.directTaken = 0;
  }

  /** Next used position, slot | wrap << 15 (pushed, maybe not yet published). */
  get usedIdx(): number {
    return encodePackedIndex(this.usedSlot, this.usedWrap);
  }

  /** Published used position, slot | wrap << 15. */
  get publishedUsedIdx(): number {
    return encodePackedIndex(this.pubSlot, this.pubWrap);
  }

  /** Sets the used position (slot | wrap << 15) without writing the ring; drops an unpublished batch. */
  setUsedIdx(value: number): void {
    this.usedSlot = (value & 0x7fff) % this.size;
    this.usedWrap = (value & 0x8000) !== 0 ? 1 : 0;
    this.pubSlot = this.usedSlot;
    this.pubWrap = this.usedWrap;
    this.pendingSlot = -1;
    this.pubTotal = this.usedTotal;
    this.signalledValid = false;
  }

  /** A packed ring keeps no used index in memory: returns the current used position unchanged. */
  syncUsedIdxFromRing(): number {
    return this.usedIdx;
  }

  /**
   * The whole ring position as VHOST_USER_GET_VRING_BASE reports it for a packed queue
   * (avail slot | avail wrap << 15 | used slot << 16 | used wrap << 31, unsigned).
   */
  get vringBase(): number {
    return encodePackedVringBase(this.availSlot, this.availWrap !== 0 ? 1 : 0, this.pubSlot, this.pubWrap);
  }

  /** Restores both positions from a SET_VRING_BASE value (see decodePackedVringBase). */
  set vringBase(value: number) {
    const b = decodePackedVringBase(value);
    this.nextAvail = encodePackedIndex(b.availIndex, b.availWrap);
    this.setUsedIdx(encodePackedIndex(b.usedIndex, b.usedWrap));
  }

  /** Available chains waiting at the device's position (walks flags; no fault checks). */
  availableCount(): number {
    let slot = this.availSlot, wrap = this.availWrap, n = 0;
    for (let k = 0; k < this.size; k++) {
      const fw = Atomics.load(this.desc, (slot << 2) + 3);
      if ((fw & W_AVAIL) !== wrap || ((fw & W_USED) !== 0) === (wrap !== 0)) break;
      if ((fw & W_NEXT) === 0) n++;
      if (++slot === this.size) { slot = 0; wrap ^= W_AVAIL; }
    }
    return n;
  }

  /** See DeviceQueue.markDeviceReadOnly. */
  markDeviceReadOnly(): void {
    this.walker.indirectReadable = true;
    if (this.savedWalker !== null) this.savedWalker.indirectReadable = true;
  }

  /** See DeviceQueue.touchAvailable: nothing here yet (measured on split rings only). */
  touchAvailable(_max: number): void {}

  /**
   * See DeviceQueue.unpop: here only chains the last `popDirect` took (one slot each), not yet
   * given back; chains from `pop` are given back by position (`nextAvail`).
   */
  unpop(count: number): void {
    if (!(Number.isInteger(count) && count >= 0 && count <= this.directTaken)) {
      throw new RangeError(`unpop(${count}): the last popDirect left ${this.directTaken} to give back`);
    }
    let slot = this.availSlot - count;
    if (slot < 0) {
      slot += this.size;
      this.availWrap ^= W_AVAIL;
    }
    this.availSlot = slot;
    this.directTaken -= count;
    this.popped -= count;
  }

  /**
   * See DeviceQueue.popDirect: pop's fast path (one direct descriptor, in the slab hit last)
   * for a run of chains, output head = buffer id. Each chain takes one ring slot; its flags are
   * read with a seq-cst load before its other words, as `pop` does. A descriptor of another
   * shape, a buffer id out of range (`pop` then faults on it) or the end of the available ones
   * ends the run untouched. `lastPopSlot` describes the run's last chain only: not for a queue
   * with inflight tracking, which `pop` serves.
   */
  popDirect(out: Float64Array, max: number, writable: boolean): number {
    if (this.isBroken) return this.fault;
    this.directTaken = 0;
    if (this.walker.maxSegments === 0) return 0;
    if (max > out.length >>> 2) max = out.length >>> 2;
    // Never more than a ring in one run: a driver on another CPU can make slots available again
    // while we read, and unpop undoes at most one crossing of the ring's end.
    if (max > this.size) max = this.size;
    const mem = this.memory;
    const h = mem.hint;
    if (h >= mem.slabCount) return 0;
    const want = writable ? W_WRITE : 0;
    const desc = this.desc, size = this.size, idSlots = this.idSlots;
    const slabGpa = mem.slabGpa[h], slabEnd = mem.slabEnd[h];
    let slot = this.availSlot, wrap = this.availWrap;
    let n = 0;
    while (n < max) {
      const w = slot << 2;
      let fw = Atomics.load(desc, w + 3);
      if ((fw & W_AVAIL) !== wrap || ((fw & W_USED) !== 0) === (wrap !== 0)) {
        // Empty: as in pop, with EVENT_IDX ask for a kick at this slot and look once more.
        if (n > 0 || !(this.eventIdx && this.notifyEnabled)) break;
        this.writeDeviceEvent(encodePackedIndex(slot, wrap !== 0 ? 1 : 0), RING_EVENT_FLAGS_DESC);
        fw = Atomics.load(desc, w + 3);
        if ((fw & W_AVAIL) !== wrap || ((fw & W_USED) !== 0) === (wrap !== 0)) break;
      }
      if ((fw & (W_NEXT | W_INDIRECT | W_WRITE)) !== want) break;
      const id = fw & 0xffff;
      const lo = desc[w], hi = desc[w + 1], len = desc[w + 2];
      const addr = hi * 4294967296 + lo;
      if (!(id < size && len !== 0 && hi < 0x200000 && addr >= slabGpa && addr + len <= slabEnd)) break;
      idSlots[id] = 1;
      const o = n << 2;
      out[o] = id;
      out[o + 1] = h;
      out[o + 2] = addr - slabGpa;
      out[o + 3] = len;
      this.lastPopSlot = slot;
      n++;
      if (++slot === size) {
        slot = 0;
        wrap ^= W_AVAIL;
      }
    }
    if (n > 0) {
      this.lastPopSlots = 1;
      this.availSlot = slot;
      this.availWrap = wrap;
      this.popped += n;
      this.directTaken = n;
    }
    return n;
  }

  /** True when the descriptor at the device's position is available (one Atomics load). */
  private headAvailable(): boolean {
    const fw = Atomics.load(this.desc, (this.availSlot << 2) + 3);
    const wrap = this.availWrap;
    // virtio 1.2 §2.8.1: available iff AVAIL == wrap counter and USED != wrap counter.
    return (fw & W_AVAIL) === wrap && ((fw & W_USED) !== 0) !== (wrap !== 0);
  }

  /**
   * Pops the next available chain into `chain` (`chain.head` = buffer id).
   * @returns 1 when a chain was popped, 0 when none is available, or a FAULT_* (< 0); after a
   *   fault the queue is broken and every call returns the same fault.
   */
  pop(chain: DescriptorChain): number {
    if (this.isBroken) return this.fault;
    this.directTaken = 0;
    const slot = this.availSlot;
    const wrap = this.availWrap;
    const desc = this.desc;
    const w = slot << 2;
    // The seq-cst load of the head's flags orders the plain reads below after it: the driver
    // writes every other field (and the chain's other descriptors) before these flags
    // (virtio 1.2 §2.8.21.1).
    let fw = Atomics.load(desc, w + 3);
    if ((fw & W_AVAIL) !== wrap || ((fw & W_USED) !== 0) === (wrap !== 0)) {
      if (!(this.eventIdx && this.notifyEnabled)) return 0;
      // EVENT_IDX (§2.8.10): ask for a kick at this very slot, then re-check so a chain made
      // available meanwhile is not missed (store → load, both seq-cst).
      this.writeDeviceEvent(encodePackedIndex(slot, wrap !== 0 ? 1 : 0), RING_EVENT_FLAGS_DESC);
      fw = Atomics.load(desc, w + 3);
      if ((fw & W_AVAIL) !== wrap || ((fw & W_USED) !== 0) === (wrap !== 0)) return 0;
    }
    const id = fw & 0xffff;
    let slots: number;
    // Fast path: one direct descriptor (no NEXT / INDIRECT), len > 0, inside the slab hit last;
    // the same checks as the walker without its call and loop set-up.
    const lo = desc[w], hi = desc[w + 1], len = desc[w + 2];
    const mem = this.memory;
    const h = mem.hint;
    const addr = hi * 4294967296 + lo;
    if ((fw & (W_NEXT | W_INDIRECT)) === 0 && len !== 0 && hi < 0x200000 && h < mem.slabCount
      && addr >= mem.slabGpa[h] && addr + len <= mem.slabEnd[h] && this.walker.maxSegments !== 0) {
      chain.head = id;
      chain.memory = mem;
      chain.indirect = false;
      chain.descCount = 1;
      chain.segSlab[0] = h;
      chain.segOffset[0] = addr - mem.slabGpa[h];
      chain.segLen[0] = len;
      chain.segGpa[0] = addr;
      if ((fw & W_WRITE) === 0) {
        chain.readableSegs = 1; chain.writableSegs = 0; chain.readableBytes = len; chain.writableBytes = 0;
      } else {
        chain.readableSegs = 0; chain.writableSegs = 1; chain.readableBytes = 0; chain.writableBytes = len;
      }
      slots = 1;
    } else {
      const r = this.walker.walk(slot, chain);
      if (r !== 0) return this.breakQueue(r, id);
      slots = this.walker.ringCount;
    }
    const bid = chain.head;
    // Buffer ids index the device's bookkeeping; every driver (Linux, DPDK, QEMU) keeps them
    // below the queue size, as ours does.
    if (bid >= this.size) return this.breakQueue(FAULT_HEAD_OUT_OF_RANGE, bid);
    this.idSlots[bid] = slots;
    this.lastPopSlot = slot;
    this.lastPopSlots = slots;
    let next = slot + slots;
    if (next >= this.size) { next -= this.size; this.availWrap = wrap ^ W_AVAIL; }
    this.availSlot = next;
    this.popped++;
    return 1;
  }

  /**
   * Walks a chain whose ring descriptors were saved elsewhere — the inflight area after a
   * back-end restart, when the ring slots may already carry used descriptors — as `pop` would
   * have, and records under its buffer id how many slots `pushUsed` must skip.
   * @param words a scratch ring of `size` descriptors (4 u32 words each: addr lo, addr hi, len,
   *   id | flags << 16) holding the saved chain from index 0
   * @param count descriptors saved (1 … size)
   * @returns 0 (chain.head = buffer id), or a FAULT_*; the queue is not broken by it (the
   *   caller decides), and a saved list whose NEXT flags disagree with `count` is
   *   'chain-too-long'.
   */
  walkSaved(words: Uint32Array, count: number, chain: DescriptorChain): number {
    if (!(count >= 1 && count <= this.size) || words.length < this.size * 4) return FAULT_CHAIN_TOO_LONG;
    let w = this.savedWalker;
    if (w === null || w.desc !== words) {
      // The walker treats `words` as a ring of `size` slots; a NEXT flag on the last saved
      // descriptor runs into stale slots, which the length check below rejects.
      w = new PackedChainWalker(this.memory, words, this.size, {
        indirect: this.indirect, maxIndirect: this.maxIndirect, maxSegments: this.maxSegments,
      });
      w.indirectReadable = this.walker.indirectReadable;
      this.savedWalker = w;
    }
    // Slots past `count` may hold an older chain: the walk must end exactly at `count`.
    const r = w.walk(0, chain);
    if (r !== 0) return r;
    if (w.ringCount !== count) return FAULT_CHAIN_TOO_LONG;
    if (chain.head >= this.size) return FAULT_HEAD_OUT_OF_RANGE;
    this.idSlots[chain.head] = count;
    return 0;
  }

  private writeDeviceEvent(offWrap: number, flags: number): void {
    // One 32-bit store publishes off_wrap and flags together.
    Atomics.store(this.device32, 0, (offWrap | (flags << 16)) >>> 0);
    if (this.memory.dirtyLog !== null) this.memory.markDirty(this.layout.deviceGpa, 4);
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
    return new ChainError(this.fault, this.faultHead);
  }

  /** True if the fault that broke the queue was a memory translation failure. */
  get faultIsMemory(): boolean {
    return this.isBroken && isMemoryFault(this.fault);
  }

  /**
   * Writes the used descriptor for buffer `head` (not visible to the driver until
   * `publishUsed`). `len` = bytes written into the writable buffers (virtio 1.2 §2.8.7); WRITE
   * is set in the used flags when len > 0, since the driver ignores len without it (§2.8.4).
   * @throws RangeError if `head` is not below the queue size (a device bug, not a guest fault).
   */
  pushUsed(head: number, len: number): void {
    if (!(head >= 0 && head < this.size)) throw new RangeError(`pushUsed: buffer id ${head} out of range`);
    const slot = this.usedSlot;
    const w = slot << 2;
    this.desc[w + 2] = len;
    const word = (head | (this.usedWrap !== 0 ? W_USED_BOTH : 0) | (len !== 0 ? W_WRITE : 0)) >>> 0;
    if (this.pendingSlot < 0) {
      // First of the batch: its flags go out last, in publishUsed.
      this.pendingSlot = slot;
      this.pendingWord = word;
    } else {
      // The driver reads used descriptors in ring order and stops at the pending one, so this
      // plain store cannot be seen before the batch is published.
      this.desc[w + 3] = word;
      if (this.memory.dirtyLog !== null) this.memory.markDirty(this.layout.descGpa + slot * 16, 16);
    }
    // Skip the slots the chain occupied; a buffer id never popped (impossible for a correct
    // device) counts as one slot rather than throwing on guest-influenced state.
    const n = this.idSlots[head] || 1;
    this.usedTotal += n;
    let next = slot + n;
    if (next >= this.size) { next -= this.size; this.usedWrap ^= 1; }
    this.usedSlot = next;
  }

  /** See DeviceQueue.pushUsedInOrder: not on packed rings (`inOrder` is false). */
  pushUsedInOrder(_count: number, _lastHead: number, _len: number): void {
    throw new RangeError('pushUsedInOrder: not available on packed rings');
  }

  /**
   * Makes every pushed used descriptor visible: writes the first one's flags with one seq-cst
   * store, after all the others (virtio 1.2 §2.8.21.3: flags last, after a write barrier).
   */
  publishUsed(): void {
    const p = this.pendingSlot;
    if (p < 0) return;
    if (this.memory.dirtyLog !== null) this.memory.markDirty(this.layout.descGpa + p * 16, 16);
    Atomics.store(this.desc, (p << 2) + 3, this.pendingWord);
    this.pendingSlot = -1;
    this.pubSlot = this.usedSlot;
    this.pubWrap = this.usedWrap;
    this.pubTotal = this.usedTotal;
  }

  /**
   * Whether to signal the driver now for what was published since the last call, from the
   * driver event suppression structure (virtio 1.2 §2.8.10): DISABLE → no; DESC with
   * EVENT_IDX → only if the used position crossed off_wrap; otherwise (ENABLE, or DESC without
   * EVENT_IDX, or a reserved value) → yes when something new was published.
   */
  shouldNotify(): boolean {
    const advanced = this.pubTotal - this.signalledTotal;
    const valid = this.signalledValid;
    this.signalledTotal = this.pubTotal;
    this.signalledValid = true;
    const flags = Atomics.load(this.driver16, EVENT_FLAGS) & 3;
    if (flags === RING_EVENT_FLAGS_DISABLE) return false;
    if (flags === RING_EVENT_FLAGS_DESC && this.eventIdx) {
      if (!valid) return true;
      return packedNeedEvent(this.size, Atomics.load(this.driver16, EVENT_OFF_WRAP), this.pubSlot, this.pubWrap, advanced);
    }
    return !valid || advanced !== 0;
  }

  /**
   * Asks the driver for kicks again: flags ENABLE, or with EVENT_IDX flags DESC at the device's
   * next available position.
   * @returns true when a chain is already waiting — pop again before sleeping.
   */
  enableNotify(): boolean {
    this.notifyEnabled = true;
    if (this.eventIdx) {
      this.writeDeviceEvent(encodePackedIndex(this.availSlot, this.availWrap !== 0 ? 1 : 0), RING_EVENT_FLAGS_DESC);
    } else {
      this.writeDeviceEvent(Atomics.load(this.device16, EVENT_OFF_WRAP), RING_EVENT_FLAGS_ENABLE);
    }
    return this.headAvailable();
  }

  /** Asks the driver not to kick (flags DISABLE; a hint: drivers may still kick). */
  disableNotify(): void {
    if (!this.notifyEnabled) return; // already off: no store into the driver's event structure
    this.notifyEnabled = false;
    this.writeDeviceEvent(Atomics.load(this.device16, EVENT_OFF_WRAP), RING_EVENT_FLAGS_DISABLE);
  }

  /** The ring views (for tests and tools). */
  get ringViews(): PackedRingViews {
    return this.views;
  }
}
