/**
 * InstantBlkDevice: a virtio-blk device that completes every request at once with
 * VIRTIO_BLK_S_OK and touches no data — no header parsing, no engine. Served by the same
 * {@link VhostUserBackend} as the real device, it measures the ceiling of the harness itself
 * (TS load generator + vhost-user plumbing + rings): no real back-end can be faster through
 * this front-end. Bench-only; it reports the whole writable length as used, which a real
 * device would only do after filling the data.
 * @module
 */
import type { QueueContext, QueueHandler, VirtioDevice } from '@vhost-ts/vhost-user';
import {
  AdaptivePoller, PollGroup, VHOST_USER_PROTOCOL_F_CONFIG, VHOST_USER_PROTOCOL_F_MQ, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, bit,
} from '@vhost-ts/vhost-user';
import { DescriptorChain } from '@vhost-ts/virtqueue';
import { CFG_BLK_SIZE, CFG_CAPACITY, CFG_NUM_QUEUES, SECTOR_SIZE, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_MQ } from './virtio-blk.js';

/** virtio device id of a block device (virtio 1.2 §5). */
const VIRTIO_ID_BLOCK = 2;
const STATUS_OK = new Uint8Array([0]);

class InstantQueue implements QueueHandler {
  private readonly chain = new DescriptorChain();
  private stopped = false;
  private readonly poller: AdaptivePoller | null;
  private readonly ready: () => boolean;

  /** @param pollUs adaptive busy-poll bound after a batch, µs (0 = never), as BlkQueue does. */
  constructor(private readonly ctx: QueueContext, pollUs: number, group: PollGroup) {
    this.poller = pollUs > 0 ? new AdaptivePoller({ maxUs: pollUs, group }) : null;
    const q = ctx.queue;
    this.ready = () => q.availableCount() !== 0;
    // The queues of the device take turns, as BlkQueue's do (PollGroup).
    this.poller?.join(() => !this.stopped && q.availableCount() !== 0);
  }

  private resumeQueued = false;
  private readonly resume = (): void => {
    this.resumeQueued = false;
    this.onKick();
  };

  onKick(): void {
    if (this.stopped) return;
    const q = this.ctx.queue;
    const c = this.chain;
    const poller = this.poller;
    let missed = false;
    if (poller !== null) poller.woke();
    for (;;) {
      q.disableNotify();
      let r: number;
      let n = 0;
      while ((r = q.pop(c)) === 1) {
        // The status byte is the last writable byte of the chain (virtio 1.2 §5.2.6).
        if (c.writableBytes > 0) c.copyToWritable(c.writableBytes - 1, STATUS_OK);
        q.pushUsed(c.head, c.writableBytes);
        n++;
      }
      if (r < 0) {
        this.ctx.broken(`pop failed (${r})`);
        return;
      }
      if (n > 0) {
        q.publishUsed();
        if (q.shouldNotify()) this.ctx.notify();
        // Same policy as the real device (BlkQueue.process): a run that used its budget gives
        // the event loop a turn and goes on; requests already waiting are taken without
        // re-enabling notifications; otherwise spin, so the driver need not kick.
        if (poller !== null) {
          if (!poller.mayContinue()) {
            if (!this.resumeQueued) {
              this.resumeQueued = true;
              setImmediate(this.resume);
            }
            return;
          }
          if (q.availableCount() !== 0) continue;
          if (poller.spin(this.ready)) continue;
          if (poller.yielded) {
            if (!this.resumeQueued) {
              this.resumeQueued = true;
              setImmediate(this.resume);
            }
            return;
          }
          missed = true;
        }
      }
      if (!q.enableNotify()) {
        if (poller !== null) poller.sleeping(missed);
        return;
      }
    }
  }

  stop(): Promise<void> {
    this.stopped = true;
    this.poller?.leave();
    return Promise.resolve();
  }
}

/** The instant-completion block device. */
export class InstantBlkDevice implements VirtioDevice {
  readonly deviceType = VIRTIO_ID_BLOCK;
  readonly maxQueueSize = 1024;
  readonly features = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_BLK_F_FLUSH)
    | bit(VIRTIO_BLK_F_BLK_SIZE) | bit(VIRTIO_BLK_F_MQ);
  readonly protocolFeatures = bit(VHOST_USER_PROTOCOL_F_CONFIG) | bit(VHOST_USER_PROTOCOL_F_MQ);
  onConfigChanged: (() => void) | null = null;
  private readonly config = new Uint8Array(64);
  private readonly pollGroup = new PollGroup();

  /** @param pollUs adaptive busy-poll bound after each batch in µs (0: sleep at once). */
  constructor(readonly numQueues: number, sizeBytes: number, private readonly pollUs = 0) {
    const v = new DataView(this.config.buffer);
    v.setBigUint64(CFG_CAPACITY, BigInt(Math.floor(sizeBytes / SECTOR_SIZE)), true);
    v.setUint32(CFG_BLK_SIZE, SECTOR_SIZE, true);
    v.setUint16(CFG_NUM_QUEUES, numQueues, true);
  }

  setFeatures(): void {}

  readConfig(offset: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    if (offset < this.config.length) out.set(this.config.subarray(offset, Math.min(this.config.length, offset + length)));
    return out;
  }

  startQueue(_index: number, ctx: QueueContext): QueueHandler {
    return new InstantQueue(ctx, this.pollUs, this.pollGroup);
  }

  reset(): void {}
}
