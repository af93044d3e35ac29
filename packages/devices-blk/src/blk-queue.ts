/**
 * BlkQueue — one virtio-blk request queue: pops chains, parses them into preallocated slots,
 * submits everything a kick made available as one engine batch, and publishes completions.
 *
 * ```
 *  onKick ─▶ disableNotify ─▶ pop × n ─▶ parse ─┬─ I/O ─────▶ batch ─▶ engine.submit (once)
 *                                              └─ decided ──▶ status now (IOERR/UNSUPP/GET_ID)
 *           publishUsed + notify? ◀── completionsDone ◀── complete(req) × m ◀── engine
 *           enableNotify: more waiting? → go again
 * ```
 * Per-queue state is self-contained (slots, chain, parser, engine) so a queue could run in a
 * worker. No allocation per request: slots, their typed arrays and the batch array are built
 * once per queue start.
 * @module
 */
import { channel } from 'node:diagnostics_channel';
import { ChainWalker, DescriptorChain } from '@vhost-ts/virtqueue';
import { AdaptivePoller, type InflightTracker, type PollGroup, type QueueContext, type QueueHandler } from '@vhost-ts/vhost-user';
import type { BlkQueueCounters } from './blk-counters.js';
import {
  BLK_OP_DISCARD, BLK_OP_FLUSH, BLK_OP_GET_ID, BLK_OP_NONE, BLK_OP_READ, BLK_OP_WRITE, BLK_OP_WRITE_ZEROES,
  BlkRequest, BlkRequestParser, PARSE_NO_STATUS, type BlkLimits,
} from './blk-request.js';
import { VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP } from './constants.js';
import type { BlockCompletionSink, BlockEngine, BlockImage } from './engine.js';
import type { Logger } from './logger.js';

/** What a queue needs from its device. */
export interface BlkQueueOptions {
  image: BlockImage;
  limits: BlkLimits;
  /** GET_ID answer (20 bytes, NUL-padded). */
  serial: Uint8Array;
  /** Data segments a request may have. */
  segCapacity: number;
  /** Ranges a discard / write-zeroes request may have. */
  rangeCapacity: number;
  writeback: boolean;
  counters: BlkQueueCounters;
  log: Logger;
  /**
   * Longest busy-poll window after a batch, in µs (0 = never poll: sleep on the kick eventfd
   * at once). See {@link AdaptivePoller}.
   */
  pollUs?: number;
  /** The device's other queues, which a polling queue takes turns with (see PollGroup). */
  pollGroup?: PollGroup;
}

/**
 * diagnostics_channel on which a queue publishes `{ queue, reason }` when the guest broke it
 * (a malformed chain or a queue fault).
 */
export const BLK_BROKEN_CHANNEL = 'vhost-ts:blk:broken';
const brokenChannel = channel(BLK_BROKEN_CHANNEL);

/** Rings' worth of chains one process() call pops before yielding to the event loop. */
const RINGS_PER_CALL = 4;
/** Available requests whose headers one pass touches before popping (see touchAvailable). */
const TOUCH_MAX = 64;

/** Optional capability of a queue to re-walk a head listed by the inflight area. */
interface ChainAtCapable {
  chainAt(head: number, chain: DescriptorChain): number;
}

/** The handler of one started request queue. */
export class BlkQueue implements QueueHandler, BlockCompletionSink {
  readonly engine: BlockEngine;
  private readonly ctx: QueueContext;
  private readonly counters: BlkQueueCounters;
  private readonly log: Logger;
  private readonly serial: Uint8Array;
  private readonly parser: BlkRequestParser;
  private readonly chain: DescriptorChain;
  private readonly slots: BlkRequest[];
  private readonly free: Int32Array;
  private freeCount: number;
  private readonly batch: BlkRequest[];
  /** Used elements pushed and not yet published. */
  private pushed: number;
  private processing: boolean;
  private again: boolean;
  private starved: boolean;
  private stopped: boolean;
  private broken: boolean;
  private stopResolve: (() => void) | null;
  private stopPromise: Promise<void> | null;
  /** Busy-poll policy, or null when polling is off. */
  readonly poller: AdaptivePoller | null;
  /** Requests popped or completed since the last spin/sleep decision. */
  private worked: boolean;
  /** Spin condition (built once: no closure per batch). */
  private readonly ready: () => boolean;
  /** For the other queues of the poll group: this one has requests or completions to handle. */
  private readonly hasWork: () => boolean;
  /** A setImmediate for `resume` is pending. */
  private resumeQueued = false;
  /**
   * The last process() yielded and is due on a later turn. Cleared by any process() run, so a
   * resume that finds the queue already handled (e.g. gone to sleep after an engine's
   * completions) does nothing — a second wake-up right after a sleep would count, for the
   * poller, as a request that arrived at once.
   */
  private resumeWanted = false;
  private readonly resume = (): void => {
    this.resumeQueued = false;
    if (this.resumeWanted && !this.stopped && !this.broken) this.process();
  };

  constructor(ctx: QueueContext, opts: BlkQueueOptions) {
    this.ctx = ctx;
    this.counters = opts.counters;
    this.log = opts.log;
    this.serial = opts.serial;
    this.parser = new BlkRequestParser(opts.limits);
    this.chain = new DescriptorChain();
    const n = ctx.queue.size;
    this.slots = [];
    this.free = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      this.slots.push(new BlkRequest(i, opts.segCapacity, opts.rangeCapacity));
      this.free[i] = n - 1 - i;
    }
    this.freeCount = n;
    this.batch = this.slots.slice();
    this.pushed = 0;
    this.processing = false;
    this.again = false;
    this.starved = false;
    this.stopped = false;
    this.broken = false;
    this.stopResolve = null;
    this.stopPromise = null;
    const pollUs = opts.pollUs ?? 0;
    this.poller = pollUs > 0 ? new AdaptivePoller({ maxUs: pollUs, group: opts.pollGroup }) : null;
    this.worked = false;
    this.engine = opts.image.createEngine({
      queueIndex: ctx.index, slots: n, segCapacity: opts.segCapacity, rangeCapacity: opts.rangeCapacity, sink: this,
      eventIdx: ctx.queue.eventIdx,
    });
    this.engine.setWriteback(opts.writeback);
    const queue = ctx.queue, engine = this.engine;
    this.ready = engine.poll === undefined
      ? () => queue.availableCount() !== 0
      : () => queue.availableCount() !== 0 || (engine.inflight > 0 && engine.poll!());
    // Side-effect free (another queue calls it from its own spin): requests count only when a
    // slot is free for them; completions are looked at, not collected.
    this.hasWork = engine.hasCompletions === undefined
      ? () => !this.stopped && !this.broken && this.freeCount > 0 && queue.availableCount() !== 0
      : () => !this.stopped && !this.broken
        && ((this.freeCount > 0 && queue.availableCount() !== 0) || engine.hasCompletions!());
    this.poller?.join(this.hasWork);
    this.resubmitInflight();
  }

  /** Requests popped and not yet completed. */
  get inflight(): number {
    return this.slots.length - this.freeCount;
  }

  /** Switches the engine between writeback and writethrough (CONFIG_WCE). */
  setWriteback(writeback: boolean): void {
    this.engine.setWriteback(writeback);
  }

  onKick(): void {
    this.counters.kicks++;
    this.process();
  }

  /**
   * Heads left in flight by a previous back-end (INFLIGHT_SHMFD) are executed again before
   * anything new is popped (vhost-user.rst "Inflight I/O tracking").
   */
  private resubmitInflight(): void {
    const tracker = this.ctx.inflight;
    if (tracker === null || tracker.resubmit.length === 0) return;
    const queue = this.ctx.queue;
    const q = queue as unknown as Partial<ChainAtCapable>;
    // Prefer the queue's own re-walk when it has one; otherwise walk the descriptor table with
    // a walker of the same options (built once, only on a restart with pending heads).
    let walk: (head: number, chain: DescriptorChain) => number;
    if (tracker.chainAt !== undefined) {
      // Packed rings: the area keeps copies of the descriptors (the ring slots may already
      // carry used descriptors of other chains).
      walk = (head, chain) => tracker.chainAt!(head, chain);
    } else if (typeof q.chainAt === 'function') {
      const chainAt = q.chainAt;
      walk = (head, chain) => chainAt.call(queue, head, chain);
    } else {
      const walker = new ChainWalker(queue.memory, queue.ringViews.desc, queue.size, { indirect: queue.indirect });
      walk = (head, chain) => walker.walk(head, chain);
    }
    this.log.info(`queue ${this.ctx.index}: resubmitting ${tracker.resubmit.length} inflight request(s)`);
    // As in process(): completions the engine reaps inside this batch are published, but must
    // not start a pass — it would pop new requests into `batch` while the engine still reads it.
    this.processing = true;
    try {
      this.resubmitHeads(tracker, walk);
    } finally {
      this.processing = false;
    }
    // New requests wait for the kick the session gives every started ring.
  }

  private resubmitHeads(tracker: InflightTracker, walk: (head: number, chain: DescriptorChain) => number): void {
    const queue = this.ctx.queue;
    let count = 0;
    for (const head of tracker.resubmit) {
      if (this.freeCount === 0) break;
      // The list comes from the front-end's shared area: check the index before using it.
      const r = head >= 0 && head < queue.size ? walk(head, this.chain) : -1;
      if (r < 0) { this.counters.badChains++; this.breakDevice(`inflight head ${head}: chain fault ${r}`); break; }
      this.chain.head = head;
      const req = this.takeSlot();
      tracker.begin(head);
      if (this.prepare(req)) this.batch[count++] = req;
      if (this.broken) break;
    }
    this.engine.submit(this.batch, count);
    this.flushUsed();
  }

  /**
   * Pops what is available (at most a ring's worth per pass and RINGS_PER_CALL rings per call,
   * then it resumes on a later turn), submits each pass as one batch, publishes immediate
   * answers. Notifications stay off while there is work: after a pass that popped requests,
   * requests already waiting are taken at once. With a poller, a pass that did work spins on the
   * ring (and the engine's completions) before re-enabling notifications, so a busy driver need
   * not kick and we need not wake up; a busy run that used its budget (AdaptivePoller.yieldMs)
   * gives the event loop a turn and goes on after it, still without notifications.
   */
  private process(): void {
    if (this.processing) { this.again = true; return; }
    this.processing = true;
    this.resumeWanted = false;
    const q = this.ctx.queue;
    const tracker = this.ctx.inflight;
    const poller = this.poller;
    let missed = false;
    let sleeping = false;
    if (poller !== null) poller.woke();
    // A guest may reuse heads without waiting for the used ring (requests answered at once —
    // UNSUPP, IOERR, GET_ID — free their slot again): at most a ring's worth of chains per pass
    // (so no more used elements than the ring holds wait for a publish) and a few rings per
    // call, then the rest waits for a later turn of the event loop (other queues, the socket).
    const size = q.size;
    let left = RINGS_PER_CALL * size;
    let yielded = false;
    try {
      do {
        this.again = false;
        if (this.stopped || this.broken) break;
        q.disableNotify();
        let count = 0;
        let popped = 0;
        // The driver wrote each header just before publishing it: fetch them all at once.
        q.touchAvailable(Math.min(this.freeCount, TOUCH_MAX));
        while (this.freeCount > 0 && popped < size) {
          const r = q.pop(this.chain);
          if (r === 0) break;
          popped++;
          if (r < 0) {
            this.counters.badChains++;
            this.breakDevice(q.error?.message ?? `queue fault ${r}`);
            break;
          }
          const req = this.takeSlot();
          this.worked = true;
          if (tracker !== null) tracker.begin(this.chain.head);
          if (this.prepare(req)) this.batch[count++] = req;
          if (this.broken) break;
        }
        // Answers given at once go out before the engine adds its completions, so no more used
        // elements than the ring holds ever wait for one publish (a hostile guest reusing heads).
        if (this.pushed > 0) this.flushUsed();
        // One engine call (one native submit) for everything this pass popped.
        this.engine.submit(this.batch, count);
        // After submit: an engine may complete (and free slots) inside it.
        this.starved = this.freeCount === 0;
        this.flushUsed();
        if (this.broken || this.starved || this.stopped) break;
        left -= popped;
        if (left <= 0) {
          // Notifications stay off: the queue comes back on its own.
          yielded = true;
          break;
        }
        if (popped === size) { this.again = true; continue; } // a full pass: more may wait
        const polling = poller !== null && this.worked && !((this.engine.offloaded ?? 0) > 0);
        // Another queue of the device has work: its turn after this pass — also when this queue
        // does not spin (buffered reads on kernel workers) but would go round again.
        if (popped > 0 && poller !== null && poller.shouldYield()) {
          this.counters.pollYields++;
          yielded = true;
          break;
        }
        const yields = polling ? poller.counters.yields : 0;
        const budget = polling && poller.mayContinue();
        if (polling) this.counters.pollYields += poller.counters.yields - yields;
        if (popped > 0) {
          // A busy run that used its budget: the event loop's turn, then on, notifications off.
          // (Only after a pass that popped: an idle pass past its budget goes to sleep.)
          if (polling && !budget) { yielded = true; break; }
          // Requests that came in while the engine ran this pass (a synchronous engine runs
          // inside submit): take them now. Re-enabling notifications first also found them,
          // but asked the driver to kick for each (1m-read-qd4 null: ~18 k kicks in 4 s).
          if (q.availableCount() !== 0) { this.again = true; continue; }
        }
        if (budget) {
          // Notifications stay off while we spin: the driver sees no need to kick.
          this.worked = false;
          const spun = poller.counters.spinUs;
          const hit = poller.spin(this.ready);
          this.counters.pollSpinUs += poller.counters.spinUs - spun;
          if (hit) { this.counters.pollHits++; this.again = true; continue; }
          // Another queue of the device has work: its turn first, then on (notifications off).
          if (poller.yielded) { this.counters.pollYields++; yielded = true; break; }
          this.counters.pollMisses++;
          missed = true;
        }
        // Entries added while notifications were off may not have been kicked: look again.
        if (q.enableNotify()) { this.again = true; continue; }
        sleeping = true;
      } while (this.again);
    } finally {
      this.processing = false;
    }
    if (yielded) {
      this.resumeWanted = true;
      if (!this.resumeQueued) {
        this.resumeQueued = true;
        setImmediate(this.resume);
      }
    }
    if (poller !== null && sleeping) {
      this.worked = false;
      poller.sleeping(missed);
    }
  }

  private takeSlot(): BlkRequest {
    const req = this.slots[this.free[--this.freeCount]];
    req.busy = true;
    return req;
  }

  /**
   * Parses the popped chain into `req`.
   * @returns true when the request goes to the engine; false when it was answered (or dropped).
   */
  private prepare(req: BlkRequest): boolean {
    const r = this.parser.parse(this.chain, req);
    if (r === PARSE_NO_STATUS) {
      // No byte to put a status in: the guest broke the protocol (virtio 1.2 §5.2.6).
      this.counters.badChains++;
      req.busy = false;
      this.free[this.freeCount++] = req.index;
      this.breakDevice(`request head ${this.chain.head} has no writable status byte`);
      return false;
    }
    switch (req.op) {
      case BLK_OP_NONE:
        this.complete(req);
        return false;
      case BLK_OP_GET_ID: {
        const n = Math.min(VIRTIO_BLK_ID_BYTES, req.length);
        req.written = req.copyToData(0, this.serial, n);
        req.markDataDirty();
        req.status = VIRTIO_BLK_S_OK;
        this.complete(req);
        return false;
      }
      default:
        return true;
    }
  }

  private breakDevice(reason: string): void {
    if (this.broken) return;
    this.broken = true;
    this.poller?.leave();
    this.log.warn(`queue ${this.ctx.index}: ${reason}`);
    if (brokenChannel.hasSubscribers) brokenChannel.publish({ queue: this.ctx.index, reason });
    this.ctx.broken(reason);
  }

  /** Sink: writes the status byte and the used element (published by completionsDone/flushUsed). */
  complete(req: BlkRequest): void {
    const mem = req.memory;
    const c = this.counters;
    if (mem !== null) {
      mem.slabs[req.statusSlab][req.statusOffset] = req.status;
      if (mem.dirtyLog !== null) mem.markDirty(req.statusGpa, 1);
    }
    c.requests++;
    this.worked = true;
    if (req.status === VIRTIO_BLK_S_OK) {
      switch (req.op) {
        case BLK_OP_READ: req.markDataDirty(); c.bytesRead += req.written; break;
        case BLK_OP_WRITE: c.bytesWritten += req.length; break;
        case BLK_OP_FLUSH: c.flushes++; break;
        case BLK_OP_DISCARD: case BLK_OP_WRITE_ZEROES: c.discards++; break;
        default: break;
      }
    } else {
      // A failed read may have written part of the buffer; the used length says nothing was.
      req.written = 0;
      if (req.status === VIRTIO_BLK_S_UNSUPP) c.unsupported++;
      else c.errors++;
    }
    // virtio 1.2 §2.7.8.2: the device wrote at least len bytes from the start of the writable
    // part. The status byte is the last writable byte: it extends that prefix only when it
    // directly follows the data written (a good read: data + 1; a write or flush with a 1-byte
    // status: 1). After a failed read, or with a larger status buffer, it does not: len is the
    // data prefix alone (often 0) — never bytes the guest's buffer did not receive.
    const written = req.written;
    this.ctx.queue.pushUsed(req.head, written === req.writableBytes - 1 ? written + 1 : written);
    if (this.ctx.inflight !== null) this.ctx.inflight.end(req.head);
    req.busy = false;
    this.free[this.freeCount++] = req.index;
    this.pushed++;
  }

  /** Sink: end of a completion batch. */
  completionsDone(): void {
    this.flushUsed();
    if (this.stopResolve !== null && this.inflight === 0) {
      this.finishStop();
      return;
    }
    // Starved: slots are free again. Polling: the driver will answer these completions with
    // new requests soon — go and spin for them.
    if ((this.starved || this.poller !== null) && !this.processing && !this.stopped) {
      this.starved = false;
      this.process();
    }
  }

  /** Sink: publish now, inside a batch (never re-enters process()). */
  progress(): void {
    this.flushUsed();
  }

  /** Publishes pushed used elements once and notifies if the driver wants it. */
  private flushUsed(): void {
    if (this.pushed === 0) return;
    this.pushed = 0;
    const q = this.ctx.queue;
    q.publishUsed();
    if (this.ctx.inflight !== null) this.ctx.inflight.commit();
    if (q.shouldNotify()) {
      this.counters.notifications++;
      this.ctx.notify();
    } else {
      this.counters.notificationsSuppressed++;
    }
  }

  stop(): Promise<void> {
    this.stopped = true;
    this.poller?.leave();
    if (this.stopPromise !== null) return this.stopPromise;
    if (this.inflight === 0) {
      this.engine.close();
      this.stopPromise = Promise.resolve();
      return this.stopPromise;
    }
    this.stopPromise = new Promise<void>((resolve) => { this.stopResolve = resolve; });
    return this.stopPromise;
  }

  private finishStop(): void {
    const resolve = this.stopResolve!;
    this.stopResolve = null;
    this.engine.close();
    resolve();
  }
}

/** Encodes a serial for GET_ID: UTF-8, cut to 20 bytes, NUL-padded (virtio 1.2 §5.2.6). */
export function encodeSerial(serial: string): Uint8Array {
  const out = new Uint8Array(VIRTIO_BLK_ID_BYTES);
  const bytes = new TextEncoder().encode(serial);
  out.set(bytes.subarray(0, VIRTIO_BLK_ID_BYTES));
  return out;
}

