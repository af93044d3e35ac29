/**
 * The virtio-net device (virtio 1.2 §5.1) as a {@link VirtioDevice} served over vhost-user.
 *
 * ```
 *  queue 2k   RX of pair k ──► RxQueue  ◄── backend port deliver(k, frames)
 *  queue 2k+1 TX of pair k ──► TxQueue  ──► backend port transmit(k, frames)
 *  queue 2N   control      ──► CtrlQueue ─► handleCtrl (rx mode, MAC table, VLAN, MQ, announce)
 * ```
 * The device is also the backend's {@link NetPortSink}. Offloads are offered only when the
 * backend carries them end to end (TAP with IFF_VNET_HDR); switch and loopback offer none.
 * @module
 */
import type { QueueContext, QueueHandler, VirtioDevice } from '@vhost-ts/vhost-user';
import {
  PollGroup, VHOST_USER_PROTOCOL_F_CONFIG, VHOST_USER_PROTOCOL_F_MQ, VHOST_USER_PROTOCOL_F_MTU, VHOST_USER_PROTOCOL_F_RARP,
} from '@vhost-ts/vhost-user';
import { VIRTIO_F_IN_ORDER, VIRTIO_F_RING_PACKED, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC } from '@vhost-ts/virtqueue';
import {
  bit, VIRTIO_F_VERSION_1, VIRTIO_ID_NET, VIRTIO_NET_CTRL_ANNOUNCE, VIRTIO_NET_CTRL_ANNOUNCE_ACK,
  VIRTIO_NET_CTRL_GUEST_OFFLOADS, VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET, VIRTIO_NET_CTRL_MAC,
  VIRTIO_NET_CTRL_MAC_ADDR_SET, VIRTIO_NET_CTRL_MAC_TABLE_SET, VIRTIO_NET_CTRL_MQ,
  VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET,
  VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_ALLMULTI, VIRTIO_NET_CTRL_RX_PROMISC, VIRTIO_NET_CTRL_VLAN,
  VIRTIO_NET_CTRL_VLAN_ADD, VIRTIO_NET_CTRL_VLAN_DEL, VIRTIO_NET_ERR, VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_CTRL_GUEST_OFFLOADS, VIRTIO_NET_F_CTRL_MAC_ADDR, VIRTIO_NET_F_CTRL_RX, VIRTIO_NET_F_CTRL_VLAN,
  VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_GUEST_ANNOUNCE, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN,
  VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_GUEST_UFO, VIRTIO_NET_F_HOST_ECN,
  VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_HOST_UFO, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MQ,
  VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS, VIRTIO_NET_HDR_LEGACY_SIZE,
  VIRTIO_NET_HDR_V1_SIZE, VIRTIO_NET_OK, ETH_VLAN_HLEN, isValidMtu, MAX_MTU, MIN_MTU,
} from './constants.js';
import { CtrlQueue, type CtrlTarget } from './ctrl-queue.js';
import { NetError } from './errors.js';
import { FrameBatch } from './frame-batch.js';
import { macKey, randomMac } from './mac-address.js';
import type { NetBackend, NetBackendPort, NetPortSink } from './net-backend.js';
import { NetConfig } from './net-config.js';
import { buildRarpFrame } from './rarp-frame.js';
import type { TxOffloadPolicy } from './net-header.js';
import { PortCounters } from './port-counters.js';
import { MAC_TABLE_ENTRIES, RxFilter } from './rx-filter.js';
import { RxQueue, type RxSettings } from './rx-queue.js';
import { TxQueue, type TxSettings } from './tx-queue.js';

/** Options of {@link VirtioNetDevice}. */
export interface VirtioNetDeviceOptions {
  /** The backend this device is a port of. */
  backend: NetBackend;
  /** Name for logs/metrics (e.g. the socket path). */
  name?: string;
  /** MAC in config space (default: random locally administered). */
  mac?: Uint8Array;
  /** MTU reported with VIRTIO_NET_F_MTU (default 1500). */
  mtu?: number;
  /** Queue pairs (default 1). More than 1 offers VIRTIO_NET_F_MQ. */
  queuePairs?: number;
  /** Largest queue size (default 1024). */
  maxQueueSize?: number;
  /** Offer a control queue (default true). */
  ctrlQueue?: boolean;
  /**
   * Longest busy-poll window in µs (default 0 = off): after a TX batch empties the ring, and
   * while RX frames wait for buffers, spin on the ring before asking the guest for a kick.
   * The window adapts like QEMU's (AdaptivePoller of @vhost-ts/vhost-user, shared with
   * devices-blk); an idle queue never spins, a continuous run yields to the event loop every ms.
   */
  pollUs?: number;
  /** Longest continuous run (work + spinning) before yielding to the event loop, ms (default 1). */
  pollYieldMs?: number;
  /**
   * The queues that take turns on one thread (PollGroup): a queue that spins gives the event
   * loop a turn as soon as another member has work. Default: one group per device; ports of
   * one switch in one process share one.
   */
  pollGroup?: PollGroup;
  /**
   * Most frames a TX queue copies out before handing them to the backend (default 128, at most
   * 256; fewer when slots are large: at most 4 MiB of slots). Small batches keep the copy
   * destination in the CPU cache, as DPDK's per-burst mbufs are; each batch also costs a used-ring
   * publish and notification check, which 128 amortises better than 64 (bench/src/net/findings.md).
   */
  txBatchFrames?: number;
}

/** Largest TX batch (SwitchBackend's default batch capacity: it refuses larger batches). */
const MAX_TX_BATCH = 256;

/** Guest-receive offload bits (the driver can take these; a TAP may hand them to us). */
const GUEST_OFFLOAD_BITS = bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_TSO4) | bit(VIRTIO_NET_F_GUEST_TSO6)
  | bit(VIRTIO_NET_F_GUEST_ECN) | bit(VIRTIO_NET_F_GUEST_UFO);
/** Host-receive offload bits (the guest may send these). */
const HOST_OFFLOAD_BITS = bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_HOST_TSO4) | bit(VIRTIO_NET_F_HOST_TSO6)
  | bit(VIRTIO_NET_F_HOST_ECN) | bit(VIRTIO_NET_F_HOST_UFO);

/** A virtio-net device; one per vhost-user socket. */
export class VirtioNetDevice implements VirtioDevice, NetPortSink, CtrlTarget {
  readonly deviceType = VIRTIO_ID_NET;
  readonly numQueues: number;
  readonly maxQueueSize: number;
  readonly features: bigint;
  readonly protocolFeatures: bigint;
  readonly name: string;
  readonly counters = new PortCounters();
  readonly config: NetConfig;
  readonly filter = new RxFilter();
  readonly maxPairs: number;
  readonly hasCtrlQueue: boolean;
  onConfigChanged: (() => void) | null = null;

  /** Features the driver acked (0 until SET_FEATURES). */
  acked = 0n;
  /** VLAN ids the driver registered (acknowledged; VLAN filtering itself is not done). */
  readonly vlans = new Set<number>();
  private readonly initialMac: Uint8Array;
  private readonly initialMtu: number;
  private readonly backend: NetBackend;
  private readonly port: NetBackendPort;
  private readonly rx: (RxQueue | null)[];
  private readonly tx: (TxQueue | null)[];
  private ctrl: CtrlQueue | null = null;
  /** Pairs set by VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, or 0 when the driver never set it. */
  private ctrlPairs = 0;
  private readonly rxSettings: RxSettings = { hdrLen: VIRTIO_NET_HDR_V1_SIZE, mergeable: false, clearHeader: true, pollUs: 0, pollYieldMs: 1 };
  private readonly txSettings: TxSettings = {
    hdrLen: VIRTIO_NET_HDR_V1_SIZE, clearHeader: true, pollUs: 0, pollYieldMs: 1,
    policy: { csum: false, tso4: false, tso6: false, ecn: false, ufo: false },
  };
  private readonly batchCapacity: number;
  private readonly holdCapacity: number;
  private pairsReported = 0;

  constructor(opts: VirtioNetDeviceOptions) {
    const pairs = opts.queuePairs ?? 1;
    const backend = opts.backend;
    if (!Number.isInteger(pairs) || pairs < 1 || pairs > Math.min(backend.maxPairs, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX)) {
      throw new NetError('bad-option', `queue pairs must be 1..${Math.min(backend.maxPairs, 0x8000)}, got ${pairs}`);
    }
    const mtu = opts.mtu ?? 1500;
    if (!isValidMtu(mtu)) throw new NetError('bad-option', `mtu must be ${MIN_MTU}..${MAX_MTU}, got ${mtu}`);
    const qsize = opts.maxQueueSize ?? 1024;
    if (!Number.isInteger(qsize) || qsize < 2 || qsize > 32768 || (qsize & (qsize - 1)) !== 0) {
      throw new NetError('bad-option', `max queue size must be a power of two in 2..32768, got ${qsize}`);
    }
    const pollUs = opts.pollUs ?? 0;
    if (!Number.isFinite(pollUs) || pollUs < 0 || pollUs > 1_000_000) throw new NetError('bad-option', `poll window must be 0..1000000 µs, got ${pollUs}`);
    const pollYieldMs = opts.pollYieldMs ?? 1;
    if (!(pollYieldMs > 0 && pollYieldMs <= 60_000)) throw new NetError('bad-option', `poll yield must be in (0, 60000] ms, got ${pollYieldMs}`);
    this.rxSettings.pollUs = pollUs;
    this.txSettings.pollUs = pollUs;
    this.rxSettings.pollYieldMs = pollYieldMs;
    this.txSettings.pollYieldMs = pollYieldMs;
    const group = opts.pollGroup ?? new PollGroup();
    this.rxSettings.pollGroup = group;
    this.txSettings.pollGroup = group;
    this.backend = backend;
    this.maxPairs = pairs;
    this.hasCtrlQueue = opts.ctrlQueue ?? true;
    this.numQueues = 2 * pairs + (this.hasCtrlQueue ? 1 : 0);
    this.maxQueueSize = qsize;
    this.name = opts.name ?? 'net0';
    this.initialMac = (opts.mac ?? randomMac()).slice(0, 6);
    this.initialMtu = mtu;
    this.config = new NetConfig(this.initialMac, pairs, mtu);
    this.filter.reset(this.initialMac);

    let f = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_RING_F_INDIRECT_DESC)
      | bit(VIRTIO_F_RING_PACKED) // the handlers run on either ring format (DeviceQueue)
      // Every queue returns buffers in the order it took them (TX and control complete inline,
      // RX gives back what a frame did not use): DPDK's virtio PMD then runs its in-order paths.
      | bit(VIRTIO_F_IN_ORDER)
      | bit(VIRTIO_NET_F_MAC) | bit(VIRTIO_NET_F_MTU) | bit(VIRTIO_NET_F_STATUS) | bit(VIRTIO_NET_F_MRG_RXBUF);
    if (this.hasCtrlQueue) {
      f |= bit(VIRTIO_NET_F_CTRL_VQ) | bit(VIRTIO_NET_F_CTRL_RX) | bit(VIRTIO_NET_F_CTRL_VLAN)
        | bit(VIRTIO_NET_F_GUEST_ANNOUNCE) | bit(VIRTIO_NET_F_CTRL_MAC_ADDR);
      if (pairs > 1) f |= bit(VIRTIO_NET_F_MQ);
      if ((backend.offloadFeatures & GUEST_OFFLOAD_BITS) !== 0n) f |= bit(VIRTIO_NET_F_CTRL_GUEST_OFFLOADS);
    }
    f |= backend.offloadFeatures & (GUEST_OFFLOAD_BITS | HOST_OFFLOAD_BITS);
    this.features = f;
    this.protocolFeatures = bit(VHOST_USER_PROTOCOL_F_CONFIG) | bit(VHOST_USER_PROTOCOL_F_RARP) | bit(VHOST_USER_PROTOCOL_F_MTU)
      | (pairs > 1 ? bit(VHOST_USER_PROTOCOL_F_MQ) : 0n);

    const txBatch = opts.txBatchFrames ?? 128;
    // At most 256: the switch routes one batch through index lists of that size.
    if (!Number.isInteger(txBatch) || txBatch < 1 || txBatch > MAX_TX_BATCH) throw new RangeError(`txBatchFrames ${txBatch}: 1..${MAX_TX_BATCH}`);
    this.batchCapacity = Math.max(1, Math.min(txBatch, Math.floor((4 << 20) / backend.slotSize)));
    this.holdCapacity = Math.max(8, Math.min(256, Math.floor((4 << 20) / backend.slotSize)));
    this.rx = new Array(pairs).fill(null);
    this.tx = new Array(pairs).fill(null);
    this.port = backend.connect(this);
  }

  // ---- VirtioDevice -------------------------------------------------------------------------

  setFeatures(acked: bigint): void {
    // Never trust the driver to ack only what we offered.
    acked &= this.features;
    this.acked = acked;
    const has = (b: number) => (acked & bit(b)) !== 0n;
    const modern = has(VIRTIO_F_VERSION_1);
    const mergeable = has(VIRTIO_NET_F_MRG_RXBUF);
    // virtio 1.2 §5.1.6: the header has num_buffers when VERSION_1 or MRG_RXBUF is negotiated.
    const hdrLen = modern || mergeable ? VIRTIO_NET_HDR_V1_SIZE : VIRTIO_NET_HDR_LEGACY_SIZE;
    const guestOffloads = (acked & GUEST_OFFLOAD_BITS) !== 0n;
    const hostOffloads = (acked & HOST_OFFLOAD_BITS) !== 0n;
    this.rxSettings.hdrLen = hdrLen;
    this.rxSettings.mergeable = mergeable;
    this.rxSettings.clearHeader = !guestOffloads;
    const p: TxOffloadPolicy = this.txSettings.policy;
    p.csum = has(VIRTIO_NET_F_CSUM);
    p.tso4 = has(VIRTIO_NET_F_HOST_TSO4);
    p.tso6 = has(VIRTIO_NET_F_HOST_TSO6);
    p.ecn = has(VIRTIO_NET_F_HOST_ECN);
    p.ufo = has(VIRTIO_NET_F_HOST_UFO);
    this.txSettings.hdrLen = hdrLen;
    this.txSettings.clearHeader = !hostOffloads;
    this.port.setFeatures(acked);
  }

  readConfig(offset: number, length: number): Uint8Array {
    return this.config.read(offset, length);
  }

  /**
   * A driver write touching anything but the mac of a legacy driver is refused whole (NetError
   * `config-read-only`: the front-end gets a failure ack); a `migration` write sets what is
   * writable and leaves the rest.
   */
  writeConfig(offset: number, data: Uint8Array, migration = false): void {
    const legacy = (this.acked & bit(VIRTIO_F_VERSION_1)) === 0n;
    if (!migration && !this.config.writable(offset, data.length, legacy)) {
      throw new NetError('config-read-only', `config bytes ${offset}..${offset + data.length - 1} are read-only${legacy ? ' (a legacy driver may write the mac only)' : ' for a VERSION_1 driver'}`);
    }
    if (this.config.write(offset, data, legacy)) this.filter.macKey = macKey(this.config.mac, 0);
  }

  startQueue(index: number, ctx: QueueContext): QueueHandler {
    if (!Number.isInteger(index) || index < 0 || index >= this.numQueues) {
      throw new NetError('bad-queue', `queue index ${index} out of range (0..${this.numQueues - 1})`);
    }
    if (this.hasCtrlQueue && index === 2 * this.maxPairs) {
      this.ctrl = new CtrlQueue(ctx, this, this.counters);
      return this.ctrl;
    }
    const pair = index >> 1;
    const slot = this.backend.slotSize;
    if ((index & 1) === 0) {
      const q = new RxQueue(pair, ctx, this.rxSettings, this.counters, this.filter, this.holdCapacity, slot,
        (p) => this.port.onRxSpace(p));
      this.rx[pair] = q;
      const handler: QueueHandler = {
        onKick: () => q.onKick(),
        stop: async () => {
          await q.stop();
          if (this.rx[pair] === q) this.rx[pair] = null;
          this.updatePairs();
        },
      };
      this.updatePairs();
      this.port.onRxSpace(pair);
      return handler;
    }
    const q = new TxQueue(pair, ctx, this.txSettings, this.counters, this.port, this.batchCapacity, slot);
    this.tx[pair] = q;
    return {
      onKick: () => q.onKick(),
      stop: async () => {
        await q.stop();
        if (this.tx[pair] === q) this.tx[pair] = null;
      },
    };
  }

  reset(): void {
    for (let i = 0; i < this.maxPairs; i++) {
      this.rx[i] = null;
      this.tx[i] = null;
    }
    this.ctrl = null;
    this.ctrlPairs = 0;
    this.acked = 0n;
    this.vlans.clear();
    this.config.setMac(this.initialMac);
    this.config.setMtu(this.initialMtu);
    this.config.setAnnounce(false);
    this.filter.reset(this.initialMac);
    this.updatePairs();
  }

  // ---- NetPortSink --------------------------------------------------------------------------

  /** See NetPortSink.pairLimit. */
  get pairLimit(): number {
    return this.ctrlPairs > 0 ? this.ctrlPairs : this.maxPairs;
  }

  /** Queue pairs in use: the prefix of running RX queues, capped by VQ_PAIRS_SET. */
  get activePairs(): number {
    const cap = this.ctrlPairs > 0 ? this.ctrlPairs : this.maxPairs;
    let n = 0;
    while (n < cap && this.rx[n] !== null && this.rx[n]!.isRunning) n++;
    return n;
  }

  deliver(pair: number, batch: FrameBatch, indices: Uint16Array | null, count: number): void {
    const q = pair < this.maxPairs ? this.rx[pair] : null;
    if (q === null) {
      this.counters.rxDropped += count;
      return;
    }
    q.deliver(batch, indices, count);
  }

  rxReady(pair: number): boolean {
    const q = pair < this.maxPairs ? this.rx[pair] : null;
    return q !== null && q.ready;
  }

  // ---- link / announce ----------------------------------------------------------------------

  /** Sets the link state; raises a config change when VIRTIO_NET_F_STATUS was negotiated. */
  setLinkUp(up: boolean): void {
    if (this.config.setLinkUp(up) && (this.acked & bit(VIRTIO_NET_F_STATUS)) !== 0n) this.onConfigChanged?.();
  }

  /**
   * Asks the driver to announce itself (gratuitous ARP / unsolicited NA), e.g. after a
   * migration: sets VIRTIO_NET_S_ANNOUNCE and raises a config change (virtio 1.2 §5.1.6.5.4).
   * Returns false when GUEST_ANNOUNCE was not negotiated.
   */
  announce(): boolean {
    if ((this.acked & bit(VIRTIO_NET_F_GUEST_ANNOUNCE)) === 0n) return false;
    if (this.config.setAnnounce(true)) this.onConfigChanged?.();
    return true;
  }

  /**
   * VHOST_USER_SEND_RARP: hands the backend a RARP broadcast from `mac` on queue pair 0 as if
   * the guest had sent it — a TAP puts it on the host's network, the switch floods it and
   * learns `mac` at this port. Control path: the one-frame batch is built per call.
   */
  sendRarp(mac: Uint8Array): void {
    const frame = buildRarpFrame(mac);
    const slot = new Uint8Array(VIRTIO_NET_HDR_V1_SIZE + frame.length); // header all zero: no offloads
    slot.set(frame, VIRTIO_NET_HDR_V1_SIZE);
    const batch = new FrameBatch(1, slot.length);
    batch.push(slot);
    this.counters.rarpRequests++;
    this.port.transmit(0, batch);
  }

  /**
   * VHOST_USER_NET_SET_MTU: accepted when the backend's slots hold a frame of that MTU with its
   * Ethernet and VLAN headers; config space then reports it (until a device reset).
   */
  setMtu(mtu: number): boolean {
    if (!isValidMtu(mtu)) return false;
    if (VIRTIO_NET_HDR_V1_SIZE + ETH_VLAN_HLEN + mtu > this.backend.slotSize) return false;
    this.config.setMtu(mtu);
    return true;
  }

  /** Frees the backend port. */
  close(): void {
    this.port.close();
  }

  // ---- control queue ------------------------------------------------------------------------

  /** Handles one control command (see {@link CtrlTarget}). */
  handleCtrl(cls: number, cmd: number, data: Uint8Array, len: number): number {
    const has = (b: number) => (this.acked & bit(b)) !== 0n;
    switch (cls) {
      case VIRTIO_NET_CTRL_RX: {
        // virtio 1.2 §5.1.6.5.1: one byte, 0 = off, 1 = on. EXTRA commands (2..5) not offered.
        if (!has(VIRTIO_NET_F_CTRL_RX) || len !== 1 || cmd > VIRTIO_NET_CTRL_RX_ALLMULTI) return VIRTIO_NET_ERR;
        const on = data[0] !== 0;
        if (cmd === VIRTIO_NET_CTRL_RX_PROMISC) this.filter.promisc = on;
        else this.filter.allmulti = on;
        return VIRTIO_NET_OK;
      }
      case VIRTIO_NET_CTRL_MAC:
        if (cmd === VIRTIO_NET_CTRL_MAC_ADDR_SET) {
          if (!has(VIRTIO_NET_F_CTRL_MAC_ADDR) || len !== 6) return VIRTIO_NET_ERR;
          this.config.setMac(data.subarray(0, 6));
          this.filter.macKey = macKey(data, 0);
          return VIRTIO_NET_OK;
        }
        if (cmd === VIRTIO_NET_CTRL_MAC_TABLE_SET) {
          if (!has(VIRTIO_NET_F_CTRL_RX)) return VIRTIO_NET_ERR;
          return this.setMacTables(data, len);
        }
        return VIRTIO_NET_ERR;
      case VIRTIO_NET_CTRL_VLAN: {
        if (!has(VIRTIO_NET_F_CTRL_VLAN) || len !== 2) return VIRTIO_NET_ERR;
        const vid = data[0] | (data[1] << 8);
        if (vid >= 4096) return VIRTIO_NET_ERR;
        if (cmd === VIRTIO_NET_CTRL_VLAN_ADD) this.vlans.add(vid);
        else if (cmd === VIRTIO_NET_CTRL_VLAN_DEL) this.vlans.delete(vid);
        else return VIRTIO_NET_ERR;
        return VIRTIO_NET_OK;
      }
      case VIRTIO_NET_CTRL_ANNOUNCE:
        // virtio 1.2 §5.1.6.5.4: the driver acks; the device clears VIRTIO_NET_S_ANNOUNCE.
        if (!has(VIRTIO_NET_F_GUEST_ANNOUNCE) || cmd !== VIRTIO_NET_CTRL_ANNOUNCE_ACK) return VIRTIO_NET_ERR;
        if (this.config.setAnnounce(false)) this.onConfigChanged?.();
        return VIRTIO_NET_OK;
      case VIRTIO_NET_CTRL_MQ: {
        if (!has(VIRTIO_NET_F_MQ) || cmd !== VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET || len !== 2) return VIRTIO_NET_ERR;
        const n = data[0] | (data[1] << 8);
        // virtio 1.2 §5.1.6.5.5: between 1 and max_virtqueue_pairs, else the device MUST reject.
        if (n < VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN || n > this.maxPairs) return VIRTIO_NET_ERR;
        this.ctrlPairs = n;
        this.updatePairs();
        return VIRTIO_NET_OK;
      }
      case VIRTIO_NET_CTRL_GUEST_OFFLOADS: {
        if (!has(VIRTIO_NET_F_CTRL_GUEST_OFFLOADS) || cmd !== VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET || len !== 8) return VIRTIO_NET_ERR;
        let wanted = 0n;
        for (let i = 7; i >= 0; i--) wanted = (wanted << 8n) | BigInt(data[i]);
        // virtio 1.2 §5.1.6.5.6.1: only offloads that were negotiated may be enabled.
        if ((wanted & ~(this.acked & GUEST_OFFLOAD_BITS)) !== 0n) return VIRTIO_NET_ERR;
        this.rxSettings.clearHeader = wanted === 0n;
        this.port.setFeatures((this.acked & ~GUEST_OFFLOAD_BITS) | wanted);
        return VIRTIO_NET_OK;
      }
      default:
        return VIRTIO_NET_ERR;
    }
  }

  /** `virtio_net_ctrl_mac` unicast table then multicast table, each `le32 entries; u8 macs[entries][6]`. */
  private setMacTables(data: Uint8Array, len: number): number {
    let p = 0;
    const tables = [this.filter.unicast, this.filter.multicast];
    const parsed: number[][] = [[], []];
    for (let t = 0; t < 2; t++) {
      if (p + 4 > len) return VIRTIO_NET_ERR;
      const entries = (data[p] | (data[p + 1] << 8) | (data[p + 2] << 16) | (data[p + 3] << 24)) >>> 0;
      p += 4;
      if (entries > len || p + entries * 6 > len) return VIRTIO_NET_ERR;
      for (let e = 0; e < entries; e++, p += 6) parsed[t].push(macKey(data, p));
    }
    if (p !== len) return VIRTIO_NET_ERR;
    for (let t = 0; t < 2; t++) {
      tables[t].clear();
      for (const k of parsed[t].slice(0, MAC_TABLE_ENTRIES)) tables[t].add(k);
    }
    // More entries than we keep: accept the whole class rather than losing traffic.
    this.filter.alluni = parsed[0].length > MAC_TABLE_ENTRIES;
    if (parsed[1].length > MAC_TABLE_ENTRIES) this.filter.allmulti = true;
    return VIRTIO_NET_OK;
  }

  private updatePairs(): void {
    const n = this.activePairs;
    if (n !== this.pairsReported) {
      this.pairsReported = n;
      this.port.setActivePairs(n);
    }
  }
}
