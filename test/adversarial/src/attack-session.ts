/**
 * AttackSession — one vhost-user connection driven by a hostile guest: our front-end negotiates
 * normally, then the rings are written by hand (any descriptor, any avail entry, any avail
 * index) through {@link RawRing}, which never trusts or needs the driver's bookkeeping.
 *
 * ```
 *  attacker (this process)                         victim (child process)
 *  GuestArena ── memfd regions ── SET_MEM_TABLE ──▶ mmap
 *  RawRing.desc/offer/kick ──── kick eventfd ─────▶ pop, walk, parse
 *  RawRing.usedIdx/usedElem ◀── used ring ────────── complete  (or: err eventfd + NEEDS_RESET)
 * ```
 * @module
 */
import { eventfdRead } from '@vhost-ts/sys';
import {
  FrontendMemory, VhostUserFrontend, VHOST_USER_BACKEND_CONFIG_CHANGE_MSG, VHOST_USER_PROTOCOL_F_BACKEND_REQ,
  VHOST_USER_PROTOCOL_F_CONFIG, VHOST_USER_PROTOCOL_F_STATUS, VIRTIO_CONFIG_S_NEEDS_RESET, bit, type FrontendQueue,
} from '@vhost-ts/vhost-user';
import { VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '@vhost-ts/virtqueue';
import { GuestArena } from './guest-arena.js';

/** One buffer of a chain built by {@link RawRing.chain}. */
export interface RawBuffer {
  readonly gpa: number;
  readonly len: number;
  /** Device-writable (VIRTQ_DESC_F_WRITE). */
  readonly write?: boolean;
  /** Extra flag bits (e.g. VIRTQ_DESC_F_INDIRECT). */
  readonly flags?: number;
}

/** A used element as the device wrote it. */
export interface UsedElem {
  readonly id: number;
  readonly len: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Raw access to one split ring the front-end set up (virtio 1.2 §2.7). */
export class RawRing {
  readonly size: number;
  readonly descGpa: number;
  readonly availGpa: number;
  readonly usedGpa: number;
  private nextDesc = 0;
  private availIdx = 0;
  private errSeen = false;

  constructor(readonly q: FrontendQueue, readonly arena: GuestArena) {
    this.size = q.driver.size;
    this.descGpa = q.layout.desc;
    this.availGpa = q.layout.avail;
    this.usedGpa = q.layout.used;
  }

  /** Bytes of the used ring, avail_event included (the device may write all of it). */
  get usedRange(): [number, number] {
    return [this.usedGpa, this.usedGpa + 6 + 8 * this.size];
  }

  /** Writes descriptor `i` verbatim. */
  desc(i: number, addr: number, len: number, flags: number, next: number): void {
    this.q.driver.writeDesc(i, addr, len, flags, next);
  }

  /**
   * Writes descriptor `i` from its raw words, for addresses a Number cannot hold exactly
   * (near 2^64): addr = hi × 2^32 + lo.
   */
  descWords(i: number, lo: number, hi: number, len: number, flags: number, next: number): void {
    const mem = this.arena.mem.memory;
    const at = this.descGpa + 16 * i;
    check(mem.setU32(at, lo >>> 0));
    check(mem.setU32(at + 4, hi >>> 0));
    check(mem.setU32(at + 8, len >>> 0));
    check(mem.setU32(at + 12, (flags & 0xffff) | ((next & 0xffff) << 16)));
  }

  /** Reserves `n` consecutive unused descriptor indices (raw; never recycled in a session). */
  takeDescs(n: number): number {
    if (this.nextDesc + n > this.size) throw new RangeError(`raw ring: ${n} more descriptors do not fit`);
    const first = this.nextDesc;
    this.nextDesc += n;
    return first;
  }

  /**
   * Starts handing out descriptor indices from 0 again (the ring's earlier chains are then
   * overwritten: only for a ring the device no longer reads, e.g. a broken one).
   */
  recycleDescs(): void {
    this.nextDesc = 0;
  }

  /** Writes a direct chain at fresh indices (NEXT links added); returns its head. */
  chain(bufs: readonly RawBuffer[]): number {
    const first = this.takeDescs(bufs.length);
    bufs.forEach((b, k) => {
      const last = k === bufs.length - 1;
      const flags = (b.write === true ? VIRTQ_DESC_F_WRITE : 0) | (b.flags ?? 0) | (last ? 0 : VIRTQ_DESC_F_NEXT);
      this.desc(first + k, b.gpa, b.len, flags, last ? 0 : first + k + 1);
    });
    return first;
  }

  /** Puts `head` (any value) in the next avail slot and publishes the new avail.idx. */
  offer(head: number): void {
    const mem = this.arena.mem.memory;
    check(mem.setU16(this.availGpa + 4 + 2 * (this.availIdx % this.size), head & 0xffff));
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.setAvailIdx(this.availIdx);
  }

  /** Stores avail.idx verbatim (virtio 1.2 §2.7.6). */
  setAvailIdx(v: number): void {
    check(this.arena.mem.memory.setU16(this.availGpa + 2, v & 0xffff));
  }

  /** Signals the kick eventfd. */
  kick(): void {
    this.q.kick();
  }

  /** used.idx as the device last published it. */
  usedIdx(): number {
    return checked(this.arena.mem.memory.getU16(this.usedGpa + 2));
  }

  /** Used element `k` (ring position, not masked by the caller). */
  usedElem(k: number): UsedElem {
    const at = this.usedGpa + 4 + 8 * (k % this.size);
    const mem = this.arena.mem.memory;
    return { id: checked(mem.getU32(at)), len: checked(mem.getU32(at + 4)) };
  }

  /** Waits until used.idx reaches (or passes, modulo 2^16) `count`; false on timeout. */
  async waitUsed(count: number, timeoutMs = 5000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (((this.usedIdx() - count) & 0xffff) >= 0x8000) {
      if (Date.now() > deadline) return false;
      await Promise.race([this.q.waitCall(20), sleep(5)]);
    }
    return true;
  }

  /** True once the device signalled this ring's error eventfd (sticky). */
  errSignaled(): boolean {
    if (!this.errSeen && eventfdRead(this.q.errFd) > 0) this.errSeen = true;
    return this.errSeen;
  }

  /** Waits for the error eventfd; false on timeout. */
  async waitErr(timeoutMs = 5000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.errSignaled()) {
      if (Date.now() > deadline) return false;
      await sleep(5);
    }
    return true;
  }
}

/** Options of {@link AttackSession.open}. */
export interface AttackSessionOptions {
  /** Rings to set up. */
  readonly queues: readonly number[];
  /** Ring size (power of two). Default 16. */
  readonly queueSize?: number;
  /** Mask applied to the offered virtio features. Default: everything offered. */
  readonly features?: bigint;
  /** Reply timeout of the front-end. Default 5 s. */
  readonly timeoutMs?: number;
}

/** virtio status bits a driver sets during initialisation (virtio 1.2 §3.1.1). */
const DRIVER_OK_STATUS = 0x01 | 0x02 | 0x08 | 0x04;

/** One connection of the attacker. */
export class AttackSession {
  private readonly rings = new Map<number, RawRing>();

  private constructor(readonly fe: VhostUserFrontend, readonly arena: GuestArena, private readonly memory: FrontendMemory) {}

  /** Connects to `socket`, negotiates (all protocol features offered), maps memory, sets up rings. */
  static async open(socket: string, opts: AttackSessionOptions): Promise<AttackSession> {
    const memory = new FrontendMemory();
    const arena = new GuestArena(memory);
    let fe: VhostUserFrontend | null = null;
    try {
      fe = await VhostUserFrontend.connect(socket, { memory, timeoutMs: opts.timeoutMs ?? 5000 });
      const s = new AttackSession(fe, arena, memory);
      await fe.negotiate({ features: opts.features ?? ~0n });
      if (s.hasStatus) await fe.setStatus(DRIVER_OK_STATUS);
      for (const i of opts.queues) {
        const q = await fe.setupQueue(i, opts.queueSize ?? 16);
        s.rings.set(i, new RawRing(q, arena));
      }
      return s;
    } catch (e) {
      fe?.close();
      memory.close();
      throw e;
    }
  }

  /** Ring `i` (must have been set up). */
  ring(i: number): RawRing {
    const r = this.rings.get(i);
    if (r === undefined) throw new RangeError(`ring ${i} was not set up`);
    return r;
  }

  /** VHOST_USER_PROTOCOL_F_STATUS negotiated. */
  get hasStatus(): boolean {
    return (this.fe.protocol & bit(VHOST_USER_PROTOCOL_F_STATUS)) !== 0n;
  }

  /**
   * CONFIG and BACKEND_REQ negotiated (and DRIVER_OK set by `open`): a device break must then
   * come with a CONFIG_CHANGE_MSG on the back-end channel (virtio 1.2 §2.1.2.1).
   */
  get expectsConfigChange(): boolean {
    const need = bit(VHOST_USER_PROTOCOL_F_CONFIG) | bit(VHOST_USER_PROTOCOL_F_BACKEND_REQ);
    return this.hasStatus && (this.fe.protocol & need) === need;
  }

  /** CONFIG_CHANGE_MSG requests received on the back-end channel so far. */
  get configChanges(): number {
    return this.fe.backendRequests.filter((r) => r.request === VHOST_USER_BACKEND_CONFIG_CHANGE_MSG).length;
  }

  /** GET_STATUS (device status byte, NEEDS_RESET included). */
  async status(): Promise<number> {
    return Number(await this.fe.getStatus());
  }

  /** True when the device reports VIRTIO_CONFIG_S_NEEDS_RESET. */
  async needsReset(): Promise<boolean> {
    return ((await this.status()) & VIRTIO_CONFIG_S_NEEDS_RESET) !== 0;
  }

  /** Snapshots guest memory; the used rings stay writable by the device. */
  snapshot(): void {
    for (const r of this.rings.values()) this.arena.allow(r.usedRange[0], r.usedRange[1] - r.usedRange[0]);
    this.arena.snapshot();
  }

  /** True while the connection is open. */
  get connected(): boolean {
    return !this.fe.closed;
  }

  /** Closes the connection and unmaps the memory. */
  close(): void {
    this.fe.close();
    this.memory.close();
  }
}

function check(r: number): void {
  if (r < 0) throw new RangeError(`guest memory access failed (${r})`);
}

function checked(v: number): number {
  check(v);
  return v;
}
