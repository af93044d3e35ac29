/**
 * SplitQueueDriver — the driver (guest) side of a split virtqueue: what a guest kernel does.
 * Used by tests, fuzzing, benchmarks and the vhost-user frontend.
 *
 * It keeps its own free list and per-chain bookkeeping in private arrays and never trusts what
 * the device wrote beyond the used elements, which it checks.
 * @module
 */
import {
  VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
} from './constants.js';
import { vringNeedEvent } from './event-idx.js';
import type { GuestMemory } from './guest-memory.js';
import { AVAIL_FLAGS, AVAIL_IDX, AVAIL_RING, SplitRingViews, USED_FLAGS, USED_IDX, type SplitQueueLayout } from './ring-views.js';

/** A guest buffer. */
export interface DriverBuffer {
  gpa: number;
  len: number;
}

/** Options of the driver side. */
export interface SplitQueueDriverOptions {
  /** VIRTIO_RING_F_EVENT_IDX negotiated. */
  eventIdx: boolean;
  /**
   * Guest memory reserved for indirect tables: `entriesPerHead` descriptors per head, the table
   * of head h at `gpa + h * entriesPerHead * 16`. Needed for `add(..., { indirect: true })`.
   */
  indirectArea?: { gpa: number; entriesPerHead: number };
  /**
   * Initial avail.idx and used.idx written to the ring (a "fresh" queue whose indices start
   * here, to exercise 16-bit wrap-around). Default 0. The device must start with
   * `nextAvail = startIndex`.
   */
  startIndex?: number;
  /** Initialise the ring headers (flags, indices, events). Default true. */
  initRings?: boolean;
  /**
   * VIRTIO_F_IN_ORDER negotiated (virtio 1.2 §2.7.9): descriptors are taken in ring order, and
   * a used element may stand for a batch — every chain made available up to the one it names.
   * Default false.
   */
  inOrder?: boolean;
}

/** Thrown when the device returns something a correct device never would. */
export class DriverError extends Error {
  override readonly name = 'DriverError';
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

const TWO_32 = 0x100000000;

/** The driver side of one split virtqueue. */
export class SplitQueueDriver {
  readonly memory: GuestMemory;
  readonly size: number;
  readonly eventIdx: boolean;
  readonly inOrder: boolean;
  /** Length reported by the device for the element last returned by `popUsed`. */
  lastLen: number;
  /** Whether the driver currently wants used-buffer notifications. */
  interruptsEnabled: boolean;

  private readonly mask: number;
  private readonly desc: Uint32Array;
  private readonly avail: Uint16Array;
  private readonly used16: Uint16Array;
  private readonly used32: Uint32Array;
  private readonly usedEventIndex: number;
  private readonly availEventIndex: number;
  private readonly indirectGpa: number;
  private readonly indirectEntries: number;
  /** Free list: next free descriptor after i. */
  private readonly freeNext: Uint16Array;
  private freeHead: number;
  /** Last free descriptor (in-order mode appends freed chains here, keeping ring order). */
  private freeTail: number;
  private free: number;
  /** Heads in the order they were made available, by ring position (private: the device can write the avail ring). */
  private readonly availOrder: Uint16Array;
  /** In-order batch being returned: chains still to hand out, and the length of its last one. */
  private batchLeft: number;
  private batchLen: number;
  /** Per head: descriptors the chain uses in the table (1 with indirect), 0 = not in flight. */
  private readonly chainDescs: Uint16Array;
  /** Per head: the descriptor indices of its chain, in order (driver's private copy). */
  private readonly chainNext: Uint16Array;
  private availShadow: number;
  private availPublished: number;
  private kickedAt: number;
  private lastUsed: number;
  private usedSeen: number;
  private inFlightCount: number;

  constructor(memory: GuestMemory, layout: SplitQueueLayout, opts: SplitQueueDriverOptions) {
    const v = new SplitRingViews(memory, layout, opts.eventIdx);
    this.memory = memory;
    this.size = v.size;
    this.eventIdx = opts.eventIdx;
    this.inOrder = opts.inOrder ?? false;
    this.lastLen = 0;
    this.interruptsEnabled = true;
    this.mask = v.mask;
    this.desc = v.desc;
    this.avail = v.avail;
    this.used16 = v.used16;
    this.used32 = v.used32;
    this.usedEventIndex = v.usedEventIndex;
    this.availEventIndex = v.availEventIndex;
    this.indirectGpa = opts.indirectArea?.gpa ?? -1;
    this.indirectEntries = opts.indirectArea?.entriesPerHead ?? 0;
    this.freeNext = new Uint16Array(this.size);
    for (let i = 0; i < this.size; i++) this.freeNext[i] = (i + 1) & 0xffff;
    this.freeHead = 0;
    this.freeTail = this.size - 1;
    this.free = this.size;
    this.availOrder = new Uint16Array(this.size);
    this.batchLeft = 0;
    this.batchLen = 0;
    this.chainDescs = new Uint16Array(this.size);
    this.chainNext = new Uint16Array(this.size);
    const start = (opts.startIndex ?? 0) & 0xffff;
    this.availShadow = start;
    this.availPublished = start;
    this.kickedAt = start;
    this.lastUsed = start;
    this.usedSeen = start;
    this.inFlightCount = 0;
    if (opts.initRings ?? true) {
      Atomics.store(this.avail, AVAIL_FLAGS, 0);
      Atomics.store(this.avail, AVAIL_IDX, start);
      Atomics.store(this.used16, USED_FLAGS, 0);
      Atomics.store(this.used16, USED_IDX, start);
      if (opts.eventIdx) {
        Atomics.store(this.avail, this.usedEventIndex, start);
        Atomics.store(this.used16, this.availEventIndex, start);
      }
    }
  }

  /** Free descriptors. */
  get numFree(): number {
    return this.free;
  }

  /** Chains added and not yet returned. */
  get inFlight(): number {
    return this.inFlightCount;
  }

  /** avail.idx the next publish will store. */
  get availIdx(): number {
    return this.availShadow;
  }

  /**
   * Adds a chain: `readable` buffers then `writable` ones (virtio 1.2 §2.7.5.2), directly or
   * through this head's indirect table. Not visible to the device until `publish()`.
   * @returns the head index, or -1 when there are not enough free descriptors.
   */
  add(readable: readonly DriverBuffer[], writable: readonly DriverBuffer[],
    opts?: { indirect?: boolean }): number {
    const n = readable.length + writable.length;
    if (n === 0) throw new RangeError('add: empty chain');
    if (opts?.indirect) {
      if (this.indirectGpa < 0 || n > this.indirectEntries) throw new RangeError('add: no indirect area for this chain');
      if (this.free < 1) return -1;
      const head = this.takeFree();
      const table = this.indirectGpa + head * this.indirectEntries * 16;
      for (let i = 0; i < n; i++) {
        const wr = i >= readable.length;
        const b = wr ? writable[i - readable.length] : readable[i];
        const d = table + i * 16;
        const flags = (wr ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0);
        check(this.memory.setU64(d, b.gpa));
        check(this.memory.setU32(d + 8, b.len));
        check(this.memory.setU16(d + 12, flags));
        check(this.memory.setU16(d + 14, i + 1 < n ? i + 1 : 0));
      }
      this.writeDesc(head, table, n * 16, VIRTQ_DESC_F_INDIRECT, 0);
      this.chainDescs[head] = 1;
      return this.enqueue(head);
    }
    if (this.free < n) return -1;
    const head = this.freeHead;
    let prev = -1;
    for (let i = 0; i < n; i++) {
      const d = this.takeFree();
      if (prev >= 0) {
        this.patchNext(prev, d);
        this.chainNext[prev] = d;
      }
      const wr = i >= readable.length;
      const b = wr ? writable[i - readable.length] : readable[i];
      this.writeDesc(d, b.gpa, b.len, wr ? VIRTQ_DESC_F_WRITE : 0, 0);
      prev = d;
    }
    this.chainDescs[head] = n;
    return this.enqueue(head);
  }

  /**
   * Allocation-free add of a one-descriptor chain (benchmarks, simple tests).
   * @returns the head, or -1 when the table is full.
   */
  addOne(gpa: number, len: number, writable: boolean): number {
    if (this.free < 1) return -1;
    const head = this.takeFree();
    this.writeDesc(head, gpa, len, writable ? VIRTQ_DESC_F_WRITE : 0, 0);
    this.chainDescs[head] = 1;
    return this.enqueue(head);
  }

  /**
   * Allocation-free add of a chain given as parallel arrays (`count` buffers, the first
   * `readableCount` device-readable).
   * @returns the head, or -1 when there are not enough free descriptors.
   */
  addChain(gpas: ArrayLike<number>, lens: ArrayLike<number>, count: number, readableCount: number): number {
    if (count < 1) throw new RangeError('addChain: empty chain');
    if (this.free < count) return -1;
    const head = this.freeHead;
    let prev = -1;
    for (let i = 0; i < count; i++) {
      const d = this.takeFree();
      if (prev >= 0) {
        this.patchNext(prev, d);
        this.chainNext[prev] = d;
      }
      this.writeDesc(d, gpas[i], lens[i], i >= readableCount ? VIRTQ_DESC_F_WRITE : 0, 0);
      prev = d;
    }
    this.chainDescs[head] = count;
    return this.enqueue(head);
  }

  /** Writes raw descriptor `i` (tests use this to build malformed chains). */
  writeDesc(i: number, addr: number, len: number, flags: number, next: number): void {
    const w = i << 2;
    this.desc[w] = addr % TWO_32;
    this.desc[w + 1] = Math.floor(addr / TWO_32);
    this.desc[w + 2] = len;
    this.desc[w + 3] = (flags & 0xffff) | ((next & 0xffff) << 16);
  }

  /** Places `head` in the next avail ring slot without any bookkeeping (raw; tests). */
  pushAvailRaw(head: number): void {
    this.availOrder[this.availShadow & this.mask] = head;
    this.avail[AVAIL_RING + (this.availShadow & this.mask)] = head;
    this.availShadow = (this.availShadow + 1) & 0xffff;
  }

  private patchNext(i: number, next: number): void {
    const w = (i << 2) + 3;
    this.desc[w] = (this.desc[w] & 0xffff) | VIRTQ_DESC_F_NEXT | (next << 16);
  }

  private takeFree(): number {
    const d = this.freeHead;
    this.freeHead = this.freeNext[d];
    this.free--;
    return d;
  }

  private enqueue(head: number): number {
    this.pushAvailRaw(head);
    this.inFlightCount++;
    return head;
  }

  /** Makes added chains visible: one seq-cst store of avail.idx (virtio 1.2 §2.7.13.3.1). */
  publish(): void {
    if (this.availShadow === this.availPublished) return;
    Atomics.store(this.avail, AVAIL_IDX, this.availShadow);
    this.availPublished = this.availShadow;
  }

  /**
   * Whether to kick the device for what was published since the last call: EVENT_IDX
   * avail_event rule (virtio 1.2 §2.7.10), otherwise VIRTQ_USED_F_NO_NOTIFY.
   */
  kickNeeded(): boolean {
    const old = this.kickedAt;
    const newIdx = this.availPublished;
    this.kickedAt = newIdx;
    if (newIdx === old) return false;
    if (this.eventIdx) return vringNeedEvent(Atomics.load(this.used16, this.availEventIndex), newIdx, old);
    return (Atomics.load(this.used16, USED_FLAGS) & VIRTQ_USED_F_NO_NOTIFY) === 0;
  }

  /** Used elements published by the device and not yet collected. */
  usedCount(): number {
    return (Atomics.load(this.used16, USED_IDX) - this.lastUsed) & 0xffff;
  }

  /**
   * Collects the next used element and frees its descriptors. With `inOrder`, an element naming
   * a later chain than the oldest in flight stands for the batch up to that chain: the chains
   * before it come back one call at a time with length 0, the named one with the element's.
   * @returns the head (its length in `lastLen`), or -1 when none is pending.
   * @throws DriverError when the device returned an unknown id or moved used.idx too far.
   */
  popUsed(): number {
    let id: number;
    let len: number;
    if (this.batchLeft > 0) {
      // Inside an in-order batch: the next chain in avail order (used.idx already covers it).
      id = this.availOrder[this.lastUsed & this.mask];
      this.batchLeft--;
      len = this.batchLeft === 0 ? this.batchLen : 0;
      this.lastUsed = (this.lastUsed + 1) & 0xffff;
      return this.release(id, len);
    }
    if (this.lastUsed === this.usedSeen) {
      const idx = Atomics.load(this.used16, USED_IDX);
      if (idx === this.lastUsed) {
        if (this.eventIdx && this.interruptsEnabled) {
          Atomics.store(this.avail, this.usedEventIndex, idx);
        }
        return -1;
      }
      if (((idx - this.lastUsed) & 0xffff) > this.inFlightCount) {
        throw new DriverError('used-index-jump', `used.idx moved from ${this.lastUsed} to ${idx} with ${this.inFlightCount} in flight`);
      }
      this.usedSeen = idx;
    }
    const w = 1 + ((this.lastUsed & this.mask) << 1);
    id = this.used32[w];
    len = this.used32[w + 1];
    if (this.inOrder) {
      const expected = this.availOrder[this.lastUsed & this.mask];
      if (id !== expected) {
        // virtio 1.2 §2.7.9: one element for a batch; it must name a chain among those used.
        const used = (this.usedSeen - this.lastUsed) & 0xffff;
        let n = 1;
        while (n < used && this.availOrder[(this.lastUsed + n) & this.mask] !== id) n++;
        if (n === used) throw new DriverError('bad-used-id', `device returned id ${id}, which is not among the ${used} chains used in order`);
        this.batchLeft = n;
        this.batchLen = len;
        id = expected;
        len = 0;
      }
    }
    this.lastUsed = (this.lastUsed + 1) & 0xffff;
    return this.release(id, len);
  }

  /** Returns chain `id`'s descriptors to the free list (through the private copy of its links). */
  private release(id: number, len: number): number {
    if (id >= this.size || this.chainDescs[id] === 0) {
      throw new DriverError('bad-used-id', `device returned id ${id}, which is not in flight`);
    }
    let d = id;
    for (let k = this.chainDescs[id]; k > 1; k--) d = this.chainNext[d];
    if (this.inOrder) {
      // Appended, so descriptors keep being taken in ring order (§2.7.5 with IN_ORDER).
      if (this.free === 0) this.freeHead = id;
      else this.freeNext[this.freeTail] = id;
      this.freeTail = d;
    } else {
      this.freeNext[d] = this.freeHead;
      this.freeHead = id;
    }
    this.free += this.chainDescs[id];
    this.chainDescs[id] = 0;
    this.inFlightCount--;
    this.lastLen = len;
    return id;
  }

  /** Asks for used-buffer notifications (clears NO_INTERRUPT / sets used_event). */
  enableInterrupts(): boolean {
    this.interruptsEnabled = true;
    if (this.eventIdx) Atomics.store(this.avail, this.usedEventIndex, this.lastUsed);
    else Atomics.store(this.avail, AVAIL_FLAGS, 0);
    return this.usedCount() !== 0;
  }

  /** Asks the device not to interrupt (VIRTQ_AVAIL_F_NO_INTERRUPT; with EVENT_IDX used_event is left behind). */
  disableInterrupts(): void {
    this.interruptsEnabled = false;
    if (!this.eventIdx) Atomics.store(this.avail, AVAIL_FLAGS, VIRTQ_AVAIL_F_NO_INTERRUPT);
  }

  /** Sets used_event explicitly (tests of the device's notification rule). */
  setUsedEvent(value: number): void {
    if (!this.eventIdx) throw new RangeError('setUsedEvent: EVENT_IDX not negotiated');
    Atomics.store(this.avail, this.usedEventIndex, value & 0xffff);
  }

  /** Sets avail.flags explicitly. */
  setAvailFlags(value: number): void {
    Atomics.store(this.avail, AVAIL_FLAGS, value & 0xffff);
  }

  /** Reads avail_event (written by the device). */
  get availEvent(): number {
    if (!this.eventIdx) throw new RangeError('availEvent: EVENT_IDX not negotiated');
    return Atomics.load(this.used16, this.availEventIndex);
  }

  /** Reads used.flags (written by the device). */
  get usedFlags(): number {
    return Atomics.load(this.used16, USED_FLAGS);
  }
}

function check(r: number): void {
  if (r < 0) throw new RangeError(`driver: guest memory write failed (${r})`);
}
