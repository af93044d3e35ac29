/**
 * The control virtqueue (virtio 1.2 §5.1.6.5): commands are `{u8 class; u8 command; data...}`
 * in device-readable buffers followed by a one-byte `ack` the device writes.
 * @module
 */
import { DescriptorChain, type DeviceQueue } from '@vhost-ts/virtqueue';
import type { QueueContext, QueueHandler } from '@vhost-ts/vhost-user';
import {
  VIRTIO_NET_CTRL_ANNOUNCE, VIRTIO_NET_CTRL_ANNOUNCE_ACK, VIRTIO_NET_CTRL_GUEST_OFFLOADS,
  VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET,
  VIRTIO_NET_CTRL_MAC_TABLE_SET, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, VIRTIO_NET_CTRL_RX,
  VIRTIO_NET_CTRL_VLAN, VIRTIO_NET_CTRL_VLAN_ADD, VIRTIO_NET_CTRL_VLAN_DEL, VIRTIO_NET_ERR, VIRTIO_NET_OK,
} from './constants.js';
import { copyFromChain, copyToChain } from './chain-copy.js';
import type { PortCounters } from './port-counters.js';

/** Largest command we read (a MAC table of 64+64 entries is ~780 bytes). */
export const CTRL_MAX_COMMAND = 4096;

/** What the control queue changes on its device. */
export interface CtrlTarget {
  /** Returns VIRTIO_NET_OK or VIRTIO_NET_ERR. `data` is valid only during the call. */
  handleCtrl(cls: number, cmd: number, data: Uint8Array, len: number): number;
}

/** Rings' worth of chains one kick handles before yielding to the event loop. */
const CTRL_RINGS_PER_CALL = 4;

/** The control queue worker. */
export class CtrlQueue implements QueueHandler {
  private readonly queue: DeviceQueue;
  private readonly chain: DescriptorChain;
  private readonly buf = new Uint8Array(CTRL_MAX_COMMAND);
  private readonly ack = new Uint8Array(1);
  private running = true;
  private resumeQueued = false;
  private readonly resume = (): void => {
    this.resumeQueued = false;
    this.onKick();
  };

  constructor(private readonly ctx: QueueContext, private readonly target: CtrlTarget, private readonly counters: PortCounters) {
    this.queue = ctx.queue;
    this.chain = new DescriptorChain(Math.min(ctx.queue.size, 1024));
  }

  onKick(): void {
    if (!this.running) return;
    const q = this.queue;
    const chain = this.chain;
    // A guest may reuse heads without waiting for the used ring: at most a ring's worth of
    // chains between two publishes, and a few rings per call before yielding the event loop.
    let left = CTRL_RINGS_PER_CALL * q.size;
    for (;;) {
      let r = 0;
      let pass = 0;
      while (pass < q.size && (r = q.pop(chain)) === 1) {
        pass++;
        this.counters.ctrlCommands++;
        const readable = chain.readableBytes;
        if (chain.writableBytes < 1) {
          // No room for an ack: nothing can be answered.
          this.counters.ctrlErrors++;
          q.pushUsed(chain.head, 0);
          continue;
        }
        let status: number;
        if (readable < 2 || readable > CTRL_MAX_COMMAND) {
          // No class and command, or longer than any command: refused.
          status = VIRTIO_NET_ERR;
        } else {
          const n = copyFromChain(chain, 0, this.buf, 0, readable);
          status = this.target.handleCtrl(this.buf[0], this.buf[1], this.buf.subarray(2), n - 2);
        }
        if (status !== VIRTIO_NET_OK) this.counters.ctrlErrors++;
        this.ack[0] = status;
        copyToChain(chain, 0, this.ack, 0, 1);
        q.pushUsed(chain.head, 1);
      }
      if (r < 0) {
        const err = q.error;
        this.ctx.broken(`ctrl queue: ${err ? err.message : 'fault'}`);
        this.running = false;
        return;
      }
      q.publishUsed();
      if (q.shouldNotify()) this.ctx.notify();
      left -= pass;
      if (left <= 0) {
        if (!this.resumeQueued) {
          this.resumeQueued = true;
          setImmediate(this.resume);
        }
        return;
      }
      if (pass === q.size) continue; // a full ring's worth: more may be waiting
      if (!q.enableNotify()) return;
    }
  }

  async stop(): Promise<void> {
    this.running = false;
  }
}

/** Names for logs. */
export function ctrlName(cls: number, cmd: number): string {
  switch (cls) {
    case VIRTIO_NET_CTRL_RX: return `rx/${cmd}`;
    case VIRTIO_NET_CTRL_MAC:
      return cmd === VIRTIO_NET_CTRL_MAC_TABLE_SET ? 'mac/table-set' : cmd === VIRTIO_NET_CTRL_MAC_ADDR_SET ? 'mac/addr-set' : `mac/${cmd}`;
    case VIRTIO_NET_CTRL_VLAN: return cmd === VIRTIO_NET_CTRL_VLAN_ADD ? 'vlan/add' : cmd === VIRTIO_NET_CTRL_VLAN_DEL ? 'vlan/del' : `vlan/${cmd}`;
    case VIRTIO_NET_CTRL_ANNOUNCE: return cmd === VIRTIO_NET_CTRL_ANNOUNCE_ACK ? 'announce/ack' : `announce/${cmd}`;
    case VIRTIO_NET_CTRL_MQ: return cmd === VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET ? 'mq/vq-pairs-set' : `mq/${cmd}`;
    case VIRTIO_NET_CTRL_GUEST_OFFLOADS: return cmd === VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET ? 'guest-offloads/set' : `guest-offloads/${cmd}`;
    default: return `${cls}/${cmd}`;
  }
}
