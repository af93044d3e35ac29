// VIRTIO_F_IN_ORDER: the device offers it, so every queue must return buffers in the order the
// driver made them available — malformed TX chains, RX buffers a frame did not fit and frames
// spread over several buffers included. Checked against the used ring of a split queue.
import t from 'tap';
import fc from 'fast-check';
import { VIRTIO_F_IN_ORDER } from '@vhost-ts/virtqueue';
import { LoopbackBackend } from '../src/loopback-backend.js';
import { bit, VIRTIO_F_VERSION_1, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_HDR_F_NEEDS_CSUM } from '../src/constants.js';
import { writeNetHeader } from '../src/net-header.js';
import { NetRig, makeFrame } from './helpers/net-rig.js';

const A = [2, 0, 0, 0, 0, 0xa];
const B = [2, 0, 0, 0, 0, 0xb];

function usedHeads(rig: NetRig, index: number): number[] {
  const d = rig.q(index).guest.driver;
  const out: number[] = [];
  let h: number;
  while ((h = d.popUsed()) >= 0) out.push(h);
  return out;
}

function postRx(rig: NetRig, sizes: number[]): number[] {
  const g = rig.q(0).guest;
  const heads: number[] = [];
  for (const size of sizes) {
    const head = g.driver.addOne(g.alloc(size), size, true);
    if (head < 0) throw new Error('rx ring full');
    heads.push(head);
  }
  g.driver.publish();
  return heads;
}

t.test('virtio-net offers VIRTIO_F_IN_ORDER', async (t) => {
  const rig = new NetRig({ backend: new LoopbackBackend(), ctrlQueue: false });
  t.not(rig.device.features & bit(VIRTIO_F_IN_ORDER), 0n);
});

t.test('TX returns malformed chains in their place, not before the good ones around them', async (t) => {
  for (const legacy of [false, true]) {
    const backend = new LoopbackBackend();
    const probe = new NetRig({ backend, ctrlQueue: false });
    // Legacy: the 10-byte header goes through pop() instead of popDirect().
    const acked = legacy ? probe.device.features & ~bit(VIRTIO_NET_F_MRG_RXBUF) & ~bit(VIRTIO_F_VERSION_1) : probe.device.features;
    const rig = new NetRig({ backend, ctrlQueue: false }, acked);
    const hdr = legacy ? 10 : 12;
    const good = (len: number) => {
      const f = new Uint8Array(hdr + len);
      f.set(makeFrame(B, A, len).subarray(12), hdr);
      return f;
    };
    const csum = good(60);
    writeNetHeader(csum, 0, { flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, csumStart: 34, csumOffset: 6 });
    const frames: [Uint8Array, number][] = [
      [good(60), 1], [new Uint8Array(5), 1], [good(200), 3], [new Uint8Array(hdr + 1600), 1],
      [good(60), 1], [csum, 1], [new Uint8Array(hdr + 13), 2], [good(1514), 1],
    ];
    const heads = frames.map(([f, pieces]) => rig.send(f, { pieces, kick: false }));
    rig.q(1).handler.onKick();
    t.same(usedHeads(rig, 1), heads, `${legacy ? 'legacy header' : 'v1 header'}: used order = avail order`);
    t.equal(rig.device.counters.txMalformed, 4);
    t.equal(rig.device.counters.txFrames, 4);
  }
});

t.test('RX with MRG_RXBUF: frames spread over buffers and give-backs keep the avail order', async (t) => {
  const rig = new NetRig({ backend: new LoopbackBackend(), ctrlQueue: false });
  const heads = postRx(rig, [2048, 100, 100, 100, 2048, 64]);
  rig.send(makeFrame(B, A, 60));   // one 2048 buffer
  rig.send(makeFrame(B, A, 300));  // 100 + 100 + 100 + … the 2048 buffer
  rig.send(makeFrame(B, A, 1000)); // needs more than the 64 left: waits, the 64 is given back
  const first = usedHeads(rig, 0);
  t.same(first, heads.slice(0, 5), 'the first five in avail order');
  const more = postRx(rig, [2048]);
  rig.q(0).handler.onKick();
  t.same(usedHeads(rig, 0), [heads[5], more[0]], 'the given-back buffer comes next, then the new one');
});

t.test('property: used order = avail order on TX and RX, whatever the guest posts', async (t) => {
  const tx = fc.record({ len: fc.integer({ min: 0, max: 1700 }), pieces: fc.integer({ min: 1, max: 3 }), csum: fc.boolean() });
  t.doesNotThrow(() => fc.assert(fc.property(
    fc.array(tx, { minLength: 1, maxLength: 60 }), fc.array(fc.integer({ min: 1, max: 2048 }), { minLength: 1, maxLength: 60 }), fc.boolean(),
    (txs, rxSizes, mergeable) => {
      const backend = new LoopbackBackend();
      const probe = new NetRig({ backend, ctrlQueue: false });
      const acked = mergeable ? probe.device.features : probe.device.features & ~bit(VIRTIO_NET_F_MRG_RXBUF);
      const rig = new NetRig({ backend, ctrlQueue: false }, acked, 128);
      const rxHeads = postRx(rig, rxSizes);
      const txHeads = txs.map(({ len, pieces, csum }) => {
        const f = new Uint8Array(len);
        if (len >= 12 + 14) f.set(makeFrame(B, A, len - 12).subarray(12), 12);
        if (csum && len > 0) f[0] = 1; // NEEDS_CSUM, not negotiated: dropped after the copy
        return rig.send(f, { pieces, kick: false });
      });
      rig.q(1).handler.onKick();
      const txUsed = usedHeads(rig, 1);
      const rxUsed = usedHeads(rig, 0);
      return JSON.stringify(txUsed) === JSON.stringify(txHeads)
        && JSON.stringify(rxUsed) === JSON.stringify(rxHeads.slice(0, rxUsed.length))
        && rig.q(0).broken.length === 0 && rig.q(1).broken.length === 0;
    },
  ), { numRuns: 300 }), '300 runs');
});

t.test('TX with IN_ORDER negotiated returns a burst as one used element; without it, one per chain', async (t) => {
  for (const inOrder of [true, false]) {
    const backend = new LoopbackBackend();
    const probe = new NetRig({ backend, ctrlQueue: false });
    const acked = inOrder ? probe.device.features : probe.device.features & ~bit(VIRTIO_F_IN_ORDER);
    const rig = new NetRig({ backend, ctrlQueue: false }, acked);
    const q = rig.q(1);
    t.equal(q.guest.device.inOrder, inOrder);
    const frame = makeFrame(B, A, 60);
    // Four good frames and a runt between them: five chains, one burst.
    const heads = [frame, frame, new Uint8Array(5), frame, frame].map((f) => rig.send(f, { kick: false }));
    const used32 = q.guest.device.ringViews.used32;
    for (let i = 0; i < 8; i++) used32[1 + i * 2] = 0xdead;
    q.handler.onKick();
    t.equal(q.guest.device.usedIdx, 5, 'used.idx covers all five');
    if (inOrder) {
      t.same([used32[1], used32[2]], [heads[4], 0], 'one element: the last head, at the first position');
      for (let i = 1; i < 5; i++) t.equal(used32[1 + i * 2], 0xdead, `position ${i} not written`);
    } else {
      for (let i = 0; i < 5; i++) t.equal(used32[1 + i * 2], heads[i], `position ${i}: its own head`);
    }
    t.same(usedHeads(rig, 1), heads, 'the driver reads all five back in avail order');
    t.equal(rig.device.counters.txFrames, 4);
    t.equal(rig.device.counters.txMalformed, 1);
  }
});
