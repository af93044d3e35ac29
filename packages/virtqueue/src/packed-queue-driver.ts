/**
 * PackedQueueDriver — the driver (guest) side of a packed virtqueue (virtio 1.2 §2.8): what a
 * guest kernel does. Used by tests, fuzzing and benchmarks.
 *
 * Chains are written into consecutive ring slots; the head descriptor's flags of the first
 * unpublished chain are held back and stored last, in `publish()`, with one seq-cst store
 * (§2.8.21.1), so the device sees a whole batch or nothing. Buffer ids come from a private free
 * stack (always < size). Used descriptors are read in ring order and checked: an unknown id is a
 * DriverError, never trusted.
 * @module
 */
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from './constants.js';
import type { GuestMemory } from './guest-memory.js';
import {
  EVENT_FLAGS, EVENT_OFF_WRAP, PackedRingViews, RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE, VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED, encodePackedIndex, packedNeedEvent,
  type PackedQueueLayout,
} from './packed-ring.js';
import { DriverError, type DriverBuffer } from './split-queue-driver.js';

/** Options of the packed driver side. */
export interface PackedQueueDriverOptions {
  /** VIRTIO_RING_F_EVENT_IDX negotiated. */
  eventIdx: boolean;
  /** Guest memory for indirect tables: `entriesPerHead` descriptors per buffer id, at gpa + id × entries × 16. */
  indirectArea?: { gpa: number; entriesPerHead: number };
  /**
   * Starting position, slot | wrap << 15 (default 0x8000: slot 0, wrap 1, a fresh ring). Other
   * values make the ring look as if earlier laps happened, to exercise wrap-around; the device
   * must start at the same position.
   */
  start?: number;
  /** Initialise descriptor flags and both event areas for `start` (default true). */
  initRings?: boolean;
}

const TWO_32 = 0x100000000;

/** The driver side of one packed virtqueue. */
export class PackedQueueDriver {
  readonly memory: GuestMemory;
  readonly size: number;
  readonly eventIdx: boolean;
  /** Length reported by the device for the element last returned by `popUsed` (0 without WRITE). */
  lastLen: number;
  /** Whether the driver currently wants used-buffer notifications. */
  interruptsEnabled: boolean;

  private readonly views: PackedRingViews;
  private readonly desc: Uint32Array;
  private readonly driver16: Uint16Array;
  private readonly driver32: Uint32Array;
  private readonly device16: Uint16Array;
  private readonly indirectGpa: number;
  private readonly indirectEntries: number;
  /** Free buffer ids (a stack). */
  private readonly freeIds: Uint16Array;
  private freeTop: number;
  /** Per buffer id: ring slots its chain occupies, 0 = not in flight. */
  private readonly idSlots: Uint16Array;
  private freeSlots: number;
  private inFlightCount: number;
  private availSlot: number;
  private availWrap: number;
  private usedSlot: number;
  private usedWrap: number;
  /** Slot and word 3 of the first unpublished head, or -1. */
  private pendingSlot: number;
  private pendingWord: number;
  /** Slots made available in total: added, published, and at the last kick decision. */
  private addedTotal: number;
  private publishedTotal: number;
  private kickedTotal: number;
  private pubSlot: number;
  private pubWrap: number;

  constructor(memory: GuestMemory, layout: PackedQueueLayout, opts: PackedQueueDriverOptions) {
    const v = new PackedRingViews(memory, layout);
    this.memory = memory;
    this.size = v.size;
    this.eventIdx = opts.eventIdx;
    this.lastLen = 0;
    this.interruptsEnabled = true;
    this.views = v;
    this.desc = v.desc;
    this.driver16 = v.driver16;
    this.driver32 = v.driver32;
    this.device16 = v.device16;
    this.indirectGpa = opts.indirectArea?.gpa ?? -1;
    this.indirectEntries = opts.indirectArea?.entriesPerHead ?? 0;
    this.freeIds = new Uint16Array(this.size);
    for (let i = 0; i < this.size; i++) this.freeIds[i] = this.size - 1 - i;
    this.freeTop = this.size;
    this.idSlots = new Uint16Array(this.size);
    this.freeSlots = this.size;
    this.inFlightCount = 0;
    const start = opts.start ?? 0x8000;
    this.availSlot = (start & 0x7fff) % this.size;
    this.availWrap = (start >>> 15) & 1;
    this.usedSlot = this.availSlot;
    this.usedWrap = this.availWrap;
    this.pendingSlot = -1;
    this.pendingWord = 0;
    this.addedTotal = 0;
    this.publishedTotal = 0;
    this.kickedTotal = 0;
    this.pubSlot = this.availSlot;
    this.pubWrap = this.availWrap;
    if (opts.initRings ?? true) {
      // Slots before the start were used in this lap, the others in the previous one: neither
      // looks available to the device nor used to the driver (virtio 1.2 §2.8.1).
      const cur = this.availWrap ? (VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED) : 0;
      const prev = this.availWrap ? 0 : (VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED);
      for (let i = 0; i < this.size; i++) {
        const w = i << 2;
        this.desc[w] = 0; this.desc[w + 1] = 0; this.desc[w + 2] = 0;
        this.desc[w + 3] = ((i < this.availSlot ? cur : prev) << 16) >>> 0;
      }
      Atomics.store(this.driver32, 0, 0);
      Atomics.store(v.device32, 0, 0);
    }
  }

  /** Free ring slots. */
  get numFree(): number {
    return this.freeSlots;
  }

  /** Chains added and not yet returned. */
  get inFlight(): number {
    return this.inFlightCount;
  }

  /** Next slot the driver writes, slot | wrap << 15 (the device's nextAvail once all is popped). */
  get availIdx(): number {
    return encodePackedIndex(this.availSlot, this.availWrap);
  }

  /** Next slot the driver reads a used descriptor from, slot | wrap << 15. */
  get usedIdx(): number {
    return encodePackedIndex(this.usedSlot, this.usedWrap);
  }

  /** The ring views (tests). */
  get ringViews(): PackedRingViews {
    return this.views;
  }

  /** AVAIL/USED bits that make a descriptor available in a slot written with wrap counter `wrap`. */
  private static availBits(wrap: number): number {
    return wrap ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED;
  }

  /** Writes descriptor fields at the current slot and advances; the head's word 3 may be held back. */
  private put(addr: number, len: number, id: number, flags: number, head: boolean): void {
    const slot = this.availSlot;
    const w = slot << 2;
    this.desc[w] = addr % TWO_32;
    this.desc[w + 1] = Math.floor(addr / TWO_32);
    this.desc[w + 2] = len;
    const word = (id | ((flags | PackedQueueDriver.availBits(this.availWrap)) << 16)) >>> 0;
    if (head && this.pendingSlot < 0) {
      this.pendingSlot = slot;
      this.pendingWord = word;
    } else {
      // Behind a held-back head (or not a head): the device cannot reach it yet.
      this.desc[w + 3] = word;
    }
    if (++this.availSlot === this.size) { this.availSlot = 0; this.availWrap ^= 1; }
    this.addedTotal++;
  }

  /**
   * Adds a chain: `readable` buffers then `writable` ones, directly (one slot each) or through
   * this id's indirect table (one slot). Not visible to the device until `publish()`.
   * @returns the buffer id, or -1 when there are not enough free slots.
   */
  add(readable: readonly DriverBuffer[], writable: readonly DriverBuffer[], opts?: { indirect?: boolean }): number {
    const n = readable.length + writable.length;
    if (n === 0) throw new RangeError('add: empty chain');
    if (opts?.indirect) {
      if (this.indirectGpa < 0 || n > this.indirectEntries) throw new RangeError('add: no indirect area for this chain');
      if (this.freeSlots < 1) return -1;
      const id = this.takeId(1);
      const table = this.indirectGpa + id * this.indirectEntries * 16;
      for (let i = 0; i < n; i++) {
        const wr = i >= readable.length;
        const b = wr ? writable[i - readable.length] : readable[i];
        const d = table + i * 16;
        // virtio 1.2 §2.8.19: WRITE is the only flag allowed inside an indirect table.
        check(this.memory.setU64(d, b.gpa));
        check(this.memory.setU32(d + 8, b.len));
        check(this.memory.setU16(d + 12, 0));
        check(this.memory.setU16(d + 14, wr ? VIRTQ_DESC_F_WRITE : 0));
      }
      this.put(table, n * 16, id, VIRTQ_DESC_F_INDIRECT, true);
      return id;
    }
    if (this.freeSlots < n) return -1;
    const id = this.takeId(n);
    for (let i = 0; i < n; i++) {
      const wr = i >= readable.length;
      const b = wr ? writable[i - readable.length] : readable[i];
      this.put(b.gpa, b.len, id, (wr ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0), i === 0);
    }
    return id;
  }

  /** Allocation-free add of a one-descriptor chain. @returns the buffer id or -1. */
  addOne(gpa: number, len: number, writable: boolean): number {
    if (this.freeSlots < 1) return -1;
    const id = this.takeId(1);
    this.put(gpa, len, id, writable ? VIRTQ_DESC_F_WRITE : 0, true);
    return id;
  }

  /** Allocation-free add of `count` buffers, the first `readableCount` device-readable. @returns the id or -1. */
  addChain(gpas: ArrayLike<number>, lens: ArrayLike<number>, count: number, readableCount: number): number {
    if (count < 1) throw new RangeError('addChain: empty chain');
    if (this.freeSlots < count) return -1;
    const id = this.takeId(count);
    for (let i = 0; i < count; i++) {
      this.put(gpas[i], lens[i], id, (i >= readableCount ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < count ? VIRTQ_DESC_F_NEXT : 0), i === 0);
    }
    return id;
  }

  /**
   * Writes `count` raw descriptors (tests build malformed chains with it): each gets the given
   * flags (NEXT / WRITE / INDIRECT …) plus the ownership bits of its slot, and `ids[i]`; the
   * first is held back until `publish()` like any head. No id or slot bookkeeping.
   */
  addRaw(addrs: ArrayLike<number>, lens: ArrayLike<number>, flags: ArrayLike<number>, ids: ArrayLike<number>, count: number): void {
    for (let i = 0; i < count; i++) this.put(addrs[i], lens[i], ids[i] & 0xffff, flags[i] & 0x7f7f, i === 0);
  }

  private takeId(slots: number): number {
    const id = this.freeIds[--this.freeTop];
    this.idSlots[id] = slots;
    this.freeSlots -= slots;
    this.inFlightCount++;
    return id;
  }

  /** Makes added chains visible: the held-back head flags, one seq-cst store (virtio 1.2 §2.8.21.1). */
  publish(): void {
    const p = this.pendingSlot;
    if (p >= 0) {
      Atomics.store(this.desc, (p << 2) + 3, this.pendingWord);
      this.pendingSlot = -1;
    }
    this.publishedTotal = this.addedTotal;
    this.pubSlot = this.availSlot;
    this.pubWrap = this.availWrap;
  }

  /**
   * Whether to kick the device for what was published since the last call, from the device
   * event suppression structure (virtio 1.2 §2.8.10): DISABLE → no; DESC with EVENT_IDX → only
   * if the published slots crossed off_wrap; otherwise yes when anything new was published.
   */
  kickNeeded(): boolean {
    const advanced = this.publishedTotal - this.kickedTotal;
    this.kickedTotal = this.publishedTotal;
    if (advanced === 0) return false;
    const flags = Atomics.load(this.device16, EVENT_FLAGS) & 3;
    if (flags === RING_EVENT_FLAGS_DISABLE) return false;
    if (flags === RING_EVENT_FLAGS_DESC && this.eventIdx) {
      return packedNeedEvent(this.size, Atomics.load(this.device16, EVENT_OFF_WRAP), this.pubSlot, this.pubWrap, advanced);
    }
    return true;
  }

  /** True when the descriptor at the driver's used position is used (virtio 1.2 §2.8.1). */
  private usedReady(): number {
    const fw = Atomics.load(this.desc, (this.usedSlot << 2) + 3);
    const a = (fw >>> 23) & 1, u = fw >>> 31;
    return a === u && u === this.usedWrap ? fw : -1;
  }

  /** Used descriptors ready to collect (walks them; stops at anything unexpected). */
  usedCount(): number {
    let slot = this.usedSlot, wrap = this.usedWrap, n = 0;
    for (let k = 0; k < this.inFlightCount; k++) {
      const fw = Atomics.load(this.desc, (slot << 2) + 3);
      if (((fw >>> 23) & 1) !== wrap || (fw >>> 31) !== wrap) break;
      const id = fw & 0xffff;
      if (id >= this.size || this.idSlots[id] === 0) break;
      n++;
      slot += this.idSlots[id];
      if (slot >= this.size) { slot -= this.size; wrap ^= 1; }
    }
    return n;
  }

  /**
   * Collects the next used descriptor and frees its slots and id.
   * @returns the buffer id (its length in `lastLen`), or -1 when none is pending.
   * @throws DriverError when the device returned an id that is not in flight.
   */
  popUsed(): number {
    const fw = this.usedReady();
    if (fw < 0) {
      if (this.eventIdx && this.interruptsEnabled) this.writeDriverEvent(RING_EVENT_FLAGS_DESC);
      return -1;
    }
    const id = fw & 0xffff;
    if (id >= this.size || this.idSlots[id] === 0) {
      throw new DriverError('bad-used-id', `device returned id ${id}, which is not in flight`);
    }
    const len = this.desc[(this.usedSlot << 2) + 2];
    const n = this.idSlots[id];
    this.idSlots[id] = 0;
    this.freeIds[this.freeTop++] = id;
    this.freeSlots += n;
    this.inFlightCount--;
    this.usedSlot += n;
    if (this.usedSlot >= this.size) { this.usedSlot -= this.size; this.usedWrap ^= 1; }
    // §2.8.4: len is meaningful only with WRITE in the used descriptor's flags.
    this.lastLen = (fw & (VIRTQ_DESC_F_WRITE << 16)) !== 0 ? len : 0;
    return id;
  }

  private writeDriverEvent(flags: number): void {
    Atomics.store(this.driver32, 0, (encodePackedIndex(this.usedSlot, this.usedWrap) | (flags << 16)) >>> 0);
  }

  /** Asks for used-buffer notifications (ENABLE, or DESC at the next used slot with EVENT_IDX). */
  enableInterrupts(): boolean {
    this.interruptsEnabled = true;
    this.writeDriverEvent(this.eventIdx ? RING_EVENT_FLAGS_DESC : RING_EVENT_FLAGS_ENABLE);
    return this.usedReady() >= 0;
  }

  /** Asks the device not to interrupt (DISABLE). */
  disableInterrupts(): void {
    this.interruptsEnabled = false;
    this.writeDriverEvent(RING_EVENT_FLAGS_DISABLE);
  }

  /** Sets the driver event suppression structure explicitly (tests of the device's rule). */
  setDriverEvent(offWrap: number, flags: number): void {
    Atomics.store(this.driver32, 0, ((offWrap & 0xffff) | ((flags & 0xffff) << 16)) >>> 0);
  }

  /** The device event suppression structure as [off_wrap, flags] (written by the device). */
  get deviceEvent(): [number, number] {
    return [Atomics.load(this.device16, EVENT_OFF_WRAP), Atomics.load(this.device16, EVENT_FLAGS)];
  }
}

function check(r: number): void {
  if (r < 0) throw new RangeError(`driver: guest memory write failed (${r})`);
}
