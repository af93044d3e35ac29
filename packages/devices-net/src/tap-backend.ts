/**
 * The TAP backend: one tap queue fd per queue pair (IFF_MULTI_QUEUE when more than one),
 * opened with IFF_VNET_HDR and a 12-byte vnet header, so the virtio_net_hdr_v1 the guest
 * writes is what the kernel reads and vice versa — checksum and TSO offloads pass straight
 * through (TUNSETOFFLOAD follows the GUEST_* features the driver acked). No software
 * segmentation or checksumming is done anywhere.
 *
 * I/O goes through one io_uring: a batch of READ ops (one per free RX slot) or WRITE ops
 * (one per frame) is submitted with one native call and completions are reaped in batches.
 * The tap fds are non-blocking, so a READ on an empty tap completes at once with -EAGAIN;
 * that is our cue to wait for readability (FdWatcher) again.
 *
 * ```
 *  tap fd k ──READABLE──▶ submit READ × free slots ──reap──▶ deliver(k, slots) ──▶ RX queue 2k
 *  TX queue 2k+1 ──transmit(k, batch)──▶ copy into free TX slots ──submit WRITE × n──▶ tap fd k
 * ```
 * Backpressure: while RX queue k cannot take frames (guest posted no buffers), no reads are
 * issued on tap fd k; the kernel queues (and eventually drops) in the tap. TX frames that find
 * no free TX slot are dropped and counted.
 * @module
 */
import {
  close, eventfdRead, FdWatcher, IoUring, IORING_OP, OP_STRIDE, READABLE, tapOpen, tapSetOffload,
  tapSetVnetHdrSize, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN,
} from '@vhost-ts/sys';
import {
  bit, MAX_FRAME_SIZE, VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN,
  VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_HDR_V1_SIZE,
} from './constants.js';
import { NetError } from './errors.js';
import { FrameBatch } from './frame-batch.js';
import type { NetBackend, NetBackendPort, NetPortSink } from './net-backend.js';

/** Options of {@link TapBackend}. */
export interface TapBackendOptions {
  /** Interface name (created when missing; needs CAP_NET_ADMIN). */
  name: string;
  /** Queue pairs = tap queues (default 1). */
  queuePairs?: number;
  /** RX slots per queue (default 32). */
  rxSlots?: number;
  /** TX slots per queue (default 64). */
  txSlots?: number;
  log?: (line: string) => void;
}

const EAGAIN = 11;
/** userData layout: bit 31 = TX, bits 16..30 = pair, bits 0..15 = slot. */
const UD_TX = 0x8000_0000;
/** Read rounds per readability event before yielding to the event loop. */
const MAX_RX_ROUNDS = 8;

/** TAP backend (one port: a tap serves exactly one device). */
export class TapBackend implements NetBackend {
  readonly kind = 'tap' as const;
  readonly offloadFeatures = bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_TSO4)
    | bit(VIRTIO_NET_F_GUEST_TSO6) | bit(VIRTIO_NET_F_GUEST_ECN) | bit(VIRTIO_NET_F_HOST_TSO4)
    | bit(VIRTIO_NET_F_HOST_TSO6) | bit(VIRTIO_NET_F_HOST_ECN);
  readonly slotSize = VIRTIO_NET_HDR_V1_SIZE + MAX_FRAME_SIZE;
  readonly maxPairs: number;
  /** The interface name the kernel used. */
  readonly ifname: string;
  private readonly fds: number[] = [];
  private readonly opts: TapBackendOptions;
  private port: TapPort | null = null;

  constructor(opts: TapBackendOptions) {
    const pairs = opts.queuePairs ?? 1;
    if (!Number.isInteger(pairs) || pairs < 1 || pairs > 64) throw new NetError('bad-option', `tap queues must be 1..64, got ${pairs}`);
    this.opts = opts;
    this.maxPairs = pairs;
    let name = opts.name;
    try {
      for (let i = 0; i < pairs; i++) {
        const h = tapOpen(name, { multiQueue: pairs > 1 });
        name = h.name;
        this.fds.push(h.fd);
        // Our frames always carry the 12-byte virtio_net_hdr_v1 (num_buffers is ours to fill).
        tapSetVnetHdrSize(h.fd, VIRTIO_NET_HDR_V1_SIZE);
        tapSetOffload(h.fd, 0);
      }
    } catch (e) {
      for (const fd of this.fds) close(fd);
      throw new NetError('tap-open', `cannot open tap "${opts.name}": ${(e as Error).message}`, { cause: e });
    }
    this.ifname = name;
  }

  connect(sink: NetPortSink): NetBackendPort {
    if (this.port !== null) throw new NetError('busy', `tap ${this.ifname} already serves a device`);
    this.port = new TapPort(sink, this.fds, this.opts, () => { this.port = null; });
    return this.port;
  }

  close(): void {
    this.port?.close();
    for (const fd of this.fds.splice(0)) {
      try { close(fd); } catch { /* already closed */ }
    }
  }
}

class TapPort implements NetBackendPort {
  private readonly ring: IoUring;
  private readonly ringWatcher: FdWatcher;
  private readonly watchers: FdWatcher[];
  private readonly rx: FrameBatch[];
  private readonly tx: FrameBatch[];
  /** Per pair: RX slot in flight (1) or free (0). */
  private readonly rxBusy: Uint8Array[];
  /** Per pair: free TX slot stack. */
  private readonly txFree: Uint16Array[];
  private readonly txFreeCount: number[];
  /** Per pair: completed RX slots waiting for delivery. */
  private readonly rxDone: Uint16Array[];
  private readonly rxDoneCount: number[];
  private readonly rxInflight: number[];
  /** Per pair: an -EAGAIN was seen (tap empty) in the last reap. */
  private readonly drained: boolean[];
  private readonly watching: boolean[];
  private readonly rounds: number[];
  private readonly ops: Float64Array;
  private readonly iovs: Float64Array;
  private readonly cqes: Float64Array;
  private active = 0;
  private closed = false;
  /** Errors other than EAGAIN on tap reads/writes (logged once each kind). */
  rxErrors = 0;
  txErrors = 0;
  private scheduled = false;

  constructor(private readonly sink: NetPortSink, private readonly fds: number[], opts: TapBackendOptions,
    private readonly onClose: () => void) {
    const pairs = fds.length;
    const rxSlots = opts.rxSlots ?? 32;
    const txSlots = opts.txSlots ?? 64;
    const slot = VIRTIO_NET_HDR_V1_SIZE + MAX_FRAME_SIZE;
    let entries = 1;
    while (entries < Math.min(4096, pairs * (rxSlots + txSlots))) entries <<= 1;
    this.ring = new IoUring(entries);
    this.rx = [];
    this.tx = [];
    this.rxBusy = [];
    this.txFree = [];
    this.txFreeCount = [];
    this.rxDone = [];
    this.rxDoneCount = [];
    this.rxInflight = [];
    this.drained = [];
    this.watching = [];
    this.rounds = [];
    this.watchers = [];
    for (let p = 0; p < pairs; p++) {
      const rx = new FrameBatch(rxSlots, slot);
      const tx = new FrameBatch(txSlots, slot);
      this.rx.push(rx);
      this.tx.push(tx);
      // Buffer table: 2p = RX slots of pair p, 2p+1 = TX slots.
      this.ring.setBuffer(2 * p, rx.data);
      this.ring.setBuffer(2 * p + 1, tx.data);
      this.rxBusy.push(new Uint8Array(rxSlots));
      const free = new Uint16Array(txSlots);
      for (let i = 0; i < txSlots; i++) free[i] = txSlots - 1 - i;
      this.txFree.push(free);
      this.txFreeCount.push(txSlots);
      this.rxDone.push(new Uint16Array(rxSlots));
      this.rxDoneCount.push(0);
      this.rxInflight.push(0);
      this.drained.push(false);
      this.watching.push(false);
      this.rounds.push(0);
      const pair = p;
      this.watchers.push(new FdWatcher(fds[p], () => this.onReadable(pair)));
    }
    const maxOps = Math.max(rxSlots, txSlots);
    this.ops = new Float64Array(maxOps * OP_STRIDE);
    this.iovs = new Float64Array(maxOps * 3);
    this.cqes = new Float64Array(2 * entries);
    this.ringWatcher = new FdWatcher(this.ring.eventFd, () => {
      eventfdRead(this.ring.eventFd);
      this.reapAll();
    });
    this.ringWatcher.start(READABLE);
  }

  // ---- TX: guest → tap ----------------------------------------------------------------------

  transmit(pair: number, batch: FrameBatch): void {
    if (this.closed || pair >= this.fds.length) {
      this.sink.counters.txDropped += batch.count;
      return;
    }
    const tx = this.tx[pair];
    const free = this.txFree[pair];
    const ops = this.ops;
    const iovs = this.iovs;
    const fd = this.fds[pair];
    let n = 0;
    for (let i = 0; i < batch.count; i++) {
      if (this.txFreeCount[pair] === 0) {
        this.sink.counters.txDropped += batch.count - i;
        break;
      }
      const slot = free[--this.txFreeCount[pair]];
      const len = batch.lengths[i];
      const from = i * batch.stride;
      tx.data.set(batch.data.subarray(from, from + len), slot * tx.stride);
      const o = n * OP_STRIDE;
      ops[o] = IORING_OP.WRITE;
      ops[o + 1] = fd;
      ops[o + 2] = 0;
      ops[o + 3] = (UD_TX | (pair << 16) | slot) >>> 0;
      ops[o + 4] = n;
      ops[o + 5] = 1;
      ops[o + 6] = 0;
      ops[o + 7] = 0;
      iovs[3 * n] = 2 * pair + 1;
      iovs[3 * n + 1] = slot * tx.stride;
      iovs[3 * n + 2] = len;
      n++;
    }
    if (n === 0) return;
    const submitted = this.submit(n);
    for (let k = submitted; k < n; k++) {
      // SQ full: give the slots back, count the frames as dropped.
      free[this.txFreeCount[pair]++] = this.ops[k * OP_STRIDE + 3] & 0xffff;
      this.sink.counters.txDropped++;
    }
    this.reapAll();
  }

  // ---- RX: tap → guest ----------------------------------------------------------------------

  private onReadable(pair: number): void {
    // Level-triggered: stop watching while reads are in flight or the guest is full.
    this.watchers[pair].stop();
    this.watching[pair] = false;
    this.rounds[pair] = 0;
    this.readMore(pair);
  }

  /** Issues a READ for every free RX slot of `pair` if the guest can take frames. */
  private readMore(pair: number): void {
    if (this.closed || pair >= this.active) return;
    if (!this.sink.rxReady(pair)) return; // resumed by onRxSpace
    const busy = this.rxBusy[pair];
    const rx = this.rx[pair];
    const fd = this.fds[pair];
    const ops = this.ops;
    const iovs = this.iovs;
    let n = 0;
    for (let s = 0; s < busy.length; s++) {
      if (busy[s] !== 0) continue;
      busy[s] = 1;
      const o = n * OP_STRIDE;
      ops[o] = IORING_OP.READ;
      ops[o + 1] = fd;
      ops[o + 2] = 0;
      ops[o + 3] = (pair << 16) | s;
      ops[o + 4] = n;
      ops[o + 5] = 1;
      ops[o + 6] = 0;
      ops[o + 7] = 0;
      iovs[3 * n] = 2 * pair;
      iovs[3 * n + 1] = s * rx.stride;
      iovs[3 * n + 2] = rx.slotSize;
      n++;
    }
    if (n === 0) return;
    this.drained[pair] = false;
    const submitted = this.submit(n);
    for (let k = submitted; k < n; k++) busy[this.ops[k * OP_STRIDE + 3] & 0xffff] = 0;
    this.rxInflight[pair] += submitted;
    this.reapAll();
  }

  private submit(n: number): number {
    try {
      return this.ring.submit(this.ops, n, this.iovs);
    } catch (e) {
      this.txErrors++;
      if (this.txErrors === 1) console.error(`tap: io_uring submit failed: ${(e as Error).message}`);
      return 0;
    }
  }

  /** Reaps every completion, delivers RX frames, decides what each pair does next. */
  private reapAll(): void {
    if (this.closed) return;
    const out = this.cqes;
    let got: number;
    while ((got = this.ring.reap(out)) > 0) {
      for (let i = 0; i < got; i++) {
        const ud = out[2 * i] >>> 0;
        const res = out[2 * i + 1];
        const pair = (ud >>> 16) & 0x7fff;
        const slot = ud & 0xffff;
        if (pair >= this.fds.length) continue;
        if ((ud & UD_TX) !== 0) {
          this.txFree[pair][this.txFreeCount[pair]++] = slot;
          if (res < 0) {
            this.txErrors++;
            this.sink.counters.txDropped++;
          }
          continue;
        }
        this.rxInflight[pair]--;
        if (res > VIRTIO_NET_HDR_V1_SIZE) {
          this.rx[pair].lengths[slot] = res;
          this.rxDone[pair][this.rxDoneCount[pair]++] = slot;
        } else {
          this.rxBusy[pair][slot] = 0;
          if (res === -EAGAIN) this.drained[pair] = true;
          else if (res < 0) this.rxErrors++;
        }
      }
    }
    for (let p = 0; p < this.fds.length; p++) this.afterReap(p);
  }

  private afterReap(pair: number): void {
    const n = this.rxDoneCount[pair];
    if (n > 0) {
      this.rxDoneCount[pair] = 0;
      this.sink.deliver(pair, this.rx[pair], this.rxDone[pair], n);
      const busy = this.rxBusy[pair];
      const done = this.rxDone[pair];
      for (let k = 0; k < n; k++) busy[done[k]] = 0;
    }
    if (this.rxInflight[pair] > 0 || pair >= this.active) return;
    if (this.drained[pair]) {
      // Tap empty: wait until it is readable again.
      this.drained[pair] = false;
      this.watch(pair);
    } else if (n > 0) {
      // Every read returned a frame: likely more. Bounded rounds, then yield.
      if (++this.rounds[pair] < MAX_RX_ROUNDS) this.readMore(pair);
      else this.scheduleRead();
    }
  }

  private scheduleRead(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      for (let p = 0; p < this.active; p++) {
        if (this.rounds[p] >= MAX_RX_ROUNDS) {
          this.rounds[p] = 0;
          this.readMore(p);
        }
      }
    });
  }

  private watch(pair: number): void {
    if (this.closed || this.watching[pair]) return;
    this.watching[pair] = true;
    this.watchers[pair].start(READABLE);
  }

  onRxSpace(pair: number): void {
    if (this.closed || pair >= this.active) return;
    if (this.rxInflight[pair] === 0 && !this.watching[pair]) this.watch(pair);
  }

  setFeatures(features: bigint): void {
    // The tap may hand us only what the driver can take (GUEST_*); the kernel requires
    // TUN_F_CSUM for any TSO flag, which virtio 1.2 §5.1.3.1 also requires of GUEST_TSO*.
    const has = (b: number) => (features & bit(b)) !== 0n;
    let flags = 0;
    if (has(VIRTIO_NET_F_GUEST_CSUM)) {
      flags |= TUN_F_CSUM;
      if (has(VIRTIO_NET_F_GUEST_TSO4)) flags |= TUN_F_TSO4;
      if (has(VIRTIO_NET_F_GUEST_TSO6)) flags |= TUN_F_TSO6;
      if (has(VIRTIO_NET_F_GUEST_ECN) && (flags & (TUN_F_TSO4 | TUN_F_TSO6)) !== 0) flags |= TUN_F_TSO_ECN;
    }
    for (const fd of this.fds) tapSetOffload(fd, flags);
  }

  setActivePairs(pairs: number): void {
    const old = this.active;
    this.active = Math.min(pairs, this.fds.length);
    for (let p = this.active; p < old; p++) {
      if (this.watching[p]) {
        this.watchers[p].stop();
        this.watching[p] = false;
      }
    }
    for (let p = old; p < this.active; p++) this.watch(p);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.watchers) w.close();
    this.ringWatcher.close();
    this.ring.close();
    this.onClose();
  }
}
