/**
 * A bench-only {@link NetBackend} that consumes what the guest transmits: the device's TX path
 * has already copied every frame out of guest memory into the batch (what any real back-end
 * must do before the chain is returned), and the sink counts frames and bytes. The
 * counterpart of DPDK's vhost PMD in `rxonly` mode, which frees each mbuf it received.
 * @module
 */
import { VIRTIO_NET_HDR_V1_SIZE, type FrameBatch, type NetBackend, type NetBackendPort, type NetPortSink } from '@vhost-ts/devices-net';

/** Totals of a {@link SinkBackend}. */
export class SinkCounters {
  frames = 0;
  /** Ethernet bytes (virtio-net header excluded). */
  bytes = 0;
  batches = 0;
}

/** Consumes and counts every transmitted frame. */
export class SinkBackend implements NetBackend {
  /** The interface knows three kinds; like the loopback this one is in-process without offloads. */
  readonly kind = 'loopback' as const;
  readonly offloadFeatures = 0n;
  readonly slotSize: number;
  readonly maxPairs = 1;
  readonly counters = new SinkCounters();

  /** @param maxFrame largest Ethernet frame accepted (CRC excluded). */
  constructor(maxFrame: number) {
    this.slotSize = VIRTIO_NET_HDR_V1_SIZE + maxFrame;
  }

  connect(_sink: NetPortSink): NetBackendPort {
    const c = this.counters;
    return {
      transmit(_pair: number, batch: FrameBatch): void {
        const n = batch.count;
        const lengths = batch.lengths;
        let bytes = 0;
        for (let i = 0; i < n; i++) bytes += lengths[i] - VIRTIO_NET_HDR_V1_SIZE;
        c.frames += n;
        c.bytes += bytes;
        c.batches++;
      },
      onRxSpace(): void {},
      setFeatures(): void {},
      setActivePairs(): void {},
      close(): void {},
    };
  }

  close(): void {}
}
