/**
 * Pure vhost-user message codec: header + payload <-> bytes, with strict validation of the
 * size and fd count each request type allows. No I/O; fds are plain numbers the caller owns
 * (on a thrown {@link ProtocolError} the caller closes them).
 * @module
 */
import {
  VHOST_USER_CONFIG_HDR_SIZE, VHOST_USER_HDR_SIZE, VHOST_USER_MAX_CONFIG_SIZE, VHOST_USER_MAX_FDS,
  VHOST_USER_NEED_REPLY_MASK, VHOST_USER_REPLY_MASK, VHOST_USER_VERSION, VHOST_USER_VERSION_MASK,
  VHOST_MEMORY_BASELINE_NREGIONS, VHOST_USER_VRING_IDX_MASK, VHOST_USER_VRING_NOFD_MASK,
} from '../constants.js';
import { ProtocolError } from '../errors.js';
import {
  MEMORY_HEADER_SIZE, MEMORY_REGION_SIZE, configHeaderLayout, headerLayout, inflightLayout, iotlbLayout, logLayout,
  memoryHeaderLayout, memoryRegionLayout, sharedLayout, shmemMapLayout, singleMemoryRegionLayout, transferStateLayout,
  u64Layout, vringAddrLayout, vringAreaLayout, vringStateLayout,
} from './layouts.js';
import type { MemoryRegionDesc, Message, Payload, PayloadKind } from './payloads.js';
import { MAX_PAYLOAD_SIZE, requestTable, type Direction, type FdRule, type RequestSpec, type SizeRule } from './schema.js';

/** A decoded message header. */
export interface Header {
  readonly request: number;
  readonly flags: number;
  readonly size: number;
}

const KNOWN_FLAGS = VHOST_USER_VERSION_MASK | VHOST_USER_REPLY_MASK | VHOST_USER_NEED_REPLY_MASK;

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Decodes the 12-byte header (no validation beyond length). */
export function decodeHeader(bytes: Uint8Array): Header {
  if (bytes.byteLength < VHOST_USER_HDR_SIZE) {
    throw new ProtocolError('TRUNCATED', `header needs ${VHOST_USER_HDR_SIZE} bytes, got ${bytes.byteLength}`);
  }
  return headerLayout.decode(asBuffer(bytes), 0);
}

/**
 * Validates a header as soon as it is read, before its payload is: version 1, no unknown flag
 * bits, the reply bit set exactly when a reply is expected, and a size the request type allows
 * (unknown requests may carry up to {@link MAX_PAYLOAD_SIZE} bytes so they can be skipped and
 * answered). Returns the request's spec, or null for an unknown request.
 */
export function checkHeader(direction: Direction, header: Header, expectReply: boolean): RequestSpec | null {
  if ((header.flags & VHOST_USER_VERSION_MASK) !== VHOST_USER_VERSION || (header.flags & ~KNOWN_FLAGS) !== 0) {
    throw new ProtocolError('BAD_HEADER', `bad header flags 0x${header.flags.toString(16)}`);
  }
  if (((header.flags & VHOST_USER_REPLY_MASK) !== 0) !== expectReply) {
    throw new ProtocolError('BAD_HEADER', expectReply ? 'expected a reply, got a request' : 'unexpected reply flag on a request');
  }
  if (header.size > MAX_PAYLOAD_SIZE) {
    throw new ProtocolError('BAD_SIZE', `payload size ${header.size} exceeds ${MAX_PAYLOAD_SIZE}`);
  }
  const s = requestTable(direction).get(header.request) ?? null;
  if (s !== null && !expectReply && !sizeAllowed(s.sizes, header.size)) {
    throw new ProtocolError('BAD_SIZE', `${s.name}: payload size ${header.size} not allowed`);
  }
  return s;
}

function sizeAllowed(rule: SizeRule, size: number): boolean {
  if (rule === 'raw') return true;
  if (rule === 'memory') {
    // 8-byte header plus 0..8 regions; the exact count is checked against num_regions on decode.
    return size >= MEMORY_HEADER_SIZE
      && size <= MEMORY_HEADER_SIZE + VHOST_MEMORY_BASELINE_NREGIONS * MEMORY_REGION_SIZE
      && (size - MEMORY_HEADER_SIZE) % MEMORY_REGION_SIZE === 0;
  }
  if (rule === 'config') return size >= VHOST_USER_CONFIG_HDR_SIZE && size <= VHOST_USER_CONFIG_HDR_SIZE + VHOST_USER_MAX_CONFIG_SIZE;
  return rule.includes(size);
}

function region(r: { guestPhysAddr: number; size: number; userAddr: number; mmapOffset: number }): MemoryRegionDesc {
  return { guestPhysAddr: r.guestPhysAddr, size: r.size, userAddr: r.userAddr, mmapOffset: r.mmapOffset };
}

/** Decodes a payload of a known kind; `body.length` has already passed the size rule. */
export function decodePayload(kind: PayloadKind, body: Uint8Array): Payload {
  const b = asBuffer(body);
  switch (kind) {
    case 'none':
      return { kind };
    case 'u64':
      return { kind, value: u64Layout.decode(b).value };
    case 'vring-fd': {
      const v = u64Layout.decode(b).value;
      // Only bits 0-8 are defined (vhost-user.rst SET_VRING_KICK); anything else is garbage.
      if ((v & ~BigInt(VHOST_USER_VRING_IDX_MASK | VHOST_USER_VRING_NOFD_MASK)) !== 0n) {
        throw new ProtocolError('BAD_PAYLOAD', `vring fd payload 0x${v.toString(16)} has reserved bits set`);
      }
      const n = Number(v);
      return { kind, index: n & VHOST_USER_VRING_IDX_MASK, noFd: (n & VHOST_USER_VRING_NOFD_MASK) !== 0 };
    }
    case 'vring-state': {
      const s = vringStateLayout.decode(b);
      return { kind, index: s.index, num: s.num };
    }
    case 'vring-addr': {
      const a = vringAddrLayout.decode(b);
      return {
        kind, index: a.index, flags: a.flags, descUserAddr: a.descUserAddr, usedUserAddr: a.usedUserAddr,
        availUserAddr: a.availUserAddr, logGuestAddr: a.logGuestAddr,
      };
    }
    case 'memory': {
      if (body.byteLength < MEMORY_HEADER_SIZE) throw new ProtocolError('BAD_SIZE', 'memory table shorter than its header');
      const h = memoryHeaderLayout.decode(b);
      const room = Math.floor((body.byteLength - MEMORY_HEADER_SIZE) / MEMORY_REGION_SIZE);
      // An empty table is legal: the kernel's vhost, libvhost-user and DPDK take it as "no memory",
      // and the session then parks its rings until a table holds them again.
      if (h.numRegions > VHOST_MEMORY_BASELINE_NREGIONS || h.numRegions > room) {
        throw new ProtocolError('BAD_PAYLOAD', `memory table with ${h.numRegions} regions (size ${body.byteLength})`);
      }
      // Either exactly n regions, or the whole 8-slot array (some front-ends send sizeof(VhostUserMemory)).
      const full = MEMORY_HEADER_SIZE + VHOST_MEMORY_BASELINE_NREGIONS * MEMORY_REGION_SIZE;
      if (body.byteLength !== MEMORY_HEADER_SIZE + h.numRegions * MEMORY_REGION_SIZE && body.byteLength !== full) {
        throw new ProtocolError('BAD_SIZE', `memory table size ${body.byteLength} does not fit ${h.numRegions} regions`);
      }
      const regions: MemoryRegionDesc[] = [];
      for (let i = 0; i < h.numRegions; i++) {
        regions.push(region(memoryRegionLayout.decode(b, MEMORY_HEADER_SIZE + i * MEMORY_REGION_SIZE)));
      }
      return { kind, regions };
    }
    case 'mem-region':
      return { kind, region: region(singleMemoryRegionLayout.decode(b)) };
    case 'log': {
      const l = logLayout.decode(b);
      return { kind, mmapSize: l.mmapSize, mmapOffset: l.mmapOffset };
    }
    case 'iotlb': {
      const m = iotlbLayout.decode(b);
      return { kind, iova: m.iova, size: m.size, uaddr: m.uaddr, perm: m.perm, type: m.type };
    }
    case 'config': {
      const c = configHeaderLayout.decode(b);
      if (c.size > VHOST_USER_MAX_CONFIG_SIZE || c.size !== body.byteLength - VHOST_USER_CONFIG_HDR_SIZE) {
        throw new ProtocolError('BAD_PAYLOAD', `config size field ${c.size} does not match payload of ${body.byteLength}`);
      }
      return { kind, offset: c.offset, size: c.size, flags: c.flags, data: body.slice(VHOST_USER_CONFIG_HDR_SIZE) };
    }
    case 'vring-area': {
      const a = vringAreaLayout.decode(b);
      return { kind, u64: a.u64, size: a.size, offset: a.offset };
    }
    case 'inflight': {
      const i = inflightLayout.decode(b);
      return { kind, mmapSize: i.mmapSize, mmapOffset: i.mmapOffset, numQueues: i.numQueues, queueSize: i.queueSize };
    }
    case 'shared':
      return { kind, uuid: Uint8Array.from(sharedLayout.decode(b).uuid) };
    case 'transfer-state': {
      const t = transferStateLayout.decode(b);
      return { kind, direction: t.direction, phase: t.phase };
    }
    case 'shmem-map': {
      const m = shmemMapLayout.decode(b);
      return { kind, shmid: m.shmid, fdOffset: m.fdOffset, shmOffset: m.shmOffset, len: m.len, flags: m.flags };
    }
    case 'raw':
      return { kind, bytes: body.slice() };
  }
}

function expectedFds(rule: FdRule, payload: Payload): readonly number[] {
  switch (rule) {
    case 'none': return [0];
    case 'one': return [1];
    case 'zero-or-one': return [0, 1];
    case 'per-region': return [payload.kind === 'memory' ? payload.regions.length : 0];
    case 'unless-nofd': return [payload.kind === 'vring-fd' && payload.noFd ? 0 : 1];
  }
}

function checkFds(name: string, rule: FdRule, payload: Payload, count: number): void {
  const ok = expectedFds(rule, payload);
  if (!ok.includes(count)) {
    throw new ProtocolError('BAD_FD_COUNT', `${name}: ${count} fds attached, expected ${ok.join(' or ')}`);
  }
}

/**
 * Decodes and validates a complete request (header already checked by {@link checkHeader}).
 * Throws `UNKNOWN_REQUEST` for request types not in the table (the payload was consumed, so the
 * connection can continue), other codes for malformed messages.
 */
export function decodeRequest(direction: Direction, header: Header, body: Uint8Array, fds: number[]): Message {
  if (fds.length > VHOST_USER_MAX_FDS) throw new ProtocolError('BAD_FD_COUNT', `${fds.length} fds on one message`);
  const s = requestTable(direction).get(header.request);
  if (s === undefined) throw new ProtocolError('UNKNOWN_REQUEST', `unknown ${direction} request ${header.request}`);
  if (body.byteLength !== header.size || !sizeAllowed(s.sizes, body.byteLength)) {
    throw new ProtocolError('BAD_SIZE', `${s.name}: payload size ${body.byteLength} not allowed`);
  }
  const payload = decodePayload(s.payload, body);
  checkFds(s.name, s.fds, payload, fds.length);
  return { request: header.request, flags: header.flags, payload, fds };
}

/**
 * Decodes a reply to `request` (sent in `direction`). When the request has no explicit reply
 * body this is the REPLY_ACK u64. A GET_CONFIG reply with an empty payload decodes to `none`
 * (vhost-user.rst: "zero length of payload to indicate an error").
 */
export function decodeReply(direction: Direction, header: Header, body: Uint8Array, fds: number[]): Message {
  const s = requestTable(direction).get(header.request);
  if (s === undefined) throw new ProtocolError('BAD_REPLY', `reply to unknown request ${header.request}`);
  const kind = s.reply ?? 'u64';
  let payload: Payload;
  if (kind === 'config' && body.byteLength === 0) {
    payload = { kind: 'none' };
  } else {
    const sizes: SizeRule = kind === 'u64' ? [8] : kind === 'vring-state' ? [8] : kind === 'inflight' ? [24, 20]
      : kind === 'none' ? [0] : kind === 'config' ? 'config' : 'raw';
    if (!sizeAllowed(sizes, body.byteLength)) {
      throw new ProtocolError('BAD_REPLY', `${s.name} reply: payload size ${body.byteLength} not allowed`);
    }
    payload = decodePayload(kind, body);
  }
  checkFds(`${s.name} reply`, s.reply === null ? 'none' : s.replyFds, payload, fds.length);
  return { request: header.request, flags: header.flags, payload, fds };
}

function payloadSize(p: Payload): number {
  switch (p.kind) {
    case 'none': return 0;
    case 'u64': case 'vring-fd': case 'vring-state': case 'transfer-state': return 8;
    case 'vring-addr': return 40;
    case 'memory': return MEMORY_HEADER_SIZE + p.regions.length * MEMORY_REGION_SIZE;
    case 'mem-region': return 40;
    case 'log': return 16;
    case 'iotlb': return 32;
    case 'config': return VHOST_USER_CONFIG_HDR_SIZE + p.data.byteLength;
    case 'vring-area': return 24;
    case 'inflight': return 24;
    case 'shared': return 16;
    case 'shmem-map': return 40;
    case 'raw': return p.bytes.byteLength;
  }
}

function encodePayload(p: Payload, b: Buffer, off: number): void {
  switch (p.kind) {
    case 'none': return;
    case 'u64': u64Layout.encode({ value: p.value }, b, off); return;
    case 'vring-fd':
      u64Layout.encode({ value: BigInt((p.index & VHOST_USER_VRING_IDX_MASK) | (p.noFd ? VHOST_USER_VRING_NOFD_MASK : 0)) }, b, off);
      return;
    case 'vring-state': vringStateLayout.encode({ index: p.index, num: p.num }, b, off); return;
    case 'vring-addr': vringAddrLayout.encode(p, b, off); return;
    case 'memory':
      memoryHeaderLayout.encode({ numRegions: p.regions.length, padding: 0 }, b, off);
      p.regions.forEach((r, i) => memoryRegionLayout.encode(r, b, off + MEMORY_HEADER_SIZE + i * MEMORY_REGION_SIZE));
      return;
    case 'mem-region': singleMemoryRegionLayout.encode({ padding: 0n, ...p.region }, b, off); return;
    case 'log': logLayout.encode(p, b, off); return;
    case 'iotlb': iotlbLayout.encode({ ...p, pad: Buffer.alloc(6) }, b, off); return;
    case 'config':
      configHeaderLayout.encode({ offset: p.offset, size: p.data.byteLength, flags: p.flags }, b, off);
      b.set(p.data, off + VHOST_USER_CONFIG_HDR_SIZE);
      return;
    case 'vring-area': vringAreaLayout.encode(p, b, off); return;
    case 'inflight': inflightLayout.encode(p, b, off); return;
    case 'shared': sharedLayout.encode({ uuid: Buffer.from(p.uuid) }, b, off); return;
    case 'transfer-state': transferStateLayout.encode(p, b, off); return;
    case 'shmem-map': shmemMapLayout.encode({ ...p, pad: Buffer.alloc(7) }, b, off); return;
    case 'raw': b.set(p.bytes, off); return;
  }
}

/**
 * Encodes a whole message (header + payload). `flags` gets the version bits added; pass
 * {@link VHOST_USER_REPLY_MASK} for replies and {@link VHOST_USER_NEED_REPLY_MASK} to ask for an ack.
 */
export function encodeMessage(request: number, flags: number, payload: Payload): Uint8Array {
  const size = payloadSize(payload);
  const b = Buffer.alloc(VHOST_USER_HDR_SIZE + size);
  headerLayout.encode({ request, flags: (flags & ~VHOST_USER_VERSION_MASK) | VHOST_USER_VERSION, size }, b, 0);
  encodePayload(payload, b, VHOST_USER_HDR_SIZE);
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/** Encodes a reply to `request`. */
export function encodeReply(request: number, payload: Payload): Uint8Array {
  return encodeMessage(request, VHOST_USER_REPLY_MASK, payload);
}

/** True when the header asks for a REPLY_ACK. */
export function needsReply(flags: number): boolean {
  return (flags & VHOST_USER_NEED_REPLY_MASK) !== 0;
}
