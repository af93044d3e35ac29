// A hostile guest may reuse descriptor heads without waiting for the used ring, so a queue can
// be fed malformed chains without end. The work done per call must stay bounded (other queues,
// ports and the vhost-user socket share the event loop) and at most a batch of used elements
// may be pushed between two publishes.
import t from 'tap';
import { setImmediate as turn } from 'node:timers/promises';
import { LoopbackBackend } from '../src/loopback-backend.js';
import { NetRig } from './helpers/net-rig.js';

/** Queues `n` TX chains too short to hold a header (malformed), without kicking. */
function queueMalformed(rig: NetRig, n: number): void {
  for (let i = 0; i < n; i++) rig.send(new Uint8Array(5), { kick: false });
}

t.test('TX: malformed chains count against the batch (used elements published per batch)', async (t) => {
  const rig = new NetRig({ backend: new LoopbackBackend(), ctrlQueue: false, txBatchFrames: 8 }, undefined, 64);
  const tx = rig.q(1);
  const perNotify: number[] = [];
  tx.onNotify = () => { perNotify.push(rig.txUsed().length); };
  queueMalformed(rig, 64);
  tx.handler.onKick();
  perNotify.push(rig.txUsed().length); // anything published after the last notification
  const total = perNotify.reduce((a, b) => a + b, 0);
  t.equal(total, 64, 'every chain returned');
  t.equal(rig.device.counters.txMalformed, 64, 'every chain counted as malformed');
  t.ok(perNotify.every((n) => n <= 8), `at most one batch (8) between publishes: ${perNotify.join(',')}`);
  t.ok(perNotify.filter((n) => n > 0).length >= 8, 'published in slices, not all at once');
});

t.test('TX: a batch larger than the ring publishes at least once a ring', async (t) => {
  const rig = new NetRig({ backend: new LoopbackBackend(), ctrlQueue: false, txBatchFrames: 64 }, undefined, 16);
  const tx = rig.q(1);
  const perNotify: number[] = [];
  let left = 64;
  // The guest takes its chains back at each notification and queues more (heads reused).
  tx.onNotify = () => {
    const back = rig.txUsed().length;
    perNotify.push(back);
    const more = Math.min(back, left);
    left -= more;
    queueMalformed(rig, more);
  };
  left -= 16;
  queueMalformed(rig, 16);
  tx.handler.onKick();
  for (let i = 0; i < 5; i++) await turn();
  t.ok(perNotify.every((n) => n <= 16), `at most 16 between publishes: ${perNotify.join(',')}`);
  t.equal(rig.device.counters.txMalformed, 64, 'every chain handled');
});

t.test('TX: a guest that republishes malformed chains forever cannot hold the event loop', async (t) => {
  const rig = new NetRig({ backend: new LoopbackBackend(), ctrlQueue: false, txBatchFrames: 64 }, undefined, 256);
  const tx = rig.q(1);
  let hostile = true;
  // On every notification the guest takes its used chains back and queues as many new bad ones.
  tx.onNotify = () => {
    const back = rig.txUsed().length;
    if (hostile) queueMalformed(rig, back);
  };
  queueMalformed(rig, 256);
  const before = rig.device.counters.txMalformed;
  tx.handler.onKick(); // must return
  const inOneCall = rig.device.counters.txMalformed - before;
  t.ok(inOneCall > 0 && inOneCall <= 2048 + 64, `one call handled ${inOneCall} chains (bounded)`);
  await turn(); // the queue goes on in a later turn, after other work had its chance
  t.ok(rig.device.counters.txMalformed > before + inOneCall, 'and resumes on the next turn of the event loop');
  hostile = false;
  for (let i = 0; i < 20; i++) await turn();
  t.same(tx.broken, [], 'malformed frames do not break the queue');
  await tx.handler.stop();
});

t.test('control queue: a guest that republishes commands forever cannot hold the event loop', async (t) => {
  const rig = new NetRig({ backend: new LoopbackBackend() }, undefined, 64);
  const index = rig.device.numQueues - 1;
  const cq = rig.q(index);
  const d = cq.guest.driver;
  let hostile = true;
  let answered = 0;
  // One-byte commands (no class + command pair): answered at once as errors.
  const reAdd = (n: number): void => {
    for (let i = 0; i < n; i++) d.addChain([cq.guest.alloc(1), cq.guest.alloc(1)], [1, 1], 2, 1);
    d.publish();
  };
  cq.onNotify = () => {
    let n = 0;
    while (d.popUsed() >= 0) n++;
    answered += n;
    if (hostile) reAdd(n);
  };
  reAdd(32); // two descriptors a command: 32 fill the 64-entry ring
  cq.handler.onKick(); // must return
  const inOneCall = answered;
  t.ok(inOneCall >= 32 && inOneCall <= 5 * 64, `one kick answered ${inOneCall} commands (bounded)`);
  await turn();
  t.ok(answered > inOneCall, 'the queue resumes on a later turn of the event loop');
  hostile = false;
  for (let i = 0; i < 20; i++) await turn();
  t.equal(rig.device.counters.ctrlErrors, rig.device.counters.ctrlCommands, 'every command answered as an error');
  t.same(cq.broken, [], 'the queue is not broken');
  await cq.handler.stop();
});
