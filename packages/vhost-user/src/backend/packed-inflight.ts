/**
 * The shared inflight area of vhost-user.rst "Inflight I/O tracking", packed-ring format.
 *
 * ```
 *  area = queue0 region | queue1 region | ...          (each region a multiple of 64 bytes)
 *  region header (QueueRegionPacked, 32 bytes with the C alignment of desc[]):
 *    +0 features u64 | +8 version u16 | +10 desc_num u16 | +12 free_head u16 | +14 old_free_head u16
 *    +16 used_idx u16 | +18 old_used_idx u16 | +20 used_wrap_counter u8 | +21 old_used_wrap_counter u8
 *    +22 padding[7]
 *  entry i at +32 + 32*i (DescStatePacked):
 *    +0 inflight u8 | +1 pad | +2 next u16 | +4 last u16 | +6 num u16 | +8 counter u64
 *    +16 id u16 | +18 flags u16 | +20 len u32 | +24 addr u64
 * ```
 * Unlike the split format, entries are not indexed by ring slot or buffer id: they form a pool
 * with a free list (`free_head`, linked by `next`). Popping a chain of n descriptors takes n
 * entries from the pool and copies each ring descriptor into one (a packed device overwrites
 * ring slots with used descriptors while other chains are still in flight, so the ring cannot
 * be re-read after a crash). The first entry of a chain is its head: inflight = 1, counter,
 * num = n, last = the entry holding the chain's last descriptor (whose id is the buffer id).
 *
 * Crash safety comes from the `old_*` fields: they are the last committed state. A pop is
 * committed when `old_free_head` moves past its entries; a completion batch when, after the
 * used descriptors were published, `old_free_head`, `old_used_idx` and `old_used_wrap_counter`
 * catch up with the live fields. A restarted back-end first decides whether an uncommitted
 * batch was published (the ring slot at `old_used_idx` no longer shows the driver's available
 * flags), then rolls the live fields back to the committed ones, clears `inflight` on every free
 * entry and resubmits the remaining heads in counter order.
 *
 * QEMU (7.2 and later) does not restore a packed ring's position when the back-end dies — its
 * SET_VRING_BASE then repeats the value of the previous start — so the committed used position
 * here, plus the ring slots of the chains still in flight, is where a restarted back-end resumes.
 *
 * Everything read from the area is front-end controlled: indices are bounds-checked, walks are
 * bounded by desc_num, and an inconsistent area is rebuilt rather than trusted.
 * @module
 */
import type { DescriptorChain, PackedQueueDevice } from '@vhost-ts/virtqueue';
import { FAULT_HEAD_OUT_OF_RANGE, VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED, encodePackedIndex } from '@vhost-ts/virtqueue';
import type { InflightTracker } from '../device.js';

/** Size of the packed region header (29 bytes of fields, padded to desc[]'s 8-byte alignment). */
export const PACKED_INFLIGHT_HEADER_SIZE = 32;
/** Size of one DescStatePacked. */
export const PACKED_INFLIGHT_DESC_SIZE = 32;
/** Region alignment (the split format's, so both formats place regions alike). */
const REGION_ALIGN = 64;
/** Current region version. */
const VERSION = 1;

// Header fields as u16 / u8 indices.
const H16_VERSION = 4, H16_DESC_NUM = 5, H16_FREE_HEAD = 6, H16_OLD_FREE_HEAD = 7, H16_USED_IDX = 8, H16_OLD_USED_IDX = 9;
const H8_USED_WRAP = 20, H8_OLD_USED_WRAP = 21;
// Entry e: u8 base 32 + 32e, u16 base 16 + 16e, u32 base 8 + 8e; offsets within the entry.
const E16_NEXT = 1, E16_LAST = 2, E16_NUM = 3;
const E32_COUNTER_LO = 2, E32_COUNTER_HI = 3, E32_ID_FLAGS = 4, E32_LEN = 5, E32_ADDR_LO = 6, E32_ADDR_HI = 7;
/** The driver's "available" flags for wrap counter w, as bits 16-31 of descriptor word 3. */
const AVAIL_BITS = VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED;

/** Bytes one queue's packed region takes for a queue of `queueSize` entries. */
export function packedInflightQueueRegionSize(queueSize: number): number {
  const raw = PACKED_INFLIGHT_HEADER_SIZE + PACKED_INFLIGHT_DESC_SIZE * queueSize;
  return Math.ceil(raw / REGION_ALIGN) * REGION_ALIGN;
}

/**
 * Tracker over one packed queue's region; see {@link InflightTracker}. `begin(id)` must follow
 * the `pop` that returned the chain (it copies the chain's ring descriptors from the queue's
 * last-pop position), `end(id)` follows `pushUsed`, `commit()` follows `publishUsed`. Pops may
 * come between `end` and `commit` (a device answering some requests at once): their entries are
 * then taken from behind the open batch, so a crash rolls either back on its own.
 */
export class PackedInflightTracker implements InflightTracker {
  /** Buffer ids to resubmit, in the order they were popped (counter order). */
  readonly resubmit: readonly number[];
  /** True when the region was blank or unusable and got initialised. */
  readonly fresh: boolean;
  /** Why a used region was not trusted (then re-initialised), or null. */
  readonly problem: string | null;
  /** Where the ring resumes, slot | wrap << 15: the committed used position … */
  readonly resumeUsed: number;
  /** … and that plus the ring slots of every chain still in flight. */
  readonly resumeAvail: number;
  /** Chains popped but not recorded (pool exhausted or a buffer id already in flight). */
  dropped: number;

  private readonly queue: PackedQueueDevice;
  private readonly size: number;
  private readonly u8: Uint8Array;
  private readonly u16: Uint16Array;
  private readonly u32: Uint32Array;
  private counter: number;
  /** Head entry of the recorded chain per buffer id, or -1. */
  private readonly idEntry: Int32Array;
  /** 1 for a resubmitted id whose `begin` (from the device's resubmission) is still due. */
  private readonly pendingBegin: Uint8Array;
  private readonly batchHeads: Int32Array;
  private batchLen = 0;
  /** Entry whose `next` links the open batch's freed chains to `old_free_head`, or -1. */
  private batchTail = -1;
  private readonly scratch: Uint32Array;

  /**
   * Validates (or initialises) the region, recovers it after a crash and computes what to
   * resubmit and where the ring resumes.
   * @param region the queue's region (≥ {@link packedInflightQueueRegionSize}(size) bytes, 8-byte aligned)
   * @param queue the ring, already built (its descriptor ring is read to decide whether an
   *   uncommitted batch was published; its position is the start of a blank region)
   */
  constructor(region: Uint8Array, queue: PackedQueueDevice) {
    const size = queue.size;
    const bytes = packedInflightQueueRegionSize(size);
    if (region.byteLength < bytes || region.byteOffset % 8 !== 0) {
      throw new RangeError(`packed inflight region: ${region.byteLength} bytes at offset ${region.byteOffset} for a ring of ${size}`);
    }
    this.queue = queue;
    this.size = size;
    this.u8 = new Uint8Array(region.buffer, region.byteOffset, bytes);
    this.u16 = new Uint16Array(region.buffer, region.byteOffset, bytes >>> 1);
    this.u32 = new Uint32Array(region.buffer, region.byteOffset, bytes >>> 2);
    this.idEntry = new Int32Array(size).fill(-1);
    this.pendingBegin = new Uint8Array(size);
    this.batchHeads = new Int32Array(size);
    this.scratch = new Uint32Array(size * 4);
    this.dropped = 0;
    this.counter = 1;

    const u16 = this.u16;
    let problem: string | null = null;
    if (u16[H16_VERSION] === VERSION && u16[H16_DESC_NUM] !== size) problem = `desc_num ${u16[H16_DESC_NUM]} is not the ring size ${size}`;
    else if (u16[H16_VERSION] !== VERSION && u16[H16_VERSION] !== 0) problem = `version ${u16[H16_VERSION]}`;
    else if (u16[H16_VERSION] === VERSION) problem = this.checkHeader();
    if (u16[H16_VERSION] !== VERSION || problem !== null) {
      this.initialise(queue.publishedUsedIdx);
      this.problem = problem;
      this.fresh = true;
      this.resubmit = [];
      this.resumeUsed = this.resumeAvail = queue.publishedUsedIdx;
      return;
    }
    this.problem = null;
    this.fresh = false;
    const r = this.recover();
    this.resubmit = r.ids;
    this.resumeUsed = encodePackedIndex(u16[H16_USED_IDX], this.u8[H8_USED_WRAP]);
    let slot = u16[H16_USED_IDX] + r.slots, wrap = this.u8[H8_USED_WRAP];
    if (slot >= size) { slot -= size; wrap ^= 1; }
    this.resumeAvail = encodePackedIndex(slot, wrap);
  }

  /** Header fields a recovery indexes with, checked; null when usable. */
  private checkHeader(): string | null {
    const u16 = this.u16, u8 = this.u8, size = this.size;
    // free_head may equal size: the empty-list terminator.
    if (u16[H16_FREE_HEAD] > size || u16[H16_OLD_FREE_HEAD] > size) return 'free_head out of range';
    if (u16[H16_USED_IDX] >= size || u16[H16_OLD_USED_IDX] >= size) return 'used_idx out of range';
    if (u8[H8_USED_WRAP] > 1 || u8[H8_OLD_USED_WRAP] > 1) return 'wrap counter not 0 or 1';
    return null;
  }

  /** A blank region: every entry free, linked in index order, at the ring's used position. */
  private initialise(usedPos: number): void {
    const u8 = this.u8, u16 = this.u16, size = this.size;
    // version last: a crash half-way leaves a region that is initialised again.
    u8.fill(0);
    for (let e = 0; e < size; e++) u16[16 + 16 * e + E16_NEXT] = e + 1;
    u16[H16_DESC_NUM] = size;
    u16[H16_FREE_HEAD] = u16[H16_OLD_FREE_HEAD] = 0;
    u16[H16_USED_IDX] = u16[H16_OLD_USED_IDX] = usedPos & 0x7fff;
    u8[H8_USED_WRAP] = u8[H8_OLD_USED_WRAP] = (usedPos >>> 15) & 1;
    u16[H16_VERSION] = VERSION;
  }

  /**
   * vhost-user.rst "When reconnecting" (packed): commit a published batch, roll back what was
   * not committed, clear `inflight` on free entries, collect the heads still in flight. The free
   * list is then rebuilt from every entry no valid chain holds, which also repairs an area a
   * front-end scribbled on. Idempotent: a crash during recovery is recovered again.
   */
  private recover(): { ids: number[]; slots: number } {
    const u8 = this.u8, u16 = this.u16, u32 = this.u32, size = this.size;
    // 1. An uncommitted batch: was it published? The batch's first used descriptor went to
    //    the slot at old_used_idx, and its flags are stored last. While unpublished the slot
    //    still shows the driver's available flags of that lap (AVAIL = w, USED = !w); anything
    //    else means the driver saw the batch (it may even have reused the slot since).
    if (u16[H16_USED_IDX] !== u16[H16_OLD_USED_IDX] || u8[H8_USED_WRAP] !== u8[H8_OLD_USED_WRAP]) {
      const slot = u16[H16_OLD_USED_IDX], w = u8[H8_OLD_USED_WRAP];
      const flags = (Atomics.load(this.queue.ringViews.desc, (slot << 2) + 3) >>> 16) & AVAIL_BITS;
      const availFlags = w !== 0 ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED;
      if (flags !== availFlags) {
        u16[H16_OLD_FREE_HEAD] = u16[H16_FREE_HEAD];
        u16[H16_OLD_USED_IDX] = u16[H16_USED_IDX];
        u8[H8_OLD_USED_WRAP] = u8[H8_USED_WRAP];
      }
    }
    // 2. Roll back whatever was not committed.
    u16[H16_FREE_HEAD] = u16[H16_OLD_FREE_HEAD];
    u16[H16_USED_IDX] = u16[H16_OLD_USED_IDX];
    u8[H8_USED_WRAP] = u8[H8_OLD_USED_WRAP];
    // 3. The free list (bounded: a cycle or a stray index ends it).
    const free = new Uint8Array(size);
    for (let e = u16[H16_FREE_HEAD], n = 0; e < size && n < size && free[e] === 0; n++) {
      free[e] = 1;
      e = u16[16 + 16 * e + E16_NEXT];
    }
    // 4. Heads in flight: flagged and not free; each chain checked before it is believed.
    const claimed = new Uint8Array(size);
    const idSeen = new Uint8Array(size);
    const chains: { head: number; id: number; counter: number }[] = [];
    let slots = 0, maxCounter = 0;
    for (let h = 0; h < size; h++) {
      const c = u32[8 + 8 * h + E32_COUNTER_HI] * 0x1_0000_0000 + u32[8 + 8 * h + E32_COUNTER_LO];
      if (c > maxCounter) maxCounter = c;
      if (u8[32 + 32 * h] !== 1 || free[h] === 1) continue;
      const num = u16[16 + 16 * h + E16_NUM];
      if (num === 0 || slots + num > size) continue;
      let e = h, ok = true, k = 0;
      for (; k < num; k++) {
        if (e >= size || free[e] === 1 || claimed[e] === 1) { ok = false; break; }
        claimed[e] = 1;
        if (k < num - 1) e = u16[16 + 16 * e + E16_NEXT];
      }
      const id = ok ? u32[8 + 8 * e + E32_ID_FLAGS] & 0xffff : 0;
      if (!ok || e !== u16[16 + 16 * h + E16_LAST] || id >= size || idSeen[id] === 1) {
        // Not a chain this back-end wrote: release what the walk claimed.
        for (let j = 0, x = h; j < k && x < size; j++) {
          claimed[x] = 0;
          x = u16[16 + 16 * x + E16_NEXT];
        }
        continue;
      }
      idSeen[id] = 1;
      slots += num;
      chains.push({ head: h, id, counter: c });
    }
    // 5. Clear inflight on everything but the heads kept, rebuild the free list from every
    //    entry no chain holds (in index order), then point both heads at it.
    const isHead = new Uint8Array(size);
    for (const ch of chains) isHead[ch.head] = 1;
    let first = size, prev = -1;
    for (let e = 0; e < size; e++) {
      if (isHead[e] === 0) u8[32 + 32 * e] = 0;
      if (claimed[e] === 1) continue;
      if (prev < 0) first = e; else u16[16 + 16 * prev + E16_NEXT] = e;
      prev = e;
    }
    if (prev >= 0) u16[16 + 16 * prev + E16_NEXT] = size;
    u16[H16_FREE_HEAD] = u16[H16_OLD_FREE_HEAD] = first;
    // 6. Resubmit in pop order; the counter continues after the largest seen.
    chains.sort((a, b) => a.counter - b.counter);
    this.counter = maxCounter + 1;
    for (const ch of chains) {
      this.idEntry[ch.id] = ch.head;
      this.pendingBegin[ch.id] = 1;
    }
    return { ids: chains.map((ch) => ch.id), slots };
  }

  /**
   * Records the chain the queue just popped under buffer `id` (vhost-user.rst "When receiving
   * available buffers", packed): its descriptors go into free entries, the first becomes the
   * head; `old_free_head` moving past them commits the pop.
   */
  begin(id: number): void {
    const size = this.size;
    if (!(id >= 0 && id < size)) { this.dropped++; return; }
    if (this.pendingBegin[id] === 1) {
      // The device re-running a resubmitted chain: it is recorded already.
      this.pendingBegin[id] = 0;
      return;
    }
    const q = this.queue, u8 = this.u8, u16 = this.u16, u32 = this.u32, desc = q.ringViews.desc;
    const n = q.lastPopSlots, s = q.lastPopSlot;
    if (this.idEntry[id] >= 0 || n < 1 || n > size || s >= size) { this.dropped++; return; }
    const lastSlot = s + n - 1 < size ? s + n - 1 : s + n - 1 - size;
    // begin() must follow the pop of this very chain.
    if ((desc[(lastSlot << 2) + 3] & 0xffff) !== id) { this.dropped++; return; }
    // A batch published without a commit holds entries the driver has already reused.
    if (this.batchLen > 0 && q.publishedUsedIdx !== this.committedUsed()) this.commit();
    const batchOpen = this.batchLen > 0;
    const h = u16[H16_OLD_FREE_HEAD];
    // Enough free entries? (Only a driver that laps its own in-flight descriptors gets here.)
    let e = h;
    for (let k = 0; k < n; k++) {
      if (e >= size) { this.dropped++; return; }
      e = u16[16 + 16 * e + E16_NEXT];
    }
    u16[16 + 16 * h + E16_NUM] = 0;
    const c = this.counter++;
    u32[8 + 8 * h + E32_COUNTER_LO] = c % 0x1_0000_0000;
    u32[8 + 8 * h + E32_COUNTER_HI] = Math.floor(c / 0x1_0000_0000);
    u8[32 + 32 * h] = 1;
    e = h;
    let slot = s;
    for (let k = 0; k < n; k++) {
      if (k === n - 1) u16[16 + 16 * h + E16_LAST] = e;
      u16[16 + 16 * h + E16_NUM] = k + 1;
      const w = slot << 2, b = 8 + 8 * e;
      u32[b + E32_ADDR_LO] = desc[w];
      u32[b + E32_ADDR_HI] = desc[w + 1];
      u32[b + E32_LEN] = desc[w + 2];
      u32[b + E32_ID_FLAGS] = desc[w + 3];
      e = u16[16 + 16 * e + E16_NEXT];
      // With a batch open, free_head is the batch's freed list: leave it alone.
      if (!batchOpen) u16[H16_FREE_HEAD] = e;
      if (++slot === size) slot = 0;
    }
    // Keep the open batch's freed chains linked to what is still free after this pop.
    if (batchOpen) u16[16 + 16 * this.batchTail + E16_NEXT] = e;
    u16[H16_OLD_FREE_HEAD] = e;
    this.idEntry[id] = h;
  }

  /**
   * Returns buffer `id`'s entries to the free list as part of the open batch ("When supplying
   * used buffers") and records the pushed used position; the batch commits in `commit`.
   */
  end(id: number): void {
    const size = this.size;
    if (!(id >= 0 && id < size)) return;
    const h = this.idEntry[id];
    if (h < 0) return;
    // A batch published without a commit (a device that forgot it): commit it first, or a
    // crash before the next publish would take this unpublished answer for a published one.
    if (this.batchLen > 0 && this.queue.publishedUsedIdx !== this.committedUsed()) this.commit();
    this.idEntry[id] = -1;
    this.pendingBegin[id] = 0;
    const u16 = this.u16;
    const last = u16[16 + 16 * h + E16_LAST];
    if (last >= size || this.batchLen >= size) return;
    if (this.batchLen === 0) this.batchTail = last;
    u16[16 + 16 * last + E16_NEXT] = u16[H16_FREE_HEAD];
    u16[H16_FREE_HEAD] = h;
    this.batchHeads[this.batchLen++] = h;
    const pos = this.queue.usedIdx;
    u16[H16_USED_IDX] = pos & 0x7fff;
    this.u8[H8_USED_WRAP] = (pos >>> 15) & 1;
  }

  /** The committed used position (old_used_idx | old_used_wrap_counter << 15). */
  private committedUsed(): number {
    return this.u16[H16_OLD_USED_IDX] | (this.u8[H8_OLD_USED_WRAP] & 1) << 15;
  }

  /** After `publishUsed`: clears the batch's inflight flags, then commits (old_* = live). */
  commit(): void {
    const u8 = this.u8, u16 = this.u16;
    for (let i = 0; i < this.batchLen; i++) u8[32 + 32 * this.batchHeads[i]] = 0;
    this.batchLen = 0;
    this.batchTail = -1;
    const pos = this.queue.publishedUsedIdx;
    u16[H16_USED_IDX] = pos & 0x7fff;
    u8[H8_USED_WRAP] = (pos >>> 15) & 1;
    u16[H16_OLD_FREE_HEAD] = u16[H16_FREE_HEAD];
    u16[H16_OLD_USED_IDX] = u16[H16_USED_IDX];
    u8[H8_OLD_USED_WRAP] = u8[H8_USED_WRAP];
  }

  /**
   * Re-walks resubmitted buffer `id` from the descriptors saved in the area (its ring slots may
   * hold used descriptors by now) and tells the queue how many slots its used descriptor skips.
   * @returns 0, or a FAULT_* (the saved chain is bad: the device should break)
   */
  chainAt(id: number, chain: DescriptorChain): number {
    const size = this.size;
    const h = id >= 0 && id < size ? this.idEntry[id] : -1;
    if (h < 0) return FAULT_HEAD_OUT_OF_RANGE;
    const u16 = this.u16, u32 = this.u32, scratch = this.scratch;
    const num = u16[16 + 16 * h + E16_NUM];
    if (num < 1 || num > size) return FAULT_HEAD_OUT_OF_RANGE;
    for (let k = 0, e = h; k < num; k++) {
      if (e >= size) return FAULT_HEAD_OUT_OF_RANGE;
      const b = 8 + 8 * e;
      scratch[4 * k] = u32[b + E32_ADDR_LO];
      scratch[4 * k + 1] = u32[b + E32_ADDR_HI];
      scratch[4 * k + 2] = u32[b + E32_LEN];
      scratch[4 * k + 3] = u32[b + E32_ID_FLAGS];
      e = u16[16 + 16 * e + E16_NEXT];
    }
    const r = this.queue.walkSaved(scratch, num, chain);
    if (r !== 0) return r;
    return chain.head === id ? 0 : FAULT_HEAD_OUT_OF_RANGE;
  }

  /** Buffer ids currently recorded in flight, in counter order (tests, diagnostics). */
  inflightIds(): number[] {
    const out: { id: number; c: number }[] = [];
    for (let id = 0; id < this.size; id++) {
      const h = this.idEntry[id];
      if (h < 0 || this.u8[32 + 32 * h] !== 1) continue;
      out.push({ id, c: this.u32[8 + 8 * h + E32_COUNTER_HI] * 0x1_0000_0000 + this.u32[8 + 8 * h + E32_COUNTER_LO] });
    }
    return out.sort((a, b) => a.c - b.c).map((x) => x.id);
  }
}
