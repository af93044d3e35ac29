/**
 * The back-end protocol state machine for one front-end connection: negotiation, memory
 * table, rings, config, status, dirty log, inflight area, back-end channel.
 *
 * Error policy (see docs/protocol.md):
 * - malformed messages (codec errors) close the connection;
 * - a request that is well-formed but invalid here (bad ring index, ring size, memory
 *   table...) is answered with a failure REPLY_ACK when the front-end asked for one and REPLY_ACK
 *   was negotiated, and the connection continues; otherwise the connection is closed, since the
 *   front-end would carry on with state we refused;
 * - unknown request types are skipped (payload read, fds closed) and answered with a failure
 *   u64 when NEED_REPLY is set.
 * @module
 */
import { readlinkSync } from 'node:fs';
import {
  FdWatcher, READABLE, close, eventfdRead, eventfdWrite, fstatSize, ftruncate, mappingFaults, memfdCreate, mmap, munmap,
} from '@vhost-ts/sys';
import {
  GuestMemory, PackedQueueDevice, SplitQueueDevice, VIRTIO_F_RING_PACKED, decodePackedVringBase, encodePackedIndex,
  type DeviceQueue, type SplitQueueLayout,
} from '@vhost-ts/virtqueue';
import { decodeReply, decodeRequest, encodeMessage, encodeReply, needsReply } from '../codec/codec.js';
import type { RawFrame } from '../codec/framer.js';
import { NONE, u64, vringState, type MemoryRegionDesc, type Message, type Payload } from '../codec/payloads.js';
import { frontendRequestName, protocolFeatureName } from '../codec/schema.js';
import * as C from '../constants.js';
import { bit } from '../constants.js';
import { DEVICE_STATE_BYTES, type QueueContext, type VirtioDevice } from '../device.js';
import { ProtocolError } from '../errors.js';
import { MessageConnection } from '../transport/message-connection.js';
import { SplitInflightTracker, inflightQueueRegionSize } from './inflight.js';
import { PackedInflightTracker, packedInflightQueueRegionSize } from './packed-inflight.js';
import { mapRegion, unmapRegion, type MappedRegion } from './memory-map.js';
import { Vring } from './vring.js';

/** Protocol features the back-end always offers (vhost-user.rst recommends MQ for every back-end). */
export const TRANSPORT_PROTOCOL_FEATURES = bit(C.VHOST_USER_PROTOCOL_F_MQ) | bit(C.VHOST_USER_PROTOCOL_F_LOG_SHMFD)
  | bit(C.VHOST_USER_PROTOCOL_F_REPLY_ACK) | bit(C.VHOST_USER_PROTOCOL_F_BACKEND_REQ)
  | bit(C.VHOST_USER_PROTOCOL_F_RESET_DEVICE) | bit(C.VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS)
  | bit(C.VHOST_USER_PROTOCOL_F_STATUS);
/**
 * Protocol features offered only when the device asks for them in `protocolFeatures` (RARP and
 * MTU also need the device's `sendRarp` / `setMtu`).
 */
export const DEVICE_OPTIONAL_PROTOCOL_FEATURES = bit(C.VHOST_USER_PROTOCOL_F_CONFIG)
  | bit(C.VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD) | bit(C.VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS)
  | bit(C.VHOST_USER_PROTOCOL_F_RARP) | bit(C.VHOST_USER_PROTOCOL_F_MTU);
/** The MTU range of VHOST_USER_NET_SET_MTU (virtio 1.2 §5.1.4.1: at least 68; a u16 field). */
const MIN_MTU = 68;
const MAX_MTU = 65535;
/** Virtio feature bits the transport adds to the device's. */
export const TRANSPORT_FEATURES = bit(C.VHOST_USER_F_PROTOCOL_FEATURES) | bit(C.VHOST_F_LOG_ALL);
/**
 * Device feature bits we never offer: IOMMU translation is not implemented. (VIRTIO_F_RING_PACKED
 * passes through when the device offers it: rings then run as PackedQueueDevice.)
 */
export const UNSUPPORTED_FEATURES = bit(C.VIRTIO_F_ACCESS_PLATFORM);

/** Options of a {@link BackendSession}. */
export interface SessionOptions {
  device: VirtioDevice;
  /** Sends a message on the main socket (fds stay owned by the caller). */
  send(bytes: Uint8Array, fds?: readonly number[]): void;
  /** One-line log sink. */
  log(line: string): void;
  /** Answer to GET_MAX_MEM_SLOTS; default 32. */
  maxMemSlots?: number;
  /** Poll period for rings set up with the "no fd" kick flag; default 5 ms. */
  pollIntervalMs?: number;
  /** How long to wait for a handler's stop() before giving up (and leaking memory); default 10 s. */
  stopTimeoutMs?: number;
  /**
   * Message trace: one line per request (name, flags, size, fd count) and per outcome. Meant for
   * operators debugging a front-end; off unless given.
   */
  trace?: (line: string) => void;
}

interface MappedArea {
  buffer: ArrayBuffer;
  bytes: Uint8Array;
}

interface InflightArea extends MappedArea {
  numQueues: number;
  queueSize: number;
  regionSize: number;
  /** Region format, fixed by VIRTIO_F_RING_PACKED as acked when the area was installed. */
  packed: boolean;
}

const MAP_ALIGN = 4096;
/** SET_CONFIG flags value of rust-vmm front-ends for migration writes (see setConfig). */
const RUST_VMM_CONFIG_LIVE_MIGRATION = 2;
const REPLIED = -1;

function closeFds(fds: number[]): void {
  while (fds.length > 0) {
    const fd = fds.pop() as number;
    try { close(fd); } catch { /* ignore */ }
  }
}

/** Two region descriptions that denote the same mapping. */
function sameRegion(a: MemoryRegionDesc, b: MemoryRegionDesc): boolean {
  return a.guestPhysAddr === b.guestPhysAddr && a.userAddr === b.userAddr && a.size === b.size
    && a.mmapOffset === b.mmapOffset;
}

function take(msg: Message): number {
  const fd = msg.fds.shift();
  if (fd === undefined) throw new ProtocolError('BAD_FD_COUNT', 'missing fd');
  return fd;
}

/**
 * Throws (after closing `fd`) unless the event loop can poll `fd`: epoll refuses regular files
 * such as a memfd with EPERM, and a kick or back-end channel fd we cannot watch is useless.
 * Checked when the fd arrives, so the failure is a typed, ackable error on that request
 * instead of a system error later, when the ring starts.
 */
function assertPollable(fd: number, what: string): void {
  try {
    new FdWatcher(fd, () => {}).close();
  } catch (e) {
    try { close(fd); } catch { /* ignore */ }
    throw new ProtocolError('INVALID_ARGUMENT', `${what}: fd cannot be polled (${(e as Error).message})`);
  }
}

function isPow2(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

/**
 * vhost-user.rst: kick, call and error fds are eventfds. Another kind would be polled forever
 * once readable (a pipe at EOF, a socket whose peer left: a core spinning on no kick), or
 * written to with no one reading: refused when it comes (closed). Without /proc, not checked.
 */
function assertEventfd(fd: number, what: string): void {
  let link: string;
  try {
    link = readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return;
  }
  if (link === 'anon_inode:[eventfd]') return;
  try { close(fd); } catch { /* ignore */ }
  throw new ProtocolError('INVALID_ARGUMENT', `${what}: fd is not an eventfd (${link})`);
}

/** Maps `size` bytes at `offset` of a front-end's fd; `what` names the request in errors. */
function mapArea(fd: number, size: number, offset: number, what: string): MappedArea {
  const fileSize = fstatSize(fd);
  if (size <= 0 || offset + size > fileSize) {
    throw new ProtocolError('BAD_MEMORY', `${what}: area of ${size} bytes at ${offset} does not fit an fd of ${fileSize} bytes`);
  }
  const mapOff = offset - (offset % MAP_ALIGN);
  let buffer: ArrayBuffer;
  try {
    buffer = mmap(fd, size + (offset - mapOff), mapOff, true);
  } catch (e) {
    // Too large for one mapping, or an fd opened read-only: refused like any bad area.
    throw new ProtocolError('BAD_MEMORY', `${what}: area of ${size} bytes cannot be mapped (${(e as Error).message})`);
  }
  return { buffer, bytes: new Uint8Array(buffer, offset - mapOff, size) };
}

/** One front-end connection's protocol state. */
export class BackendSession {
  private readonly device: VirtioDevice;
  private readonly opts: SessionOptions;
  private readonly offeredFeatures: bigint;
  private readonly offeredProtocol: bigint;
  private readonly maxQueueSize: number;
  private acked = 0n;
  private deviceFeaturesSet: bigint | null = null;
  private protocol = 0n;
  private regions: MappedRegion[] = [];
  /** How many times ADD_MEM_REG added each region (absent = once). */
  private readonly regionRefs = new Map<MappedRegion, number>();
  /** The current memory table (null before SET_MEM_TABLE). */
  memory: GuestMemory | null = null;
  /** Per-queue state. */
  rings: Vring[];
  private logArea: MappedArea | null = null;
  private logFd = -1;
  /** VHOST_F_LOG_ALL is acked and a log is mapped: the memory marks what the back-end writes. */
  private dirtyLogging = false;
  /** {@link GuestMemory.dirtyPagesMarked} of memory tables already replaced. */
  private dirtyMarksRetired = 0;
  private inflightArea: InflightArea | null = null;
  /** Set by drain(): rings no longer start. */
  private draining = false;
  private channel: MessageConnection | null = null;
  private status = 0;
  private deviceBroken = false;
  private leak = false;
  private closed = false;

  constructor(opts: SessionOptions) {
    this.opts = opts;
    this.device = opts.device;
    this.offeredFeatures = (this.device.features & ~UNSUPPORTED_FEATURES) | TRANSPORT_FEATURES;
    let optional = (this.device.protocolFeatures ?? 0n) & DEVICE_OPTIONAL_PROTOCOL_FEATURES;
    if (this.device.sendRarp === undefined) optional &= ~bit(C.VHOST_USER_PROTOCOL_F_RARP);
    if (this.device.setMtu === undefined) optional &= ~bit(C.VHOST_USER_PROTOCOL_F_MTU);
    this.offeredProtocol = TRANSPORT_PROTOCOL_FEATURES | optional;
    this.maxQueueSize = Math.min(this.device.maxQueueSize, C.VIRTQ_MAX_SIZE);
    this.rings = Array.from({ length: this.device.numQueues }, (_, i) => new Vring(i));
    this.device.onConfigChanged = () => this.sendConfigChange();
  }

  /** Features acked by SET_FEATURES. */
  get ackedFeatures(): bigint {
    return this.acked;
  }
  /** Protocol features acked by SET_PROTOCOL_FEATURES. */
  get protocolFeatures(): bigint {
    return this.protocol;
  }
  /** Virtio features offered in GET_FEATURES. */
  get features(): bigint {
    return this.offeredFeatures;
  }
  /** Protocol features offered in GET_PROTOCOL_FEATURES. */
  get offeredProtocolFeatures(): bigint {
    return this.offeredProtocol;
  }

  private has(feature: number): boolean {
    return (this.acked & bit(feature)) !== 0n;
  }
  private hasProtocol(feature: number): boolean {
    return (this.protocol & bit(feature)) !== 0n;
  }
  private requireProtocol(feature: number, what: string): void {
    if (!this.hasProtocol(feature)) {
      throw new ProtocolError('NOT_NEGOTIATED', `${what} needs ${protocolFeatureName(feature)}`);
    }
  }

  /**
   * Handles one frame. Returns a promise when the request completes asynchronously (the
   * connection reads nothing else meanwhile). Throws / rejects with the error that must close
   * the connection.
   */
  handle(frame: RawFrame): void | Promise<void> {
    const { header } = frame;
    if (frame.spec === null) {
      closeFds(frame.fds);
      this.opts.log(`vhost-user: unknown request ${header.request} (size ${header.size}) skipped`);
      if (needsReply(header.flags)) this.opts.send(encodeReply(header.request, u64(1)));
      return;
    }
    let msg: Message;
    try {
      msg = decodeRequest('frontend', header, frame.body, frame.fds);
    } catch (e) {
      closeFds(frame.fds);
      // A well-framed request whose address, size or offset is >= 2^53 (no guest memory
      // reaches that far): refuse that request alone, as any other unusable value, when the
      // front-end asked for an ack and the request has no reply of its own to fill in.
      if (e instanceof ProtocolError && e.code === 'ADDRESS_RANGE' && frame.spec.reply === null) {
        this.failed(header.request, header.flags, e);
        return;
      }
      throw e;
    }
    const trace = this.opts.trace;
    if (trace !== undefined) {
      trace(`vhost-user: <- ${frontendRequestName(msg.request)} flags 0x${header.flags.toString(16)} size ${header.size} fds ${msg.fds.length}`);
    }
    let r: number | Promise<number>;
    try {
      r = this.dispatch(msg);
    } catch (e) {
      closeFds(msg.fds);
      this.failed(msg.request, msg.flags, e);
      return;
    }
    if (typeof r === 'number') {
      closeFds(msg.fds);
      this.finish(msg, r);
      return;
    }
    return r.then((v) => {
      closeFds(msg.fds);
      this.finish(msg, v);
    }, (e) => {
      closeFds(msg.fds);
      this.failed(msg.request, msg.flags, e);
    });
  }

  private finish(msg: Message, ack: number): void {
    this.opts.trace?.(`vhost-user: -> ${frontendRequestName(msg.request)} ${ack === REPLIED ? 'replied' : `done (${ack})`}`);
    if (ack === REPLIED || this.closed) return;
    // vhost-user.rst "REPLY_ACK": with the extension negotiated and need_reply set, every
    // request without a reply of its own MUST get a u64 (0 success, non-zero failure).
    if (needsReply(msg.flags) && this.hasProtocol(C.VHOST_USER_PROTOCOL_F_REPLY_ACK)) {
      this.opts.send(encodeReply(msg.request, u64(ack)));
    }
  }

  private failed(request: number, flags: number, e: unknown): void {
    const canAck = e instanceof ProtocolError && !e.fatal && needsReply(flags)
      && this.hasProtocol(C.VHOST_USER_PROTOCOL_F_REPLY_ACK)
      && (request !== C.VHOST_USER_GET_VRING_BASE);
    this.opts.trace?.(`vhost-user: -> ${frontendRequestName(request)} failed: ${(e as Error).message}`);
    if (!canAck) throw e;
    this.opts.log(`vhost-user: ${frontendRequestName(request)} rejected: ${(e as Error).message}`);
    this.opts.send(encodeReply(request, u64(1)));
  }

  private ring(index: number): Vring {
    const r = this.rings[index];
    if (r === undefined) {
      throw new ProtocolError('INVALID_ARGUMENT', `ring index ${index} >= queue count ${this.rings.length}`);
    }
    return r;
  }

  private reply(request: number, payload: Payload, fds?: readonly number[]): number {
    this.opts.send(encodeReply(request, payload), fds);
    return REPLIED;
  }

  private dispatch(msg: Message): number | Promise<number> {
    const p = msg.payload;
    switch (msg.request) {
      case C.VHOST_USER_GET_FEATURES:
        return this.reply(msg.request, u64(this.offeredFeatures));
      case C.VHOST_USER_SET_FEATURES:
        return this.setFeatures((p as { value: bigint }).value);
      case C.VHOST_USER_GET_PROTOCOL_FEATURES:
        return this.reply(msg.request, u64(this.offeredProtocol));
      case C.VHOST_USER_SET_PROTOCOL_FEATURES:
        return this.setProtocolFeatures((p as { value: bigint }).value);
      case C.VHOST_USER_SET_OWNER:
        return 0;
      case C.VHOST_USER_RESET_OWNER:
        // Deprecated; vhost-user.rst recommends ignoring it or disabling all rings. We stop them.
        return this.stopAllRings(false).then(() => 0);
      case C.VHOST_USER_GET_QUEUE_NUM:
        return this.reply(msg.request, u64(this.rings.length));
      case C.VHOST_USER_GET_MAX_MEM_SLOTS:
        return this.reply(msg.request, u64(this.opts.maxMemSlots ?? 32));
      case C.VHOST_USER_SET_MEM_TABLE:
        return this.setMemTable(msg);
      case C.VHOST_USER_ADD_MEM_REG:
        return this.addMemReg(msg);
      case C.VHOST_USER_REM_MEM_REG:
        return this.remMemReg(msg);
      case C.VHOST_USER_SET_LOG_BASE:
        return this.setLogBase(msg);
      case C.VHOST_USER_SET_LOG_FD: {
        if (this.logFd >= 0) close(this.logFd);
        this.logFd = take(msg);
        return 0;
      }
      case C.VHOST_USER_SET_VRING_NUM:
        return this.setVringNum(p as { index: number; num: number });
      case C.VHOST_USER_SET_VRING_ADDR:
        return this.setVringAddr(p as Extract<Payload, { kind: 'vring-addr' }>);
      case C.VHOST_USER_SET_VRING_BASE:
        return this.setVringBase(p as { index: number; num: number });
      case C.VHOST_USER_GET_VRING_BASE:
        return this.getVringBase(msg.request, (p as { index: number }).index);
      case C.VHOST_USER_SET_VRING_KICK:
      case C.VHOST_USER_SET_VRING_CALL:
      case C.VHOST_USER_SET_VRING_ERR:
        return this.setVringFd(msg);
      case C.VHOST_USER_SET_VRING_ENABLE:
        return this.setVringEnable(p as { index: number; num: number });
      case C.VHOST_USER_VRING_KICK: {
        this.requireProtocol(C.VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS, 'VHOST_USER_VRING_KICK');
        const r = this.ring((p as { index: number }).index);
        this.tryStart(r);
        this.kick(r);
        return 0;
      }
      case C.VHOST_USER_SET_BACKEND_REQ_FD:
        return this.setBackendReqFd(msg);
      case C.VHOST_USER_GET_CONFIG:
        return this.getConfig(p as Extract<Payload, { kind: 'config' }>);
      case C.VHOST_USER_SET_CONFIG:
        return this.setConfig(p as Extract<Payload, { kind: 'config' }>);
      case C.VHOST_USER_SET_STATUS: {
        this.requireProtocol(C.VHOST_USER_PROTOCOL_F_STATUS, 'VHOST_USER_SET_STATUS');
        const v = (p as { value: bigint }).value;
        if (v > 0xffn) throw new ProtocolError('INVALID_ARGUMENT', `status 0x${v.toString(16)} is not a u8`);
        this.status = Number(v);
        if (this.status === 0) this.deviceBroken = false;
        return 0;
      }
      case C.VHOST_USER_GET_STATUS:
        this.requireProtocol(C.VHOST_USER_PROTOCOL_F_STATUS, 'VHOST_USER_GET_STATUS');
        return this.reply(msg.request, u64(this.currentStatus()));
      case C.VHOST_USER_RESET_DEVICE:
        this.requireProtocol(C.VHOST_USER_PROTOCOL_F_RESET_DEVICE, 'VHOST_USER_RESET_DEVICE');
        return this.resetDevice().then(() => 0);
      case C.VHOST_USER_GET_INFLIGHT_FD:
        return this.getInflightFd(p as Extract<Payload, { kind: 'inflight' }>);
      case C.VHOST_USER_SET_INFLIGHT_FD:
        return this.setInflightFd(msg);
      // Explicit-reply requests we do not implement: answer "failure" so the front-end is not left waiting.
      case C.VHOST_USER_IOTLB_MSG:
      case C.VHOST_USER_POSTCOPY_END:
      case C.VHOST_USER_CHECK_DEVICE_STATE:
      case C.VHOST_USER_GET_SHARED_OBJECT:
        this.opts.log(`vhost-user: ${frontendRequestName(msg.request)} not supported; failure reply sent`);
        return this.reply(msg.request, u64(1));
      case C.VHOST_USER_SET_DEVICE_STATE_FD:
        this.opts.log('vhost-user: VHOST_USER_SET_DEVICE_STATE_FD not supported; failure reply sent');
        // Bits 0-7 non-zero = error, bit 8 = no fd returned.
        return this.reply(msg.request, u64(1 | C.VHOST_USER_VRING_NOFD_MASK));
      case C.VHOST_USER_GET_SHMEM_CONFIG:
        // No VIRTIO shared memory regions: nregions 0, all sizes 0.
        return this.reply(msg.request, { kind: 'raw', bytes: new Uint8Array(8 + 256 * 8) });
      case C.VHOST_USER_SEND_RARP:
        return this.sendRarp((p as { value: bigint }).value);
      case C.VHOST_USER_NET_SET_MTU:
        return this.setMtu((p as { value: bigint }).value);
      default:
        // SET_VRING_ENDIAN, crypto sessions, POSTCOPY_ADVISE/LISTEN, GPU_SET_SOCKET: their
        // protocol features are never offered.
        throw new ProtocolError('NOT_NEGOTIATED', `${frontendRequestName(msg.request)} is not supported`,
          { fatal: msg.request === C.VHOST_USER_POSTCOPY_ADVISE || msg.request === C.VHOST_USER_CREATE_CRYPTO_SESSION });
    }
  }

  // --- net-specific requests (the device implements them) --------------------------------------

  /**
   * SEND_RARP: the first 6 payload bytes (in memory order) are the guest's MAC; the device
   * broadcasts a RARP from it. A group or all-zero address cannot be a NIC's: refused, but the
   * request changes no state, so the connection stays (QEMU never asks for an ack here).
   */
  private sendRarp(value: bigint): number {
    this.requireProtocol(C.VHOST_USER_PROTOCOL_F_RARP, 'VHOST_USER_SEND_RARP');
    const mac = new Uint8Array(6);
    for (let i = 0; i < 6; i++) mac[i] = Number((value >> BigInt(8 * i)) & 0xffn);
    const text = [...mac].map((b) => b.toString(16).padStart(2, '0')).join(':');
    if ((mac[0] & 1) !== 0 || mac.every((b) => b === 0)) {
      this.opts.log(`vhost-user: SEND_RARP for ${text} refused: not a unicast MAC`);
      return 1;
    }
    this.opts.log(`vhost-user: SEND_RARP: announcing ${text}`);
    this.device.sendRarp!(mac);
    return 0;
  }

  /**
   * NET_SET_MTU: the MTU the front-end exposes to the guest. Out of range is an invalid
   * request; an MTU the device cannot carry is its refusal (failure ack, connection kept, as
   * for SET_CONFIG).
   */
  private setMtu(value: bigint): number {
    this.requireProtocol(C.VHOST_USER_PROTOCOL_F_MTU, 'VHOST_USER_NET_SET_MTU');
    if (value < BigInt(MIN_MTU) || value > BigInt(MAX_MTU)) {
      throw new ProtocolError('INVALID_ARGUMENT', `VHOST_USER_NET_SET_MTU: ${value} outside ${MIN_MTU}..${MAX_MTU}`);
    }
    const mtu = Number(value);
    if (!this.device.setMtu!(mtu)) {
      this.opts.log(`vhost-user: NET_SET_MTU ${mtu} refused by the device`);
      return 1;
    }
    this.opts.log(`vhost-user: NET_SET_MTU ${mtu}`);
    return 0;
  }

  // --- negotiation -----------------------------------------------------------------------------

  private setFeatures(value: bigint): number {
    if ((value & ~this.offeredFeatures) !== 0n) {
      throw new ProtocolError('INVALID_ARGUMENT',
        `SET_FEATURES acks bits 0x${(value & ~this.offeredFeatures).toString(16)} that were not offered`);
    }
    this.acked = value;
    const deviceBits = value & ~TRANSPORT_FEATURES;
    if (this.deviceFeaturesSet !== deviceBits) {
      this.device.setFeatures(deviceBits);
      this.deviceFeaturesSet = deviceBits;
    }
    this.updateDirtyLog();
    // vhost-user.rst "Ring states": SET_FEATURES without VHOST_USER_F_PROTOCOL_FEATURES
    // enables all rings immediately.
    if (!this.has(C.VHOST_USER_F_PROTOCOL_FEATURES)) {
      for (const r of this.rings) {
        r.enabled = true;
        this.tryStart(r);
      }
    }
    return 0;
  }

  private setProtocolFeatures(value: bigint): number {
    if ((value & ~this.offeredProtocol) !== 0n) {
      throw new ProtocolError('INVALID_ARGUMENT',
        `SET_PROTOCOL_FEATURES acks bits 0x${(value & ~this.offeredProtocol).toString(16)} that were not offered`);
    }
    const inband = bit(C.VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS);
    const needed = bit(C.VHOST_USER_PROTOCOL_F_BACKEND_REQ) | bit(C.VHOST_USER_PROTOCOL_F_REPLY_ACK);
    if ((value & inband) !== 0n && (value & needed) !== needed) {
      // vhost-user.rst "In-band notifications": the back-end should close the connection.
      throw new ProtocolError('INVALID_ARGUMENT', 'INBAND_NOTIFICATIONS without BACKEND_REQ and REPLY_ACK', { fatal: true });
    }
    this.protocol = value;
    return 0;
  }

  private currentStatus(): number {
    return this.status | (this.deviceBroken ? C.VIRTIO_CONFIG_S_NEEDS_RESET : 0);
  }

  // --- memory ----------------------------------------------------------------------------------

  private async setMemTable(msg: Message): Promise<number> {
    const { regions } = msg.payload as Extract<Payload, { kind: 'memory' }>;
    const fds = regions.map(() => take(msg));
    const mapped: MappedRegion[] = [];
    try {
      // mapRegion closes its fd; the ones not reached yet are closed here on failure.
      while (fds.length > 0) mapped.push(await mapRegion(regions[mapped.length], fds.shift()!, () => this.closed));
    } catch (e) {
      closeFds(fds);
      mapped.forEach(unmapRegion);
      throw e;
    }
    return this.replaceMemory(mapped, mapped);
  }

  private addMemReg(msg: Message): Promise<number> {
    this.requireProtocol(C.VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS, 'VHOST_USER_ADD_MEM_REG');
    if (this.regions.length >= (this.opts.maxMemSlots ?? 32)) {
      throw new ProtocolError('BAD_MEMORY', `all ${this.opts.maxMemSlots ?? 32} memory slots are in use`);
    }
    const desc = (msg.payload as Extract<Payload, { kind: 'mem-region' }>).region;
    // QEMU runs one vhost device per queue pair over the same connection (vhost-user-net with
    // queues > 1), and each adds the same regions. An identical region is counted, not mapped
    // twice; its fd stays in msg.fds and is closed unused by handle().
    const same = this.regions.find((r) => sameRegion(r.desc, desc));
    if (same !== undefined) {
      this.regionRefs.set(same, (this.regionRefs.get(same) ?? 1) + 1);
      return Promise.resolve(0);
    }
    return mapRegion(desc, take(msg), () => this.closed).then((added) => this.replaceMemory([...this.regions, added], [added]));
  }

  private remMemReg(msg: Message): Promise<number> {
    this.requireProtocol(C.VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS, 'VHOST_USER_REM_MEM_REG');
    // vhost-user.rst: a stray fd MAY be accepted and MUST be closed unused (done by handle()).
    const { region } = msg.payload as Extract<Payload, { kind: 'mem-region' }>;
    const match = this.regions.find((r) => r.desc.guestPhysAddr === region.guestPhysAddr
      && r.desc.userAddr === region.userAddr && r.desc.size === region.size);
    const refs = match === undefined ? 0 : (this.regionRefs.get(match) ?? 1);
    if (match !== undefined && refs > 1) {
      this.regionRefs.set(match, refs - 1);
      return Promise.resolve(0);
    }
    const keep = this.regions.filter((r) => r !== match);
    if (keep.length === this.regions.length) {
      throw new ProtocolError('INVALID_ARGUMENT', `REM_MEM_REG: no region at gpa 0x${region.guestPhysAddr.toString(16)}`);
    }
    return this.replaceMemory(keep, []);
  }

  /**
   * Installs a new memory table: stops running rings, re-points them at the new memory,
   * restarts them, and only then unmaps regions that are gone (so no ring ever sees
   * unmapped memory). `fresh` are the newly mapped regions, unmapped again on failure.
   */
  private async replaceMemory(next: MappedRegion[], fresh: MappedRegion[]): Promise<number> {
    if (this.closed) {
      // The connection ended while a large region was being mapped: nothing to install it in.
      fresh.forEach(unmapRegion);
      throw new ProtocolError('BAD_MEMORY', 'the session ended while its memory was being mapped');
    }
    let memory: GuestMemory | null = null;
    if (next.length > 0) {
      try {
        memory = new GuestMemory(next.flatMap((r) => r.pieces));
      } catch (e) {
        fresh.forEach(unmapRegion);
        throw new ProtocolError('BAD_MEMORY', `memory table rejected: ${(e as Error).message}`);
      }
    }
    // Rings running now, and rings a previous table change left without their memory: QEMU
    // updates a changed region by removing it and adding it back, so a ring's memory can be
    // missing between two messages, and the ring resumes once it is back.
    const restart = this.rings.filter((r) => r.running || r.awaitingMemory);
    for (const r of restart) if (r.running) await this.stopRing(r, true);
    const old = this.regions;
    this.regions = next;
    for (const r of this.regionRefs.keys()) if (!next.includes(r)) this.regionRefs.delete(r);
    this.dirtyMarksRetired += this.memory?.dirtyPagesMarked ?? 0;
    this.memory = memory;
    this.updateDirtyLog();
    for (const r of restart) this.restartOnNewMemory(r);
    if (!this.leak) for (const r of old) if (!next.includes(r)) unmapRegion(r);
    return 0;
  }

  /**
   * Restarts a ring stopped for a memory table change (or an address change). A ring whose rings
   * are not (yet) in the table waits, kick fd kept, for the next table or SET_VRING_ADDR.
   */
  private restartOnNewMemory(r: Vring): void {
    const was = r.awaitingMemory;
    let why = this.memory === null ? 'the memory table is empty' : '';
    try {
      this.tryStart(r);
    } catch (e) {
      why = (e as Error).message;
    }
    // (Not started for another reason — disabled, broken — is not waiting for memory.)
    r.awaitingMemory = !r.running && why !== '';
    if (r.awaitingMemory && !was) this.opts.log(`vhost-user: ring ${r.index} waits for its memory (${why})`);
    else if (was && r.running) this.opts.log(`vhost-user: ring ${r.index} resumed on the new memory table`);
  }

  private setLogBase(msg: Message): number {
    this.requireProtocol(C.VHOST_USER_PROTOCOL_F_LOG_SHMFD, 'VHOST_USER_SET_LOG_BASE');
    const { mmapSize, mmapOffset } = msg.payload as Extract<Payload, { kind: 'log' }>;
    const fd = take(msg);
    let area: MappedArea;
    try {
      area = mapArea(fd, mmapSize, mmapOffset, 'SET_LOG_BASE');
    } finally {
      close(fd);
    }
    const old = this.logArea;
    this.logArea = area;
    // Info level on purpose: a migration is rare, and its logs are how an operator (and the
    // migration e2e test) sees that the back-end took part in dirty tracking.
    this.opts.log(`vhost-user: dirty log base set (${mmapSize} bytes at offset ${mmapOffset}: ` +
      `${Math.floor(mmapSize * 8 * 4096 / 1048576)} MiB of guest memory)`);
    this.updateDirtyLog();
    if (old !== null) munmap(old.buffer);
    return this.reply(msg.request, u64(0));
  }

  private updateDirtyLog(): void {
    const on = this.has(C.VHOST_F_LOG_ALL) && this.logArea !== null;
    this.memory?.setDirtyLog(on ? (this.logArea as MappedArea).bytes : null);
    if (on !== this.dirtyLogging) {
      this.dirtyLogging = on;
      this.opts.log(on
        ? 'vhost-user: dirty logging on (VHOST_F_LOG_ALL)'
        : `vhost-user: dirty logging off after ${this.dirtyPagesMarked} dirty page marks`);
    }
  }

  /**
   * Dirty-log page bits this session has set so far (all memory tables): how much the back-end
   * reported to a migrating front-end. Grows only while VHOST_F_LOG_ALL is on.
   */
  /**
   * Pages of this session's mappings (guest memory, dirty log, inflight area) that faulted
   * because the front-end shrank the file behind them (see @vhost-ts/sys mappingFaults): each
   * now reads as zeros. Any is a front-end that broke its memory: the connection should end.
   */
  memoryFaults(): number {
    let n = 0;
    for (const r of this.regions) for (const p of r.pieces) n += mappingFaults(p.buffer);
    if (this.logArea !== null) n += mappingFaults(this.logArea.buffer);
    if (this.inflightArea !== null) n += mappingFaults(this.inflightArea.buffer);
    return n;
  }

  get dirtyPagesMarked(): number {
    return this.dirtyMarksRetired + (this.memory?.dirtyPagesMarked ?? 0);
  }

  // --- rings -----------------------------------------------------------------------------------

  private setVringNum(p: { index: number; num: number }): number {
    const r = this.ring(p.index);
    if (r.running) throw new ProtocolError('INVALID_ARGUMENT', `SET_VRING_NUM on running ring ${p.index}`);
    // virtio 1.2 §2.7: a split queue's size is a power of 2; a packed queue's any size (§2.8),
    // both at most 32768 — here at most the device's largest.
    const packed = this.has(VIRTIO_F_RING_PACKED);
    if (!Number.isInteger(p.num) || p.num < 1 || p.num > this.maxQueueSize || (!packed && !isPow2(p.num))) {
      throw new ProtocolError('INVALID_ARGUMENT',
        `ring ${p.index}: size ${p.num} refused (${packed ? '' : 'split rings: a power of two; '}this device takes at most ${this.maxQueueSize})`);
    }
    r.size = p.num;
    return 0;
  }

  private setVringBase(p: { index: number; num: number }): number {
    const r = this.ring(p.index);
    if (r.running) throw new ProtocolError('INVALID_ARGUMENT', `SET_VRING_BASE on running ring ${p.index}`);
    // Split rings: bits 16-31 are reserved (vhost-user.rst "A vring descriptor index for split virtqueues");
    // packed rings use all 32 (avail slot | wrap << 15 | used slot << 16 | wrap << 31).
    if (p.num > 0xffff && !this.has(VIRTIO_F_RING_PACKED)) throw new ProtocolError('INVALID_ARGUMENT', `ring ${p.index}: base ${p.num} has reserved bits`);
    r.base = p.num;
    r.baseFromFrontEnd = true;
    return 0;
  }

  private checkPlacement(r: Vring, a: { descUserAddr: number; availUserAddr: number; usedUserAddr: number }): void {
    if (this.memory === null) return;
    const n = r.size || 1;
    const eventIdx = this.has(C.VIRTIO_RING_F_EVENT_IDX);
    // Packed rings (virtio 1.2 §2.8): desc = descriptor ring, avail / used = the driver / device
    // event suppression structures, 4 bytes each.
    const checks: [string, number, number][] = this.has(VIRTIO_F_RING_PACKED) ? [
      ['descriptor ring', a.descUserAddr, 16 * n],
      ['driver event area', a.availUserAddr, 4],
      ['device event area', a.usedUserAddr, 4],
    ] : [
      ['descriptor table', a.descUserAddr, 16 * n],
      ['available ring', a.availUserAddr, 4 + 2 * n + (eventIdx ? 2 : 0)],
      ['used ring', a.usedUserAddr, 4 + 8 * n + (eventIdx ? 2 : 0)],
    ];
    for (const [what, uva, len] of checks) {
      if (this.memory.uvaToGpa(uva, len) < 0) {
        throw new ProtocolError('INVALID_ARGUMENT', `ring ${r.index}: ${what} at 0x${uva.toString(16)} (+${len}) is not in guest memory`);
      }
    }
  }

  private setVringAddr(p: Extract<Payload, { kind: 'vring-addr' }>): number | Promise<number> {
    const r = this.ring(p.index);
    if ((p.flags & ~(1 << C.VHOST_VRING_F_LOG)) !== 0) {
      throw new ProtocolError('INVALID_ARGUMENT', `ring ${p.index}: unknown vring flags 0x${p.flags.toString(16)}`);
    }
    this.checkPlacement(r, p);
    const addr = {
      descUserAddr: p.descUserAddr, availUserAddr: p.availUserAddr, usedUserAddr: p.usedUserAddr,
      logGuestAddr: p.logGuestAddr, flags: p.flags,
    };
    const old = r.addr;
    if (!r.running || (old !== null && old.descUserAddr === addr.descUserAddr
      && old.availUserAddr === addr.availUserAddr && old.usedUserAddr === addr.usedUserAddr)) {
      // Not running, or only the log flag/address changed (QEMU toggles VHOST_VRING_F_LOG on live rings).
      r.addr = addr;
      // A ring waiting for its memory may be in the table at these addresses (the front-end
      // moved its mappings and says so): it resumes.
      if (r.awaitingMemory) this.restartOnNewMemory(r);
      return 0;
    }
    return this.stopRing(r, true).then(() => {
      r.addr = addr;
      this.tryStart(r);
      return 0;
    });
  }

  private async getVringBase(request: number, index: number): Promise<number> {
    const r = this.ring(index);
    // vhost-user.rst: GET_VRING_BASE stops the ring; the reply carries the next avail index.
    await this.stopRing(r, false);
    r.broken = false;
    // During migration this is the source's final stop: everything the ring wrote is logged.
    if (this.dirtyLogging) this.opts.log(`vhost-user: ring ${index} stopped with dirty logging on (${this.dirtyPagesMarked} dirty page marks)`);
    return this.reply(request, vringState(index, r.base));
  }

  private setVringFd(msg: Message): number {
    const { index, noFd } = msg.payload as Extract<Payload, { kind: 'vring-fd' }>;
    const r = this.ring(index);
    const fd = noFd ? -1 : take(msg);
    const kind = msg.request === C.VHOST_USER_SET_VRING_KICK ? 'kick' : msg.request === C.VHOST_USER_SET_VRING_CALL ? 'call' : 'error';
    if (fd >= 0) assertEventfd(fd, `ring ${index}: ${kind}`);
    switch (msg.request) {
      case C.VHOST_USER_SET_VRING_KICK:
        if (fd >= 0) assertPollable(fd, `ring ${index}: kick`);
        this.unwatchKick(r);
        if (r.kickFd >= 0) close(r.kickFd);
        r.kickFd = fd;
        r.polling = noFd;
        if (r.running) this.watchKick(r);
        this.tryStart(r);
        return 0;
      case C.VHOST_USER_SET_VRING_CALL:
        if (r.callFd >= 0) close(r.callFd);
        r.callFd = fd;
        return 0;
      default:
        if (r.errFd >= 0) close(r.errFd);
        r.errFd = fd;
        return 0;
    }
  }

  private setVringEnable(p: { index: number; num: number }): number {
    const r = this.ring(p.index);
    if (p.num > 1) throw new ProtocolError('INVALID_ARGUMENT', `ring ${p.index}: enable value ${p.num}`);
    r.enabled = p.num === 1;
    if (r.enabled) {
      this.tryStart(r);
      if (r.pendingKick) this.kick(r);
    }
    return 0;
  }

  private hasKickSource(r: Vring): boolean {
    return r.kickFd >= 0 || r.polling || this.hasProtocol(C.VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS);
  }

  /** Starts the ring's device handler if the ring is complete, started and enabled. */
  private tryStart(r: Vring): void {
    if (r.running || r.broken || this.closed || this.draining || !r.enabled || this.memory === null || r.size === 0
      || r.addr === null || !this.hasKickSource(r)) return;
    const mem = this.memory;
    const a = r.addr;
    this.checkPlacement(r, a);
    const eventIdx = this.has(C.VIRTIO_RING_F_EVENT_IDX), indirect = this.has(C.VIRTIO_RING_F_INDIRECT_DESC);
    let queue: DeviceQueue;
    try {
      if (this.has(VIRTIO_F_RING_PACKED)) {
        const b = decodePackedVringBase(r.base);
        queue = new PackedQueueDevice(mem, {
          size: r.size,
          descGpa: mem.uvaToGpa(a.descUserAddr, 16 * r.size),
          driverGpa: mem.uvaToGpa(a.availUserAddr, 4),
          deviceGpa: mem.uvaToGpa(a.usedUserAddr, 4),
        }, {
          eventIdx, indirect,
          nextAvail: encodePackedIndex(b.availIndex, b.availWrap), nextUsed: encodePackedIndex(b.usedIndex, b.usedWrap),
        });
      } else {
        const layout: SplitQueueLayout = {
          size: r.size,
          descGpa: mem.uvaToGpa(a.descUserAddr, 16 * r.size),
          availGpa: mem.uvaToGpa(a.availUserAddr, 4 + 2 * r.size),
          usedGpa: mem.uvaToGpa(a.usedUserAddr, 4 + 8 * r.size),
        };
        queue = new SplitQueueDevice(mem, layout, { eventIdx, indirect, nextAvail: r.base, inOrder: this.has(C.VIRTIO_F_IN_ORDER) });
      }
    } catch (e) {
      throw new ProtocolError('INVALID_ARGUMENT', `ring ${r.index}: ${(e as Error).message}`);
    }
    r.inflight = null;
    const area = this.inflightArea;
    if (area !== null && this.hasProtocol(C.VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD)) {
      // A ring may be smaller than the area's queues (firmware drivers cap their rings: SeaBIOS
      // uses 128 entries on a queue-size=1024 disk); it tracks in the first entries of its region.
      if (r.index >= area.numQueues || r.size > area.queueSize) {
        this.opts.log(`vhost-user: ring ${r.index}: inflight area (${area.numQueues}x${area.queueSize}) does not cover it`);
      } else if (area.packed !== queue.packed) {
        // The format follows RING_PACKED when the area was installed (QEMU sets features
        // first, vhost_dev_prepare_inflight); a ring of the other format runs without it.
        this.opts.log(`vhost-user: ring ${r.index}: inflight area is in the ${area.packed ? 'packed' : 'split'} format; running without it`);
      } else {
        const region = area.bytes.subarray(r.index * area.regionSize, (r.index + 1) * area.regionSize);
        if (queue instanceof PackedQueueDevice) this.startPackedInflight(r, region, queue);
        else this.startSplitInflight(r, region, queue);
      }
    }
    if (r.inflight === null && !queue.packed && r.baseFromFrontEnd && queue.nextAvail !== queue.publishedUsedIdx) {
      // A front-end that kept its split rings across a reconnect may restart them from 0 (DPDK
      // virtio-user in server mode does): every chain it made available then looks like an
      // avail.idx jump, and the ring breaks. With no inflight area to say better, used.idx is
      // where the device provably stopped: resume there, as DPDK's vhost library does. The
      // front-ends that send the right base (QEMU: used.idx after a crash, the stop index
      // after a clean stop, both equal to used.idx here since a stop completes every popped
      // chain) never take this path; nor do the back-end's own restarts (memory table changes),
      // whose base is the stop's, possibly ahead of used.idx after a stop that timed out.
      this.opts.log(`vhost-user: ring ${r.index}: SET_VRING_BASE ${queue.nextAvail} but used.idx is ${queue.publishedUsedIdx}: resuming at used.idx`);
      queue.nextAvail = queue.publishedUsedIdx;
    }
    r.queue = queue;
    const ctx: QueueContext = {
      index: r.index, queue, memory: mem, inflight: r.inflight,
      notify: () => this.notify(r),
      broken: (reason: string) => this.broken(r, reason),
    };
    try {
      r.handler = this.device.startQueue(r.index, ctx);
    } catch (e) {
      r.queue = null;
      this.broken(r, `startQueue failed: ${(e as Error).message}`);
      return;
    }
    this.watchKick(r);
    r.awaitingMemory = false; // however it started (a new kick fd, enable, features)
    // Entries may already be waiting (restart, reconnect); the front-end will not kick again.
    this.kick(r);
  }

  private startSplitInflight(r: Vring, region: Uint8Array, queue: DeviceQueue): void {
    const tracker = new SplitInflightTracker(region, r.size, () => queue.publishedUsedIdx);
    r.inflight = tracker;
    if (tracker.fresh) return;
    // An area a previous back-end (or this one, before a stop) used: every request it popped
    // was either published in used.idx or is still flagged in flight, so the next avail index
    // is used.idx + in-flight (vhost-user.rst "Inflight I/O tracking"; as libvhost-user's
    // vu_check_queue_inflights). SET_VRING_BASE cannot be trusted here: QEMU derives it from
    // used.idx when the connection drops, and a completion published after that moment would
    // make the ring re-pop an answered request — the guest then sees a used id that is not a
    // head and fails its I/O.
    const next = (queue.publishedUsedIdx + tracker.resubmit.length) & 0xffff;
    if (next !== queue.nextAvail) {
      this.opts.log(`vhost-user: ring ${r.index}: next avail ${next} from the inflight area (SET_VRING_BASE said ${queue.nextAvail})`);
      queue.nextAvail = next;
    }
  }

  private startPackedInflight(r: Vring, region: Uint8Array, queue: PackedQueueDevice): void {
    const tracker = new PackedInflightTracker(region, queue);
    r.inflight = tracker;
    if (tracker.problem !== null) {
      this.opts.log(`vhost-user: ring ${r.index}: packed inflight region not usable (${tracker.problem}); initialised again`);
    }
    if (tracker.fresh) return;
    // A used area is the only trustworthy position: QEMU keeps a packed ring's position from
    // the previous start when the back-end dies (virtio_queue_restore_last_avail_idx does
    // nothing for packed rings), so SET_VRING_BASE may lag by everything the old back-end did.
    // Resume at the committed used position, avail past the chains still in flight.
    const base = queue.vringBase;
    queue.nextAvail = tracker.resumeAvail;
    queue.setUsedIdx(tracker.resumeUsed);
    if (queue.vringBase !== base) {
      this.opts.log(`vhost-user: ring ${r.index}: packed position 0x${queue.vringBase.toString(16)} from the inflight area (SET_VRING_BASE said 0x${base.toString(16)}), ${tracker.resubmit.length} to resubmit`);
    }
  }

  private watchKick(r: Vring): void {
    this.unwatchKick(r);
    if (r.kickFd >= 0) {
      const fd = r.kickFd;
      r.kickWatcher = new FdWatcher(fd, (_events, error) => {
        if (error !== undefined) {
          this.opts.log(`vhost-user: ring ${r.index}: kick fd error ${error.message}`);
          this.unwatchKick(r);
          return;
        }
        try {
          eventfdRead(fd);
        } catch (e) {
          // Checked to be an eventfd when it came; a read that fails now would fail forever.
          this.opts.log(`vhost-user: ring ${r.index}: kick fd unreadable (${(e as Error).message}): no longer watched`);
          this.unwatchKick(r);
          return;
        }
        this.kick(r);
      });
      r.kickWatcher.start(READABLE);
    } else if (r.polling) {
      // vhost-user.rst SET_VRING_KICK bit 8: no fd — poll the ring instead.
      r.pollTimer = setInterval(() => this.kick(r), this.opts.pollIntervalMs ?? 5);
      r.pollTimer.unref();
    }
  }

  private unwatchKick(r: Vring): void {
    r.kickWatcher?.close();
    r.kickWatcher = null;
    if (r.pollTimer !== null) clearInterval(r.pollTimer);
    r.pollTimer = null;
  }

  private kick(r: Vring): void {
    if (r.handler === null || !r.enabled || r.broken) {
      r.pendingKick = true;
      return;
    }
    r.pendingKick = false;
    try {
      r.handler.onKick();
    } catch (e) {
      this.broken(r, `onKick threw: ${(e as Error).message}`);
    }
  }

  private notify(r: Vring): void {
    if (r.callFd >= 0) {
      try { eventfdWrite(r.callFd, 1); } catch { /* front-end went away; the session will end */ }
    } else if (this.channel !== null && this.hasProtocol(C.VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS)) {
      this.channel.send(encodeMessage(C.VHOST_USER_BACKEND_VRING_CALL, 0, vringState(r.index, 0)));
    }
  }

  private broken(r: Vring, reason: string): void {
    if (r.broken) return;
    r.broken = true;
    const first = !this.deviceBroken;
    this.deviceBroken = true;
    this.opts.log(`vhost-user: ring ${r.index} broken: ${reason}`);
    if (r.errFd >= 0) {
      try { eventfdWrite(r.errFd, 1); } catch { /* ignore */ }
    } else if (this.channel !== null && this.hasProtocol(C.VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS)) {
      this.channel.send(encodeMessage(C.VHOST_USER_BACKEND_VRING_ERR, 0, vringState(r.index, 0)));
    }
    // virtio 1.2 §2.1.2.1: with DRIVER_OK set, a device that sets DEVICE_NEEDS_RESET MUST send
    // a configuration change notification. Over vhost-user that is CONFIG_CHANGE_MSG (when
    // CONFIG and BACKEND_REQ are negotiated); a front-end re-reading GET_STATUS then sees
    // NEEDS_RESET. Once per device break, not per ring.
    if (first && (this.status & C.VIRTIO_CONFIG_S_DRIVER_OK) !== 0) this.sendConfigChange();
  }

  /**
   * Stops a ring's handler (awaiting its in-flight requests) and saves its next avail index.
   * `keepKick` keeps the kick fd (re-pointing); otherwise the kick fd is closed (GET_VRING_BASE).
   */
  private async stopRing(r: Vring, keepKick: boolean): Promise<void> {
    // One stop at a time per ring: a second caller (the front-end leaving while close() drains,
    // GET_VRING_BASE racing a reset) must wait for the handler's stop(), not see `handler`
    // already null and go on to unmap memory that in-flight requests still target.
    while (r.stopping !== null) await r.stopping;
    const done = this.stopRingNow(r, keepKick);
    r.stopping = done;
    try {
      await done;
    } finally {
      if (r.stopping === done) r.stopping = null;
    }
  }

  private async stopRingNow(r: Vring, keepKick: boolean): Promise<void> {
    this.unwatchKick(r);
    const h = r.handler;
    r.handler = null;
    if (h !== null) {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), this.opts.stopTimeoutMs ?? 10_000);
      });
      const res = await Promise.race([h.stop().then(() => 'ok' as const, (e: Error) => {
        this.opts.log(`vhost-user: ring ${r.index}: stop() failed: ${e.message}`);
        return 'ok' as const;
      }), timeout]);
      clearTimeout(timer);
      if (res === 'timeout') {
        // A handler that never drains may still have I/O aimed at guest memory: never unmap it.
        this.leak = true;
        this.opts.log(`vhost-user: ring ${r.index}: stop() did not finish; guest memory will not be unmapped`);
      }
    }
    if (r.queue !== null) {
      r.base = r.queue instanceof PackedQueueDevice ? r.queue.vringBase : r.queue.nextAvail;
      r.baseFromFrontEnd = false;
    }
    r.queue = null;
    r.inflight = null;
    if (!keepKick) {
      if (r.kickFd >= 0) close(r.kickFd);
      r.kickFd = -1;
      r.polling = false;
      r.awaitingMemory = false;
    }
  }

  private async stopAllRings(closeFdsToo: boolean): Promise<void> {
    for (const r of this.rings) await this.stopRing(r, false);
    if (closeFdsToo) {
      for (const r of this.rings) {
        if (r.callFd >= 0) close(r.callFd);
        if (r.errFd >= 0) close(r.errFd);
        r.callFd = -1;
        r.errFd = -1;
      }
    }
  }

  private async resetDevice(): Promise<void> {
    await this.stopAllRings(true);
    this.rings = this.rings.map((r) => new Vring(r.index));
    this.device.reset();
    this.acked = 0n;
    this.deviceFeaturesSet = null;
    this.status = 0;
    this.deviceBroken = false;
    this.updateDirtyLog();
  }

  // --- config, back-end channel, inflight ----------------------------------------------------------

  private getConfig(p: Extract<Payload, { kind: 'config' }>): number {
    // vhost-user.rst GET_CONFIG: the reply size MUST match the request; a zero-length payload
    // signals an error.
    if (!this.hasProtocol(C.VHOST_USER_PROTOCOL_F_CONFIG) || p.offset + p.size > C.VHOST_USER_MAX_CONFIG_SIZE) {
      this.opts.log(`vhost-user: GET_CONFIG offset ${p.offset} size ${p.size} refused`);
      return this.reply(C.VHOST_USER_GET_CONFIG, NONE);
    }
    const data = new Uint8Array(p.size);
    const got = this.device.readConfig(p.offset, p.size);
    data.set(got.subarray(0, p.size));
    return this.reply(C.VHOST_USER_GET_CONFIG, { kind: 'config', offset: p.offset, size: p.size, flags: p.flags, data });
  }

  private setConfig(p: Extract<Payload, { kind: 'config' }>): number {
    this.requireProtocol(C.VHOST_USER_PROTOCOL_F_CONFIG, 'VHOST_USER_SET_CONFIG');
    // Flags: 0 driver write, 1 migration (vhost-user.rst). Front-ends built on rust-vmm's vhost
    // crate (Cloud Hypervisor) number them WRITABLE = 1 and LIVE_MIGRATION = 2: 2 is taken as
    // migration too, and their driver writes (1) as migration writes — writable bytes set,
    // read-only ones left, the only difference being no refusal.
    if (p.offset + p.size > C.VHOST_USER_MAX_CONFIG_SIZE || p.flags > RUST_VMM_CONFIG_LIVE_MIGRATION) {
      throw new ProtocolError('INVALID_ARGUMENT', `SET_CONFIG offset ${p.offset} size ${p.size} flags ${p.flags}`);
    }
    // A guest write the device refuses fails this request only (a REPLY_ACK of 1), never the session.
    if (this.device.writeConfig === undefined) {
      this.opts.log('vhost-user: SET_CONFIG on a read-only config space refused');
      return 1;
    }
    try {
      this.device.writeConfig(p.offset, p.data, p.flags !== C.VHOST_SET_CONFIG_TYPE_FRONTEND);
    } catch (e) {
      this.opts.log(`vhost-user: SET_CONFIG refused by the device: ${(e as Error).message}`);
      return 1;
    }
    return 0;
  }

  private setBackendReqFd(msg: Message): number {
    this.requireProtocol(C.VHOST_USER_PROTOCOL_F_BACKEND_REQ, 'VHOST_USER_SET_BACKEND_REQ_FD');
    const fd = take(msg);
    assertPollable(fd, 'back-end channel');
    this.channel?.close();
    const channel = new MessageConnection(fd, 'backend', true, {
      onFrame: (f) => {
        // Replies to our CONFIG_CHANGE_MSG etc.: validate, then drop.
        try {
          decodeReply('backend', f.header, f.body, f.fds);
        } finally {
          closeFds(f.fds);
        }
      },
      onClose: (e) => {
        if (e !== null) this.opts.log(`vhost-user: back-end channel closed: ${e.message}`);
        if (this.channel === channel) this.channel = null;
      },
    });
    this.channel = channel;
    return 0;
  }

  private sendConfigChange(): void {
    if (this.closed || this.channel === null || !this.hasProtocol(C.VHOST_USER_PROTOCOL_F_CONFIG)) return;
    const flags = this.hasProtocol(C.VHOST_USER_PROTOCOL_F_REPLY_ACK) ? C.VHOST_USER_NEED_REPLY_MASK : 0;
    this.channel.send(encodeMessage(C.VHOST_USER_BACKEND_CONFIG_CHANGE_MSG, flags, NONE));
  }

  private checkInflightShape(numQueues: number, queueSize: number): void {
    const sizeOk = this.has(VIRTIO_F_RING_PACKED) ? queueSize >= 1 : isPow2(queueSize);
    if (numQueues < 1 || numQueues > this.rings.length || !sizeOk || queueSize > C.VIRTQ_MAX_SIZE) {
      throw new ProtocolError('INVALID_ARGUMENT', `inflight area for ${numQueues} queues of ${queueSize}`);
    }
  }

  /** Bytes per queue region in the split or packed format (vhost-user.rst "Inflight I/O tracking"). */
  private inflightRegionSize(packed: boolean, queueSize: number): number {
    return packed ? packedInflightQueueRegionSize(queueSize) : inflightQueueRegionSize(queueSize);
  }

  private getInflightFd(p: Extract<Payload, { kind: 'inflight' }>): number {
    this.requireProtocol(C.VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD, 'VHOST_USER_GET_INFLIGHT_FD');
    this.checkInflightShape(p.numQueues, p.queueSize);
    // The back-end sizes the area; the format is the ring format negotiated now (QEMU sends
    // SET_FEATURES right before GET_INFLIGHT_FD for exactly this).
    const packed = this.has(VIRTIO_F_RING_PACKED);
    const regionSize = this.inflightRegionSize(packed, p.queueSize);
    // Room for the device's state after the queue regions (see VirtioDevice.attachPersistentState).
    const size = regionSize * p.numQueues + (this.device.attachPersistentState !== undefined ? DEVICE_STATE_BYTES : 0);
    const fd = memfdCreate('vhost-user-inflight');
    try {
      ftruncate(fd, size);
      const area = mapArea(fd, size, 0, 'GET_INFLIGHT_FD');
      this.installInflight({ ...area, numQueues: p.numQueues, queueSize: p.queueSize, regionSize, packed });
      return this.reply(C.VHOST_USER_GET_INFLIGHT_FD,
        { kind: 'inflight', mmapSize: size, mmapOffset: 0, numQueues: p.numQueues, queueSize: p.queueSize }, [fd]);
    } finally {
      close(fd);
    }
  }

  private setInflightFd(msg: Message): number {
    this.requireProtocol(C.VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD, 'VHOST_USER_SET_INFLIGHT_FD');
    const p = msg.payload as Extract<Payload, { kind: 'inflight' }>;
    const fd = take(msg);
    try {
      this.checkInflightShape(p.numQueues, p.queueSize);
      const packed = this.has(VIRTIO_F_RING_PACKED);
      const regionSize = this.inflightRegionSize(packed, p.queueSize);
      if (p.mmapSize < regionSize * p.numQueues) {
        throw new ProtocolError('INVALID_ARGUMENT', `inflight area of ${p.mmapSize} bytes is too small`);
      }
      // Packed regions are read through 16- and 32-bit views.
      if (packed && p.mmapOffset % 8 !== 0) {
        throw new ProtocolError('INVALID_ARGUMENT', `inflight area offset ${p.mmapOffset} is not 8-byte aligned`);
      }
      const area = mapArea(fd, p.mmapSize, p.mmapOffset, 'SET_INFLIGHT_FD');
      this.installInflight({ ...area, numQueues: p.numQueues, queueSize: p.queueSize, regionSize, packed });
    } finally {
      close(fd);
    }
    return 0;
  }

  private installInflight(area: InflightArea): void {
    const old = this.inflightArea;
    if (old !== null && this.rings.some((r) => r.inflight !== null)) {
      munmap(area.buffer);
      throw new ProtocolError('INVALID_ARGUMENT', 'inflight area replaced while rings use it');
    }
    this.inflightArea = area;
    if (this.device.attachPersistentState !== undefined) {
      // An area from another back-end implementation may have no room for it: then no state.
      const at = area.regionSize * area.numQueues;
      this.device.attachPersistentState(area.bytes.length >= at + DEVICE_STATE_BYTES ? area.bytes.subarray(at, at + DEVICE_STATE_BYTES) : null);
    }
    if (old !== null) munmap(old.buffer);
  }

  // --- teardown --------------------------------------------------------------------------------

  /**
   * Quiesces the session while the connection stays open: no ring starts any more, every
   * running ring stops popping and its in-flight requests complete and are published. Call it
   * before closing the connection on a graceful shutdown — a front-end that loses the back-end
   * (QEMU's `reconnect`) reads used.idx at that moment to decide where the next back-end
   * starts, so completions must not trail the close.
   */
  async drain(): Promise<void> {
    if (this.closed) return;
    this.draining = true;
    await this.stopAllRings(false);
  }

  /**
   * Ends the session: stops every ring (awaiting in-flight requests), resets the device,
   * unmaps memory, log and inflight areas, closes every fd it holds. Idempotent.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.device.onConfigChanged = null;
    await this.stopAllRings(true);
    try {
      // Detached first: the reset below must not overwrite the state the next back-end of this
      // guest reads. Then the device forgets what only this front-end knew.
      this.device.attachPersistentState?.(null);
      this.device.reset();
      this.device.sessionEnded?.();
    } catch (e) {
      this.opts.log(`vhost-user: device reset failed: ${(e as Error).message}`);
    }
    this.channel?.close();
    this.channel = null;
    if (this.dirtyPagesMarked > 0) this.opts.log(`vhost-user: session ends after ${this.dirtyPagesMarked} dirty page marks`);
    this.dirtyMarksRetired += this.memory?.dirtyPagesMarked ?? 0;
    this.memory = null;
    if (!this.leak) {
      this.regions.forEach(unmapRegion);
      if (this.logArea !== null) munmap(this.logArea.buffer);
      if (this.inflightArea !== null) munmap(this.inflightArea.buffer);
    }
    this.regions = [];
    this.regionRefs.clear();
    this.logArea = null;
    this.inflightArea = null;
    if (this.logFd >= 0) close(this.logFd);
    this.logFd = -1;
  }
}
