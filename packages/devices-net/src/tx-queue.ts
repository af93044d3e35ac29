/**
 * The TX side of one queue pair: copies frames out of the guest's transmit chains into a
 * {@link FrameBatch} and hands the batch to the backend port.
 *
 * A malformed chain (shorter than a header plus an Ethernet header, longer than the largest
 * frame, or a header using offloads that were not negotiated) is returned with length 0,
 * counted, and never reaches the backend. TX chains are returned before the backend sees the
 * batch (it is a copy), which keeps the guest's ring moving whatever the backend does.
 * @module
 */
import { DescriptorChain, type DeviceQueue } from '@vhost-ts/virtqueue';
import { copyRanges } from '@vhost-ts/sys';
import { AdaptivePoller, type PollGroup, type QueueContext, type QueueHandler } from '@vhost-ts/vhost-user';
import { ETH_HLEN, VIRTIO_NET_HDR_V1_SIZE } from './constants.js';
import { copyFromChain } from './chain-copy.js';
import { copyFast, slabWords } from './word-copy.js';
import { FrameBatch } from './frame-batch.js';
import type { NetBackendPort } from './net-backend.js';
import { checkTxHeader, TX_HDR_OK, type TxOffloadPolicy } from './net-header.js';
import type { PortCounters } from './port-counters.js';

/** Settings shared by the TX queues of a device (decided at SET_FEATURES). */
export interface TxSettings {
  hdrLen: number;
  policy: TxOffloadPolicy;
  /** Zero the header before the backend sees it (paths without offloads). */
  clearHeader: boolean;
  /**
   * Longest busy-poll window in µs after a batch that emptied the ring, before asking for a
   * kick (0 = never poll: sleep until the next kick). The window adapts (AdaptivePoller).
   */
  pollUs: number;
  /** Continuous-run budget of the poller before yielding, ms. */
  pollYieldMs: number;
  /** The queues this one takes turns with on their thread (see PollGroup); none: on its own. */
  pollGroup?: PollGroup;
}

/**
 * Frames per run before yielding to the event loop (fairness between queues and ports): two
 * rings of the largest size, whatever the batch capacity.
 */
const MAX_FRAMES_PER_RUN = 2048;
/** Chains popped before their frames are copied (see TxQueue.fill). */
const BURST = 128;
/**
 * From this many single-piece frames of one slab, a burst's copies go through one native
 * `copyRanges` call (≈ 0.15 µs fixed, then memcpy) instead of a JS copy per frame.
 */
const NATIVE_COPY_MIN = 4;
/** burstSlab values: the frame was copied in pass 1 / the chain is malformed, returned in its place in pass 2. */
const SLAB_COPIED = -1;
const SLAB_DROPPED = -2;

/** Per-TX-queue worker. */
export class TxQueue implements QueueHandler {
  readonly pair: number;
  private readonly queue: DeviceQueue;
  private readonly chain: DescriptorChain;
  private readonly batch: FrameBatch;
  private running = true;
  private rescheduled = false;
  /**
   * Per-burst records of fill(): head, readable bytes, and slab/offset of single-piece frames
   * (or SLAB_COPIED / SLAB_DROPPED). Malformed chains keep their place in the burst so every
   * chain is returned in the order it was made available (VIRTIO_F_IN_ORDER).
   */
  private readonly burstHead = new Uint32Array(BURST);
  private readonly burstLen = new Float64Array(BURST);
  private readonly burstSlab = new Int32Array(BURST);
  private readonly burstOff = new Float64Array(BURST);
  /** copyRanges plan of a burst: [slab offset, batch offset, length] per frame. */
  private readonly copyPlan = new Float64Array(BURST * 3);
  /** popDirect output: head, slab, offset, length per chain. */
  private readonly direct = new Float64Array(BURST * 4);
  /** Busy-poll policy (null: kick-driven only). */
  private readonly poller: AdaptivePoller | null;
  private readonly ready: () => boolean;
  /** For the other queues of the poll group: chains wait to be sent. */
  private readonly hasWork: () => boolean;

  constructor(
    pair: number, private readonly ctx: QueueContext, private readonly settings: TxSettings,
    private readonly counters: PortCounters, private readonly port: NetBackendPort,
    batchCapacity: number, slotSize: number,
  ) {
    this.pair = pair;
    this.queue = ctx.queue;
    ctx.queue.markDeviceReadOnly(); // DPDK virtio-user's packed TX tables (see there)
    this.chain = new DescriptorChain(Math.min(ctx.queue.size, 1024));
    this.batch = new FrameBatch(batchCapacity, slotSize);
    this.poller = settings.pollUs > 0 ? new AdaptivePoller({ maxUs: settings.pollUs, yieldMs: settings.pollYieldMs, group: settings.pollGroup }) : null;
    const q = ctx.queue;
    this.ready = () => q.availableCount() !== 0;
    this.hasWork = () => this.running && !q.isBroken && q.availableCount() !== 0;
    this.poller?.join(this.hasWork);
  }

  onKick(): void {
    this.counters.txKicks++;
    this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.poller?.leave();
  }

  private run(): void {
    if (!this.running) return;
    const q = this.queue;
    const batch = this.batch;
    const poller = this.poller;
    let missed = false;
    if (poller !== null) poller.woke();
    const rounds = Math.max(1, Math.ceil(MAX_FRAMES_PER_RUN / batch.capacity));
    for (let round = 0; round < rounds; round++) {
      q.disableNotify();
      const r = this.fill();
      if (r < 0) return;
      q.publishUsed();
      if (q.shouldNotify()) {
        this.counters.notifies++;
        this.ctx.notify();
      } else {
        this.counters.notifiesSuppressed++;
      }
      if (batch.count > 0) {
        this.counters.txFrames += batch.count;
        this.port.transmit(this.pair, batch);
        if (!this.running) return;
      }
      if (r === 1) continue; // batch was full: more may be waiting
      if (poller !== null && poller.mayContinue()) {
        // Spin for the next chains (notifications still off) before paying a kick + wake-up.
        const spun = poller.counters.spinUs;
        const hit = poller.spin(this.ready);
        this.counters.pollSpinUs += poller.counters.spinUs - spun;
        if (hit) { this.counters.pollHits++; continue; }
        // Another queue has work: its turn first, then on (notifications off).
        if (poller.yielded) break;
        this.counters.pollMisses++;
        missed = true;
      }
      if (!q.enableNotify()) {
        if (poller !== null) poller.sleeping(missed);
        return;
      }
      missed = false;
    }
    // Still busy after several batches: let other queues and sockets run, then go on.
    if (!this.rescheduled) {
      this.rescheduled = true;
      setImmediate(() => {
        this.rescheduled = false;
        this.run();
      });
    }
  }

  /**
   * Pops into the batch. Returns 1 when its budget is used up — the batch is full, or kept and
   * dropped chains together reached the batch capacity (or the ring size, if smaller): more may
   * be waiting — 0 when the ring ran empty, -1 when broken.
   *
   * Works in bursts of up to {@link BURST} chains, in two passes, because the frame bytes were
   * just written by the driver on another CPU and every first touch is a cache miss:
   * ```
   *  1. pop:  pop + length-check each chain; single-piece frames are only recorded
   *  2. copy: copy the recorded frames with one copyRanges call, which prefetches the first and
   *           last line of every range while it checks them (the misses overlap), then check
   *           headers and push used elements in burst order
   * ```
   * Frames in several pieces are copied in pass 1 (the chain object is reused by the next pop).
   * Measured on the system bench (testpmd txonly guest on the other CPU, kick-driven, back-end
   * CPU per frame): a JS pass reading each frame's first and last byte before the copy took
   * 64 B from 353 to 284 ns when the copies were JS; once they were one native call, the
   * prefetch inside it instead of that pass: 64 B 222/197/201/212 → 190/163/170/166 ns,
   * 1518 B 274/279/305/315 → 279/248/259/255 ns (four interleaved pairs).
   */
  private fill(): number {
    const q = this.queue;
    const chain = this.chain;
    const batch = this.batch;
    const s = this.settings;
    const hdrLen = s.hdrLen;
    const maxReadable = batch.slotSize - VIRTIO_NET_HDR_V1_SIZE + hdrLen;
    const data = batch.data;
    const stride = batch.stride;
    const bHead = this.burstHead;
    const bLen = this.burstLen;
    const bSlab = this.burstSlab;
    const bOff = this.burstOff;
    batch.clear();
    // Dropped chains count against the batch like kept ones: a guest that keeps republishing
    // malformed chains (heads can be reused without waiting for the used ring) must not keep
    // this loop going — nor push more used elements than the ring holds before a publish.
    let dropped = 0;
    // A batch may be larger than a small ring: never more chains than the ring holds per publish.
    const limit = Math.min(batch.capacity, q.size);
    while (batch.count + dropped < limit) {
      // Pass 1: pop. Slot batch.count + n belongs to burst entry n; `taken` counts drops too.
      let n = 0;
      let taken = 0;
      let ended = false;
      const room = Math.min(BURST, limit - batch.count - dropped);
      while (taken < room) {
        if (hdrLen === VIRTIO_NET_HDR_V1_SIZE) {
          // Runs of one-descriptor chains (what Linux and DPDK send) in one call, no chain object.
          const want = room - taken;
          const d = q.popDirect(this.direct, want, false);
          if (d < 0) return this.broke();
          const out = this.direct;
          taken += d;
          for (let k = 0; k < d; k++) {
            const o = k << 2;
            const readable = out[o + 3];
            bHead[n] = out[o];
            bLen[n] = readable;
            if (readable < hdrLen + ETH_HLEN || readable > maxReadable) {
              bSlab[n++] = SLAB_DROPPED;
              continue;
            }
            bSlab[n] = out[o + 1];
            bOff[n] = out[o + 2];
            n++;
          }
          if (d === want) continue;
          // Fewer: the ring ran empty, or the next chain has another shape — pop decides.
        }
        const r = q.pop(chain);
        if (r === 0) { ended = true; break; }
        if (r < 0) return this.broke();
        taken++;
        const readable = chain.readableBytes;
        // virtio 1.2 §5.1.6.2: every TX buffer starts with the header; anything shorter than a
        // header plus an Ethernet header, or longer than a slot, is malformed.
        bHead[n] = chain.head;
        bLen[n] = readable;
        if (readable < hdrLen + ETH_HLEN || readable > maxReadable) {
          bSlab[n++] = SLAB_DROPPED;
          continue;
        }
        const off = (batch.count + n) * stride;
        if (chain.readableSegs === 1 && hdrLen === VIRTIO_NET_HDR_V1_SIZE) {
          bSlab[n] = chain.segSlab[0];
          bOff[n] = chain.segOffset[0];
        } else {
          bSlab[n] = SLAB_COPIED;
          if (hdrLen === VIRTIO_NET_HDR_V1_SIZE) {
            copyFromChain(chain, 0, data, off, readable, batch.data32);
          } else {
            copyFromChain(chain, 0, data, off, hdrLen);
            data[off + 10] = 0;
            data[off + 11] = 0;
            copyFromChain(chain, hdrLen, data, off + VIRTIO_NET_HDR_V1_SIZE, readable - hdrLen, batch.data32);
          }
        }
        n++;
      }
      const before = batch.count;
      if (n > 0) this.copyBurst(n);
      dropped += taken - (batch.count - before); // malformed in pass 1 or in the header check
      if (ended) return 0;
    }
    return 1;
  }

  /**
   * Pass 2 of {@link fill} for burst entries 0..n, appended to the batch in order; used
   * elements are pushed in burst order, malformed chains included.
   */
  private copyBurst(n: number): void {
    const q = this.queue;
    const batch = this.batch;
    const s = this.settings;
    const mem = q.memory;
    const slabs = mem.slabs;
    const words = slabWords(mem);
    const data = batch.data;
    const data32 = batch.data32;
    const stride = batch.stride;
    const hdrLen = s.hdrLen;
    const bHead = this.burstHead;
    const bLen = this.burstLen;
    const bSlab = this.burstSlab;
    const bOff = this.burstOff;
    const base = batch.count;
    // Copy. Runs of frames in one slab (nearly always the whole burst) as one native
    // call; short runs with JS copies.
    const plan = this.copyPlan;
    for (let i = 0; i < n;) {
      const slab = bSlab[i];
      if (slab < 0) { i++; continue; }
      let j = i + 1;
      while (j < n && bSlab[j] === slab) j++;
      if (j - i >= NATIVE_COPY_MIN) {
        let k = 0;
        for (let f = i; f < j; f++, k += 3) {
          plan[k] = bOff[f];
          plan[k + 1] = (base + f) * stride;
          plan[k + 2] = bLen[f];
        }
        copyRanges(data, slabs[slab], plan, j - i);
      } else {
        for (let f = i; f < j; f++) copyFast(data, data32, (base + f) * stride, slabs[slab], words[slab], bOff[f], bLen[f]);
      }
      i = j;
    }
    // Check, append. With IN_ORDER the burst's chains (dropped ones included: TX writes no
    // length) are returned as one used element after the loop.
    const perChain = !q.inOrder;
    // Loop-invariant fields read once (each was a property load per frame).
    const lengths = batch.lengths, clear = s.clearHeader, policy = s.policy;
    let w = base;
    let bytes = 0;
    for (let i = 0; i < n; i++) {
      if (bSlab[i] === SLAB_DROPPED) {
        this.drop(bHead[i], perChain);
        continue;
      }
      const slot = base + i;
      const off = slot * stride;
      const readable = bLen[i];
      const frameLen = readable - hdrLen;
      if (checkTxHeader(data, off, frameLen, policy) !== TX_HDR_OK) {
        this.drop(bHead[i], perChain);
        continue;
      }
      const wOff = w * stride;
      // A dropped frame before this one left a gap: move down (same buffer, rare).
      if (w !== slot) data.copyWithin(wOff, off, off + VIRTIO_NET_HDR_V1_SIZE + frameLen);
      if (clear) {
        // Slots start on 8-byte boundaries: three word stores (the byte loop of clearNetHeader
        // was a third of this function's time in a profile of the 64 B system bench).
        const h = wOff >>> 2;
        data32[h] = 0;
        data32[h + 1] = 0;
        data32[h + 2] = 0;
      }
      lengths[w] = VIRTIO_NET_HDR_V1_SIZE + frameLen;
      w++;
      bytes += frameLen;
      // TX buffers are device-readable only; nothing written (virtio 1.2 §2.7.8.2: len = 0).
      if (perChain) q.pushUsed(bHead[i], 0);
    }
    if (!perChain) q.pushUsedInOrder(n, bHead[n - 1], 0);
    batch.count = w;
    this.counters.txBytes += bytes;
  }

  /** The queue faulted: report the device broken; fill() returns -1. */
  private broke(): number {
    const err = this.queue.error;
    this.ctx.broken(`tx queue ${this.ctx.index}: ${err ? err.message : 'fault'}`);
    this.running = false;
    return -1;
  }

  private drop(head: number, push: boolean): void {
    this.counters.txMalformed++;
    this.counters.txDropped++;
    if (push) this.queue.pushUsed(head, 0);
  }
}
