/**
 * BlkDevice — virtio-blk (virtio 1.2 §5.2) as a {@link VirtioDevice}: features, configuration
 * space, and one {@link BlkQueue} per started request queue over a {@link BlockImage}.
 * @module
 */
import { VIRTIO_F_RING_PACKED, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC } from '@vhost-ts/virtqueue';
import {
  PollGroup, VHOST_USER_PROTOCOL_F_CONFIG, VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD, VHOST_USER_PROTOCOL_F_MQ, VIRTIO_F_VERSION_1,
  type QueueContext, type QueueHandler, type VirtioDevice,
} from '@vhost-ts/vhost-user';
import { BLK_CONFIG_WRITEBACK_OFFSET, capacitySectors, encodeBlkConfig, sliceConfig, type BlkConfigValues } from './blk-config.js';
import { BlkQueueCounters, countersToPrometheus } from './blk-counters.js';
import { BlkQueue, encodeSerial } from './blk-queue.js';
import type { BlkLimits } from './blk-request.js';
import {
  DEFAULT_POLL_US, MAX_BLK_QUEUES, MAX_POLL_US, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_CONFIG_WCE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_MQ, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_F_TOPOLOGY,
  VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_ID_BLOCK,
} from './constants.js';
import type { BlockImage } from './engine.js';
import { BlkError } from './errors.js';
import { silentLogger, type Logger } from './logger.js';

/** Options of {@link BlkDevice}. */
export interface BlkDeviceOptions {
  /** The backing store. */
  image: BlockImage;
  /** Request queues, 1..16 (default 1). */
  numQueues?: number;
  /** Largest queue size accepted, a power of two ≤ 32768 (default 1024, QEMU's largest: a larger QEMU `queue-size` than this fails the device at start). */
  queueSize?: number;
  /** Serial answered to GET_ID (≤ 20 bytes used; default "vhost-ts"). */
  serial?: string;
  /** Expose the disk read-only (default: the image's own read-only flag). */
  readOnly?: boolean;
  /** Largest number of data segments per request (seg_max; default min(queueSize, 128) − 2). */
  segMax?: number;
  /** Largest segment in bytes (size_max; default 1 MiB). */
  sizeMax?: number;
  /** Offer DISCARD and WRITE_ZEROES (default true unless read-only). */
  discard?: boolean;
  /** Segments per discard / write-zeroes request (default 16). */
  maxDiscardSeg?: number;
  /** Sectors per discard / write-zeroes segment (default 2^22 = 2 GiB). */
  maxDiscardSectors?: number;
  /** Logger for guest faults (default silent). */
  log?: Logger;
  /**
   * Bound of each queue's adaptive busy-poll window after a batch, µs (default
   * {@link DEFAULT_POLL_US}; 0 = never poll, sleep on the kick eventfd at once).
   */
  pollUs?: number;
}

const bit = (n: number): bigint => 1n << BigInt(n);
/** Layout of the state kept across back-end restarts (attachPersistentState): magic 'vtbk', then writeback (0 / 1). */
const STATE_MAGIC = Uint8Array.of(0x76, 0x74, 0x62, 0x6b);
const STATE_BYTES = 5;
/** State byte 4 when the driver made no choice. */
const STATE_NO_CHOICE = 0xff;

/** The virtio-blk device. */
export class BlkDevice implements VirtioDevice {
  readonly deviceType = VIRTIO_ID_BLOCK;
  readonly numQueues: number;
  readonly maxQueueSize: number;
  readonly features: bigint;
  readonly protocolFeatures: bigint;
  readonly image: BlockImage;
  readonly readOnly: boolean;
  /** Per-queue counters (kept across queue restarts and resets). */
  readonly counters: BlkQueueCounters[];
  onConfigChanged: (() => void) | null = null;
  private readonly log: Logger;
  private readonly serial: Uint8Array;
  private readonly segMax: number;
  private readonly segCapacity: number;
  private readonly rangeCapacity: number;
  private readonly configValues: BlkConfigValues;
  private config: Uint8Array;
  /** See attachPersistentState. */
  private state: Uint8Array | null = null;
  /** The driver's last CONFIG_WCE write (0 writethrough, 1 writeback), or -1: none this session. */
  private driverWce = -1;
  private acked: bigint;
  private readonly queues: (BlkQueue | null)[];
  /** Busy-poll window bound of every queue, µs. */
  readonly pollUs: number;
  /** The queues take turns on the one thread they share (see PollGroup). */
  private readonly pollGroup = new PollGroup();

  /** @throws BlkError `bad-option` for out-of-range options. */
  constructor(opts: BlkDeviceOptions) {
    const numQueues = opts.numQueues ?? 1;
    const queueSize = opts.queueSize ?? 1024;
    if (!Number.isInteger(numQueues) || numQueues < 1 || numQueues > MAX_BLK_QUEUES) {
      throw new BlkError('bad-option', `num-queues must be 1..${MAX_BLK_QUEUES}, got ${numQueues}`);
    }
    if (!Number.isInteger(queueSize) || queueSize < 4 || queueSize > 32768 || (queueSize & (queueSize - 1)) !== 0) {
      throw new BlkError('bad-option', `queue-size must be a power of two in 4..32768, got ${queueSize}`);
    }
    // The driver may not build a chain longer than the queue size it chose (virtio 1.2
    // §2.7.5.3.1), and QEMU's vhost-user-blk-pci uses 128 by default; seg_max + 2 (header and
    // status) must fit, or Linux builds indirect tables the queue must refuse.
    const segMax = opts.segMax ?? Math.min(queueSize, 128) - 2;
    if (!Number.isInteger(segMax) || segMax < 1 || segMax > 1024) throw new BlkError('bad-option', `seg-max must be 1..1024, got ${segMax}`);
    const pollUs = opts.pollUs ?? DEFAULT_POLL_US;
    if (!Number.isInteger(pollUs) || pollUs < 0 || pollUs > MAX_POLL_US) throw new BlkError('bad-option', `poll-us must be 0..${MAX_POLL_US}, got ${pollUs}`);
    this.pollUs = pollUs;
    this.image = opts.image;
    this.readOnly = opts.readOnly ?? opts.image.readOnly;
    if (!this.readOnly && opts.image.readOnly) throw new BlkError('image-not-writable', `${opts.image.description} is read-only`);
    this.numQueues = numQueues;
    this.maxQueueSize = queueSize;
    this.log = opts.log ?? silentLogger;
    this.serial = encodeSerial(opts.serial ?? 'vhost-ts');
    this.segMax = segMax;
    // Slack over seg_max: one descriptor spanning two memory slabs becomes two segments.
    this.segCapacity = Math.min(segMax + 16, 1024);
    const discard = (opts.discard ?? true) && !this.readOnly;
    const blkSize = opts.image.logicalBlockSize ?? 512;
    if (!Number.isInteger(blkSize) || blkSize < 512 || blkSize > 65536 || (blkSize & (blkSize - 1)) !== 0) {
      throw new BlkError('bad-option', `logical block size must be a power of two 512..65536, got ${blkSize}`);
    }
    const maxDiscardSeg = opts.maxDiscardSeg ?? 16;
    const maxDiscardSectors = opts.maxDiscardSectors ?? 1 << 22;
    this.rangeCapacity = maxDiscardSeg;
    this.configValues = {
      capacity: capacitySectors(opts.image.sizeBytes),
      sizeMax: opts.sizeMax ?? 1 << 20,
      segMax,
      blkSize,
      // 4 KiB physical blocks (page-cache and hole-punch granularity), in logical blocks.
      physicalBlockExp: Math.max(0, Math.log2(4096 / blkSize)),
      alignmentOffset: 0,
      minIoSize: 1,
      optIoSize: 0,
      writeback: 1,
      numQueues,
      maxDiscardSectors: discard ? maxDiscardSectors : 0,
      maxDiscardSeg: discard ? maxDiscardSeg : 0,
      discardSectorAlignment: discard ? 8 : 0,
      maxWriteZeroesSectors: discard ? maxDiscardSectors : 0,
      maxWriteZeroesSeg: discard ? maxDiscardSeg : 0,
      writeZeroesMayUnmap: discard ? 1 : 0,
    };
    this.config = encodeBlkConfig(this.configValues);
    let f = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_RING_F_INDIRECT_DESC)
      | bit(VIRTIO_F_RING_PACKED) // the handlers run on either ring format (DeviceQueue)
      | bit(VIRTIO_BLK_F_SIZE_MAX) | bit(VIRTIO_BLK_F_SEG_MAX) | bit(VIRTIO_BLK_F_BLK_SIZE) | bit(VIRTIO_BLK_F_TOPOLOGY)
      | bit(VIRTIO_BLK_F_FLUSH) | bit(VIRTIO_BLK_F_CONFIG_WCE) | bit(VIRTIO_BLK_F_MQ);
    if (discard) f |= bit(VIRTIO_BLK_F_DISCARD) | bit(VIRTIO_BLK_F_WRITE_ZEROES);
    if (this.readOnly) f |= bit(VIRTIO_BLK_F_RO);
    this.features = f;
    this.protocolFeatures = bit(VHOST_USER_PROTOCOL_F_CONFIG) | bit(VHOST_USER_PROTOCOL_F_MQ)
      | bit(VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD);
    this.acked = 0n;
    this.counters = Array.from({ length: numQueues }, () => new BlkQueueCounters());
    this.queues = new Array<BlkQueue | null>(numQueues).fill(null);
  }

  /** Capacity in 512-byte sectors. */
  get capacity(): number {
    return this.configValues.capacity;
  }

  /** Current cache mode: true = writeback, false = writethrough. */
  get writeback(): boolean {
    return this.configValues.writeback === 1;
  }

  private has(acked: bigint, n: number): boolean {
    return (acked & bit(n)) !== 0n;
  }

  setFeatures(acked: bigint): void {
    this.acked = acked & this.features;
    this.applyCacheMode();
  }

  /**
   * virtio 1.2 §5.2.5: without FLUSH the driver cannot order writes to stable storage, so the
   * device must behave as writethrough; with FLUSH but no CONFIG_WCE it is writeback; with
   * CONFIG_WCE the driver chooses through `writeback` — its last choice (driverWce), else
   * writeback. Stable under repeated SET_FEATURES (QEMU sends one per start).
   */
  private applyCacheMode(): void {
    if (!this.has(this.acked, VIRTIO_BLK_F_FLUSH)) this.setWriteback(false);
    else if (!this.has(this.acked, VIRTIO_BLK_F_CONFIG_WCE)) this.setWriteback(true);
    else this.setWriteback(this.driverWce !== 0);
  }

  /**
   * See VirtioDevice.attachPersistentState. Kept there: the driver's cache-mode choice. QEMU
   * keeps it in its own copy of the config and shows that copy to the guest from then on —
   * after a back-end restart (it never sends the choice to the new back-end) and after a guest
   * reset. A guest that chose writethrough sends no FLUSH, so running writeback then would
   * acknowledge writes before they are durable. `null`: the bytes are left alone from now on
   * (the choice itself is kept until sessionEnded).
   */
  attachPersistentState(bytes: Uint8Array | null): void {
    this.state = bytes;
    if (bytes === null) return;
    const saved = this.savedChoice();
    if (saved >= 0 && this.driverWce < 0) {
      this.driverWce = saved;
      this.log.info(`cache mode: the driver chose ${saved === 1 ? 'writeback' : 'writethrough'}, kept from the previous back-end`);
      this.applyCacheMode();
    }
    this.saveState();
  }

  /** See VirtioDevice.sessionEnded: the driver's cache-mode choice is forgotten (writeback again). */
  sessionEnded(): void {
    this.driverWce = -1;
    this.setWriteback(true);
  }

  /** The driver's choice in the attached state (0 / 1), or -1 (none, or not ours). */
  private savedChoice(): number {
    const s = this.state;
    if (s === null || s.length < STATE_BYTES) return -1;
    for (let i = 0; i < 4; i++) if (s[i] !== STATE_MAGIC[i]) return -1;
    return s[4] <= 1 ? s[4] : -1;
  }

  private saveState(): void {
    const s = this.state;
    if (s === null || s.length < STATE_BYTES) return;
    s.set(STATE_MAGIC, 0);
    s[4] = this.driverWce < 0 ? STATE_NO_CHOICE : this.driverWce;
  }

  readConfig(offset: number, length: number): Uint8Array {
    return sliceConfig(this.config, offset, length);
  }

  /**
   * Only `writeback` is writable, and only with CONFIG_WCE negotiated (virtio 1.2 §5.2.5). A
   * driver write (not `migration`) that touches any other byte, or that this device cannot
   * honour, is refused whole with a BlkError `config-read-only` (the front-end gets a failure
   * ack); a migration write sets what is writable and leaves the rest.
   */
  writeConfig(offset: number, data: Uint8Array, migration = false): void {
    if (!Number.isInteger(offset) || offset < 0) throw new BlkError('config-read-only', `config write at offset ${offset}`);
    const at = BLK_CONFIG_WRITEBACK_OFFSET - offset;
    const covers = at >= 0 && at < data.length;
    if (!migration && data.length > 0 && !(covers && data.length === 1)) {
      throw new BlkError('config-read-only', `config bytes ${offset}..${offset + data.length - 1} are read-only (only writeback, byte ${BLK_CONFIG_WRITEBACK_OFFSET}, is writable)`);
    }
    if (!covers) return;
    if (!this.has(this.acked, VIRTIO_BLK_F_CONFIG_WCE)) {
      if (migration) return;
      throw new BlkError('config-read-only', 'writeback is read-only: CONFIG_WCE not negotiated');
    }
    // virtio 1.2 §5.2.5.2: with CONFIG_WCE but not FLUSH the device starts writethrough, and it
    // must stay so — the driver could never make a writeback cache durable. (Found by the
    // config-space fuzz target: the guest could switch writeback on without FLUSH.)
    if (!this.has(this.acked, VIRTIO_BLK_F_FLUSH) && data[at] !== 0) {
      if (migration) return;
      throw new BlkError('config-read-only', 'writeback cannot be enabled: FLUSH not negotiated, writethrough only');
    }
    this.driverWce = data[at] !== 0 ? 1 : 0;
    this.saveState();
    this.applyCacheMode();
  }

  private setWriteback(on: boolean): void {
    const v = on ? 1 : 0;
    if (this.configValues.writeback === v) return;
    this.configValues.writeback = v;
    this.config = encodeBlkConfig(this.configValues);
    for (const q of this.queues) q?.setWriteback(on);
    this.log.info(`cache mode: ${on ? 'writeback' : 'writethrough'}`);
  }

  /** The parser limits for the features negotiated now. */
  private limits(): BlkLimits {
    const c = this.configValues;
    return {
      capacity: c.capacity,
      readOnly: this.readOnly,
      discard: this.has(this.acked, VIRTIO_BLK_F_DISCARD),
      writeZeroes: this.has(this.acked, VIRTIO_BLK_F_WRITE_ZEROES),
      maxDiscardSectors: c.maxDiscardSectors,
      maxDiscardSeg: c.maxDiscardSeg,
      maxWriteZeroesSectors: c.maxWriteZeroesSectors,
      maxWriteZeroesSeg: c.maxWriteZeroesSeg,
    };
  }

  startQueue(index: number, ctx: QueueContext): QueueHandler {
    if (!Number.isInteger(index) || index < 0 || index >= this.numQueues) {
      throw new BlkError('bad-option', `queue ${index} does not exist (num_queues ${this.numQueues})`);
    }
    const q = new BlkQueue(ctx, {
      image: this.image,
      limits: this.limits(),
      serial: this.serial,
      segCapacity: this.segCapacity,
      rangeCapacity: this.rangeCapacity,
      writeback: this.writeback,
      counters: this.counters[index],
      log: this.log,
      pollUs: this.pollUs,
      pollGroup: this.pollGroup,
    });
    this.queues[index] = q;
    const stop = q.stop.bind(q);
    // Forget the queue once stopped so writeback changes do not reach a closed engine.
    q.stop = () => stop().then(() => { if (this.queues[index] === q) this.queues[index] = null; });
    return q;
  }

  /**
   * Device reset (RESET_DEVICE: QEMU sends one on every guest reset). The driver's cache-mode
   * choice survives it: QEMU keeps showing that choice to the rebooted guest (see
   * attachPersistentState); the session's end forgets it.
   */
  reset(): void {
    this.acked = 0n;
    this.setWriteback(this.driverWce !== 0);
    this.queues.fill(null);
  }

  /** The counters as Prometheus text. */
  metrics(labels = ''): string {
    return countersToPrometheus(this.counters, labels);
  }

  /** Plain copies of the per-queue counters. */
  stats(): BlkQueueCounters[] {
    return this.counters.map((c) => ({ ...c }));
  }

  /** Data segments per request the device advertises (seg_max). */
  get maxSegments(): number {
    return this.segMax;
  }
}
