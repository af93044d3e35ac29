// Busy-polling (VirtioNetDeviceOptions.pollUs, the shared AdaptivePoller of @vhost-ts/vhost-user):
// after a TX batch empties the ring, and while RX frames wait for buffers, the device spins on the
// ring before asking for a kick. The guest is single-threaded here, so it "acts during the poll"
// through a hook on the real queue's availableCount(): the first check of the spin publishes new
// chains, what a driver on another CPU does (the first check, so no timing is involved).
import t from 'tap';
import type { DeviceQueue } from '@vhost-ts/virtqueue';
import { LoopbackBackend } from '../src/loopback-backend.js';
import { NetRig, makeFrame } from './helpers/net-rig.js';

const A = [2, 0, 0, 0, 0, 0xa];
const B = [2, 0, 0, 0, 0, 0xb];

/** Calls `act` once, on the `after`-th availableCount() of `q` (the guest acting mid-poll). */
function actDuringPoll(q: DeviceQueue, after: number, act: () => void): { checks: number } {
  const real = q.availableCount.bind(q);
  const seen = { checks: 0 };
  (q as { availableCount: () => number }).availableCount = () => {
    if (++seen.checks === after) act();
    return real();
  };
  return seen;
}

t.test('TX with pollUs: chains added while polling go out in the same run, without a kick', async (t) => {
  const rig = new NetRig({ backend: new LoopbackBackend(), ctrlQueue: false, pollUs: 200_000, pollYieldMs: 10_000 });
  rig.postRx(8, 2048);
  const tx = rig.q(1);
  // The guest adds a second frame during the device's poll after the first batch.
  const seen = actDuringPoll(tx.guest.device, 1, () => rig.send(makeFrame(B, A, 80), { kick: false }));
  rig.send(makeFrame(B, A, 60)); // kicks once
  t.ok(seen.checks >= 1, 'the device polled the ring after its first batch');
  t.equal(rig.device.counters.pollHits, 1, 'one spin found the chain');
  t.ok(rig.device.counters.pollMisses >= 1, 'the next spin ran out its window');
  t.equal(rig.device.counters.txKicks, 1, 'one kick for both frames');
  t.equal(rig.device.counters.txFrames, 2, 'the frame added mid-poll was transmitted in the same run');
  t.same(rig.txUsed(), [0, 0], 'both TX chains returned');
  t.same(rig.rxUsed().map((b) => b.length), [72, 92], 'both looped back');
  // After the poll budget ran out the queue asked for kicks again (virtio 1.2 §2.7.10).
  rig.send(makeFrame(B, A, 60), { kick: false });
  t.ok(tx.guest.driver.kickNeeded(), 'notifications re-enabled after the poll timed out');
});

t.test('TX without pollUs: no polling, the next chain needs a kick', async (t) => {
  const rig = new NetRig({ backend: new LoopbackBackend(), ctrlQueue: false });
  rig.postRx(8, 2048);
  const seen = actDuringPoll(rig.q(1).guest.device, 1, () => {});
  rig.send(makeFrame(B, A, 60));
  t.equal(seen.checks, 0, 'availableCount never consulted');
  t.equal(rig.device.counters.pollHits + rig.device.counters.pollMisses, 0, 'no spins counted');
  rig.send(makeFrame(B, A, 60), { kick: false });
  t.ok(rig.q(1).guest.driver.kickNeeded(), 'kick requested');
  t.equal(rig.device.counters.txFrames, 1);
});

t.test('RX with pollUs: held frames go into buffers posted while polling, without an RX kick', async (t) => {
  const rig = new NetRig({ backend: new LoopbackBackend(), ctrlQueue: false, pollUs: 200_000, pollYieldMs: 10_000 });
  rig.postRx(1, 2048);
  const rx = rig.q(0);
  // Three frames arrive with one buffer posted; the guest posts two more mid-poll.
  actDuringPoll(rx.guest.device, 1, () => rig.postRx(2, 2048, { kick: false }));
  for (let i = 0; i < 3; i++) rig.send(makeFrame(B, A, 60 + i), { kick: false });
  rig.q(1).handler.onKick();
  t.equal(rig.device.counters.rxKicks, 0, 'no RX kick was needed');
  t.equal(rig.device.counters.rxFrames, 3, 'all three delivered');
  t.same(rig.rxUsed().map((b) => b.length), [72, 73, 74], 'in order');
  t.equal(rig.device.counters.rxDropped, 0);
  t.ok(rig.device.counters.pollHits >= 1, 'counted as a poll hit');
});

t.test('RX with pollUs: budget spent with no buffers → frames held, kick requested, delivered on the kick', async (t) => {
  const rig = new NetRig({ backend: new LoopbackBackend(), ctrlQueue: false, pollUs: 200, pollYieldMs: 10_000 });
  rig.send(makeFrame(B, A, 60));
  t.equal(rig.device.counters.rxHeld, 1, 'held');
  t.ok(rig.device.counters.pollMisses >= 1, 'the spin ran out its window');
  rig.postRx(1, 2048, { kick: false });
  t.ok(rig.q(0).guest.driver.kickNeeded(), 'the RX queue asked for a kick');
  rig.q(0).handler.onKick();
  t.same(rig.rxUsed().map((b) => b.length), [72]);
});

t.test('pollUs is validated', async (t) => {
  t.throws(() => new NetRig({ backend: new LoopbackBackend(), pollUs: -1 }), { code: 'bad-option' });
  t.throws(() => new NetRig({ backend: new LoopbackBackend(), pollUs: Number.NaN }), { code: 'bad-option' });
  t.throws(() => new NetRig({ backend: new LoopbackBackend(), pollUs: 10, pollYieldMs: 0 }), { code: 'bad-option' });
});

t.test('queues take turns: a TX queue that spins yields at once to another pair\'s waiting chains', async (t) => {
  // Pair 1's driver has queued a frame and kicked (the kick waits in the event loop) while pair
  // 0's TX spins with a 200 ms window: pair 0 must give the thread back at once.
  const rig = new NetRig({ backend: new LoopbackBackend(), ctrlQueue: false, queuePairs: 2, pollUs: 200_000, pollYieldMs: 10_000 });
  rig.postRx(4, 2048, { pair: 0 });
  rig.postRx(4, 2048, { pair: 1 });
  rig.send(makeFrame(B, A, 61), { pair: 1, kick: false });
  const t0 = performance.now();
  rig.send(makeFrame(B, A, 60), { pair: 0 });
  const ms = performance.now() - t0;
  t.ok(ms < 50, `pair 0 returned after ${ms.toFixed(1)} ms (window up to 200 ms)`);
  t.equal(rig.device.counters.pollMisses, 0, 'its spin did not run out: it yielded');
  t.same(rig.txUsed(0), [0], 'pair 0 sent its frame');
  // The event loop's turn: pair 1's kick, then pair 0 goes on (finds nothing, sleeps).
  rig.q(3).handler.onKick();
  t.same(rig.txUsed(1), [0], 'pair 1 sent its frame');
  t.equal(rig.device.counters.txFrames, 2);
  for (const i of [0, 1, 2, 3]) void rig.q(i).handler.stop();
});
