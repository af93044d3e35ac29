/**
 * EchoDevice: a trivial {@link VirtioDevice} for tests — for every chain it copies the
 * device-readable bytes into the device-writable buffers and returns the chain with the number
 * of bytes written. It exists to prove the device interface is enough for a real device:
 * notification suppression, asynchronous completion, stop() draining, inflight tracking and
 * config space.
 * @module
 */
import { ChainWalker, DescriptorChain } from '@vhost-ts/virtqueue';
import { bit, VHOST_USER_PROTOCOL_F_CONFIG, VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD, VHOST_USER_PROTOCOL_F_MQ,
  VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC } from '../constants.js';
import type { QueueContext, QueueHandler, VirtioDevice } from '../device.js';

/** Options of {@link EchoDevice}. */
export interface EchoDeviceOptions {
  numQueues?: number;
  maxQueueSize?: number;
  /** Extra feature bits offered (VERSION_1, EVENT_IDX and INDIRECT_DESC are always offered). */
  features?: bigint;
  /** Protocol bits asked for; default CONFIG | MQ | INFLIGHT_SHMFD. */
  protocolFeatures?: bigint;
  /** Initial config space (default 16 bytes 0..15); writable unless `readOnlyConfig`. */
  config?: Uint8Array;
  readOnlyConfig?: boolean;
  /** Complete each request after this many ms instead of at once. */
  delayMs?: number;
  /** Keep popped requests until {@link EchoDevice.releaseAll}; stop() then abandons them (a crash). */
  hold?: boolean;
  /**
   * Implement the optional `sendRarp` / `setMtu` (recorded in `rarps` / `mtus`, the last 16 of
   * each); `setMtu` accepts up to `maxMtu` (default 9000). Their protocol bits still have to be
   * asked for in `protocolFeatures`.
   */
  netRequests?: { maxMtu?: number };
}

/** Records kept of sendRarp / setMtu calls. */
const NET_RECORDS = 16;

const SCRATCH = 64 * 1024;

/** Per-queue counters. */
export interface EchoQueueStats {
  kicks: number;
  requests: number;
  bytes: number;
  notifies: number;
  resubmitted: number;
}

class EchoQueue implements QueueHandler {
  readonly stats: EchoQueueStats = { kicks: 0, requests: 0, bytes: 0, notifies: 0, resubmitted: 0 };
  private readonly chain = new DescriptorChain();
  private readonly scratch = new Uint8Array(SCRATCH);
  private stopping = false;
  private pending = 0;
  private drained: (() => void) | null = null;
  readonly held: { head: number; len: number }[] = [];

  constructor(private readonly ctx: QueueContext, private readonly dev: EchoDevice) {
    const infl = ctx.inflight;
    if (infl !== null && infl.resubmit.length > 0) {
      // Requests the previous back-end popped but never completed: walk them from their heads
      // (packed rings: from the descriptors the area saved).
      const walker = new ChainWalker(ctx.memory, ctx.queue.ringViews.desc, ctx.queue.size, { indirect: ctx.queue.indirect });
      for (const head of infl.resubmit) {
        const r = infl.chainAt !== undefined ? infl.chainAt(head, this.chain) : walker.walk(head, this.chain);
        if (r !== 0) {
          ctx.broken(`resubmitted head ${head} is not a valid chain`);
          return;
        }
        this.stats.resubmitted++;
        this.complete(head, this.echo());
      }
      this.flush();
    }
  }

  private echo(): number {
    const c = this.chain;
    let done = 0;
    const total = Math.min(c.readableBytes, c.writableBytes);
    while (done < total) {
      const n = c.copyFromReadable(done, this.scratch.subarray(0, Math.min(SCRATCH, total - done)));
      c.copyToWritable(done, this.scratch.subarray(0, n));
      done += n;
    }
    this.stats.bytes += done;
    return done;
  }

  private complete(head: number, len: number): void {
    this.ctx.queue.pushUsed(head, len);
    this.ctx.inflight?.end(head);
  }

  private flush(): void {
    const q = this.ctx.queue;
    q.publishUsed();
    this.ctx.inflight?.commit();
    if (q.shouldNotify()) {
      this.stats.notifies++;
      this.ctx.notify();
    }
  }

  onKick(): void {
    this.stats.kicks++;
    if (this.stopping) return;
    const q = this.ctx.queue;
    for (;;) {
      q.disableNotify();
      let r: number;
      let completedNow = 0;
      while ((r = q.pop(this.chain)) === 1) {
        const head = this.chain.head;
        this.stats.requests++;
        this.ctx.inflight?.begin(head);
        const len = this.echo();
        if (this.dev.opts.hold) {
          this.held.push({ head, len });
        } else if (this.dev.opts.delayMs !== undefined) {
          this.pending++;
          setTimeout(() => this.finishLater(head, len), this.dev.opts.delayMs);
        } else {
          this.complete(head, len);
          completedNow++;
        }
      }
      if (r < 0) {
        this.ctx.broken(`pop failed: ${q.error?.message ?? r}`);
        return;
      }
      if (completedNow > 0) this.flush();
      if (!q.enableNotify()) return;
    }
  }

  private finishLater(head: number, len: number): void {
    this.pending--;
    this.complete(head, len);
    this.flush();
    if (this.pending === 0 && this.drained !== null) this.drained();
  }

  /** Completes every held request. */
  releaseAll(): void {
    for (const h of this.held.splice(0)) this.complete(h.head, h.len);
    this.flush();
  }

  stop(): Promise<void> {
    this.stopping = true;
    this.dev.stopped++;
    if (this.dev.opts.hold) this.held.length = 0; // abandoned, as if the process died
    if (this.pending === 0) return Promise.resolve();
    return new Promise((resolve) => { this.drained = resolve; });
  }
}

/** The echo test device. */
export class EchoDevice implements VirtioDevice {
  readonly deviceType = 0x7e; // not a registered virtio id; tests only
  readonly numQueues: number;
  readonly maxQueueSize: number;
  readonly features: bigint;
  readonly protocolFeatures: bigint;
  readonly opts: EchoDeviceOptions;
  readonly config: Uint8Array;
  onConfigChanged: (() => void) | null = null;
  /** Features from the last setFeatures(). */
  acked = 0n;
  /** Running queues by index. */
  readonly queues = new Map<number, EchoQueue>();
  resets = 0;
  stopped = 0;
  writeConfig?: (offset: number, data: Uint8Array) => void;
  sendRarp?: (mac: Uint8Array) => void;
  setMtu?: (mtu: number) => boolean;
  /** MACs given to sendRarp (with `netRequests`), oldest first. */
  readonly rarps: Uint8Array[] = [];
  /** MTUs given to setMtu (with `netRequests`), oldest first. */
  readonly mtus: number[] = [];

  constructor(opts: EchoDeviceOptions = {}) {
    this.opts = opts;
    this.numQueues = opts.numQueues ?? 2;
    this.maxQueueSize = opts.maxQueueSize ?? 1024;
    this.features = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_RING_F_INDIRECT_DESC) | (opts.features ?? 0n);
    this.protocolFeatures = opts.protocolFeatures
      ?? (bit(VHOST_USER_PROTOCOL_F_CONFIG) | bit(VHOST_USER_PROTOCOL_F_MQ) | bit(VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD));
    this.config = opts.config ?? Uint8Array.from({ length: 16 }, (_, i) => i);
    if (opts.netRequests !== undefined) {
      const maxMtu = opts.netRequests.maxMtu ?? 9000;
      const keep = <T>(list: T[], v: T) => {
        if (list.push(v) > NET_RECORDS) list.shift();
      };
      this.sendRarp = (mac) => keep(this.rarps, mac.slice());
      this.setMtu = (mtu) => {
        keep(this.mtus, mtu);
        return mtu <= maxMtu;
      };
    }
    if (!opts.readOnlyConfig) {
      this.writeConfig = (offset, data) => {
        if (offset + data.length > this.config.length) throw new RangeError('write beyond config space');
        this.config.set(data, offset);
      };
    }
  }

  setFeatures(acked: bigint): void {
    this.acked = acked;
  }

  readConfig(offset: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    if (offset < this.config.length) out.set(this.config.subarray(offset, Math.min(this.config.length, offset + length)));
    return out;
  }

  /** Changes config bytes and raises CONFIG_CHANGE_MSG. */
  changeConfig(offset: number, data: Uint8Array): void {
    this.config.set(data, offset);
    this.onConfigChanged?.();
  }

  startQueue(index: number, ctx: QueueContext): QueueHandler {
    const q = new EchoQueue(ctx, this);
    this.queues.set(index, q);
    return q;
  }

  reset(): void {
    this.resets++;
    this.acked = 0n;
    this.queues.clear();
  }
}
