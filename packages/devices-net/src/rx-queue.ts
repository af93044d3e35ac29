/**
 * The RX side of one queue pair: writes frames into the guest's receive chains.
 *
 * With VIRTIO_NET_F_MRG_RXBUF a frame may be spread over several chains and `num_buffers` in
 * the first header says how many (virtio 1.2 §5.1.6.4); without it a frame must fit one chain.
 * When the guest has posted no buffers, frames wait in a bounded hold ring (then are dropped
 * and counted), the queue asks for a kick, and the next kick retries — nothing spins.
 * @module
 */
import { DescriptorChain, type DeviceQueue, type GuestMemory } from '@vhost-ts/virtqueue';
import { copyRanges } from '@vhost-ts/sys';
import { AdaptivePoller, type PollGroup, type QueueContext, type QueueHandler } from '@vhost-ts/vhost-user';
import { ETH_HLEN, VIRTIO_NET_HDR_V1_SIZE } from './constants.js';
import { copyToChain, WritablePrefix } from './chain-copy.js';
import { copyFast, slabWords } from './word-copy.js';
import { FrameRing, type FrameBatch } from './frame-batch.js';
import { HDR_NUM_BUFFERS } from './net-header.js';
import type { PortCounters } from './port-counters.js';
import type { RxFilter } from './rx-filter.js';

/** writeFrame results. */
const WROTE = 0;
const NO_BUFFERS = 1;
const DROPPED = 2;
const BROKEN = 3;

const TWO_32 = 0x100000000;
/** Frame copies deferred into one native call (see RxQueue.flushCopies). */
const COPY_PLAN_MAX = 64;
/** Fewer deferred copies than this are done in JS (a native call costs ≈ 0.15 µs). */
const NATIVE_COPY_MIN = 4;
/** Chains taken per `popDirect` call by the direct path (see RxQueue.writeDirect). */
const DIRECT_BURST = 32;

/** Settings shared by the RX queues of a device (decided at SET_FEATURES). */
export interface RxSettings {
  /** Header size in the guest's buffers: 12 (VERSION_1 or MRG_RXBUF) or 10 (legacy). */
  hdrLen: number;
  /** VIRTIO_NET_F_MRG_RXBUF negotiated. */
  mergeable: boolean;
  /** Clear checksum/GSO fields before delivery (the path negotiated no guest offloads). */
  clearHeader: boolean;
  /**
   * Longest busy-poll window in µs for guest buffers while frames are held, before asking for
   * a kick (0 = never poll). The window adapts (AdaptivePoller).
   */
  pollUs: number;
  /** Continuous-run budget of the poller before yielding, ms. */
  pollYieldMs: number;
  /** The queues this one takes turns with on their thread (see PollGroup); none: on its own. */
  pollGroup?: PollGroup;
}

/** Per-RX-queue worker, also the {@link QueueHandler} the vhost-user back-end drives. */
export class RxQueue implements QueueHandler {
  readonly pair: number;
  private readonly queue: DeviceQueue;
  private readonly ctx: QueueContext;
  private readonly chain: DescriptorChain;
  private readonly hold: FrameRing;
  private readonly prefix = new WritablePrefix();
  private readonly scratch = new Uint8Array(VIRTIO_NET_HDR_V1_SIZE);
  private readonly scratch32 = new Int32Array(this.scratch.buffer);
  /** Heads and lengths of the chains one frame is being spread over (MRG_RXBUF). */
  private readonly heads: Uint16Array;
  private readonly lens: Uint32Array;
  /**
   * Payload copies of fast-path frames not yet done: [source offset, slab offset, length]
   * triples from `planSrc` into `planDst`. Done by {@link flushCopies} before anything is
   * published, and before a source slot can be reused.
   */
  private readonly plan = new Float64Array(COPY_PLAN_MAX * 3);
  /**
   * Per plan entry: the word index in `planDst32` of the frame's header, or -1 when the header
   * was written at once; and the header's three words. Written after the payload copies, when
   * the copy has already brought the buffer's lines into this CPU's cache (see flushCopies).
   */
  private readonly planHdrAt = new Int32Array(COPY_PLAN_MAX);
  private readonly planHdr = new Int32Array(COPY_PLAN_MAX * 3);
  private planCount = 0;
  /** popDirect output: head, slab, offset, length per chain. */
  private readonly direct = new Float64Array(DIRECT_BURST * 4);
  /** Set by writeDirect: frames it wrote. */
  private directWrote = 0;
  private planSrc: Uint8Array | null = null;
  private planSrc32: Int32Array | null = null;
  private planDst: Uint8Array | null = null;
  private planDst32: Int32Array | null = null;
  /**
   * `planDst.byteOffset`, kept from the memory table's `slabByteOffset`: the `byteOffset` getter
   * is a generic property load in optimised code (an IC call per frame: 4 % of the back-end's
   * samples at host→guest 1518 B).
   */
  private planDstBase = 0;
  private running = true;
  /** True while frames wait for buffers and a kick was requested. */
  waiting = false;
  /** Busy-poll policy (null: kick-driven only). */
  private readonly poller: AdaptivePoller | null;
  private readonly buffersReady: () => boolean;
  /** For the other queues of the poll group: held frames and guest buffers for them. */
  private readonly hasWork: () => boolean;

  constructor(
    pair: number, ctx: QueueContext, private readonly settings: RxSettings,
    private readonly counters: PortCounters, private readonly filter: RxFilter,
    holdCapacity: number, slotSize: number, private readonly onSpace: (pair: number) => void,
  ) {
    this.pair = pair;
    this.ctx = ctx;
    this.queue = ctx.queue;
    this.chain = new DescriptorChain(Math.min(ctx.queue.size, 1024));
    this.hold = new FrameRing(holdCapacity, slotSize);
    this.heads = new Uint16Array(ctx.queue.size);
    this.lens = new Uint32Array(ctx.queue.size);
    this.poller = settings.pollUs > 0 ? new AdaptivePoller({ maxUs: settings.pollUs, yieldMs: settings.pollYieldMs, group: settings.pollGroup }) : null;
    const q = ctx.queue;
    this.buffersReady = () => q.availableCount() !== 0;
    this.hasWork = () => this.running && this.hold.size > 0 && !q.isBroken && q.availableCount() !== 0;
    this.poller?.join(this.hasWork);
    // RX buffers are consumed when frames arrive, not on kicks: only ask for kicks while waiting.
    this.queue.disableNotify();
  }

  get isRunning(): boolean {
    return this.running && !this.queue.isBroken;
  }

  /** Frames waiting for guest buffers. */
  get held(): number {
    return this.hold.size;
  }

  /** True when frames can be written now without queueing behind held ones. */
  get ready(): boolean {
    return this.running && this.hold.size === 0 && !this.queue.isBroken;
  }

  /** See NetPortSink.deliver. */
  deliver(batch: FrameBatch, indices: Uint16Array | null, count: number): void {
    if (!this.isRunning) {
      this.counters.rxDropped += count;
      return;
    }
    let i = 0;
    let wrote = 0;
    // A delivery while not waiting for buffers starts a new run (the poller's yield clock).
    if (this.poller !== null && !this.waiting) this.poller.woke();
    // Keep order: new frames queue behind held ones.
    if (this.hold.size > 0) wrote += this.flushHold();
    if (this.hold.size === 0) {
      const data = batch.data, data32 = batch.data32, stride = batch.stride, lengths = batch.lengths;
      const q = this.queue;
      while (i < count) {
        if (this.settings.hdrLen === VIRTIO_NET_HDR_V1_SIZE && q.memory.dirtyLog === null) {
          i = this.writeDirect(data, data32, stride, lengths, indices, i, count);
          wrote += this.directWrote;
          if (q.isBroken) {
            this.fail();
            this.counters.rxDropped += count - i;
            i = count;
            break;
          }
          if (i === count) break;
        }
        // Frame i needs the general path: a chain of another shape, a buffer it does not fit,
        // no buffers at all, or a dirty log.
        const slot = indices === null ? i : indices[i];
        const r = this.writeFrame(data, data32, slot * stride, lengths[slot]);
        if (r === NO_BUFFERS) break;
        if (r === BROKEN) { this.counters.rxDropped += count - i; i = count; break; }
        if (r === WROTE) wrote++;
        i++;
      }
      this.flushCopies();
    }
    for (; i < count; i++) {
      const slot = indices === null ? i : indices[i];
      if (batch.lengths[slot] < VIRTIO_NET_HDR_V1_SIZE + ETH_HLEN) { this.counters.rxDropped++; continue; } // runt
      if (this.hold.pushFrom(batch, slot)) this.counters.rxHeld++;
      else this.counters.rxDropped++;
    }
    this.finish(wrote);
  }

  /** The guest added RX buffers (kick). */
  onKick(): void {
    this.counters.rxKicks++;
    if (!this.running) return;
    if (this.poller !== null) this.poller.woke();
    const wrote = this.flushHold();
    this.finish(wrote);
    if (this.hold.size === 0) this.onSpace(this.pair);
  }

  async stop(): Promise<void> {
    this.running = false;
    this.poller?.leave();
    // Always empty between calls; cleared anyway so no stale plan can outlive the queue.
    this.planCount = 0;
    this.counters.rxDropped += this.hold.size;
    this.hold.clear();
  }

  /** Writes held frames while buffers last; returns frames written. */
  private flushHold(): number {
    let wrote = 0;
    const hold = this.hold;
    while (hold.size > 0) {
      const r = this.writeFrame(hold.data, hold.data32, hold.frontOffset, hold.frontLength);
      if (r === NO_BUFFERS) break;
      if (r === BROKEN) {
        this.counters.rxDropped += hold.size;
        hold.clear();
        break;
      }
      if (r === WROTE) wrote++;
      hold.shift();
    }
    // Shifted slots may be refilled by the next push: their copies must be done first.
    this.flushCopies();
    return wrote;
  }

  /**
   * Does the deferred payload copies, one native call for a run of them, then the deferred
   * header stores. Fast-path frames are queued here instead of copied one `set()`/word loop at
   * a time: one call per burst.
   *
   * Why the headers wait: the guest's buffer lines were last touched by the guest's CPU, so
   * the first store into each is a cache miss that has to fetch the line from the other core.
   * Done from JS frame by frame, those misses serialise (the three header stores were a third
   * of the back-end's samples at 64 B); the native copy takes them for the whole burst at
   * once, after which the header stores hit. Measured on the system bench (host→guest 64 B,
   * kick-driven, 3 runs each, back-end CPU per frame): 116–123 → 84–86 ns.
   */
  private flushCopies(): void {
    const n = this.planCount;
    if (n === 0) return;
    this.planCount = 0;
    const src = this.planSrc!, dst = this.planDst!, plan = this.plan;
    const dst32 = this.planDst32!;
    if (n >= NATIVE_COPY_MIN) {
      // The guest's buffers: prefetched for writing a frame ahead (see copyRanges).
      copyRanges(dst, src, plan, n, true);
    } else {
      const src32 = this.planSrc32!;
      for (let k = 0; k < n * 3; k += 3) copyFast(dst, dst32, plan[k + 1], src, src32, plan[k], plan[k + 2]);
    }
    const at = this.planHdrAt, hdr = this.planHdr;
    for (let j = 0; j < n; j++) {
      const i = at[j];
      if (i < 0) continue;
      const w = j * 3;
      dst32[i] = hdr[w];
      dst32[i + 1] = hdr[w + 1];
      dst32[i + 2] = hdr[w + 2];
    }
  }

  /** Publishes, notifies, and arms a kick if frames still wait. */
  private finish(wrote: number): void {
    const q = this.queue;
    if (wrote > 0 || q.usedIdx !== q.publishedUsedIdx) {
      q.publishUsed();
      if (q.shouldNotify()) {
        this.counters.notifies++;
        this.ctx.notify();
      } else {
        this.counters.notifiesSuppressed++;
      }
    }
    const poller = this.poller;
    let missed = false;
    if (poller !== null) {
      // Frames wait and the guest is refilling: spin for its buffers instead of a kick + wake-up.
      while (this.hold.size > 0 && this.isRunning && poller.mayContinue()) {
        const spun = poller.counters.spinUs;
        const hit = poller.spin(this.buffersReady);
        this.counters.pollSpinUs += poller.counters.spinUs - spun;
        if (!hit) {
          // A yield (another queue had work) is not a miss: the window stays as it is.
          if (!poller.yielded) { this.counters.pollMisses++; missed = true; }
          break;
        }
        this.counters.pollHits++;
        if (this.flushHold() === 0) break;
        q.publishUsed();
        if (q.shouldNotify()) { this.counters.notifies++; this.ctx.notify(); } else this.counters.notifiesSuppressed++;
      }
    }
    if (this.hold.size > 0 && this.isRunning) {
      // Ask for a kick, then re-check: buffers posted between our last pop and enableNotify()
      // come without a kick (virtio 1.2 §2.7.10 race). Each round either writes frames or ends.
      while (q.enableNotify() && this.hold.size > 0 && !q.isBroken) {
        const more = this.flushHold();
        if (more === 0) break;
        q.publishUsed();
        if (q.shouldNotify()) { this.counters.notifies++; this.ctx.notify(); }
      }
      this.waiting = this.hold.size > 0;
      if (!this.waiting) q.disableNotify();
      else if (poller !== null) poller.sleeping(missed);
    } else if (this.waiting) {
      this.waiting = false;
      q.disableNotify();
    }
  }

  /**
   * Writes one frame (`len` bytes at `data[off]`: 12-byte header + Ethernet frame) into one or
   * more RX chains. Nothing is pushed to the used ring unless the whole frame fits, so running
   * out of buffers mid-frame just rewinds the avail index.
   */
  private writeFrame(data: Uint8Array, data32: Int32Array, off: number, len: number): number {
    const s = this.settings;
    const q = this.queue;
    const chain = this.chain;
    const payload = len - VIRTIO_NET_HDR_V1_SIZE;
    const hdrLen = s.hdrLen;
    if (payload < ETH_HLEN) {
      this.counters.rxDropped++;
      return DROPPED;
    }
    if (!this.filter.accept(data, off + VIRTIO_NET_HDR_V1_SIZE)) {
      this.filter.filtered++;
      return DROPPED;
    }
    const start = q.nextAvail; // to give the chains back if the frame does not fit (mergeable)
    let r = q.pop(chain);
    if (r === 0) return NO_BUFFERS;
    if (r < 0) return this.fail();
    const h = this.scratch;
    const h32 = this.scratch32;

    // Fast path, either mode: one writable descriptor that holds header + frame (what Linux and
    // DPDK post). Two direct copies into the slab, no segment walk, num_buffers is already 1.
    // Measured on the system bench (testpmd rxonly guest, kick-driven, back-end CPU per frame,
    // median of interleaved runs): 64 B 334 → 229 ns, 1518 B 689 → 553 ns.
    const need = hdrLen + payload;
    if (chain.readableSegs === 0 && chain.writableSegs === 1 && chain.segLen[0] >= need) {
      const mem = chain.memory!;
      const slab = chain.segSlab[0];
      const base = chain.segOffset[0];
      if (mem.dirtyLog !== null) {
        this.buildHeader(data, off);
        // Logged pages are marked after they are written (a marked page the front-end copies
        // before our write would be sent stale), so no deferral while migrating.
        const dst = mem.slabs[slab];
        const dst32 = slabWords(mem)[slab];
        copyFast(dst, dst32, base, h, h32, 0, hdrLen);
        copyFast(dst, dst32, base + hdrLen, data, data32, off + VIRTIO_NET_HDR_V1_SIZE, payload);
        mem.markDirty(chain.segGpa[0], need);
      } else {
        this.planFrame(data, data32, off, payload, mem, slab, base);
      }
      q.pushUsed(chain.head, need);
      this.counters.rxFrames++;
      this.counters.rxBytes += payload;
      return WROTE;
    }

    this.buildHeader(data, off);
    if (!s.mergeable) {
      // virtio 1.2 §5.1.6.3.1: without MRG_RXBUF the whole packet goes in one chain.
      if (chain.writableBytes < need) {
        q.pushUsed(chain.head, 0);
        this.counters.rxTooBig++;
        this.counters.rxDropped++;
        return DROPPED;
      }
      copyToChain(chain, 0, h, 0, hdrLen, h32);
      copyToChain(chain, hdrLen, data, off + VIRTIO_NET_HDR_V1_SIZE, payload, data32);
      q.pushUsed(chain.head, need);
      this.counters.rxFrames++;
      this.counters.rxBytes += payload;
      return WROTE;
    }

    // Mergeable: chain after chain until the frame is in. virtio 1.2 §5.1.6.3.1: each buffer
    // is at least the header size; a smaller first buffer cannot take the frame.
    if (chain.writableBytes < hdrLen) {
      q.pushUsed(chain.head, 0);
      this.counters.rxDropped++;
      return DROPPED;
    }
    const firstHead = chain.head;
    this.prefix.capture(chain, hdrLen);
    copyToChain(chain, 0, h, 0, hdrLen, h32);
    let done = copyToChain(chain, hdrLen, data, off + VIRTIO_NET_HDR_V1_SIZE, payload, data32);
    const heads = this.heads;
    const lens = this.lens;
    heads[0] = firstHead;
    lens[0] = hdrLen + done;
    let n = 1;
    while (done < payload) {
      if (n === q.size) {
        // Every buffer of the ring could not hold it: it never will. Drop, keep the buffers.
        this.giveBack(start, n);
        this.counters.rxTooBig++;
        this.counters.rxDropped++;
        return DROPPED;
      }
      r = q.pop(chain);
      if (r === 0) {
        this.giveBack(start, n);
        return NO_BUFFERS;
      }
      if (r < 0) return this.fail();
      const c = copyToChain(chain, 0, data, off + VIRTIO_NET_HDR_V1_SIZE + done, payload - done, data32);
      heads[n] = chain.head;
      lens[n] = c;
      done += c;
      n++;
    }
    if (n > 1) {
      this.prefix.writeByte(chain, HDR_NUM_BUFFERS, n & 0xff);
      this.prefix.writeByte(chain, HDR_NUM_BUFFERS + 1, n >>> 8);
    }
    for (let k = 0; k < n; k++) q.pushUsed(heads[k], lens[k]);
    this.counters.rxFrames++;
    this.counters.rxBytes += payload;
    return WROTE;
  }


  /**
   * The direct path: frames `i…` into chains popped by `popDirect` (one writable descriptor,
   * header + frame fit: what Linux and DPDK post), a run of chains per call and no
   * DescriptorChain — the per-frame cost that is left is the bookkeeping below. Copies and
   * headers are deferred as in writeFrame's fast path. Returns the next frame index; stops
   * when a frame needs the general path (chains not consumed are given back to the ring).
   * Only with the 12-byte header and no dirty log (checked by the caller).
   */
  private writeDirect(data: Uint8Array, data32: Int32Array, stride: number, lengths: Uint32Array,
    indices: Uint16Array | null, i: number, count: number): number {
    const q = this.queue;
    const out = this.direct;
    const mem = q.memory;
    const filter = this.filter;
    const counters = this.counters;
    this.directWrote = 0;
    let wrote = 0;
    let bytes = 0;
    for (;;) {
      const n = q.popDirect(out, Math.min(count - i, DIRECT_BURST), true);
      if (n <= 0) break; // < 0: the queue broke (the caller sees q.isBroken)
      let b = 0;
      while (b < n && i < count) {
        const slot = indices === null ? i : indices[i];
        const off = slot * stride;
        const payload = lengths[slot] - VIRTIO_NET_HDR_V1_SIZE;
        if (payload < ETH_HLEN) { // a back-end's runt: no Ethernet header to deliver
          counters.rxDropped++;
          i++;
          continue;
        }
        if (!filter.accept(data, off + VIRTIO_NET_HDR_V1_SIZE)) {
          filter.filtered++;
          i++;
          continue;
        }
        const o = b << 2;
        const need = VIRTIO_NET_HDR_V1_SIZE + payload;
        if (out[o + 3] < need) break; // too small for the whole frame: writeFrame decides
        this.planFrame(data, data32, off, payload, mem, out[o + 1], out[o + 2]);
        q.pushUsed(out[o], need);
        wrote++;
        bytes += payload;
        b++;
        i++;
      }
      if (b < n) {
        // Give back the chains not used (on packed rings too: they came from this popDirect).
        q.unpop(n - b);
        break;
      }
      if (i === count) break;
    }
    counters.rxFrames += wrote;
    counters.rxBytes += bytes;
    this.directWrote = wrote;
    return i;
  }

  /**
   * Queues one frame for the buffer at `base` in slab `slab` of `mem` (it fits): its payload
   * copy in the plan and, in the usual case (12-byte header, buffer 4-aligned: DPDK and Linux
   * buffers are), its header as three words stored after the copy (see flushCopies) — built
   * straight from the source slot (slots are 8-aligned), num_buffers (bytes 10–11,
   * little-endian) = 1. Otherwise the header is written now. Not while dirty logging.
   */
  private planFrame(data: Uint8Array, data32: Int32Array, off: number, payload: number, mem: GuestMemory, slab: number, base: number): void {
    const hdrLen = this.settings.hdrLen;
    const dst = mem.slabs[slab];
    if (this.planCount === COPY_PLAN_MAX || this.planSrc !== data || this.planDst !== dst) {
      this.flushCopies();
      this.planSrc = data;
      this.planSrc32 = data32;
      this.planDst = dst;
      this.planDst32 = slabWords(mem)[slab];
      this.planDstBase = mem.slabByteOffset[slab];
    }
    const j = this.planCount;
    const k = j * 3;
    const plan = this.plan;
    plan[k] = off + VIRTIO_NET_HDR_V1_SIZE;
    plan[k + 1] = base + hdrLen;
    plan[k + 2] = payload;
    const da = this.planDstBase + base;
    const clear = this.settings.clearHeader;
    if (hdrLen === VIRTIO_NET_HDR_V1_SIZE && (da & 3) === 0 && da < TWO_32 && (clear || ((off & 3) === 0 && off < TWO_32))) {
      this.planHdrAt[j] = da >>> 2;
      const ph = this.planHdr;
      if (clear) {
        ph[k] = 0;
        ph[k + 1] = 0;
        ph[k + 2] = 0x10000;
      } else {
        const si = off >>> 2;
        ph[k] = data32[si];
        ph[k + 1] = data32[si + 1];
        ph[k + 2] = (data32[si + 2] & 0xffff) | 0x10000;
      }
    } else {
      this.planHdrAt[j] = -1;
      this.buildHeader(data, off);
      copyFast(dst, this.planDst32!, base, this.scratch, this.scratch32, 0, hdrLen);
    }
    this.planCount = j + 1;
  }

  /** The frame's 12-byte header into `scratch`: copied or cleared, num_buffers = 1. */
  private buildHeader(data: Uint8Array, off: number): void {
    const h = this.scratch;
    if (this.settings.clearHeader) {
      const h32 = this.scratch32;
      h32[0] = 0; // three word stores instead of fill(): no builtin call per frame
      h32[1] = 0;
      h32[2] = 0;
    } else {
      for (let k = 0; k < VIRTIO_NET_HDR_V1_SIZE; k++) h[k] = data[off + k];
    }
    h[HDR_NUM_BUFFERS] = 1;
    h[HDR_NUM_BUFFERS + 1] = 0;
  }

  /**
   * Returns the `n` chains popped since position `start` to the ring. Split rings: `unpop`,
   * which keeps the notification state (setting `nextAvail` would force the next signal);
   * packed rings go back by position.
   */
  private giveBack(start: number, n: number): void {
    const q = this.queue;
    if (q.packed) q.nextAvail = start;
    else q.unpop(n);
  }

  private fail(): number {
    const err = this.queue.error;
    this.ctx.broken(`rx queue ${this.ctx.index}: ${err ? err.message : 'fault'}`);
    return BROKEN;
  }
}
