/**
 * Target `vu-session`: the back-end protocol state machine (`BackendSession`,
 * packages/vhost-user/src/backend/session.ts) fed valid and mutated message streams with real
 * fds, in process, framed by the real `MessageFramer` exactly as `MessageConnection` does.
 *
 * Each case starts from a valid session — negotiation, memory table (memfds), inflight area,
 * dirty log, one ring with call/err/kick eventfds, config, enable (the echo device then serves a
 * request the "guest" queued), status, memory slots, GET_VRING_BASE, reset — and mutates it:
 * messages dropped, duplicated, swapped or inserted; request codes, flags, sizes, payload bytes
 * and 64-bit fields changed; fds added, removed or swapped for other kinds (eventfds, memfds of
 * odd sizes, sockets whose peer is gone, /dev/null); the stream cut mid-message.
 *
 * Oracles:
 * - `handle()` throws (or rejects with) nothing but `ProtocolError`; that closes the connection;
 * - replies only when asked: an explicit-reply request gets exactly one reply of its type (or a
 *   u64 failure), a request without one gets a u64 ack exactly when NEED_REPLY is set and
 *   REPLY_ACK is negotiated, an unknown request gets a u64 failure exactly when NEED_REPLY is
 *   set; a failing request sends nothing; every reply has the REPLY flag and decodes;
 * - nothing hangs (each request settles within a deadline);
 * - after the session ends, no fd and no memfd mapping is left behind (`/proc/self/fd`,
 *   `/proc/self/maps`);
 * - afterwards a fresh, unmutated session on the same device works: every request succeeds and
 *   the echo request comes back with the right bytes.
 * @module
 */
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import fc from 'fast-check';
import { close, dup, eventfd, ftruncate, memfdCreate, openFdCount, openFile, socketpair } from '@vhost-ts/sys';
import {
  BackendSession, FRONTEND_REQUESTS, FrontendMemory, MessageFramer, ProtocolError, decodeHeader, decodeReply,
  encodeMessage, inflightQueueRegionSize, type Payload, type RawFrame,
} from '@vhost-ts/vhost-user';
import * as C from '@vhost-ts/vhost-user';
import { EchoDevice } from '@vhost-ts/vhost-user/testing';
import { PackedQueueDriver, SplitQueueDriver, VIRTIO_F_RING_PACKED } from '@vhost-ts/virtqueue';
import type { FuzzTarget } from './target.js';

/** Kinds of fd a message may carry. */
export type FdKind = 'region0' | 'region1' | 'eventfd' | 'memfd0' | 'memfd4k' | 'memfd64k' | 'memfd3m' | 'socket' | 'devnull';
const FD_KINDS: FdKind[] = ['region0', 'region1', 'eventfd', 'memfd0', 'memfd4k', 'memfd3m', 'socket', 'devnull'];
/** Size of a `memfd64k` (an inflight area the front-end provides; 2 queues of 256 need ~16 KiB). */
const MEMFD64K = 64 * 1024;

/** One message on the wire: bytes and the kinds of fd attached to its first byte. */
export interface WireMsg { bytes: Uint8Array; fds: FdKind[] }

/** What the valid session template does. */
export interface Plan {
  queue: number;
  size: number;
  eventIdx: boolean;
  replyAck: boolean;
  status: boolean;
  config: boolean;
  inflight: boolean;
  log: boolean;
  slots: boolean;
  reset: boolean;
  /** NEED_REPLY on every request (when REPLY_ACK). */
  ask: boolean;
  /** Negotiate VIRTIO_F_RING_PACKED (the `vu-packed` target; the device must offer it). */
  packed?: boolean;
}

export type Mutation =
  | { m: 'drop'; i: number }
  | { m: 'dup'; i: number }
  | { m: 'swap'; i: number; j: number }
  | { m: 'request'; i: number; value: number }
  | { m: 'flags'; i: number; xor: number }
  | { m: 'size'; i: number; value: number }
  | { m: 'byte'; i: number; at: number; value: number }
  | { m: 'u64'; i: number; at: number; value: bigint }
  | { m: 'fdKind'; i: number; k: number; kind: FdKind }
  | { m: 'fdAdd'; i: number; kind: FdKind }
  | { m: 'fdDrop'; i: number }
  | { m: 'insert'; i: number; request: number; body: Uint8Array; flags: number; fds: FdKind[] }
  | { m: 'truncate'; i: number; at: number };

const fdKindArb = fc.constantFrom(...FD_KINDS);
const idx = fc.nat({ max: 40 });
export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ m: fc.constant('drop' as const), i: idx }),
  fc.record({ m: fc.constant('dup' as const), i: idx }),
  fc.record({ m: fc.constant('swap' as const), i: idx, j: idx }),
  fc.record({ m: fc.constant('request' as const), i: idx, value: fc.oneof(fc.integer({ min: 0, max: 50 }), fc.nat({ max: 0xffffffff })) }),
  fc.record({ m: fc.constant('flags' as const), i: idx, xor: fc.oneof(fc.constantFrom(0x8, 0x4, 0x1, 0x2, 0x3, 0x10), fc.nat({ max: 0xffffffff })) }),
  fc.record({ m: fc.constant('size' as const), i: idx, value: fc.oneof(fc.nat({ max: 300 }), fc.constantFrom(4096, 4097, 0xffffffff)) }),
  fc.record({ m: fc.constant('byte' as const), i: idx, at: fc.nat({ max: 300 }), value: fc.oneof(fc.constantFrom(0, 1, 2, 0xff, 0x80), fc.nat({ max: 255 })) }),
  fc.record({ m: fc.constant('u64' as const), i: idx, at: fc.nat({ max: 40 }), value: fc.constantFrom(0n, 1n, 2n, 3n, 0x100n, 0x1ffn, 4096n, 0x100000n, 2n ** 32n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 64n - 1n) }),
  fc.record({ m: fc.constant('fdKind' as const), i: idx, k: fc.nat({ max: 8 }), kind: fdKindArb }),
  fc.record({ m: fc.constant('fdAdd' as const), i: idx, kind: fdKindArb }),
  fc.record({ m: fc.constant('fdDrop' as const), i: idx }),
  fc.record({
    m: fc.constant('insert' as const), i: idx,
    request: fc.oneof(fc.constantFrom(...FRONTEND_REQUESTS.keys()), fc.nat({ max: 100 })),
    body: fc.oneof(fc.uint8Array({ minLength: 8, maxLength: 8 }), fc.uint8Array({ maxLength: 64 })),
    flags: fc.constantFrom(1, 1 | 8, 1 | 4, 0),
    fds: fc.array(fdKindArb, { maxLength: 3 }),
  }),
  fc.record({ m: fc.constant('truncate' as const), i: idx, at: fc.nat({ max: 300 }) }),
);

export const planArb: fc.Arbitrary<Plan> = fc.record({
  queue: fc.nat({ max: 1 }),
  size: fc.constantFrom(4, 16, 64, 256),
  eventIdx: fc.boolean(),
  replyAck: fc.boolean(),
  status: fc.boolean(),
  config: fc.boolean(),
  inflight: fc.boolean(),
  log: fc.boolean(),
  slots: fc.boolean(),
  reset: fc.boolean(),
  ask: fc.boolean(),
});

export const sessionArb = fc.record({
  plan: planArb,
  mutations: fc.array(mutationArb, { minLength: 0, maxLength: 6 }),
  reads: fc.array(fc.oneof(fc.integer({ min: 1, max: 16 }), fc.constant(1 << 20)), { minLength: 1, maxLength: 4 }),
});

const bit = (n: number): bigint => 1n << BigInt(n);

// --- shared guest memory and ring layout (region 0 of a FrontendMemory) -------------------------
let memoryOnce: FrontendMemory | null = null;
function guestMemory(): FrontendMemory {
  memoryOnce ??= new FrontendMemory();
  return memoryOnce;
}
const RING_BASE = 0x100000 + 0x1000;
const LAYOUT = (size: number) => ({ size, descGpa: RING_BASE, availGpa: RING_BASE + 0x1000, usedGpa: RING_BASE + 0x2000 });
const REQ_GPA = 0x100000 + 0x8000;
const RESP_GPA = 0x100000 + 0x9000;
const ECHO = Uint8Array.from({ length: 64 }, (_, i) => (i * 37 + 11) & 0xff);

/** What the checks need of a split or packed driver. */
export type EchoDriver = Pick<SplitQueueDriver, 'add' | 'publish' | 'popUsed' | 'lastLen'>;

/** Resets the ring and queues one echo request; returns the driver. */
export function prepareGuest(plan: Plan): EchoDriver {
  const fm = guestMemory();
  const mem = fm.memory;
  mem.writeFrom(RING_BASE, new Uint8Array(0x3000 + 8 * 256 + 8));
  mem.writeFrom(REQ_GPA, ECHO);
  mem.writeFrom(RESP_GPA, new Uint8Array(64));
  const L = LAYOUT(plan.size);
  // A fresh packed ring starts at slot 0 with wrap counters 1 (SET_VRING_BASE 0x8000 below).
  const d: EchoDriver = plan.packed === true
    ? new PackedQueueDriver(mem, { size: plan.size, descGpa: L.descGpa, driverGpa: L.availGpa, deviceGpa: L.usedGpa }, { eventIdx: plan.eventIdx })
    : new SplitQueueDriver(mem, L, { eventIdx: plan.eventIdx });
  if (d.add([{ gpa: REQ_GPA, len: 64 }], [{ gpa: RESP_GPA, len: 64 }]) < 0) throw new Error('vu-session: cannot queue the echo request');
  d.publish();
  return d;
}

/** The valid session of a plan, as wire messages. */
export function template(plan: Plan): WireMsg[] {
  const fm = guestMemory();
  const out: WireMsg[] = [];
  const ask = plan.replyAck && plan.ask ? C.VHOST_USER_NEED_REPLY_MASK : 0;
  const add = (request: number, payload: Payload, fds: FdKind[] = [], flags = ask) => {
    out.push({ bytes: encodeMessage(request, flags, payload), fds });
  };
  const q = plan.queue;
  let proto = bit(C.VHOST_USER_PROTOCOL_F_MQ);
  if (plan.replyAck) proto |= bit(C.VHOST_USER_PROTOCOL_F_REPLY_ACK);
  if (plan.status) proto |= bit(C.VHOST_USER_PROTOCOL_F_STATUS);
  // With config also the net requests (the fuzz device implements them).
  if (plan.config) proto |= bit(C.VHOST_USER_PROTOCOL_F_CONFIG) | bit(C.VHOST_USER_PROTOCOL_F_RARP) | bit(C.VHOST_USER_PROTOCOL_F_MTU);
  if (plan.inflight) proto |= bit(C.VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD);
  if (plan.log) proto |= bit(C.VHOST_USER_PROTOCOL_F_LOG_SHMFD);
  if (plan.slots) proto |= bit(C.VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS);
  if (plan.reset) proto |= bit(C.VHOST_USER_PROTOCOL_F_RESET_DEVICE);
  // Variants keyed on existing plan fields (so saved fast-check paths stay valid): a back-end
  // channel when REPLY_ACK and STATUS are on, SET_INFLIGHT_FD after GET_INFLIGHT_FD, SET_LOG_FD
  // with the log, a polled ("no fd") kick on 64-entry rings without EVENT_IDX.
  const channel = plan.replyAck && plan.status;
  if (channel) proto |= bit(C.VHOST_USER_PROTOCOL_F_BACKEND_REQ);
  let features = bit(C.VIRTIO_F_VERSION_1) | bit(C.VHOST_USER_F_PROTOCOL_FEATURES) | bit(C.VIRTIO_RING_F_INDIRECT_DESC);
  if (plan.eventIdx) features |= bit(C.VIRTIO_RING_F_EVENT_IDX);
  if (plan.packed === true) features |= bit(VIRTIO_F_RING_PACKED);
  if (plan.log) features |= bit(C.VHOST_F_LOG_ALL);
  add(C.VHOST_USER_GET_FEATURES, { kind: 'none' }, [], 0);
  add(C.VHOST_USER_GET_PROTOCOL_FEATURES, { kind: 'none' }, [], 0);
  add(C.VHOST_USER_SET_FEATURES, { kind: 'u64', value: features });
  // NEED_REPLY on SET_PROTOCOL_FEATURES would be answered only once REPLY_ACK is in: never ask here.
  add(C.VHOST_USER_SET_PROTOCOL_FEATURES, { kind: 'u64', value: proto }, [], 0);
  add(C.VHOST_USER_SET_OWNER, { kind: 'none' });
  add(C.VHOST_USER_GET_QUEUE_NUM, { kind: 'none' }, [], 0);
  add(C.VHOST_USER_GET_MAX_MEM_SLOTS, { kind: 'none' }, [], 0);
  add(C.VHOST_USER_SET_MEM_TABLE, { kind: 'memory', regions: fm.descs }, ['region0', 'region1']);
  // The inflight area exists in the split format only (packed rings run without it).
  if (plan.inflight && plan.packed !== true) {
    add(C.VHOST_USER_GET_INFLIGHT_FD, { kind: 'inflight', mmapSize: 0, mmapOffset: 0, numQueues: 2, queueSize: plan.size }, [], 0);
    // A front-end-provided area (what a reconnecting QEMU sends), zeroed: nothing to resubmit.
    add(C.VHOST_USER_SET_INFLIGHT_FD, {
      kind: 'inflight', mmapSize: 2 * inflightQueueRegionSize(plan.size), mmapOffset: 0, numQueues: 2, queueSize: plan.size,
    }, ['memfd64k']);
  }
  if (plan.log) {
    add(C.VHOST_USER_SET_LOG_BASE, { kind: 'log', mmapSize: 4096, mmapOffset: 0 }, ['memfd4k'], 0);
    add(C.VHOST_USER_SET_LOG_FD, { kind: 'none' }, ['eventfd']);
  }
  // The channel's peer is already gone: the back-end must cope with it closing at once.
  if (channel) add(C.VHOST_USER_SET_BACKEND_REQ_FD, { kind: 'none' }, ['socket']);
  const L = LAYOUT(plan.size);
  add(C.VHOST_USER_SET_VRING_NUM, { kind: 'vring-state', index: q, num: plan.size });
  add(C.VHOST_USER_SET_VRING_ADDR, {
    kind: 'vring-addr', index: q, flags: 0, descUserAddr: fm.gpaToUva(L.descGpa), usedUserAddr: fm.gpaToUva(L.usedGpa),
    availUserAddr: fm.gpaToUva(L.availGpa), logGuestAddr: 0,
  });
  add(C.VHOST_USER_SET_VRING_BASE, { kind: 'vring-state', index: q, num: plan.packed === true ? 0x8000 : 0 });
  add(C.VHOST_USER_SET_VRING_CALL, { kind: 'vring-fd', index: q, noFd: false }, ['eventfd']);
  add(C.VHOST_USER_SET_VRING_ERR, { kind: 'vring-fd', index: q, noFd: false }, ['eventfd']);
  if (plan.size === 64 && !plan.eventIdx) add(C.VHOST_USER_SET_VRING_KICK, { kind: 'vring-fd', index: q, noFd: true });
  else add(C.VHOST_USER_SET_VRING_KICK, { kind: 'vring-fd', index: q, noFd: false }, ['eventfd']);
  if (plan.config) {
    add(C.VHOST_USER_GET_CONFIG, { kind: 'config', offset: 0, size: 16, flags: 0, data: new Uint8Array(16) }, [], 0);
    add(C.VHOST_USER_SET_CONFIG, { kind: 'config', offset: 4, size: 4, flags: 0, data: Uint8Array.of(9, 8, 7, 6) });
    add(C.VHOST_USER_SEND_RARP, { kind: 'u64', value: 0x5634_1200_5452n });
    add(C.VHOST_USER_NET_SET_MTU, { kind: 'u64', value: 1500n });
  }
  add(C.VHOST_USER_SET_VRING_ENABLE, { kind: 'vring-state', index: q, num: 1 });
  if (plan.status) {
    add(C.VHOST_USER_SET_STATUS, { kind: 'u64', value: 0xfn });
    add(C.VHOST_USER_GET_STATUS, { kind: 'none' }, [], 0);
  }
  if (plan.slots) {
    const r1 = fm.descs[1];
    add(C.VHOST_USER_REM_MEM_REG, { kind: 'mem-region', region: r1 });
    add(C.VHOST_USER_ADD_MEM_REG, { kind: 'mem-region', region: r1 }, ['region1']);
  }
  add(C.VHOST_USER_GET_VRING_BASE, { kind: 'vring-state', index: q, num: 0 }, [], 0);
  if (plan.reset) add(C.VHOST_USER_RESET_DEVICE, { kind: 'none' });
  return out;
}

/** Applies the mutations to a template. */
export function mutate(msgs: WireMsg[], mutations: Mutation[]): WireMsg[] {
  const out = msgs.map((m) => ({ bytes: m.bytes.slice(), fds: m.fds.slice() }));
  for (const mu of mutations) {
    if (out.length === 0) break;
    const i = mu.i % out.length;
    const m = out[i];
    const v = new DataView(m.bytes.buffer, m.bytes.byteOffset, m.bytes.byteLength);
    const hasHeader = m.bytes.length >= 12;
    switch (mu.m) {
      case 'drop': out.splice(i, 1); break;
      case 'dup': out.splice(i, 0, { bytes: m.bytes.slice(), fds: m.fds.slice() }); break;
      case 'swap': { const j = mu.j % out.length; out[i] = out[j]; out[j] = m; break; }
      case 'request': if (hasHeader) v.setUint32(0, mu.value >>> 0, true); break;
      case 'flags': if (hasHeader) v.setUint32(4, (v.getUint32(4, true) ^ mu.xor) >>> 0, true); break;
      case 'size': if (hasHeader) v.setUint32(8, mu.value >>> 0, true); break;
      case 'byte': if (m.bytes.length > 12) m.bytes[12 + (mu.at % (m.bytes.length - 12))] = mu.value; break;
      case 'u64': {
        const room = m.bytes.length - 20;
        if (room >= 0) v.setBigUint64(12 + 8 * Math.floor((mu.at * 8 % (room + 1)) / 8), mu.value, true);
        break;
      }
      case 'fdKind': if (m.fds.length > 0) m.fds[mu.k % m.fds.length] = mu.kind; break;
      case 'fdAdd': if (m.fds.length < 9) m.fds.push(mu.kind); break;
      case 'fdDrop': m.fds.pop(); break;
      case 'insert': {
        const b = new Uint8Array(12 + mu.body.length);
        const w = new DataView(b.buffer);
        w.setUint32(0, mu.request >>> 0, true);
        w.setUint32(4, mu.flags, true);
        w.setUint32(8, mu.body.length, true);
        b.set(mu.body, 12);
        out.splice(i, 0, { bytes: b, fds: mu.fds.slice() });
        break;
      }
      case 'truncate': out.splice(i + 1); out[i] = { bytes: m.bytes.slice(0, mu.at % (m.bytes.length + 1)), fds: m.fds }; break;
    }
  }
  return out;
}

/** Creates a fresh fd of a kind (the caller owns it). */
export function makeFd(kind: FdKind): number {
  const fm = guestMemory();
  switch (kind) {
    case 'region0': return dup(fm.fds[0]);
    case 'region1': return dup(fm.fds[1]);
    case 'eventfd': return eventfd(0);
    case 'devnull': return openFile('/dev/null');
    case 'socket': {
      // A socket whose peer is already gone.
      const [a, b] = socketpair();
      close(b);
      return a;
    }
    default: {
      const fd = memfdCreate('vu-fuzz');
      ftruncate(fd, kind === 'memfd0' ? 0 : kind === 'memfd4k' ? 4096 : kind === 'memfd64k' ? MEMFD64K : 3 << 20);
      return fd;
    }
  }
}

/**
 * Waits (≤ 200 ms) for the open-fd count to come back to `want`: closes that finish on a later
 * loop turn (watchers, sockets the peer closed) must not read as leaks. Returns the last count.
 */
export async function settleFdCount(want: number): Promise<number> {
  let n = openFdCount();
  for (let i = 0; i < 40 && n !== want; i++) {
    await new Promise((res) => { setTimeout(res, 5); });
    n = openFdCount();
  }
  return n;
}

/** `fd -> target` for every open fd (diagnostics of a leak). */
export function fdTable(): string[] {
  const out: string[] = [];
  for (const f of readdirSync('/proc/self/fd')) {
    try { out.push(`${f}->${readlinkSync(`/proc/self/fd/${f}`)}`); } catch { /* the directory's own fd */ }
  }
  return out;
}

/** What changed between two {@link fdTable} snapshots. */
export function fdDiff(before: string[], after: string[]): string {
  return `opened [${after.filter((x) => !before.includes(x)).join(', ')}] closed [${before.filter((x) => !after.includes(x)).join(', ')}]`;
}

/** Memfd mappings of this process (the leak oracle for mmap). */
export function memfdMappings(): number {
  let n = 0;
  for (const line of readFileSync('/proc/self/maps', 'utf8').split('\n')) if (line.includes('/memfd:')) n++;
  return n;
}

function fail(msg: string): never {
  throw new Error(`vu-session: ${msg}`);
}

interface Reply { request: number; flags: number; body: Uint8Array; fds: number }

/** Checks the replies one handled frame produced against the spec's reply rules. */
function checkReplies(frame: RawFrame, threw: boolean, replies: Reply[], protoAfter: bigint, strictOk: boolean): void {
  const { request, flags } = frame.header;
  const spec = frame.spec;
  const name = spec?.name ?? `UNKNOWN(${request})`;
  const needReply = (flags & C.VHOST_USER_NEED_REPLY_MASK) !== 0;
  for (const r of replies) {
    if (r.request !== request) fail(`${name}: reply carries request ${r.request}`);
    if (r.flags !== (C.VHOST_USER_VERSION | C.VHOST_USER_REPLY_MASK)) fail(`${name}: reply flags 0x${r.flags.toString(16)}`);
  }
  if (threw) {
    if (replies.length !== 0) fail(`${name}: failed (connection closed) but sent ${replies.length} replies`);
    return;
  }
  const u64Of = (r: Reply): bigint | null => (r.body.length === 8 && r.fds === 0
    ? new DataView(r.body.buffer, r.body.byteOffset).getBigUint64(0, true) : null);
  if (spec === null) {
    if (replies.length !== (needReply ? 1 : 0)) fail(`${name}: ${replies.length} replies to an unknown request (NEED_REPLY ${needReply})`);
    if (needReply && u64Of(replies[0]) !== 1n) fail(`${name}: unknown request not answered with a u64 failure`);
    return;
  }
  if (spec.reply !== null) {
    if (replies.length !== 1) fail(`${name}: ${replies.length} replies to a request with an explicit reply`);
    const r = replies[0];
    try {
      decodeReply('frontend', { request, flags: r.flags, size: r.body.length }, r.body, Array.from({ length: r.fds }, () => -1));
    } catch (e) {
      const v = u64Of(r);
      // A failure ack instead of the explicit reply is the one allowed other shape.
      if (v === null || v === 0n) fail(`${name}: reply does not decode: ${(e as Error).message}`);
      if (strictOk) fail(`${name}: failed in a valid session`);
    }
    return;
  }
  const acked = (protoAfter & bit(C.VHOST_USER_PROTOCOL_F_REPLY_ACK)) !== 0n;
  const want = needReply && acked ? 1 : 0;
  if (replies.length !== want) fail(`${name}: ${replies.length} replies, expected ${want} (NEED_REPLY ${needReply}, REPLY_ACK ${acked})`);
  if (want === 1) {
    const v = u64Of(replies[0]);
    if (v === null) fail(`${name}: ack is not a u64`);
    if (strictOk && v !== 0n) fail(`${name}: failure ack in a valid session`);
  }
}

/** Throws unless the echo request queued by {@link prepareGuest} came back right. */
export function checkEcho(driver: EchoDriver): void {
  const head = driver.popUsed();
  if (head < 0) fail('echo request never completed in a valid session');
  const out = new Uint8Array(64);
  guestMemory().memory.readInto(RESP_GPA, out);
  if (Buffer.compare(out, ECHO) !== 0 || driver.lastLen !== 64) fail('echo came back wrong');
}

const HANDLE_DEADLINE_MS = 3000;

/**
 * Runs one stream against a fresh session on `device`. `strict`: the stream is a valid session
 * (every request must succeed and the echo must come back).
 */
async function runStream(device: EchoDevice, plan: Plan, msgs: WireMsg[], reads: number[], strict: boolean): Promise<void> {
  const driver = prepareGuest(plan);
  const replies: Reply[] = [];
  const session = new BackendSession({
    device,
    send: (bytes, fds) => {
      const h = decodeHeader(bytes);
      replies.push({ request: h.request, flags: h.flags, body: bytes.slice(12, 12 + h.size), fds: fds?.length ?? 0 });
      if (bytes.length !== 12 + h.size) fail(`reply of ${bytes.length} bytes with size field ${h.size}`);
    },
    log: () => {},
    pollIntervalMs: 2,
    stopTimeoutMs: 500,
  });
  const framer = new MessageFramer('frontend', false);
  let closedBy: unknown = null;
  let r = 0;
  outer: for (const m of msgs) {
    let fds: number[] = m.fds.map(makeFd);
    let off = 0;
    try {
      if (m.bytes.length === 0 && fds.length > 0) { framer.push(0, fds); fds = []; }
      while (off < m.bytes.length) {
        const t = framer.target();
        const n = Math.min(t.length, reads[r++ % reads.length], m.bytes.length - off);
        t.set(m.bytes.subarray(off, off + n));
        off += n;
        const frame = framer.push(n, fds);
        fds = [];
        if (frame === null) continue;
        replies.length = 0;
        let threw = false;
        try {
          const p = session.handle(frame);
          if (p !== undefined) {
            let timer: NodeJS.Timeout | undefined;
            const deadline = new Promise<'hang'>((res) => { timer = setTimeout(() => res('hang'), HANDLE_DEADLINE_MS); });
            const res = await Promise.race([p.then(() => 'ok' as const), deadline]);
            clearTimeout(timer);
            if (res === 'hang') fail(`${frame.spec?.name ?? frame.header.request} did not settle in ${HANDLE_DEADLINE_MS} ms`);
          }
        } catch (e) {
          if (e instanceof Error && e.message.startsWith('vu-session:')) throw e;
          if (!(e instanceof ProtocolError)) fail(`handle() threw a non-protocol error: ${e instanceof Error ? e.stack : String(e)}`);
          threw = true;
          closedBy = e;
        }
        checkReplies(frame, threw, replies, session.protocolFeatures, strict);
        if (threw) break outer;
      }
    } catch (e) {
      if (e instanceof Error && e.message.startsWith('vu-session:')) throw e;
      // The framer refused a header: the connection closes (MessageConnection does the same).
      if (!(e instanceof ProtocolError)) fail(`framer threw a non-protocol error: ${String(e)}`);
      closedBy = e;
      break;
    }
  }
  // Whatever is half-received is closed with the connection.
  for (const fd of framer.takePendingFds()) close(fd);
  if (strict && closedBy !== null) fail(`valid session closed: ${(closedBy as Error).message}`);
  if (strict) checkEcho(driver);
  await session.close();
}

/** Runs one case: the mutated stream, then the plain valid session; checks leaks after each. */
export async function runVuSession(device: EchoDevice, c: { plan: Plan; mutations: Mutation[]; reads: number[] }): Promise<void> {
  guestMemory();
  const fds0 = openFdCount();
  const maps0 = memfdMappings();
  const valid = template(c.plan);
  await runStream(device, c.plan, mutate(valid, c.mutations), c.reads, c.mutations.length === 0);
  const fds1 = await settleFdCount(fds0);
  if (fds1 !== fds0) fail(`fd leak: ${fds0} open before, ${fds1} after the session`);
  const maps1 = memfdMappings();
  if (maps1 !== maps0) fail(`mapping leak: ${maps0} memfd mappings before, ${maps1} after the session`);
  await runStream(device, c.plan, valid, [1 << 20], true);
  if (await settleFdCount(fds0) !== fds0) fail('fd leak after the valid session');
  if (memfdMappings() !== maps0) fail('mapping leak after the valid session');
}

/**
 * The device the session templates are written for: an echo device asking for its default
 * protocol bits plus the net requests (SEND_RARP, NET_SET_MTU), which it implements.
 */
export function fuzzDevice(features = 0n): EchoDevice {
  const protocolFeatures = bit(C.VHOST_USER_PROTOCOL_F_CONFIG) | bit(C.VHOST_USER_PROTOCOL_F_MQ)
    | bit(C.VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD) | bit(C.VHOST_USER_PROTOCOL_F_RARP) | bit(C.VHOST_USER_PROTOCOL_F_MTU);
  return new EchoDevice({ numQueues: 2, maxQueueSize: 256, features, protocolFeatures, netRequests: {} });
}

export const vuSession: FuzzTarget = {
  name: 'vu-session',
  description: 'BackendSession on mutated valid sessions with real fds: typed errors only, replies per spec, no fd/mapping leak, fresh session works',
  testRuns: 150,
  property: () => {
    const device = fuzzDevice();
    return fc.asyncProperty(sessionArb, (c) => runVuSession(device, c));
  },
};

/** The same sessions with packed rings negotiated (VIRTIO_F_RING_PACKED, packed SET_VRING_BASE). */
export const vuPacked: FuzzTarget = {
  name: 'vu-packed',
  description: 'vu-session with VIRTIO_F_RING_PACKED negotiated: PackedQueueDevice behind the same oracles',
  testRuns: 100,
  property: () => {
    const device = fuzzDevice(1n << BigInt(VIRTIO_F_RING_PACKED));
    return fc.asyncProperty(sessionArb.map((c) => ({ ...c, plan: { ...c.plan, packed: true } })), (c) => runVuSession(device, c));
  },
};
