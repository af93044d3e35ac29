/**
 * Target `vu-codec`: the pure vhost-user codec and framer (packages/vhost-user/src/codec).
 *
 * The test picks each message first — a front-end request with a payload valid for its type
 * and the fd count its rule asks for — encodes it, then maybe mutates the bytes (size, request
 * code, flags, payload bytes, 64-bit fields, truncation) or the fd count. Oracles:
 * - `checkHeader` / `decodeRequest` throw nothing but {@link ProtocolError};
 * - an unmutated message decodes to exactly the payload it was built from;
 * - whatever is accepted obeys an independent model of the wire rules (version 1, no reply
 *   bit, no unknown flag, the payload size and fd count of its type, config size field), and
 *   re-encoding what was decoded decodes to the same message (decode ∘ encode is the identity);
 * - the framer yields the same frames and stops with the same error whatever the read sizes
 *   (reads never cross a sender's message, as on a Unix stream socket with SCM_RIGHTS).
 * @module
 */
import { isDeepStrictEqual } from 'node:util';
import fc from 'fast-check';
import {
  FRONTEND_REQUESTS, MessageFramer, ProtocolError, VHOST_USER_NEED_REPLY_MASK, checkHeader, decodeHeader,
  decodeRequest, encodeMessage, type Message, type Payload, type PayloadKind, type RequestSpec,
} from '@vhost-ts/vhost-user';
import type { FuzzTarget } from './target.js';

const REQUESTS = [...FRONTEND_REQUESTS.keys()];

const addrArb = fc.oneof(
  fc.nat({ max: 0xffffffff }),
  fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
  fc.constantFrom(0, 4096, 2 ** 32, 2 ** 53 - 1),
);
const u32Arb = fc.oneof(fc.nat({ max: 8 }), fc.nat({ max: 0xffffffff }));
const bytesArb = (max: number) => fc.uint8Array({ maxLength: max });
const regionArb = fc.record({ guestPhysAddr: addrArb, size: addrArb, userAddr: addrArb, mmapOffset: addrArb }, { noNullPrototype: true });

/** A payload valid for `kind` (field values random, widths right). */
export function payloadArb(kind: PayloadKind): fc.Arbitrary<Payload> {
  switch (kind) {
    case 'none': return fc.constant({ kind });
    case 'u64': return fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map((value) => ({ kind, value }));
    case 'vring-fd': return fc.record({ index: fc.nat({ max: 255 }), noFd: fc.boolean() }).map((p) => ({ kind, ...p }));
    case 'vring-state': return fc.record({ index: u32Arb, num: u32Arb }).map((p) => ({ kind, ...p }));
    case 'vring-addr': return fc.record({
      index: u32Arb, flags: u32Arb, descUserAddr: addrArb, usedUserAddr: addrArb, availUserAddr: addrArb, logGuestAddr: addrArb,
    }).map((p) => ({ kind, ...p }));
    case 'memory': return fc.array(regionArb, { minLength: 0, maxLength: 8 }).map((regions) => ({ kind, regions }));
    case 'mem-region': return regionArb.map((region) => ({ kind, region }));
    case 'log': return fc.record({ mmapSize: addrArb, mmapOffset: addrArb }).map((p) => ({ kind, ...p }));
    case 'iotlb': return fc.record({ iova: addrArb, size: addrArb, uaddr: addrArb, perm: fc.nat({ max: 255 }), type: fc.nat({ max: 255 }) })
      .map((p) => ({ kind, ...p }));
    case 'config': return fc.record({ offset: u32Arb, flags: u32Arb, data: bytesArb(256) })
      .map((p) => ({ kind, offset: p.offset, size: p.data.length, flags: p.flags, data: p.data }));
    case 'vring-area': return fc.record({ u64: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), size: addrArb, offset: addrArb })
      .map((p) => ({ kind, ...p }));
    case 'inflight': return fc.record({ mmapSize: addrArb, mmapOffset: addrArb, numQueues: fc.nat({ max: 0xffff }), queueSize: fc.nat({ max: 0xffff }) })
      .map((p) => ({ kind, ...p }));
    case 'shared': return fc.uint8Array({ minLength: 16, maxLength: 16 }).map((uuid) => ({ kind, uuid }));
    case 'transfer-state': return fc.record({ direction: u32Arb, phase: u32Arb }).map((p) => ({ kind, ...p }));
    case 'shmem-map': return fc.record({
      shmid: fc.nat({ max: 255 }), fdOffset: addrArb, shmOffset: addrArb, len: addrArb, flags: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    }).map((p) => ({ kind, ...p }));
    case 'raw': return bytesArb(64).map((bytes) => ({ kind, bytes }));
  }
}

/** Fd counts the wire rule of `spec` allows for `payload` (independent of the codec's table walk). */
export function allowedFds(spec: RequestSpec, payload: Payload): number[] {
  switch (spec.fds) {
    case 'none': return [0];
    case 'one': return [1];
    case 'zero-or-one': return [0, 1];
    case 'per-region': return [payload.kind === 'memory' ? payload.regions.length : -1];
    case 'unless-nofd': return [payload.kind === 'vring-fd' && payload.noFd ? 0 : 1];
  }
}

/** Payload sizes the spec allows for a kind (vhost-user.rst "Message specification"). */
function sizeOk(kind: PayloadKind, size: number, body: Uint8Array): boolean {
  switch (kind) {
    case 'none': return size === 0;
    case 'u64': case 'vring-fd': case 'vring-state': case 'transfer-state': return size === 8;
    case 'vring-addr': case 'mem-region': case 'shmem-map': return size === 40;
    case 'log': case 'shared': return size === 16;
    case 'iotlb': return size === 32;
    case 'vring-area': return size === 24;
    case 'inflight': return size === 20 || size === 24;
    case 'memory': {
      const n = body.length >= 4 ? new DataView(body.buffer, body.byteOffset).getUint32(0, true) : -1;
      return n >= 0 && n <= 8 && (size === 8 + 32 * n || size === 8 + 32 * 8);
    }
    case 'config': {
      if (size < 12 || size > 12 + 256) return false;
      return new DataView(body.buffer, body.byteOffset).getUint32(4, true) === size - 12;
    }
    case 'raw': return size <= 4096;
  }
}

type Mutation =
  | { m: 'byte'; at: number; value: number }
  | { m: 'size'; value: number }
  | { m: 'request'; value: number }
  | { m: 'flags'; value: number }
  | { m: 'u64'; at: number; value: bigint }
  | { m: 'truncate'; at: number }
  | { m: 'fds'; delta: number };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ m: fc.constant('byte' as const), at: fc.nat({ max: 300 }), value: fc.oneof(fc.constantFrom(0, 1, 0x7f, 0x80, 0xff), fc.nat({ max: 255 })) }),
  fc.record({ m: fc.constant('size' as const), value: fc.oneof(fc.nat({ max: 300 }), fc.constantFrom(4096, 4097, 0xffffffff, 264, 268, 269)) }),
  fc.record({ m: fc.constant('request' as const), value: fc.oneof(fc.integer({ min: 0, max: 50 }), fc.nat({ max: 0xffffffff })) }),
  fc.record({ m: fc.constant('flags' as const), value: fc.oneof(fc.nat({ max: 0x1f }), fc.nat({ max: 0xffffffff })) }),
  fc.record({ m: fc.constant('u64' as const), at: fc.nat({ max: 32 }), value: fc.constantFrom(0n, 1n, 0xffn, 0x100n, 0x1ffn, 2n ** 32n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 64n - 1n) }),
  fc.record({ m: fc.constant('truncate' as const), at: fc.nat({ max: 300 }) }),
  fc.record({ m: fc.constant('fds' as const), delta: fc.integer({ min: -2, max: 9 }) }),
);

/** One message as generated: the valid original plus optional mutations. */
const messageArb = fc.constantFrom(...REQUESTS).chain((request) => {
  const spec = FRONTEND_REQUESTS.get(request) as RequestSpec;
  return fc.record({
    request: fc.constant(request),
    payload: payloadArb(spec.payload),
    needReply: fc.boolean(),
    optionalFd: fc.boolean(),
    mutations: fc.oneof({ weight: 2, arbitrary: fc.constant([] as Mutation[]) }, { weight: 3, arbitrary: fc.array(mutationArb, { minLength: 1, maxLength: 3 }) }),
  });
});

export const codecArb = fc.record({
  messages: fc.array(messageArb, { minLength: 1, maxLength: 12 }),
  /** Read sizes cycled by the framer feed (1 byte … whole messages). */
  reads: fc.array(fc.oneof(fc.integer({ min: 1, max: 16 }), fc.integer({ min: 1, max: 5000 })), { minLength: 1, maxLength: 8 }),
});

type GenMessage = { request: number; payload: Payload; needReply: boolean; optionalFd: boolean; mutations: Mutation[] };

function fail(msg: string): never {
  throw new Error(`vu-codec: ${msg}`);
}

function expectProtocolError(e: unknown, what: string): ProtocolError {
  if (!(e instanceof ProtocolError)) fail(`${what} threw a non-protocol error: ${String(e)}`);
  return e;
}

/** Builds the wire bytes and fd count of one generated message. */
export function buildMessage(g: GenMessage): { bytes: Uint8Array; fds: number; mutated: boolean } {
  const spec = FRONTEND_REQUESTS.get(g.request) as RequestSpec;
  let bytes = encodeMessage(g.request, g.needReply ? VHOST_USER_NEED_REPLY_MASK : 0, g.payload);
  const allowed = allowedFds(spec, g.payload);
  let fds = allowed.length > 1 && g.optionalFd ? allowed[1] : allowed[0];
  for (const mu of g.mutations) {
    const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    // Header mutations need a whole header (a truncation may have come first).
    if ((mu.m === 'size' || mu.m === 'request' || mu.m === 'flags') && bytes.length < 12) continue;
    switch (mu.m) {
      case 'byte': if (bytes.length > 12) bytes[12 + (mu.at % (bytes.length - 12))] = mu.value; break;
      case 'size': v.setUint32(8, mu.value >>> 0, true); break;
      case 'request': v.setUint32(0, mu.value >>> 0, true); break;
      case 'flags': v.setUint32(4, mu.value >>> 0, true); break;
      case 'u64': {
        const room = bytes.length - 12 - 8;
        if (room >= 0) v.setBigUint64(12 + (Math.floor((mu.at * 8) % (room + 1) / 8) * 8), mu.value, true);
        break;
      }
      case 'truncate': bytes = bytes.slice(0, mu.at % (bytes.length + 1)); break;
      case 'fds': fds = Math.max(0, Math.min(8, fds + mu.delta)); break;
    }
  }
  return { bytes, fds, mutated: g.mutations.length > 0 };
}

/** Checks one message decoded on its own against the model. */
function checkOne(g: GenMessage, bytes: Uint8Array, fdCount: number, mutated: boolean): void {
  const fakeFds = Array.from({ length: fdCount }, (_, i) => 1000 + i);
  let header;
  try {
    header = decodeHeader(bytes);
  } catch (e) {
    expectProtocolError(e, 'decodeHeader');
    if (!mutated) fail('a valid message has no header');
    return;
  }
  let spec: RequestSpec | null;
  try {
    spec = checkHeader('frontend', header, false);
  } catch (e) {
    expectProtocolError(e, 'checkHeader');
    if (!mutated) fail(`valid message rejected by checkHeader: ${(e as Error).message}`);
    return;
  }
  if (spec === null) {
    if (FRONTEND_REQUESTS.has(header.request)) fail('known request reported unknown');
    return;
  }
  const body = bytes.subarray(12);
  if (body.length < header.size) {
    if (!mutated) fail('valid message shorter than its size');
    return; // the framer would wait for more bytes
  }
  const exact = body.subarray(0, header.size);
  let msg: Message;
  try {
    msg = decodeRequest('frontend', header, exact, fakeFds.slice());
  } catch (e) {
    const pe = expectProtocolError(e, 'decodeRequest');
    if (!mutated) fail(`valid ${spec.name} rejected: ${pe.code} ${pe.message}`);
    return;
  }
  // Accepted: the model's wire rules hold.
  if ((header.flags & 3) !== 1 || (header.flags & ~0xf) !== 0 || (header.flags & 4) !== 0) fail(`accepted flags 0x${header.flags.toString(16)}`);
  if (!sizeOk(spec.payload, header.size, exact)) fail(`${spec.name}: accepted size ${header.size}`);
  if (!allowedFds(spec, msg.payload).includes(fdCount)) fail(`${spec.name}: accepted ${fdCount} fds`);
  if (msg.fds.length !== fdCount) fail('fds lost or added by the decoder');
  if (!mutated && !isDeepStrictEqual(msg.payload, g.payload)) {
    fail(`${spec.name}: decoded ${fc.stringify(msg.payload)} != sent ${fc.stringify(g.payload)}`);
  }
  // decode(encode(decoded)) is the identity.
  let again: Uint8Array;
  try {
    again = encodeMessage(msg.request, msg.flags & ~3, msg.payload);
  } catch (e) {
    fail(`${spec.name}: cannot re-encode what was accepted: ${String(e)}`);
  }
  const h2 = decodeHeader(again);
  const m2 = decodeRequest('frontend', h2, again.subarray(12), fakeFds.slice());
  if (!isDeepStrictEqual(m2.payload, msg.payload) || h2.flags !== header.flags) fail(`${spec.name}: re-encoding changed the message`);
}

interface FeedResult { frames: string[]; error: string | null; pendingFds: number }

/** Feeds the stream through a framer with the given read sizes; reads never cross sender messages. */
function feed(msgs: { bytes: Uint8Array; fds: number }[], reads: number[]): FeedResult {
  const framer = new MessageFramer('frontend', false);
  const frames: string[] = [];
  let fdBase = 0;
  let r = 0;
  try {
    for (const m of msgs) {
      let off = 0;
      let fds: number[] = Array.from({ length: m.fds }, () => fdBase++);
      if (m.bytes.length === 0 && fds.length > 0) framer.push(0, fds);
      while (off < m.bytes.length) {
        const t = framer.target();
        const n = Math.min(t.length, reads[r++ % reads.length], m.bytes.length - off);
        t.set(m.bytes.subarray(off, off + n));
        off += n;
        const f = framer.push(n, fds);
        fds = [];
        if (f !== null) {
          frames.push(`${f.header.request}/${f.header.flags}/${f.header.size}/${f.spec?.name ?? '?'}/${Buffer.from(f.body).toString('hex')}/${f.fds.join(',')}`);
        }
      }
    }
  } catch (e) {
    const pe = expectProtocolError(e, 'MessageFramer.push');
    return { frames, error: pe.code, pendingFds: framer.takePendingFds().length };
  }
  return { frames, error: null, pendingFds: framer.takePendingFds().length };
}

/** Runs one case; throws on a broken oracle. */
export function runVuCodec(c: { messages: GenMessage[]; reads: number[] }): void {
  const built = c.messages.map(buildMessage);
  c.messages.forEach((g, i) => checkOne(g, built[i].bytes, built[i].fds, built[i].mutated));
  const whole = feed(built, [1 << 30]);
  const chunked = feed(built, c.reads);
  if (!isDeepStrictEqual(whole, chunked)) {
    fail(`framer depends on read sizes: ${JSON.stringify(whole).slice(0, 300)} vs ${JSON.stringify(chunked).slice(0, 300)}`);
  }
  // Without mutations every message comes out as one frame, in order.
  if (built.every((b) => !b.mutated) && (whole.error !== null || whole.frames.length !== built.length)) {
    fail(`valid stream framed as ${whole.frames.length} frames, error ${whole.error}`);
  }
}

export const vuCodec: FuzzTarget = {
  name: 'vu-codec',
  description: 'vhost-user codec + framer: valid and mutated messages vs a wire-rule model, read-size invariance',
  testRuns: 400,
  property: () => fc.property(codecArb, (c) => { runVuCodec(c); }),
};
