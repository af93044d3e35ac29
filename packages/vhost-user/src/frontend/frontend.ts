/**
 * VhostUserFrontend: the QEMU role, for tests, tools and conformance runs against any
 * vhost-user back-end. It owns memfd guest memory, negotiates, sets up split rings with
 * {@link SplitQueueDriver}, kicks, receives calls, reads/writes config, and can send any raw
 * message (the hostile-input suite and fixture replay use that).
 * @module
 */
import { EventEmitter } from 'node:events';
import {
  FdWatcher, READABLE, close, eventfd, eventfdRead, eventfdWrite, ftruncate, memfdCreate, mmap, munmap, socketpair,
  unixConnect,
} from '@vhost-ts/sys';
import { SplitQueueDriver } from '@vhost-ts/virtqueue';
import { decodeReply, decodeRequest, encodeMessage, encodeReply } from '../codec/codec.js';
import type { RawFrame } from '../codec/framer.js';
import { NONE, u64, vringState, type Message, type Payload } from '../codec/payloads.js';
import { FRONTEND_REQUESTS, frontendRequestName } from '../codec/schema.js';
import * as C from '../constants.js';
import { bit } from '../constants.js';
import { ProtocolError } from '../errors.js';
import { MessageConnection } from '../transport/message-connection.js';
import { FrontendMemory, type FrontendRegionSpec } from './frontend-memory.js';

/** Options of {@link VhostUserFrontend}. */
export interface FrontendOptions {
  /** Guest memory layout; default two regions (1 MiB at 1 MiB, 2 MiB at 4 GiB). */
  regions?: readonly FrontendRegionSpec[];
  /** Reply timeout; default 5 s. */
  timeoutMs?: number;
  /** Use this (shared, not closed by us) memory instead of allocating — a "restarted QEMU" in tests. */
  memory?: FrontendMemory;
}

interface Pending {
  request: number;
  resolve(m: Message): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

/** One ring set up by the front-end. */
export class FrontendQueue {
  /** used-buffer notifications received. */
  calls = 0;
  /** Called on every call eventfd signal. */
  onCall: (() => void) | null = null;
  private watcher: FdWatcher | null = null;
  private waiters: (() => void)[] = [];

  constructor(readonly index: number, readonly driver: SplitQueueDriver, readonly kickFd: number,
    readonly callFd: number, readonly errFd: number, readonly layout: { desc: number; avail: number; used: number }) {
    this.watcher = new FdWatcher(callFd, () => {
      eventfdRead(callFd);
      this.calls++;
      this.onCall?.();
      for (const w of this.waiters.splice(0)) w();
    });
    this.watcher.start(READABLE);
  }

  /** Kicks the back-end. */
  kick(): void {
    eventfdWrite(this.kickFd, 1);
  }

  /** Resolves at the next call signal (or after `timeoutMs`). */
  waitCall(timeoutMs = 2000): Promise<boolean> {
    return new Promise((resolve) => {
      const t = setTimeout(() => resolve(false), timeoutMs);
      this.waiters.push(() => { clearTimeout(t); resolve(true); });
    });
  }

  /** Stops watching and closes the eventfds. */
  close(): void {
    this.watcher?.close();
    this.watcher = null;
    for (const fd of [this.kickFd, this.callFd, this.errFd]) {
      try { close(fd); } catch { /* ignore */ }
    }
  }
}

/** A request the back-end sent on the back-end channel. */
export interface BackendRequestRecord {
  readonly request: number;
  readonly flags: number;
  readonly payload: Payload;
}

/** The front-end. Events: `backend-request` (BackendRequestRecord), `close` (Error | null). */
export class VhostUserFrontend extends EventEmitter {
  readonly mem: FrontendMemory;
  private readonly conn: MessageConnection;
  private readonly pending: Pending[] = [];
  private readonly timeoutMs: number;
  private readonly ownsMemory: boolean;
  private channel: MessageConnection | null = null;
  readonly queues = new Map<number, FrontendQueue>();
  /** Back-end channel requests received. */
  readonly backendRequests: BackendRequestRecord[] = [];
  /** Protocol features acked (set by setProtocolFeatures). */
  protocol = 0n;
  /** Virtio features acked (set by setFeatures). */
  features = 0n;
  closedWith: Error | null | undefined = undefined;

  /** Wraps a connected socket (taken over). */
  constructor(fd: number, opts: FrontendOptions = {}) {
    super();
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.ownsMemory = opts.memory === undefined;
    this.mem = opts.memory ?? new FrontendMemory(opts.regions);
    this.conn = new MessageConnection(fd, 'frontend', true, {
      onFrame: (f) => this.onReply(f),
      onClose: (e) => this.onClosed(e),
    });
  }

  /** Connects to a back-end listening at `path`, retrying until `timeoutMs`. */
  static async connect(path: string, opts: FrontendOptions & { connectTimeoutMs?: number } = {}): Promise<VhostUserFrontend> {
    const deadline = Date.now() + (opts.connectTimeoutMs ?? 5000);
    for (;;) {
      try {
        return new VhostUserFrontend(unixConnect(path), opts);
      } catch (e) {
        if (Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }

  /** True once the socket closed. */
  get closed(): boolean {
    return this.conn.closed;
  }

  private onReply(f: RawFrame): void {
    const p = this.pending.shift();
    if (p === undefined) {
      for (const fd of f.fds) close(fd);
      throw new ProtocolError('BAD_REPLY', `unsolicited reply to ${frontendRequestName(f.header.request)}`);
    }
    clearTimeout(p.timer);
    if (f.header.request !== p.request) {
      for (const fd of f.fds) close(fd);
      const e = new ProtocolError('BAD_REPLY', `reply to ${f.header.request}, expected ${p.request}`);
      p.reject(e);
      throw e;
    }
    let m: Message;
    try {
      m = decodeReply('frontend', f.header, f.body, f.fds);
    } catch (e) {
      for (const fd of f.fds) close(fd);
      p.reject(e as Error);
      throw e;
    }
    p.resolve(m);
  }

  private onClosed(e: Error | null): void {
    this.closedWith = e;
    for (const p of this.pending.splice(0)) {
      clearTimeout(p.timer);
      p.reject(e ?? new ProtocolError('CLOSED', 'connection closed'));
    }
    this.emit('close', e);
  }

  /** Sends raw bytes (hostile tests). */
  sendRaw(bytes: Uint8Array, fds: readonly number[] = []): void {
    this.conn.send(bytes, fds);
  }

  /** Sends a pre-encoded request that asks for a reply (hostile tests) and resolves with it. */
  requestRaw(request: number, bytes: Uint8Array, fds: readonly number[] = []): Promise<Message> {
    if (this.conn.closed) return Promise.reject(new ProtocolError('CLOSED', 'connection closed'));
    const reply = this.expectReply(request);
    this.conn.send(bytes, fds);
    return reply;
  }

  private expectReply(request: number): Promise<Message> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.pending.findIndex((p) => p.timer === timer);
        if (i >= 0) this.pending.splice(i, 1);
        reject(new ProtocolError('TIMEOUT', `no reply to ${frontendRequestName(request)}`));
      }, this.timeoutMs);
      this.pending.push({ request, resolve, reject, timer });
    });
  }

  /**
   * Sends a request. Resolves with the reply when the request has one of its own or
   * `needReply` is set (REPLY_ACK), else with null once sent. `fds` stay owned by the caller.
   */
  async request(request: number, payload: Payload = NONE, opts: { fds?: readonly number[]; needReply?: boolean } = {}):
    Promise<Message | null> {
    if (this.conn.closed) throw new ProtocolError('CLOSED', 'connection closed');
    const s = FRONTEND_REQUESTS.get(request);
    const wants = (s !== undefined && s.reply !== null) || opts.needReply === true;
    const reply = wants ? this.expectReply(request) : null;
    this.conn.send(encodeMessage(request, opts.needReply ? C.VHOST_USER_NEED_REPLY_MASK : 0, payload), opts.fds ?? []);
    return reply;
  }

  /** Sends a request that has no reply of its own; with REPLY_ACK negotiated asks for an ack and checks it. */
  async send(request: number, payload: Payload = NONE, fds: readonly number[] = []): Promise<void> {
    const ack = (this.protocol & bit(C.VHOST_USER_PROTOCOL_F_REPLY_ACK)) !== 0n;
    const r = await this.request(request, payload, { fds, needReply: ack });
    if (r !== null && r.payload.kind === 'u64' && r.payload.value !== 0n) {
      throw new ProtocolError('DEVICE_FAILED', `${frontendRequestName(request)} failed (ack ${r.payload.value})`);
    }
  }

  private async getU64(request: number): Promise<bigint> {
    const r = await this.request(request);
    if (r === null || r.payload.kind !== 'u64') throw new ProtocolError('BAD_REPLY', `${frontendRequestName(request)}: no u64`);
    return r.payload.value;
  }

  getFeatures(): Promise<bigint> { return this.getU64(C.VHOST_USER_GET_FEATURES); }
  getProtocolFeatures(): Promise<bigint> { return this.getU64(C.VHOST_USER_GET_PROTOCOL_FEATURES); }
  getQueueNum(): Promise<bigint> { return this.getU64(C.VHOST_USER_GET_QUEUE_NUM); }
  getMaxMemSlots(): Promise<bigint> { return this.getU64(C.VHOST_USER_GET_MAX_MEM_SLOTS); }
  getStatus(): Promise<bigint> { return this.getU64(C.VHOST_USER_GET_STATUS); }

  async setFeatures(features: bigint): Promise<void> {
    await this.send(C.VHOST_USER_SET_FEATURES, u64(features));
    this.features = features;
  }
  async setProtocolFeatures(features: bigint): Promise<void> {
    // Sent before REPLY_ACK is in force: no ack requested.
    await this.request(C.VHOST_USER_SET_PROTOCOL_FEATURES, u64(features));
    this.protocol = features;
  }
  setOwner(): Promise<void> { return this.send(C.VHOST_USER_SET_OWNER); }
  setStatus(status: number): Promise<void> { return this.send(C.VHOST_USER_SET_STATUS, u64(status)); }
  resetDevice(): Promise<void> { return this.send(C.VHOST_USER_RESET_DEVICE); }

  /** SET_MEM_TABLE with every region. */
  setMemTable(): Promise<void> {
    return this.send(C.VHOST_USER_SET_MEM_TABLE, { kind: 'memory', regions: this.mem.descs }, this.mem.fds);
  }
  /** ADD_MEM_REG of region `i`. */
  addMemReg(i: number): Promise<void> {
    return this.send(C.VHOST_USER_ADD_MEM_REG, { kind: 'mem-region', region: this.mem.regions[i].desc }, [this.mem.regions[i].fd]);
  }
  /** REM_MEM_REG of region `i`. */
  remMemReg(i: number): Promise<void> {
    return this.send(C.VHOST_USER_REM_MEM_REG, { kind: 'mem-region', region: this.mem.regions[i].desc });
  }

  /**
   * The usual bring-up (the order QEMU uses): GET_FEATURES, GET/SET_PROTOCOL_FEATURES,
   * SET_OWNER, SET_BACKEND_REQ_FD, SET_FEATURES, SET_MEM_TABLE (or ADD_MEM_REG per region).
   * `want` masks the offered features / protocol features.
   */
  async negotiate(want: { features?: bigint; protocolFeatures?: bigint; memSlots?: boolean } = {}): Promise<void> {
    const offered = await this.getFeatures();
    // setupQueue drives split rings only, so VIRTIO_F_RING_PACKED is never acked.
    const features = offered & (want.features ?? ~0n) & ~bit(C.VIRTIO_F_RING_PACKED);
    if ((features & bit(C.VHOST_USER_F_PROTOCOL_FEATURES)) !== 0n) {
      const proto = (await this.getProtocolFeatures()) & (want.protocolFeatures ?? ~0n);
      await this.setProtocolFeatures(proto);
    }
    await this.setOwner();
    if ((this.protocol & bit(C.VHOST_USER_PROTOCOL_F_BACKEND_REQ)) !== 0n) await this.setBackendReqFd();
    await this.setFeatures(features);
    if (want.memSlots && (this.protocol & bit(C.VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS)) !== 0n) {
      for (let i = 0; i < this.mem.regions.length; i++) await this.addMemReg(i);
    } else {
      await this.setMemTable();
    }
  }

  /** Creates the back-end channel (socketpair; one end sent with SET_BACKEND_REQ_FD). */
  async setBackendReqFd(): Promise<void> {
    const [mine, theirs] = socketpair();
    this.channel?.close();
    this.channel = new MessageConnection(mine, 'backend', false, {
      onFrame: (f) => {
        const m = decodeRequest('backend', f.header, f.body, f.fds);
        for (const fd of m.fds) close(fd);
        const rec = { request: m.request, flags: m.flags, payload: m.payload };
        this.backendRequests.push(rec);
        this.emit('backend-request', rec);
        if ((m.flags & C.VHOST_USER_NEED_REPLY_MASK) !== 0) this.channel?.send(encodeReply(m.request, u64(0)));
      },
      onClose: () => { /* the back-end went away */ },
    });
    try {
      await this.send(C.VHOST_USER_SET_BACKEND_REQ_FD, NONE, [theirs]);
    } finally {
      close(theirs);
    }
  }

  /**
   * Sets up ring `index` of `size` entries: allocates desc/avail/used in guest memory, sends
   * SET_VRING_NUM/BASE/ADDR/KICK/CALL/ERR (and SET_VRING_ENABLE 1 with protocol features).
   */
  async setupQueue(index: number, size: number, opts: { regionIndex?: number; base?: number; enable?: boolean } = {}):
    Promise<FrontendQueue> {
    const eventIdx = (this.features & bit(C.VIRTIO_RING_F_EVENT_IDX)) !== 0n;
    const desc = this.mem.alloc(16 * size, 16, opts.regionIndex);
    const avail = this.mem.alloc(6 + 2 * size, 2, opts.regionIndex);
    const used = this.mem.alloc(6 + 8 * size, 4, opts.regionIndex);
    const base = opts.base ?? 0;
    const inOrder = (this.features & bit(C.VIRTIO_F_IN_ORDER)) !== 0n;
    const driver = new SplitQueueDriver(this.mem.memory, { size, descGpa: desc, availGpa: avail, usedGpa: used },
      { eventIdx, startIndex: base, inOrder });
    const kick = eventfd(0), call = eventfd(0), err = eventfd(0);
    const q = new FrontendQueue(index, driver, kick, call, err, { desc, avail, used });
    this.queues.get(index)?.close();
    this.queues.set(index, q);
    await this.send(C.VHOST_USER_SET_VRING_NUM, vringState(index, size));
    await this.send(C.VHOST_USER_SET_VRING_BASE, vringState(index, base));
    await this.send(C.VHOST_USER_SET_VRING_ADDR, {
      kind: 'vring-addr', index, flags: 0, descUserAddr: this.mem.gpaToUva(desc),
      usedUserAddr: this.mem.gpaToUva(used), availUserAddr: this.mem.gpaToUva(avail), logGuestAddr: used,
    });
    await this.send(C.VHOST_USER_SET_VRING_CALL, { kind: 'vring-fd', index, noFd: false }, [call]);
    await this.send(C.VHOST_USER_SET_VRING_ERR, { kind: 'vring-fd', index, noFd: false }, [err]);
    await this.send(C.VHOST_USER_SET_VRING_KICK, { kind: 'vring-fd', index, noFd: false }, [kick]);
    if ((opts.enable ?? true) && (this.features & bit(C.VHOST_USER_F_PROTOCOL_FEATURES)) !== 0n) {
      await this.send(C.VHOST_USER_SET_VRING_ENABLE, vringState(index, 1));
    }
    return q;
  }

  /** SET_VRING_ENABLE. */
  setVringEnable(index: number, on: boolean): Promise<void> {
    return this.send(C.VHOST_USER_SET_VRING_ENABLE, vringState(index, on ? 1 : 0));
  }

  /** GET_VRING_BASE: stops the ring, returns its next avail index. */
  async getVringBase(index: number): Promise<number> {
    const r = await this.request(C.VHOST_USER_GET_VRING_BASE, vringState(index, 0));
    if (r === null || r.payload.kind !== 'vring-state' || r.payload.index !== index) {
      throw new ProtocolError('BAD_REPLY', 'GET_VRING_BASE reply');
    }
    return r.payload.num;
  }

  /** GET_CONFIG; resolves null when the back-end signalled an error (empty payload). */
  async getConfig(offset: number, size: number): Promise<Uint8Array | null> {
    const r = await this.request(C.VHOST_USER_GET_CONFIG,
      { kind: 'config', offset, size, flags: 0, data: new Uint8Array(size) });
    if (r === null || r.payload.kind !== 'config') return null;
    if (r.payload.size !== size) throw new ProtocolError('BAD_REPLY', 'GET_CONFIG reply size differs from the request');
    return r.payload.data;
  }

  /** SET_CONFIG. */
  setConfig(offset: number, data: Uint8Array, flags = 0): Promise<void> {
    return this.send(C.VHOST_USER_SET_CONFIG, { kind: 'config', offset, size: data.length, flags, data });
  }

  /** SEND_RARP: asks the back-end to announce `mac` (6 bytes) on its network. */
  sendRarp(mac: Uint8Array): Promise<void> {
    if (mac.length !== 6) throw new RangeError(`sendRarp: a MAC is 6 bytes, got ${mac.length}`);
    let v = 0n;
    for (let i = 5; i >= 0; i--) v = (v << 8n) | BigInt(mac[i]);
    return this.send(C.VHOST_USER_SEND_RARP, u64(v));
  }

  /** NET_SET_MTU: tells the back-end the MTU the guest sees. */
  setMtu(mtu: number): Promise<void> {
    return this.send(C.VHOST_USER_NET_SET_MTU, u64(mtu));
  }

  /** SET_LOG_BASE with a fresh memfd log of `size` bytes; returns the mapped bitmap. */
  async setLogBase(size: number): Promise<{ log: Uint8Array; unmap(): void }> {
    const fd = memfdCreate('vhost-user-log');
    try {
      ftruncate(fd, size);
      const buffer = mmap(fd, size, 0, true);
      const r = await this.request(C.VHOST_USER_SET_LOG_BASE, { kind: 'log', mmapSize: size, mmapOffset: 0 }, { fds: [fd] });
      if (r === null || r.payload.kind !== 'u64') throw new ProtocolError('BAD_REPLY', 'SET_LOG_BASE reply');
      return { log: new Uint8Array(buffer), unmap: () => munmap(buffer) };
    } finally {
      close(fd);
    }
  }

  /** GET_INFLIGHT_FD: returns the fd (caller owns) and its description. */
  async getInflightFd(numQueues: number, queueSize: number): Promise<{ fd: number; mmapSize: number; mmapOffset: number }> {
    const r = await this.request(C.VHOST_USER_GET_INFLIGHT_FD,
      { kind: 'inflight', mmapSize: 0, mmapOffset: 0, numQueues, queueSize });
    if (r === null || r.payload.kind !== 'inflight' || r.fds.length !== 1) throw new ProtocolError('BAD_REPLY', 'GET_INFLIGHT_FD reply');
    return { fd: r.fds[0], mmapSize: r.payload.mmapSize, mmapOffset: r.payload.mmapOffset };
  }

  /** SET_INFLIGHT_FD (fd stays owned by the caller). */
  setInflightFd(fd: number, mmapSize: number, numQueues: number, queueSize: number): Promise<void> {
    return this.send(C.VHOST_USER_SET_INFLIGHT_FD, { kind: 'inflight', mmapSize, mmapOffset: 0, numQueues, queueSize }, [fd]);
  }

  /**
   * Echo helper for tests: puts `data` in a readable buffer and `outLen` writable bytes on
   * ring `index`, kicks when needed, and resolves with the written bytes once used.
   */
  async roundTrip(index: number, data: Uint8Array, outLen = data.length, timeoutMs = 2000): Promise<Uint8Array> {
    const q = this.queues.get(index);
    if (q === undefined) throw new Error(`queue ${index} not set up`);
    const inGpa = this.mem.alloc(Math.max(1, data.length), 8);
    const outGpa = this.mem.alloc(Math.max(1, outLen), 8);
    this.mem.memory.writeFrom(inGpa, data);
    const head = q.driver.addChain([inGpa, outGpa], [data.length, outLen], 2, 1);
    if (head < 0) throw new Error('ring full');
    q.driver.publish();
    if (q.driver.kickNeeded()) q.kick();
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const h = q.driver.popUsed();
      if (h === head) {
        const out = new Uint8Array(q.driver.lastLen);
        this.mem.memory.readInto(outGpa, out);
        return out;
      }
      if (h >= 0) throw new Error(`unexpected used head ${h}`);
      if (Date.now() > deadline) throw new ProtocolError('TIMEOUT', `request on ring ${index} not completed`);
      await Promise.race([q.waitCall(50), new Promise((r) => setTimeout(r, 5))]);
    }
  }

  /** Closes the connection, the back-end channel, queues and memory. */
  close(): void {
    this.conn.close();
    this.channel?.close();
    for (const q of this.queues.values()) q.close();
    this.queues.clear();
    if (this.ownsMemory) this.mem.close();
  }
}
