// Test rig: a VirtioNetDevice whose queues each run over their own MockGuest, with helpers
// to transmit frames, post RX buffers and collect what the device wrote.
import { VIRTIO_F_IN_ORDER } from '@vhost-ts/virtqueue';
import { MockGuest, MockPackedGuest } from '@vhost-ts/virtqueue/testing';
import type { QueueContext, QueueHandler } from '@vhost-ts/vhost-user';
import { VirtioNetDevice, type VirtioNetDeviceOptions } from '../../src/virtio-net-device.js';

export interface RigQueue {
  guest: MockGuest | MockPackedGuest;
  handler: QueueHandler;
  notifies: number;
  broken: string[];
  /** Called after each notification (a test's guest reacting to it). */
  onNotify?: () => void;
}

export class NetRig {
  readonly device: VirtioNetDevice;
  readonly queues = new Map<number, RigQueue>();

  /** With `packed`, every queue runs on a packed ring (VIRTIO_F_RING_PACKED acked). */
  constructor(opts: VirtioNetDeviceOptions, acked?: bigint, queueSize = 64, eventIdx = false, private readonly packed = false) {
    this.device = new VirtioNetDevice(opts);
    this.device.setFeatures(acked ?? this.device.features);
    for (let i = 0; i < this.device.numQueues; i++) this.start(i, queueSize, eventIdx);
  }

  start(index: number, queueSize = 64, eventIdx = false): RigQueue {
    // The rings follow the negotiation, as the vhost-user session builds them.
    const inOrder = (this.device.acked & (1n << BigInt(VIRTIO_F_IN_ORDER))) !== 0n;
    const guest = this.packed
      ? new MockPackedGuest({ queueSize, eventIdx, heapBytes: 0x100000 })
      : new MockGuest({ queueSize, eventIdx, heapBytes: 0x100000, inOrder });
    const rq: RigQueue = { guest, handler: null as unknown as QueueHandler, notifies: 0, broken: [] };
    const ctx: QueueContext = {
      index, queue: guest.device, memory: guest.memory, inflight: null,
      notify: () => { rq.notifies++; rq.onNotify?.(); },
      broken: (reason: string) => { rq.broken.push(reason); },
    };
    rq.handler = this.device.startQueue(index, ctx);
    this.queues.set(index, rq);
    return rq;
  }

  q(index: number): RigQueue {
    const q = this.queues.get(index);
    if (!q) throw new Error(`queue ${index} not started`);
    return q;
  }

  /** Queues one TX chain holding `bytes` (split into `pieces` descriptors) on pair `pair`; kicks when asked. */
  send(bytes: Uint8Array, opts: { pair?: number; pieces?: number; kick?: boolean } = {}): number {
    const q = this.q(2 * (opts.pair ?? 0) + 1);
    const pieces = Math.max(1, Math.min(opts.pieces ?? 1, bytes.length));
    const gpas: number[] = [];
    const lens: number[] = [];
    let off = 0;
    for (let p = 0; p < pieces; p++) {
      const len = p === pieces - 1 ? bytes.length - off : Math.floor(bytes.length / pieces);
      const gpa = q.guest.alloc(Math.max(len, 1));
      q.guest.write(gpa, bytes.subarray(off, off + len));
      gpas.push(gpa);
      lens.push(len);
      off += len;
    }
    const head = q.guest.driver.addChain(gpas, lens, pieces, pieces);
    q.guest.driver.publish();
    if (opts.kick ?? true) q.handler.onKick();
    return head;
  }

  /** Collects used TX heads (returns their lengths). */
  txUsed(pair = 0): number[] {
    const d = this.q(2 * pair + 1).guest.driver;
    const out: number[] = [];
    while (d.popUsed() >= 0) out.push(d.lastLen);
    return out;
  }

  private rxBufs = new Map<number, number>();

  /** Posts `count` writable buffers of `size` bytes on RX pair `pair`. */
  postRx(count: number, size: number, opts: { pair?: number; kick?: boolean } = {}): void {
    const q = this.q(2 * (opts.pair ?? 0));
    for (let i = 0; i < count; i++) {
      const gpa = q.guest.alloc(size);
      const head = q.guest.driver.addOne(gpa, size, true);
      if (head < 0) throw new Error('rx ring full');
      this.rxBufs.set(head + 1000 * (opts.pair ?? 0), gpa);
    }
    q.guest.driver.publish();
    if (opts.kick ?? false) q.handler.onKick();
  }

  /** Collects used RX buffers as [bytes written]. */
  rxUsed(pair = 0): Uint8Array[] {
    const q = this.q(2 * pair);
    const out: Uint8Array[] = [];
    let head: number;
    while ((head = q.guest.driver.popUsed()) >= 0) {
      const gpa = this.rxBufs.get(head + 1000 * pair)!;
      out.push(q.guest.read(gpa, q.guest.driver.lastLen));
    }
    return out;
  }
}

/** header(12, zeros) + Ethernet frame of `len` bytes with dst/src MAC and a fill pattern. */
export function makeFrame(dst: number[], src: number[], len = 60, fill = 0x5a): Uint8Array {
  const f = new Uint8Array(12 + len);
  f.set(dst, 12);
  f.set(src, 18);
  f[24] = 0x08;
  f[25] = 0x00;
  for (let i = 26; i < f.length; i++) f[i] = (fill + i) & 0xff;
  return f;
}
