/**
 * The shared inflight area of vhost-user.rst "Inflight I/O tracking", split-ring format.
 *
 * ```
 *  area = queue0 region | queue1 region | ...      (each region aligned to 64 bytes)
 *  region: +0 features u64 | +8 version u16 | +10 desc_num u16 | +12 last_batch_head u16 | +14 used_idx u16
 *          +16 + 16*i: DescStateSplit { inflight u8, padding[5], next u16 @+6, counter u64 @+8 }
 * ```
 * The front-end keeps the memfd across back-end restarts and hands it back with
 * SET_INFLIGHT_FD, so a new back-end can find requests the old one popped but never completed.
 * Everything read from the area is front-end controlled: indices are bounds-checked and walks
 * are bounded by desc_num.
 * @module
 */
import type { InflightTracker } from '../device.js';

/** Size of the per-queue region header. */
export const INFLIGHT_HEADER_SIZE = 16;
/** Size of one DescStateSplit. */
export const INFLIGHT_DESC_SIZE = 16;
/** Region alignment (as libvhost-user, so areas are interchangeable). */
export const INFLIGHT_ALIGN = 64;
/** Current region version. */
export const INFLIGHT_VERSION = 1;

/** Bytes one queue's region takes for a queue of `queueSize` entries. */
export function inflightQueueRegionSize(queueSize: number): number {
  const raw = INFLIGHT_HEADER_SIZE + INFLIGHT_DESC_SIZE * queueSize;
  return Math.ceil(raw / INFLIGHT_ALIGN) * INFLIGHT_ALIGN;
}

/** Tracker over one queue's region; see {@link InflightTracker}. */
export class SplitInflightTracker implements InflightTracker {
  readonly resubmit: readonly number[];
  /**
   * True when the region was blank (version 0) or unusable and got initialised; false when it
   * carries a previous back-end's state, whose used_idx + in-flight count then decides where
   * the ring resumes.
   */
  readonly fresh: boolean;
  private readonly view: DataView;
  private readonly size: number;
  private counter: number;
  private readonly batch: Uint16Array;
  private batchLen = 0;

  /**
   * Validates (or initialises) the region and computes the heads to resubmit.
   * @param region the queue's region (≥ {@link inflightQueueRegionSize}(size) bytes)
   * @param size the ring size
   * @param readUsedIdx reads used.idx from guest memory
   */
  constructor(region: Uint8Array, size: number, private readonly readUsedIdx: () => number) {
    this.view = new DataView(region.buffer, region.byteOffset, region.byteLength);
    this.size = size;
    this.batch = new Uint16Array(size);
    const v = this.view;
    const usedIdx = readUsedIdx() & 0xffff;
    // desc_num may exceed the ring: libvhost-user writes the area's queue size there, and a
    // driver may use a smaller ring (SeaBIOS: 128 entries on a queue-size=1024 disk). Any
    // value from the ring size up to what the region holds is usable; entries past the ring
    // are never read.
    const capacity = Math.floor((region.byteLength - INFLIGHT_HEADER_SIZE) / INFLIGHT_DESC_SIZE);
    const descNum = v.getUint16(10, true);
    if (v.getUint16(8, true) !== INFLIGHT_VERSION || descNum < size || descNum > capacity) {
      // Fresh (version 0) or unusable: start clean.
      region.fill(0, 0, inflightQueueRegionSize(size));
      v.setUint16(8, INFLIGHT_VERSION, true);
      v.setUint16(10, size, true);
      v.setUint16(14, usedIdx, true);
      this.counter = 1;
      this.resubmit = [];
      this.fresh = true;
      return;
    }
    // Reconnect: if used.idx moved past used_idx, the last batch was published but its
    // inflight flags may not have been cleared (vhost-user.rst "When reconnecting").
    const recorded = v.getUint16(14, true);
    if (recorded !== usedIdx) {
      let n = (usedIdx - recorded) & 0xffff;
      let head = v.getUint16(12, true);
      for (let steps = 0; n > 0 && steps < size && head < size; steps++, n--) {
        v.setUint8(this.entry(head), 0);
        head = v.getUint16(this.entry(head) + 6, true);
      }
      v.setUint16(14, usedIdx, true);
    }
    const pending: { head: number; counter: number }[] = [];
    let max = 0;
    for (let i = 0; i < size; i++) {
      const c = this.readCounter(i);
      if (c > max) max = c;
      if (v.getUint8(this.entry(i)) === 1) pending.push({ head: i, counter: c });
    }
    pending.sort((a, b) => a.counter - b.counter);
    this.resubmit = pending.map((p) => p.head);
    this.counter = max + 1;
    this.fresh = false;
  }

  private entry(head: number): number {
    return INFLIGHT_HEADER_SIZE + head * INFLIGHT_DESC_SIZE;
  }

  private readCounter(head: number): number {
    const o = this.entry(head) + 8;
    return this.view.getUint32(o + 4, true) * 0x1_0000_0000 + this.view.getUint32(o, true);
  }

  begin(head: number): void {
    if (head >= this.size) return;
    const o = this.entry(head);
    const c = this.counter++;
    this.view.setUint32(o + 8, c % 0x1_0000_0000, true);
    this.view.setUint32(o + 12, Math.floor(c / 0x1_0000_0000), true);
    this.view.setUint8(o, 1);
  }

  end(head: number): void {
    if (head >= this.size || this.batchLen >= this.size) return;
    const v = this.view;
    v.setUint16(this.entry(head) + 6, v.getUint16(12, true), true);
    v.setUint16(12, head, true);
    this.batch[this.batchLen++] = head;
  }

  commit(): void {
    for (let i = 0; i < this.batchLen; i++) this.view.setUint8(this.entry(this.batch[i]), 0);
    this.batchLen = 0;
    this.view.setUint16(14, this.readUsedIdx() & 0xffff, true);
  }

  /** Heads currently marked in flight (tests, diagnostics). */
  inflightHeads(): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.size; i++) if (this.view.getUint8(this.entry(i)) === 1) out.push(i);
    return out;
  }
}
