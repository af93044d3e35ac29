/**
 * QueueLoad: keeps `queueDepth` virtio-blk requests in flight on one ring and times each one.
 *
 * Every request slot is built once — header, data buffer and status byte at fixed guest
 * addresses, the chain's address/length arrays, typed-array views on the header and status —
 * so the steady state (complete → check status → record latency → resubmit) allocates nothing.
 *
 * ```
 *  slot k:  hdr (16 B, 16-aligned) │ data (blockSize, 4 KiB-aligned, split in ≤ segBytes pieces) │ status (1 B)
 *  chain:   hdr ─▶ data[0] ─▶ … ─▶ data[n-1] ─▶ status        (IN: data device-writable; OUT: readable)
 * ```
 * @module
 */
import type { FrontendMemory, FrontendQueue } from '@vhost-ts/vhost-user';
import type { Histogram } from '../common/histogram.js';
import { BLK_HEADER_SIZE, SECTOR_SIZE, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT } from './virtio-blk.js';
import type { WorkloadSpec } from './workload.js';

const TWO_32 = 0x1_0000_0000;
/** Status value written before submission; a device that completes without writing it is caught. */
const STATUS_SENTINEL = 0xff;

/** Where the slots live: one region of the front-end memory, which the caller sized. */
export interface SlotArena {
  mem: FrontendMemory;
  regionIndex: number;
}

/** Counters of one queue (reset at the end of warm-up, except `errors`). */
export class QueueCounters {
  completed = 0;
  bytes = 0;
  errors = 0;
  lenMismatches = 0;
  kicks = 0;
  calls = 0;
  stalls = 0;
}

/** Drives one ring. */
export class QueueLoad {
  readonly counters = new QueueCounters();
  /** False once stopping: completions are no longer resubmitted. */
  running = false;
  private readonly q: FrontendQueue;
  private readonly type: number;
  private readonly random: boolean;
  private readonly blockSize: number;
  private readonly qd: number;
  private readonly chainLen: number;
  private readonly readable: number;
  /** Expected used length: bytes the device writes (data for IN, + 1 status byte). */
  private readonly expectLen: number;
  private readonly blocks: number;
  private readonly slotGpas: Float64Array[];
  private readonly slotLens: Float64Array[];
  private readonly slotHdr: Uint32Array[];
  private readonly slotStatus: Uint8Array[];
  private readonly submitAt: Float64Array;
  private readonly headToSlot: Int32Array;
  private inflight = 0;
  private seqBlock = 0;
  private rng: number;
  private lastProgressCalls = 0;
  private drained: (() => void) | null = null;

  constructor(q: FrontendQueue, arena: SlotArena, spec: WorkloadSpec, capacityBytes: number, segBytes: number,
    private readonly hist: Histogram, seed: number) {
    this.q = q;
    this.type = spec.pattern === 'read' || spec.pattern === 'randread' ? VIRTIO_BLK_T_IN : VIRTIO_BLK_T_OUT;
    this.random = spec.pattern === 'randread' || spec.pattern === 'randwrite';
    this.blockSize = spec.blockSize;
    this.qd = spec.queueDepth;
    this.blocks = Math.floor(capacityBytes / spec.blockSize);
    if (this.blocks < 1) throw new RangeError(`device of ${capacityBytes} bytes is smaller than one ${spec.blockSize}-byte block`);
    const segs = Math.ceil(spec.blockSize / segBytes);
    this.chainLen = segs + 2;
    if (this.chainLen * this.qd > q.driver.size) {
      throw new RangeError(`queue depth ${this.qd} × ${this.chainLen} descriptors exceeds the ring size ${q.driver.size}`);
    }
    this.readable = this.type === VIRTIO_BLK_T_OUT ? segs + 1 : 1;
    this.expectLen = this.type === VIRTIO_BLK_T_IN ? spec.blockSize + 1 : 1;
    const region = arena.mem.regions[arena.regionIndex];
    const base = region.desc.guestPhysAddr;
    this.slotGpas = [];
    this.slotLens = [];
    this.slotHdr = [];
    this.slotStatus = [];
    for (let s = 0; s < this.qd; s++) {
      const hdr = arena.mem.alloc(BLK_HEADER_SIZE, 16, arena.regionIndex);
      const status = arena.mem.alloc(1, 1, arena.regionIndex);
      const data = arena.mem.alloc(spec.blockSize, 4096, arena.regionIndex);
      const gpas = new Float64Array(this.chainLen);
      const lens = new Float64Array(this.chainLen);
      gpas[0] = hdr;
      lens[0] = BLK_HEADER_SIZE;
      for (let i = 0; i < segs; i++) {
        gpas[1 + i] = data + i * segBytes;
        lens[1 + i] = Math.min(segBytes, spec.blockSize - i * segBytes);
      }
      gpas[segs + 1] = status;
      lens[segs + 1] = 1;
      this.slotGpas.push(gpas);
      this.slotLens.push(lens);
      this.slotHdr.push(new Uint32Array(region.buffer, hdr - base, 4));
      this.slotStatus.push(new Uint8Array(region.buffer, status - base, 1));
      // Written data is a recognisable pattern, not zeroes (a backend could shortcut zero pages).
      if (this.type === VIRTIO_BLK_T_OUT) new Uint8Array(region.buffer, data - base, spec.blockSize).fill(0x5a ^ (s & 0xff));
    }
    this.submitAt = new Float64Array(this.qd);
    this.headToSlot = new Int32Array(q.driver.size).fill(-1);
    this.rng = (seed | 0) === 0 ? 0x9e3779b9 : seed | 0;
    q.onCall = () => {
      this.counters.calls++;
      this.drain();
    };
  }

  /** Requests in flight. */
  get inFlight(): number {
    return this.inflight;
  }

  /** Fills the ring to the queue depth and kicks. */
  start(): void {
    this.running = true;
    const now = performance.now();
    for (let s = 0; s < this.qd; s++) this.submit(s, now);
    this.flush();
  }

  /** Stops resubmitting; resolves when every request completed (or after `timeoutMs`, false). */
  stop(timeoutMs: number): Promise<boolean> {
    this.running = false;
    if (this.inflight === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.drained = null;
        resolve(false);
      }, timeoutMs);
      this.drained = () => {
        clearTimeout(t);
        this.drained = null;
        resolve(true);
      };
    });
  }

  /**
   * Watchdog tick: if no call arrived since the last tick while requests are in flight and
   * used elements are waiting, a notification was lost — collect them and count it.
   */
  watchdog(): void {
    if (this.counters.calls === this.lastProgressCalls && this.inflight > 0 && this.q.driver.usedCount() > 0) {
      this.counters.stalls++;
      this.drain();
    }
    this.lastProgressCalls = this.counters.calls;
  }

  private nextOffset(): number {
    let block: number;
    if (this.random) {
      // xorshift32: deterministic, allocation-free; modulo bias is irrelevant at these sizes.
      let x = this.rng;
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      this.rng = x;
      block = (x >>> 0) % this.blocks;
    } else {
      block = this.seqBlock;
      this.seqBlock = block + 1 === this.blocks ? 0 : block + 1;
    }
    return block * this.blockSize;
  }

  private submit(slot: number, now: number): void {
    const sector = this.nextOffset() / SECTOR_SIZE;
    const hdr = this.slotHdr[slot];
    hdr[0] = this.type;
    hdr[1] = 0;
    hdr[2] = sector % TWO_32;
    hdr[3] = Math.floor(sector / TWO_32);
    this.slotStatus[slot][0] = STATUS_SENTINEL;
    const head = this.q.driver.addChain(this.slotGpas[slot], this.slotLens[slot], this.chainLen, this.readable);
    if (head < 0) throw new Error('ring full: more requests than the ring holds (bookkeeping bug)');
    this.headToSlot[head] = slot;
    this.submitAt[slot] = now;
    this.inflight++;
  }

  private flush(): void {
    const d = this.q.driver;
    d.publish();
    if (d.kickNeeded()) {
      this.counters.kicks++;
      this.q.kick();
    }
  }

  /** Collects every used element, resubmits, publishes once, kicks when the device asks. */
  drain(): void {
    const d = this.q.driver;
    const c = this.counters;
    for (;;) {
      const now = performance.now();
      let head: number;
      while ((head = d.popUsed()) >= 0) {
        const slot = this.headToSlot[head];
        if (slot < 0) throw new Error(`used head ${head} belongs to no request`);
        this.headToSlot[head] = -1;
        this.inflight--;
        this.hist.record((now - this.submitAt[slot]) * 1e6);
        c.completed++;
        if (this.slotStatus[slot][0] !== VIRTIO_BLK_S_OK) c.errors++;
        else c.bytes += this.blockSize;
        if (d.lastLen !== this.expectLen) c.lenMismatches++;
        if (this.running) this.submit(slot, now);
      }
      this.flush();
      // Re-arm, then look again: a completion published between the last pop and the
      // re-arm would otherwise wait for a call that the device already decided not to send.
      if (!d.enableInterrupts()) break;
    }
    if (this.inflight === 0 && this.drained !== null) this.drained();
  }
}
