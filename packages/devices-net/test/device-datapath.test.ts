import t from 'tap';
import { LoopbackBackend } from '../src/loopback-backend.js';
import { SwitchBackend } from '../src/switch-backend.js';
import { bit, VIRTIO_F_VERSION_1, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_HDR_F_NEEDS_CSUM } from '../src/constants.js';
import { readNetHeader, writeNetHeader } from '../src/net-header.js';
import { NetRig, makeFrame } from './helpers/net-rig.js';

const A = [2, 0, 0, 0, 0, 0xa];
const B = [2, 0, 0, 0, 0, 0xb];
const BCAST = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

t.test('loopback: a TX frame comes back on RX with a clean header, num_buffers = 1', async (t) => {
  const rig = new NetRig({ backend: new LoopbackBackend(), ctrlQueue: false });
  rig.postRx(4, 2048);
  const f = makeFrame(B, A, 100);
  rig.send(f, { pieces: 3 });
  t.same(rig.txUsed(), [0], 'TX chain returned with len 0 (virtio 1.2 §2.7.8.2)');
  const rx = rig.rxUsed();
  t.equal(rx.length, 1);
  t.equal(rx[0].length, 112, 'used len = header + frame');
  t.same(readNetHeader(rx[0], 0), { flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0, numBuffers: 1 });
  t.same(rx[0].subarray(12), f.subarray(12), 'frame bytes intact');
  t.equal(rig.device.counters.txFrames, 1);
  t.equal(rig.device.counters.rxFrames, 1);
  t.equal(rig.device.counters.rxBytes, 100);
  t.ok(rig.q(0).notifies >= 1, 'RX notified');
  t.ok(rig.q(1).notifies >= 1, 'TX notified');
  for (const q of rig.queues.values()) q.guest.assertCanaries();
});

t.test('MRG_RXBUF spreads a frame over several chains with num_buffers (virtio 1.2 §5.1.6.4)', async (t) => {
  const rig = new NetRig({ backend: new LoopbackBackend(), ctrlQueue: false });
  rig.postRx(8, 100);
  const f = makeFrame(B, A, 300);
  rig.send(f);
  const rx = rig.rxUsed();
  t.same(rx.map((b) => b.length), [100, 100, 100, 12], 'four buffers: 12+88, 100, 100, 12');
  t.equal(readNetHeader(rx[0], 0).numBuffers, 4);
  const joined = new Uint8Array(rx.reduce((n, b) => n + b.length, 0) - 12);
  let o = 0;
  joined.set(rx[0].subarray(12), o); o += 88;
  for (const b of rx.slice(1)) { joined.set(b, o); o += b.length; }
  t.same(joined, f.subarray(12), 'frame reassembles');
  for (const q of rig.queues.values()) q.guest.assertCanaries();
});

t.test('MRG_RXBUF: running out of buffers mid-frame rewinds, holds, and completes on the next kick', async (t) => {
  const rig = new NetRig({ backend: new LoopbackBackend(), ctrlQueue: false });
  rig.postRx(2, 100);
  rig.send(makeFrame(B, A, 300));
  t.same(rig.rxUsed(), [], 'nothing used while the frame does not fit');
  t.equal(rig.device.counters.rxHeld, 1);
  rig.postRx(2, 100, { kick: true });
  const rx = rig.rxUsed();
  t.equal(rx.length, 4, 'all four buffers used after the kick');
  t.equal(readNetHeader(rx[0], 0).numBuffers, 4);
});

t.test('without MRG_RXBUF a frame must fit one chain; too small → dropped and counted', async (t) => {
  const backend = new LoopbackBackend();
  const probe = new NetRig({ backend, ctrlQueue: false });
  const acked = probe.device.features & ~bit(VIRTIO_NET_F_MRG_RXBUF);
  const rig = new NetRig({ backend, ctrlQueue: false }, acked);
  rig.postRx(1, 64);
  rig.postRx(1, 2048);
  rig.send(makeFrame(B, A, 100));
  rig.send(makeFrame(B, A, 100));
  const rx = rig.rxUsed();
  t.same(rx.map((b) => b.length), [0, 112], 'small buffer returned empty (frame dropped), next frame in the next buffer');
  t.equal(rig.device.counters.rxTooBig, 1);
  t.equal(readNetHeader(rx[1], 0).numBuffers, 1, 'num_buffers is 1 without MRG_RXBUF');
});

t.test('legacy 10-byte header when neither VERSION_1 nor MRG_RXBUF', async (t) => {
  const backend = new LoopbackBackend();
  const probe = new NetRig({ backend, ctrlQueue: false });
  const acked = probe.device.features & ~bit(VIRTIO_NET_F_MRG_RXBUF) & ~bit(VIRTIO_F_VERSION_1);
  const rig = new NetRig({ backend, ctrlQueue: false }, acked);
  rig.postRx(1, 2048);
  const f = makeFrame(B, A, 60);
  const legacy = new Uint8Array(10 + 60);
  legacy.set(f.subarray(12), 10);
  rig.send(legacy);
  const rx = rig.rxUsed();
  t.equal(rx[0].length, 70);
  t.same(rx[0].subarray(10), f.subarray(12));
});

t.test('malformed TX frames are dropped and counted, never crash', async (t) => {
  const rig = new NetRig({ backend: new LoopbackBackend(), ctrlQueue: false });
  rig.postRx(8, 2048);
  rig.send(new Uint8Array(5));                        // shorter than the header
  rig.send(new Uint8Array(12 + 13));                  // runt Ethernet frame
  rig.send(new Uint8Array(12 + 1518 + 100));          // longer than the largest frame (no TSO)
  const csum = makeFrame(B, A, 60);
  writeNetHeader(csum, 0, { flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, csumStart: 34, csumOffset: 6 });
  rig.send(csum);                                      // NEEDS_CSUM without VIRTIO_NET_F_CSUM
  t.same(rig.txUsed(), [0, 0, 0, 0], 'all chains returned');
  t.equal(rig.device.counters.txMalformed, 4);
  t.equal(rig.device.counters.txDropped, 4);
  t.equal(rig.rxUsed().length, 0, 'nothing echoed');
  rig.send(makeFrame(B, A, 60));
  t.equal(rig.rxUsed().length, 1, 'a good frame still flows');
  t.same(rig.q(1).broken, [], 'device not broken');
});

t.test('a guest fault on TX breaks the device (reported), without throwing', async (t) => {
  const rig = new NetRig({ backend: new LoopbackBackend(), ctrlQueue: false });
  const g = rig.q(1).guest;
  // Descriptor pointing at unmapped memory.
  g.driver.addOne(g.unmappedGpa, 64, false);
  g.driver.publish();
  rig.q(1).handler.onKick();
  t.equal(rig.q(1).broken.length, 1);
  t.match(rig.q(1).broken[0], /tx queue 1/);
});

t.test('no RX buffers: hold (bounded), drop beyond, retry on the RX kick — in order', async (t) => {
  const backend = new LoopbackBackend();
  const rig = new NetRig({ backend, ctrlQueue: false }, undefined, 512);
  const total = 300;
  for (let i = 0; i < total; i++) rig.send(makeFrame(B, A, 60, i), { kick: false });
  rig.q(1).handler.onKick();
  const c = rig.device.counters;
  t.equal(c.rxFrames, 0);
  t.ok(c.rxHeld > 0 && c.rxHeld < total, `held ${c.rxHeld}`);
  t.equal(c.rxHeld + c.rxDropped, total, 'every frame held or dropped');
  const held = c.rxHeld;
  rig.postRx(held + 10, 2048, { kick: true });
  const rx = rig.rxUsed();
  t.equal(rx.length, held, 'all held frames delivered after the kick');
  t.equal(rx[0][26], (0 + 26) & 0xff, 'first frame first');
  t.equal(rx[held - 1][26], (held - 1 + 26) & 0xff, 'order kept');
  rig.q(0).handler.onKick();
  t.equal(rig.rxUsed().length, 0, 'a spurious kick does nothing');
});

t.test('switch: two devices exchange frames, learning and flooding', async (t) => {
  const sw = new SwitchBackend();
  const a = new NetRig({ backend: sw, name: 'a', ctrlQueue: false });
  const b = new NetRig({ backend: sw, name: 'b', ctrlQueue: false });
  const c = new NetRig({ backend: sw, name: 'c', ctrlQueue: false });
  for (const r of [a, b, c]) r.postRx(8, 2048);
  a.send(makeFrame(BCAST, A, 60));
  t.equal(a.rxUsed().length, 0, 'sender does not get its broadcast');
  t.equal(b.rxUsed().length, 1);
  t.equal(c.rxUsed().length, 1);
  b.send(makeFrame(A, B, 70));
  const got = a.rxUsed();
  t.equal(got.length, 1, 'unicast to the learned port');
  t.equal(got[0].length, 82);
  t.equal(c.rxUsed().length, 0, 'third port not flooded');
  t.equal(sw.counters.unicast, 1);
  a.device.close();
  b.send(makeFrame(BCAST, B, 60));
  t.equal(c.rxUsed().length, 1);
  t.equal(sw.portCount, 2);
});

t.test('TX hands frames to the backend in batches of at most txBatchFrames, in order', async (t) => {
  const batches: number[][] = [];
  const backend = new LoopbackBackend();
  const rig = new NetRig({ backend, ctrlQueue: false, txBatchFrames: 4 });
  // Record what each transmit call carries (first byte of each frame's payload).
  const port = (rig.device as unknown as { port: { transmit: (p: number, b: { count: number; data: Uint8Array; stride: number }) => void } }).port;
  const orig = port.transmit.bind(port);
  port.transmit = (p, b) => {
    const ids: number[] = [];
    for (let i = 0; i < b.count; i++) ids.push(b.data[i * b.stride + 12 + 14]);
    batches.push(ids);
    orig(p, b);
  };
  for (let i = 0; i < 10; i++) {
    const f = makeFrame(B, A, 60);
    f[12 + 14] = i;
    rig.send(f, { kick: false });
  }
  rig.q(1).handler.onKick();
  t.same(batches, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]], 'three batches, order kept');
  t.equal(rig.txUsed().length, 10, 'every chain returned');
  t.throws(() => new NetRig({ backend: new LoopbackBackend(), ctrlQueue: false, txBatchFrames: 0 }), RangeError);
  t.throws(() => new NetRig({ backend: new LoopbackBackend(), ctrlQueue: false, txBatchFrames: 1.5 }), RangeError);
  t.throws(() => new NetRig({ backend: new LoopbackBackend(), ctrlQueue: false, txBatchFrames: 257 }), RangeError, 'over the switch batch size');
});
