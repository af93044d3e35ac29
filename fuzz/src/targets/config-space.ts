/**
 * Target `config-space`: GET_CONFIG / SET_CONFIG at any offset, length and flags, through the
 * back-end session (`BackendSession.getConfig` / `setConfig`, packages/vhost-user) into the real
 * blk and net devices (`BlkDevice.readConfig/writeConfig`, `VirtioNetDevice` + `NetConfig`).
 *
 * The model keeps its own image of each config space, laid out from the spec (virtio 1.2 §5.2.4
 * `virtio_blk_config`, §5.1.4 `virtio_net_config`) with the values the devices were built with;
 * bytes past the structure read as 0. Oracles:
 * - GET_CONFIG inside the 256-byte window answers exactly the model's bytes; outside it (or
 *   without the CONFIG protocol feature) answers with an empty payload (vhost-user.rst);
 * - SET_CONFIG outside the window or with unknown flags is refused (failure ack, or the
 *   connection closes when no ack was asked); inside it, a driver write (flags 0) that touches a
 *   read-only byte is refused whole with a failure ack, the connection kept (vhost-user.rst:
 *   back-ends MUST NOT accept writes to read-only fields) — writable are the blk `writeback`
 *   byte alone when CONFIG_WCE is negotiated, and 1 there only with FLUSH (§5.2.5), the net
 *   `mac` only without VERSION_1 (legacy, §5.1.4.1); a migration write (flags 1, or rust-vmm's 2) succeeds and
 *   sets the writable bytes it covers; everything else stays byte-identical;
 * - after RESET_DEVICE the writable fields return to their initial values;
 * - a full read-back after every step equals the model.
 * @module
 */
import fc from 'fast-check';
import { BlkDevice, MemoryImage, VIRTIO_BLK_F_CONFIG_WCE, VIRTIO_BLK_F_FLUSH } from '@vhost-ts/devices-blk';
import { LoopbackBackend, VirtioNetDevice } from '@vhost-ts/devices-net';
import {
  BackendSession, MessageFramer, ProtocolError, decodeHeader, encodeMessage, type Payload, type VirtioDevice,
} from '@vhost-ts/vhost-user';
import * as C from '@vhost-ts/vhost-user';
import type { FuzzTarget } from './target.js';

const bit = (n: number): bigint => 1n << BigInt(n);
const SECTORS = 2048;
const MAC = Uint8Array.of(0x52, 0x54, 0x00, 0x12, 0x34, 0x56);

const offsetArb = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 0, max: 64 }) },
  fc.integer({ min: 0, max: 300 }),
  fc.constantFrom(255, 256, 0x7fffffff, 0xffffffff),
);
const opArb = fc.oneof(
  { weight: 3, arbitrary: fc.record({ op: fc.constant('get' as const), offset: offsetArb, size: fc.oneof(fc.integer({ min: 0, max: 64 }), fc.integer({ min: 0, max: 256 })), flags: fc.oneof(fc.constant(0), fc.nat({ max: 0xffffffff })) }) },
  { weight: 3, arbitrary: fc.record({
    op: fc.constant('set' as const), offset: offsetArb, data: fc.uint8Array({ maxLength: 64 }),
    flags: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, fc.constant(1), fc.nat({ max: 0xffffffff })), ask: fc.oneof({ weight: 5, arbitrary: fc.constant(true) }, fc.constant(false)),
  }) },
  // Writes aimed at the writable bytes (blk writeback at 32, net mac at 0..5) and just around them.
  { weight: 2, arbitrary: fc.record({
    op: fc.constant('set' as const), offset: fc.constantFrom(32, 31, 33, 0, 1, 4, 5),
    data: fc.oneof(fc.constantFrom(Uint8Array.of(0), Uint8Array.of(1)), fc.uint8Array({ minLength: 1, maxLength: 7 })),
    flags: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, fc.constantFrom(1, 2)), ask: fc.oneof({ weight: 5, arbitrary: fc.constant(true) }, fc.constant(false)),
  }) },
  fc.record({ op: fc.constant('features' as const), flush: fc.boolean(), wce: fc.boolean(), version1: fc.boolean() }),
  fc.record({ op: fc.constant('reset' as const) }),
);

export const configArb = fc.record({
  device: fc.constantFrom('blk' as const, 'net' as const),
  protoConfig: fc.oneof({ weight: 5, arbitrary: fc.constant(true) }, fc.constant(false)),
  ops: fc.array(opArb, { minLength: 1, maxLength: 30 }),
});
type Scenario = typeof configArb extends fc.Arbitrary<infer T> ? T : never;

function fail(msg: string): never {
  throw new Error(`config-space: ${msg}`);
}

/** virtio_blk_config (virtio 1.2 §5.2.4) as the device under test was configured. */
function blkImage(writeback: number): Uint8Array {
  const b = new Uint8Array(256);
  const v = new DataView(b.buffer);
  v.setUint32(0, SECTORS, true);          // capacity (le64)
  v.setUint32(8, 1 << 20, true);          // size_max
  v.setUint32(12, 128 - 2, true);         // seg_max: min(queue size, 128) - 2
  v.setUint32(20, 512, true);             // blk_size
  b[24] = 3;                              // topology.physical_block_exp
  v.setUint16(26, 1, true);               // topology.min_io_size
  b[32] = writeback;                      // writeback
  v.setUint16(34, 1, true);               // num_queues
  v.setUint32(36, 1 << 22, true);         // max_discard_sectors
  v.setUint32(40, 16, true);              // max_discard_seg
  v.setUint32(44, 8, true);               // discard_sector_alignment
  v.setUint32(48, 1 << 22, true);         // max_write_zeroes_sectors
  v.setUint32(52, 16, true);              // max_write_zeroes_seg
  b[56] = 1;                              // write_zeroes_may_unmap
  return b;
}

/** virtio_net_config (virtio 1.2 §5.1.4) as the device under test was configured. */
function netImage(mac: Uint8Array): Uint8Array {
  const b = new Uint8Array(256);
  const v = new DataView(b.buffer);
  b.set(mac, 0);                          // mac
  v.setUint16(6, 1, true);                // status: VIRTIO_NET_S_LINK_UP
  v.setUint16(8, 1, true);                // max_virtqueue_pairs
  v.setUint16(10, 1500, true);            // mtu
  v.setUint32(12, 0xffffffff, true);      // speed: unknown
  b[16] = 0xff;                           // duplex: unknown
  return b;
}

interface Reply { request: number; body: Uint8Array }

export async function runConfigSpace(s: Scenario): Promise<void> {
  const device: VirtioDevice = s.device === 'blk'
    ? new BlkDevice({ image: new MemoryImage(SECTORS * 512), queueSize: 256 })
    : new VirtioNetDevice({ backend: new LoopbackBackend(), mac: MAC, ctrlQueue: false });
  const replies: Reply[] = [];
  const session = new BackendSession({
    device, log: () => {},
    send: (bytes) => { const h = decodeHeader(bytes); replies.push({ request: h.request, body: bytes.slice(12, 12 + h.size) }); },
  });
  const framer = new MessageFramer('frontend', false);
  const send = async (request: number, flags: number, payload: Payload): Promise<Reply[]> => {
    replies.length = 0;
    const [frame] = framer.feed(encodeMessage(request, flags, payload));
    await session.handle(frame);
    return replies.slice();
  };
  const ack = (r: Reply[]): bigint => {
    if (r.length !== 1 || r[0].body.length !== 8) fail(`expected one u64 ack, got ${r.length} replies`);
    return new DataView(r[0].body.buffer, r[0].body.byteOffset).getBigUint64(0, true);
  };
  const NEED = C.VHOST_USER_NEED_REPLY_MASK;
  let proto = bit(C.VHOST_USER_PROTOCOL_F_REPLY_ACK) | bit(C.VHOST_USER_PROTOCOL_F_RESET_DEVICE);
  if (s.protoConfig) proto |= bit(C.VHOST_USER_PROTOCOL_F_CONFIG);
  await send(C.VHOST_USER_SET_PROTOCOL_FEATURES, 0, { kind: 'u64', value: proto });

  // The model: writable fields and what is negotiated.
  let writeback = 1;
  /** The driver's last accepted write of the writeback byte (-1: none); survives RESET_DEVICE. */
  let driverWce = -1;
  let mac = MAC.slice();
  let wce = false;
  let version1 = false;
  const image = (): Uint8Array => (s.device === 'blk' ? blkImage(writeback) : netImage(mac));
  let flush = false;
  const setFeatures = async (wantFlush: boolean, wantWce: boolean, wantV1: boolean): Promise<void> => {
    let f = bit(C.VHOST_USER_F_PROTOCOL_FEATURES);
    if (wantV1) f |= bit(C.VIRTIO_F_VERSION_1);
    if (s.device === 'blk') {
      if (wantWce) f |= bit(VIRTIO_BLK_F_CONFIG_WCE);
      if (wantFlush) f |= bit(VIRTIO_BLK_F_FLUSH);
    }
    if (ack(await send(C.VHOST_USER_SET_FEATURES, NEED, { kind: 'u64', value: f })) !== 0n) fail('SET_FEATURES refused');
    if (s.device === 'blk') {
      // virtio 1.2 §5.2.5: without FLUSH the device is writethrough; with FLUSH and no CONFIG_WCE
      // writeback; with both, the driver's last choice (writeback if it made none).
      if (!wantFlush) writeback = 0;
      else if (!wantWce) writeback = 1;
      else writeback = driverWce !== 0 ? 1 : 0;
      flush = wantFlush;
      wce = wantWce;
    }
    version1 = wantV1;
  };
  const checkAll = async (when: string): Promise<void> => {
    if (!s.protoConfig) return;
    const r = await send(C.VHOST_USER_GET_CONFIG, 0, { kind: 'config', offset: 0, size: 256, flags: 0, data: new Uint8Array(256) });
    if (r.length !== 1 || r[0].body.length !== 12 + 256) fail(`${when}: full read answered ${r[0]?.body.length} bytes`);
    const got = r[0].body.subarray(12);
    const want = image();
    for (let i = 0; i < 256; i++) if (got[i] !== want[i]) fail(`${when}: config byte ${i} is ${got[i]}, model ${want[i]}`);
  };
  await setFeatures(true, true, true);
  await checkAll('start');

  for (const o of s.ops) {
    if (o.op === 'features') {
      await setFeatures(o.flush, o.wce, o.version1);
    } else if (o.op === 'reset') {
      if (ack(await send(C.VHOST_USER_RESET_DEVICE, NEED, { kind: 'none' })) !== 0n) fail('RESET_DEVICE refused');
      // A device reset keeps the driver's cache-mode choice (QEMU keeps showing it to the guest).
      writeback = driverWce !== 0 ? 1 : 0; mac = MAC.slice(); wce = false; flush = false; version1 = false;
    } else if (o.op === 'get') {
      const r = await send(C.VHOST_USER_GET_CONFIG, 0, { kind: 'config', offset: o.offset, size: o.size, flags: o.flags, data: new Uint8Array(o.size) });
      if (r.length !== 1 || r[0].request !== C.VHOST_USER_GET_CONFIG) fail('GET_CONFIG without exactly one reply');
      const inWindow = o.offset + o.size <= 256;
      if (!s.protoConfig || !inWindow) {
        if (r[0].body.length !== 0) fail(`GET_CONFIG ${o.offset}+${o.size}: answered ${r[0].body.length} bytes, expected the empty error reply`);
      } else {
        const b = r[0].body;
        if (b.length !== 12 + o.size) fail(`GET_CONFIG ${o.offset}+${o.size}: reply of ${b.length} bytes`);
        const v = new DataView(b.buffer, b.byteOffset);
        if (v.getUint32(0, true) !== o.offset || v.getUint32(4, true) !== o.size) fail('GET_CONFIG reply header does not echo offset/size');
        const want = image().subarray(o.offset, o.offset + o.size);
        if (Buffer.compare(b.subarray(12), want) !== 0) fail(`GET_CONFIG ${o.offset}+${o.size}: bytes differ from the layout`);
      }
    } else {
      const valid = s.protoConfig && o.offset + o.data.length <= 256 && o.flags <= 2; // 2: rust-vmm's migration value
      let threw: unknown = null;
      let r: Reply[] = [];
      try {
        r = await send(C.VHOST_USER_SET_CONFIG, o.ask ? NEED : 0, { kind: 'config', offset: o.offset, size: o.data.length, flags: o.flags, data: o.data });
      } catch (e) {
        if (!(e instanceof ProtocolError)) fail(`SET_CONFIG threw ${String(e)}`);
        threw = e;
      }
      if (!valid) {
        if (o.ask) { if (threw !== null || ack(r) !== 1n) fail(`SET_CONFIG ${o.offset}+${o.data.length} flags ${o.flags} not refused`); }
        else { if (threw === null) fail('invalid SET_CONFIG without an ack kept the connection'); break; }
        continue;
      }
      if (threw !== null) fail(`valid SET_CONFIG closed the connection: ${(threw as Error).message}`);
      if (!o.ask && r.length !== 0) fail('SET_CONFIG answered without NEED_REPLY');
      const n = o.data.length;
      const driverMay = n === 0 || (s.device === 'blk'
        ? o.offset === 32 && n === 1 && wce && (flush || o.data[0] === 0)
        : !version1 && o.offset + n <= 6);
      const accepted = o.flags >= 1 || driverMay;
      if (o.ask && ack(r) !== (accepted ? 0n : 1n)) fail(`SET_CONFIG ${o.offset}+${n} flags ${o.flags}: ack ${accepted ? 'failure' : 'success'}, model ${accepted ? 'accept' : 'refuse'}`);
      if (!accepted) { await checkAll('after a refused SET_CONFIG'); continue; }
      // Only writable fields change.
      for (let i = 0; i < o.data.length; i++) {
        const at = o.offset + i;
        if (s.device === 'blk' && at === 32 && wce && (flush || o.data[i] === 0)) {
          driverWce = o.data[i] !== 0 ? 1 : 0;
          if (flush) writeback = driverWce;
        }
        if (s.device === 'net' && at < 6 && !version1) mac[at] = o.data[i];
      }
    }
    await checkAll(`after ${o.op}`);
  }
  await session.close();
}

export const configSpace: FuzzTarget = {
  name: 'config-space',
  description: 'GET/SET_CONFIG at any offset/length/flags through BackendSession into blk and net devices vs a spec layout model',
  testRuns: 200,
  property: () => fc.asyncProperty(configArb, (s) => runConfigSpace(s)),
};
