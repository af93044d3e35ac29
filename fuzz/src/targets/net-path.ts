/**
 * Target `net-path`: the virtio-net TX header parse and RX write paths
 * (packages/devices-net/src/tx-queue.ts, net-header.ts `checkTxHeader`, rx-queue.ts) over two
 * MockGuests (RX queue 0, TX queue 1) with the loopback backend.
 *
 * The guest transmits chains with random `virtio_net_hdr` fields (NEEDS_CSUM, DATA_VALID, GSO
 * types, ECN, random bytes) and random lengths around every limit, split over descriptors,
 * direct or indirect, and posts RX chains of random sizes (one to three descriptors), with
 * VERSION_1 (12-byte header) or legacy 10-byte headers, with or without MRG_RXBUF, over split or
 * packed rings. Oracles:
 * - TX model: a chain is forwarded iff header + Ethernet header fit, the slot is not exceeded and
 *   the header asks for no offload the loopback path never offered (virtio 1.2 §5.1.6.2);
 *   counters agree (`txFrames`, `txMalformed`); every TX head comes back with length 0;
 * - RX: frames reassembled from the used ring (num_buffers) are, byte for byte, an in-order
 *   subsequence of the forwarded frames, and delivered + dropped + held = forwarded; each
 *   delivered header is cleared with num_buffers = the buffers used; used lengths never exceed
 *   what the chain offered;
 * - TX buffers are unchanged, and no canary of either guest is touched.
 * @module
 */
import fc from 'fast-check';
import {
  LoopbackBackend, VIRTIO_F_VERSION_1, VIRTIO_NET_F_MRG_RXBUF, VirtioNetDevice,
} from '@vhost-ts/devices-net';
import type { QueueContext, QueueHandler } from '@vhost-ts/vhost-user';
import { VIRTIO_F_IN_ORDER, VIRTIO_RING_F_EVENT_IDX } from '@vhost-ts/virtqueue';
import { MockGuest, MockPackedGuest } from '@vhost-ts/virtqueue/testing';
import type { FuzzTarget } from './target.js';

const ETH_HLEN = 14;
/** LoopbackBackend's slot: 12-byte header + 1500-byte MTU frame + 18 bytes of Ethernet framing. */
const SLOT = 12 + 18 + 1500;

const txArb = fc.record({
  op: fc.constant('tx' as const),
  flags: fc.oneof(fc.constantFrom(0, 0, 0, 1, 2, 3), fc.nat({ max: 255 })),
  gso: fc.oneof(fc.constantFrom(0, 0, 0, 1, 3, 4, 5, 0x80, 0x81), fc.nat({ max: 255 })),
  rest: fc.uint8Array({ minLength: 8, maxLength: 8 }),
  len: fc.oneof(fc.integer({ min: 0, max: 1600 }), fc.constantFrom(0, 9, 10, 12, 23, 24, 25, 26, 60, SLOT - 12 + 10, SLOT, SLOT + 1, SLOT - 1)),
  cuts: fc.array(fc.integer({ min: 1, max: 1600 }), { maxLength: 3 }),
  indirect: fc.boolean(),
  seed: fc.nat({ max: 255 }),
});
const rxArb = fc.record({
  op: fc.constant('rx' as const),
  chains: fc.array(fc.array(fc.oneof(fc.integer({ min: 1, max: 64 }), fc.integer({ min: 1, max: 2000 })), { minLength: 1, maxLength: 3 }), { minLength: 1, maxLength: 6 }),
  indirect: fc.boolean(),
});

export const netArb = fc.record({
  queueSize: fc.constantFrom(8, 32, 128),
  version1: fc.boolean(),
  mergeable: fc.boolean(),
  eventIdx: fc.boolean(),
  /** Packed rings (virtio 1.2 §2.8) instead of split. */
  packed: fc.boolean(),
  /** VIRTIO_F_IN_ORDER acked (split rings: TX returns bursts as one used element). */
  inOrder: fc.boolean(),
  ops: fc.array(fc.oneof(txArb, rxArb), { minLength: 1, maxLength: 40 }),
});
type Scenario = typeof netArb extends fc.Arbitrary<infer T> ? T : never;

function fail(msg: string): never {
  throw new Error(`net-path: ${msg}`);
}

function split(total: number, cuts: number[]): number[] {
  const points = [...new Set(cuts.map((c) => c % (total + 1)))].filter((c) => c > 0 && c < total).sort((a, b) => a - b);
  const out: number[] = [];
  let prev = 0;
  for (const p of [...points, total]) { out.push(p - prev); prev = p; }
  return out.filter((n) => n > 0);
}

interface Started { guest: MockGuest | MockPackedGuest; handler: QueueHandler; broken: string[] }

function start(device: VirtioNetDevice, index: number, s: Scenario): Started {
  const opts = { queueSize: s.queueSize, eventIdx: s.eventIdx, heapBytes: 0x80000, indirectEntries: 8 };
  const guest = s.packed ? new MockPackedGuest(opts) : new MockGuest({ ...opts, inOrder: s.inOrder });
  const broken: string[] = [];
  const ctx: QueueContext = {
    index, queue: guest.device, memory: guest.memory, inflight: null,
    notify: () => {}, broken: (r) => { broken.push(r); },
  };
  return { guest, handler: device.startQueue(index, ctx), broken };
}

export function runNetPath(s: Scenario): void {
  const device = new VirtioNetDevice({ backend: new LoopbackBackend(), ctrlQueue: false, maxQueueSize: 256 });
  let acked = device.features;
  const drop = (b: number) => { acked &= ~(1n << BigInt(b)); };
  if (!s.version1) drop(VIRTIO_F_VERSION_1);
  if (!s.mergeable) drop(VIRTIO_NET_F_MRG_RXBUF);
  if (!s.eventIdx) drop(VIRTIO_RING_F_EVENT_IDX);
  if (!s.inOrder) drop(VIRTIO_F_IN_ORDER);
  device.setFeatures(acked);
  const hdrLen = s.version1 || s.mergeable ? 12 : 10;
  const rx = start(device, 0, s);
  const tx = start(device, 1, s);

  const forwarded: Uint8Array[] = [];
  let txSent = 0;
  const txBufs: { gpa: number; content: Uint8Array }[] = [];
  const rxChains = new Map<number, { gpa: number; len: number }[]>();
  const rxUsed: { len: number; data: Uint8Array }[] = [];
  /** Bytes of a used RX chain, read when it comes back (the driver reuses heads). */
  const readChain = (head: number, len: number): Uint8Array => {
    const bufs = rxChains.get(head);
    if (bufs === undefined) fail(`RX used head ${head} was never posted`);
    const cap = bufs.reduce((a, b) => a + b.len, 0);
    if (len > cap) fail(`RX used len ${len} > chain capacity ${cap}`);
    const out = new Uint8Array(len);
    let at = 0;
    for (const b of bufs) {
      if (at >= len) break;
      const n = Math.min(b.len, len - at);
      out.set(rx.guest.read(b.gpa, n), at);
      at += n;
    }
    rxChains.delete(head);
    return out;
  };
  const collect = (): void => {
    for (let h = tx.guest.driver.popUsed(); h >= 0; h = tx.guest.driver.popUsed()) {
      if (tx.guest.driver.lastLen !== 0) fail(`TX head ${h} returned with length ${tx.guest.driver.lastLen}`);
    }
    for (let h = rx.guest.driver.popUsed(); h >= 0; h = rx.guest.driver.popUsed()) {
      const len = rx.guest.driver.lastLen;
      rxUsed.push({ len, data: readChain(h, len) });
    }
  };

  for (const o of s.ops) {
    if (o.op === 'tx') {
      const bytes = new Uint8Array(o.len);
      const hdr = new Uint8Array(12);
      hdr[0] = o.flags; hdr[1] = o.gso; hdr.set(o.rest.subarray(0, 8), 2);
      bytes.set(hdr.subarray(0, Math.min(hdrLen, o.len)));
      for (let i = hdrLen; i < o.len; i++) bytes[i] = (i * 7 + o.seed) & 0xff;
      const pieces = o.len === 0 ? [0] : split(o.len, o.cuts);
      const bufs = pieces.map((n) => {
        const gpa = tx.guest.alloc(Math.max(n, 1));
        return { gpa, len: n };
      });
      let at = 0;
      for (const b of bufs) {
        const content = bytes.slice(at, at + b.len);
        tx.guest.write(b.gpa, content);
        txBufs.push({ gpa: b.gpa, content });
        at += b.len;
      }
      if (tx.guest.driver.add(bufs, [], { indirect: o.indirect && bufs.length <= 8 }) < 0) continue;
      txSent++;
      // Model (virtio 1.2 §5.1.6.2): forwarded iff sizes fit and no offload is requested (none negotiated).
      const frameLen = o.len - hdrLen;
      const ok = o.len >= hdrLen + ETH_HLEN && o.len <= SLOT - 12 + hdrLen && (o.flags & 1) === 0 && o.gso === 0;
      if (ok) forwarded.push(bytes.slice(hdrLen, hdrLen + frameLen));
      tx.guest.driver.publish();
      tx.handler.onKick();
    } else {
      let posted = false;
      for (const sizes of o.chains) {
        const bufs = sizes.map((n) => {
          const gpa = rx.guest.alloc(n);
          rx.guest.write(gpa, new Uint8Array(n).fill(0xee));
          return { gpa, len: n };
        });
        const head = rx.guest.driver.add([], bufs, { indirect: o.indirect && bufs.length <= 8 });
        if (head < 0) break;
        rxChains.set(head, bufs);
        posted = true;
      }
      if (posted) {
        rx.guest.driver.publish();
        rx.handler.onKick();
      }
    }
    collect();
  }
  collect();

  // --- TX accounting -------------------------------------------------------------------------
  const c = device.counters;
  if (c.txFrames !== forwarded.length) fail(`txFrames ${c.txFrames}, model ${forwarded.length}`);
  if (c.txFrames + c.txMalformed !== txSent) fail(`tx ${c.txFrames} + ${c.txMalformed} malformed != ${txSent} sent`);
  if (tx.broken.length > 0 || rx.broken.length > 0) fail(`broken: ${[...tx.broken, ...rx.broken][0]}`);

  // --- RX reassembly -------------------------------------------------------------------------
  const delivered: Uint8Array[] = [];
  for (let i = 0; i < rxUsed.length;) {
    const first = rxUsed[i];
    if (first.len === 0) { i++; continue; } // a buffer consumed by a dropped frame
    const d0 = first.data;
    if (d0.length < hdrLen) fail(`RX element of ${d0.length} bytes holds no header`);
    for (let k = 0; k < Math.min(hdrLen, 10); k++) if (d0[k] !== 0) fail(`RX header byte ${k} is ${d0[k]} (must be cleared)`);
    const n = hdrLen === 12 ? d0[10] | (d0[11] << 8) : 1;
    if (n < 1 || (!s.mergeable && n !== 1)) fail(`num_buffers ${n}`);
    const parts = [d0.subarray(hdrLen)];
    for (let k = 1; k < n; k++) {
      const e = rxUsed[i + k];
      if (e === undefined) fail(`frame spans ${n} buffers, only ${k} used`);
      parts.push(e.data);
    }
    const frame = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
    let at = 0;
    for (const p of parts) { frame.set(p, at); at += p.length; }
    delivered.push(frame);
    i += n;
  }
  // delivered is an in-order subsequence of forwarded; the gaps are the drops.
  let j = 0;
  for (const f of delivered) {
    while (j < forwarded.length && Buffer.compare(forwarded[j], f) !== 0) j++;
    if (j === forwarded.length) fail(`a delivered frame of ${f.length} bytes was never forwarded (or out of order)`);
    j++;
  }
  const held = (device as unknown as { rx: ({ held: number } | null)[] }).rx[0]?.held ?? 0;
  if (c.rxFrames !== delivered.length) fail(`rxFrames ${c.rxFrames}, reassembled ${delivered.length}`);
  if (c.rxFrames + c.rxDropped + held !== forwarded.length) {
    fail(`rx ${c.rxFrames} + ${c.rxDropped} dropped + ${held} held != ${forwarded.length} forwarded`);
  }
  for (const b of txBufs) if (Buffer.compare(tx.guest.read(b.gpa, b.content.length), b.content) !== 0) fail('a TX buffer was modified');
  for (const g of [rx.guest, tx.guest]) {
    const bad = g.checkCanaries();
    if (bad.length > 0) fail(`canaries: ${bad[0]}`);
  }
  device.close();
}

export const netPath: FuzzTarget = {
  name: 'net-path',
  description: 'virtio-net TX header parse + RX (mergeable) over MockGuest/loopback: forwarded model, reassembly, accounting, canaries',
  testRuns: 200,
  property: () => fc.property(netArb, (s) => { runNetPath(s); }),
};
