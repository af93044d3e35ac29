import t from 'tap';
import fc from 'fast-check';
import {
  BACKEND_REQUESTS, FRONTEND_REQUESTS, MessageFramer, ProtocolError, decodeReply, decodeRequest, encodeMessage,
  encodeReply, checkHeader, decodeHeader, protocolFeatureName, frontendRequestName, type Payload,
  VHOST_USER_GET_FEATURES, VHOST_USER_SET_MEM_TABLE, VHOST_USER_SET_VRING_ADDR, VHOST_USER_SET_VRING_KICK,
  VHOST_USER_GET_CONFIG, VHOST_USER_SET_VRING_NUM, VHOST_USER_NEED_REPLY_MASK, VHOST_USER_REPLY_MASK,
  VHOST_USER_GET_INFLIGHT_FD, VHOST_USER_REM_MEM_REG, VHOST_USER_SET_LOG_BASE,
  VHOST_USER_BACKEND_CONFIG_CHANGE_MSG, VHOST_USER_PROTOCOL_F_DEVICE_STATE, VHOST_USER_SET_FEATURES,
} from '../src/index.js';

function sample(kind: Payload['kind']): Payload {
  switch (kind) {
    case 'none': return { kind };
    case 'u64': return { kind, value: 0xfedc_ba98_7654_3210n };
    case 'vring-fd': return { kind, index: 7, noFd: false };
    case 'vring-state': return { kind, index: 3, num: 256 };
    case 'vring-addr': return {
      kind, index: 1, flags: 1, descUserAddr: 0x7f00_0000_1000, usedUserAddr: 0x7f00_0000_3000,
      availUserAddr: 0x7f00_0000_2000, logGuestAddr: 0x1_0000_3000,
    };
    case 'memory': return { kind, regions: [
      { guestPhysAddr: 0x10_0000, size: 0x20_0000, userAddr: 0x7f00_0000_0000, mmapOffset: 0 },
      { guestPhysAddr: 0x1_0000_0000, size: 0x10_0000, userAddr: 0x7f10_0000_0000, mmapOffset: 0x20_0000 },
    ] };
    case 'mem-region': return { kind, region: { guestPhysAddr: 0x4000, size: 0x8000, userAddr: 0x9000_0000, mmapOffset: 0x1000 } };
    case 'log': return { kind, mmapSize: 0x1000, mmapOffset: 0 };
    case 'iotlb': return { kind, iova: 0x1000, size: 0x2000, uaddr: 0x3000, perm: 3, type: 2 };
    case 'config': return { kind, offset: 4, size: 3, flags: 0, data: Uint8Array.of(1, 2, 3) };
    case 'vring-area': return { kind, u64: 2n, size: 4096, offset: 0 };
    case 'inflight': return { kind, mmapSize: 4096, mmapOffset: 0, numQueues: 2, queueSize: 128 };
    case 'shared': return { kind, uuid: Uint8Array.from({ length: 16 }, (_, i) => i) };
    case 'transfer-state': return { kind, direction: 1, phase: 0 };
    case 'shmem-map': return { kind, shmid: 1, fdOffset: 0, shmOffset: 4096, len: 8192, flags: 1n };
    case 'raw': return { kind, bytes: Uint8Array.of(9, 8, 7) };
  }
}

function fdsFor(rule: string, p: Payload): number[] {
  switch (rule) {
    case 'one': return [100];
    case 'per-region': return p.kind === 'memory' ? p.regions.map((_, i) => 100 + i) : [];
    case 'unless-nofd': return p.kind === 'vring-fd' && p.noFd ? [] : [100];
    default: return [];
  }
}

t.test('every front-end and back-end request round-trips through encode → framer → decode', async (t) => {
  for (const [direction, table] of [['frontend', FRONTEND_REQUESTS], ['backend', BACKEND_REQUESTS]] as const) {
    for (const [request, s] of table) {
      const p = sample(s.payload);
      const fds = fdsFor(s.fds, p);
      const framer = new MessageFramer(direction, false);
      const frames = framer.feed(encodeMessage(request, 0, p), fds);
      t.equal(frames.length, 1, `${s.name} frames`);
      const m = decodeRequest(direction, frames[0].header, frames[0].body, frames[0].fds);
      t.same(m.payload, p, `${s.name} payload`);
      t.same(m.fds, fds, `${s.name} fds`);
      t.equal(m.request, request);
    }
  }
});

t.test('replies round-trip, including REPLY_ACK and the empty GET_CONFIG error reply', async (t) => {
  const framer = new MessageFramer('frontend', true);
  let [f] = framer.feed(encodeReply(VHOST_USER_GET_FEATURES, { kind: 'u64', value: 1n << 32n }));
  t.same(decodeReply('frontend', f.header, f.body, f.fds).payload, { kind: 'u64', value: 1n << 32n });
  [f] = framer.feed(encodeReply(VHOST_USER_SET_VRING_NUM, { kind: 'u64', value: 0n }));
  t.same(decodeReply('frontend', f.header, f.body, f.fds).payload, { kind: 'u64', value: 0n });
  [f] = framer.feed(encodeReply(VHOST_USER_GET_CONFIG, { kind: 'none' }));
  t.same(decodeReply('frontend', f.header, f.body, f.fds).payload, { kind: 'none' });
  [f] = framer.feed(encodeReply(VHOST_USER_GET_INFLIGHT_FD, sample('inflight')), [55]);
  t.same(decodeReply('frontend', f.header, f.body, f.fds).fds, [55]);
  [f] = framer.feed(encodeReply(VHOST_USER_SET_LOG_BASE, { kind: 'u64', value: 0n }));
  t.equal(decodeReply('frontend', f.header, f.body, f.fds).payload.kind, 'u64');
  t.throws(() => decodeReply('frontend', f.header, new Uint8Array(4), []), { code: 'BAD_REPLY' });
  t.equal(f.header.flags, VHOST_USER_REPLY_MASK | 1);
});

t.test('header validation: version, unknown flags, reply flag, oversize', async (t) => {
  const hdr = (request: number, flags: number, size: number) => decodeHeader(Uint8Array.from(Buffer.from(
    new Uint32Array([request, flags, size]).buffer)));
  t.throws(() => checkHeader('frontend', hdr(1, 0, 0), false), { code: 'BAD_HEADER' }, 'version 0');
  t.throws(() => checkHeader('frontend', hdr(1, 2, 0), false), { code: 'BAD_HEADER' }, 'version 2');
  t.throws(() => checkHeader('frontend', hdr(1, 1 | 0x10, 0), false), { code: 'BAD_HEADER' }, 'unknown flag');
  t.throws(() => checkHeader('frontend', hdr(1, 1 | VHOST_USER_REPLY_MASK, 0), false), { code: 'BAD_HEADER' });
  t.throws(() => checkHeader('frontend', hdr(1, 1, 0), true), { code: 'BAD_HEADER' }, 'reply expected');
  t.throws(() => checkHeader('frontend', hdr(999, 1, 100000), false), { code: 'BAD_SIZE' });
  t.equal(checkHeader('frontend', hdr(999, 1 | VHOST_USER_NEED_REPLY_MASK, 16), false), null, 'unknown but skippable');
  t.throws(() => checkHeader('frontend', hdr(VHOST_USER_SET_VRING_NUM, 1, 12), false), { code: 'BAD_SIZE' });
  t.throws(() => checkHeader('frontend', hdr(VHOST_USER_GET_FEATURES, 1, 8), false), { code: 'BAD_SIZE' });
});

t.test('payload validation', async (t) => {
  const h = (request: number, size: number) => ({ request, flags: 1, size });
  // addresses >= 2^53 are rejected
  const addr = Buffer.alloc(40);
  addr.writeBigUInt64LE(1n << 53n, 8);
  t.throws(() => decodeRequest('frontend', h(VHOST_USER_SET_VRING_ADDR, 40), addr, []), { code: 'ADDRESS_RANGE' });
  addr.writeBigUInt64LE((1n << 53n) - 1n, 8);
  t.equal((decodeRequest('frontend', h(VHOST_USER_SET_VRING_ADDR, 40), addr, []).payload as { descUserAddr: number })
    .descUserAddr, 2 ** 53 - 1);
  // fd count must match
  const kick = encodeMessage(VHOST_USER_SET_VRING_KICK, 0, { kind: 'vring-fd', index: 0, noFd: false }).subarray(12);
  t.throws(() => decodeRequest('frontend', h(VHOST_USER_SET_VRING_KICK, 8), kick, []), { code: 'BAD_FD_COUNT' });
  t.throws(() => decodeRequest('frontend', h(VHOST_USER_SET_VRING_KICK, 8), kick, [3, 4]), { code: 'BAD_FD_COUNT' });
  const nofd = encodeMessage(VHOST_USER_SET_VRING_KICK, 0, { kind: 'vring-fd', index: 0, noFd: true }).subarray(12);
  t.throws(() => decodeRequest('frontend', h(VHOST_USER_SET_VRING_KICK, 8), nofd, [3]), { code: 'BAD_FD_COUNT' });
  t.same(decodeRequest('frontend', h(VHOST_USER_SET_VRING_KICK, 8), nofd, []).payload, { kind: 'vring-fd', index: 0, noFd: true });
  const junk = Buffer.alloc(8);
  junk.writeUInt32LE(0x200, 0);
  t.throws(() => decodeRequest('frontend', h(VHOST_USER_SET_VRING_KICK, 8), junk, [3]), { code: 'BAD_PAYLOAD' });
  t.throws(() => decodeRequest('frontend', h(VHOST_USER_SET_FEATURES, 8), Buffer.alloc(8), [3]), { code: 'BAD_FD_COUNT' });
  // memory table: 0 regions, count > room, count > 8, fds per region, full-size form
  const mem = Buffer.alloc(8 + 8 * 32);
  t.throws(() => decodeRequest('frontend', h(VHOST_USER_SET_MEM_TABLE, 40), mem.subarray(0, 40), []), { code: 'BAD_SIZE' });
  t.same(decodeRequest('frontend', h(VHOST_USER_SET_MEM_TABLE, 8), mem.subarray(0, 8), []).payload,
    { kind: 'memory', regions: [] }, 'an empty table');
  t.equal((decodeRequest('frontend', h(VHOST_USER_SET_MEM_TABLE, 264), mem, []).payload as { regions: unknown[] })
    .regions.length, 0, 'an empty table in the 8-slot form');
  t.throws(() => decodeRequest('frontend', h(VHOST_USER_SET_MEM_TABLE, 8), mem.subarray(0, 8), [1]), { code: 'BAD_FD_COUNT' });
  t.throws(() => decodeRequest('frontend', h(VHOST_USER_SET_MEM_TABLE, 4), mem.subarray(0, 4), []), { code: 'BAD_SIZE' });
  mem.writeUInt32LE(2, 0);
  t.throws(() => decodeRequest('frontend', h(VHOST_USER_SET_MEM_TABLE, 40), mem.subarray(0, 40), [1, 2]), { code: 'BAD_PAYLOAD' });
  mem.writeUInt32LE(9, 0);
  t.throws(() => decodeRequest('frontend', h(VHOST_USER_SET_MEM_TABLE, 264), mem, []), { code: 'BAD_PAYLOAD' });
  mem.writeUInt32LE(2, 0);
  t.throws(() => decodeRequest('frontend', h(VHOST_USER_SET_MEM_TABLE, 72), mem.subarray(0, 72), [1]), { code: 'BAD_FD_COUNT' });
  t.equal((decodeRequest('frontend', h(VHOST_USER_SET_MEM_TABLE, 264), mem, [1, 2]).payload as { regions: unknown[] })
    .regions.length, 2, 'full 8-slot form');
  t.throws(() => decodeRequest('frontend', h(VHOST_USER_SET_MEM_TABLE, 104), mem.subarray(0, 104), [1, 2]), { code: 'BAD_SIZE' });
  // config: inner size must match
  const cfg = Buffer.alloc(12 + 4);
  cfg.writeUInt32LE(8, 4);
  t.throws(() => decodeRequest('frontend', h(VHOST_USER_GET_CONFIG, 16), cfg, []), { code: 'BAD_PAYLOAD' });
  // REM_MEM_REG may carry one stray fd (spec MAY), not two
  const rem = encodeMessage(VHOST_USER_REM_MEM_REG, 0, sample('mem-region')).subarray(12);
  t.equal(decodeRequest('frontend', h(VHOST_USER_REM_MEM_REG, 40), rem, [9]).fds.length, 1);
  t.throws(() => decodeRequest('frontend', h(VHOST_USER_REM_MEM_REG, 40), rem, [9, 10]), { code: 'BAD_FD_COUNT' });
  // unknown
  t.throws(() => decodeRequest('frontend', h(777, 0), new Uint8Array(0), []), { code: 'UNKNOWN_REQUEST' });
  t.throws(() => decodeRequest('backend', h(VHOST_USER_BACKEND_CONFIG_CHANGE_MSG, 8), new Uint8Array(8), []), { code: 'BAD_SIZE' });
});

t.test('framer: any chunking yields the same messages; fds stay with their message', async (t) => {
  const msgs = [
    encodeMessage(VHOST_USER_GET_FEATURES, 0, { kind: 'none' }),
    encodeMessage(VHOST_USER_SET_MEM_TABLE, VHOST_USER_NEED_REPLY_MASK, sample('memory')),
    encodeMessage(VHOST_USER_SET_VRING_ADDR, 0, sample('vring-addr')),
    encodeMessage(VHOST_USER_GET_CONFIG, 0, sample('config')),
  ];
  const fdsOf = [[], [40, 41], [], []];
  t.doesNotThrow(() => fc.assert(fc.property(fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 30 }), (cuts) => {
    const framer = new MessageFramer('frontend', false);
    const out: { request: number; fds: number[] }[] = [];
    msgs.forEach((m, mi) => {
      let off = 0;
      let ci = 0;
      let first = true;
      while (off < m.byteLength) {
        const n = Math.min(cuts[ci++ % cuts.length], m.byteLength - off);
        for (const f of framer.feed(m.subarray(off, off + n), first ? fdsOf[mi] : [])) {
          out.push({ request: decodeRequest('frontend', f.header, f.body, f.fds).request, fds: f.fds });
        }
        first = false;
        off += n;
      }
    });
    return out.length === 4 && out[1].fds.join() === '40,41' && out[0].fds.length === 0
      && out.map((o) => o.request).join() === [1, 5, 9, 24].join() && !framer.midMessage;
  })));
});

t.test('framer: a bad header throws and the pending fds can be reclaimed', async (t) => {
  const framer = new MessageFramer('frontend', false);
  const bad = new Uint8Array(new Uint32Array([VHOST_USER_SET_VRING_NUM, 1, 5000]).buffer);
  t.throws(() => framer.feed(bad, [70, 71]), ProtocolError);
  t.same(framer.takePendingFds(), [70, 71]);
  t.throws(() => new MessageFramer('frontend', false).feed(new Uint8Array(12), Array.from({ length: 9 }, (_, i) => i)),
    { code: 'BAD_FD_COUNT' });
});

t.test('names', async (t) => {
  t.equal(frontendRequestName(VHOST_USER_SET_VRING_ADDR), 'VHOST_USER_SET_VRING_ADDR');
  t.equal(frontendRequestName(4242), 'UNKNOWN(4242)');
  t.equal(protocolFeatureName(VHOST_USER_PROTOCOL_F_DEVICE_STATE), 'VHOST_USER_PROTOCOL_F_DEVICE_STATE');
});
