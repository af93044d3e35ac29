/**
 * An in-process L2 learning switch joining any number of vhost-user-net ports.
 *
 * Frames go ring to ring: the device copies a TX batch out of the sender's chains, the switch
 * sorts the batch per destination (index lists, no copies), and each destination device copies
 * its frames into its RX chains — two memcpys and no syscall per frame (only the one eventfd
 * write per batch that signals the guest). Unknown unicast and group (broadcast/multicast)
 * destinations are flooded to every other port. Source MACs are learned with ageing.
 *
 * Offloads: none. A switch port cannot know the receiver negotiated GUEST_CSUM/TSO, and we do
 * no software checksum or segmentation, so the switch offers no CSUM/TSO bits; headers are
 * delivered zeroed.
 * @module
 */
import { ETH_VLAN_HLEN, MAX_FRAME_SIZE, VIRTIO_NET_HDR_V1_SIZE } from './constants.js';
import type { FrameBatch } from './frame-batch.js';
import { isGroupMac, macKey } from './mac-address.js';
import { DEFAULT_MAC_AGE_MS, MacTable } from './mac-table.js';
import type { NetBackend, NetBackendPort, NetPortSink } from './net-backend.js';

/** Switch-wide counters. */
export class SwitchCounters {
  /** Frames forwarded to exactly one learned port. */
  unicast = 0;
  /** Frames flooded (broadcast, multicast or unknown destination). */
  flooded = 0;
  /** Frames dropped because the destination is the sender's own port. */
  hairpinDropped = 0;
}

/** Options of {@link SwitchBackend}. */
export interface SwitchOptions {
  /** Learned-MAC age in ms (default 300 000). */
  macAgeMs?: number;
  /** MTU of the ports; bounds the slot size (default 1500). */
  mtu?: number;
  /** Clock in ms (tests inject one). */
  now?: () => number;
  /** Largest frame count in one TX batch (must match the devices' batch capacity). */
  batchCapacity?: number;
}

/** The L2 learning switch. */
export class SwitchBackend implements NetBackend {
  readonly kind = 'switch' as const;
  readonly offloadFeatures = 0n;
  readonly slotSize: number;
  readonly maxPairs = 64;
  readonly table: MacTable;
  readonly counters = new SwitchCounters();
  private readonly ports: (SwitchPort | null)[] = [];
  private readonly now: () => number;
  /** Per-port index lists, reused by every transmit. */
  private lists: Uint16Array[] = [];
  private readonly listLen: number[] = [];
  private readonly batchCapacity: number;

  constructor(opts: SwitchOptions = {}) {
    const mtu = opts.mtu ?? 1500;
    // header + Ethernet header + 802.1Q tag + payload
    this.slotSize = Math.min(VIRTIO_NET_HDR_V1_SIZE + MAX_FRAME_SIZE, VIRTIO_NET_HDR_V1_SIZE + ETH_VLAN_HLEN + mtu);
    this.table = new MacTable(opts.macAgeMs ?? DEFAULT_MAC_AGE_MS);
    this.now = opts.now ?? (() => performance.now());
    this.batchCapacity = opts.batchCapacity ?? 256;
  }

  /** Ports currently attached. */
  get portCount(): number {
    let n = 0;
    for (const p of this.ports) if (p) n++;
    return n;
  }

  connect(sink: NetPortSink): NetBackendPort {
    let index = this.ports.indexOf(null);
    if (index < 0) {
      index = this.ports.length;
      this.ports.push(null);
      this.lists.push(new Uint16Array(this.batchCapacity));
      this.listLen.push(0);
    }
    const port = new SwitchPort(this, index, sink);
    this.ports[index] = port;
    return port;
  }

  /** @internal */
  detach(index: number): void {
    this.ports[index] = null;
    this.table.forgetPort(index);
  }

  /** @internal Forwards one TX batch from port `src`. */
  forward(src: number, pair: number, batch: FrameBatch): void {
    const now = this.now();
    const ports = this.ports;
    const n = ports.length;
    for (let p = 0; p < n; p++) this.listLen[p] = 0;
    if (batch.count > this.batchCapacity) throw new RangeError('batch larger than the switch batch capacity');
    const data = batch.data;
    for (let i = 0; i < batch.count; i++) {
      const eth = i * batch.stride + VIRTIO_NET_HDR_V1_SIZE;
      // Learn the source (only unicast sources: a group source MAC is bogus).
      if (!isGroupMac(data, eth + 6)) this.table.learn(macKey(data, eth + 6), src, now);
      let dst = -1;
      if (!isGroupMac(data, eth)) dst = this.table.lookup(macKey(data, eth), now);
      if (dst === src) {
        this.counters.hairpinDropped++;
        continue;
      }
      if (dst >= 0 && ports[dst] !== null) {
        this.lists[dst][this.listLen[dst]++] = i;
        this.counters.unicast++;
      } else {
        for (let p = 0; p < n; p++) {
          if (p !== src && ports[p] !== null) this.lists[p][this.listLen[p]++] = i;
        }
        this.counters.flooded++;
      }
    }
    for (let p = 0; p < n; p++) {
      const count = this.listLen[p];
      const port = ports[p];
      if (count === 0 || port === null) continue;
      const sink = port.sink;
      // Keep flows on the same pair index when the receiver has that many pairs.
      const active = sink.activePairs;
      sink.deliver(active > 0 ? pair % active : 0, batch, this.lists[p], count);
    }
  }

  close(): void {
    for (const p of this.ports) p?.close();
  }
}

class SwitchPort implements NetBackendPort {
  constructor(private readonly sw: SwitchBackend, readonly index: number, readonly sink: NetPortSink) {}
  private closed = false;

  transmit(pair: number, batch: FrameBatch): void {
    if (!this.closed) this.sw.forward(this.index, pair, batch);
  }
  onRxSpace(): void {
    // The switch pushes synchronously; the device's hold queue absorbs bursts.
  }
  setFeatures(): void {}
  setActivePairs(): void {}
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.sw.detach(this.index);
  }
}
