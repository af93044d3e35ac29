/**
 * The loopback backend: every frame a guest transmits on pair k comes back on its RX queue k
 * (k modulo the active pairs, should the driver transmit on a pair it disabled).
 * For tests and benchmarks. No offloads (see the switch for why).
 * @module
 */
import { ETH_VLAN_HLEN, MAX_FRAME_SIZE, VIRTIO_NET_HDR_V1_SIZE } from './constants.js';
import type { FrameBatch } from './frame-batch.js';
import type { NetBackend, NetBackendPort, NetPortSink } from './net-backend.js';

/** Echo backend. */
export class LoopbackBackend implements NetBackend {
  readonly kind = 'loopback' as const;
  readonly offloadFeatures = 0n;
  readonly slotSize: number;
  readonly maxPairs = 64;
  private readonly ports = new Set<LoopbackPort>();

  constructor(opts: { mtu?: number } = {}) {
    this.slotSize = Math.min(VIRTIO_NET_HDR_V1_SIZE + MAX_FRAME_SIZE, VIRTIO_NET_HDR_V1_SIZE + ETH_VLAN_HLEN + (opts.mtu ?? 1500));
  }

  connect(sink: NetPortSink): NetBackendPort {
    const port = new LoopbackPort(sink, this.ports);
    this.ports.add(port);
    return port;
  }

  close(): void {
    for (const p of [...this.ports]) p.close();
  }
}

class LoopbackPort implements NetBackendPort {
  constructor(private readonly sink: NetPortSink, private readonly owner: Set<LoopbackPort>) {}
  transmit(pair: number, batch: FrameBatch): void {
    // Never onto an RX queue beyond the pairs the driver enabled (virtio 1.2 §5.1.6.5.5): a
    // driver that transmits on an inactive pair gets the frames on one it uses, as the switch
    // does.
    const limit = this.sink.pairLimit;
    this.sink.deliver(pair < limit ? pair : pair % limit, batch, null, batch.count);
  }
  onRxSpace(): void {}
  setFeatures(): void {}
  setActivePairs(): void {}
  close(): void {
    this.owner.delete(this);
  }
}
