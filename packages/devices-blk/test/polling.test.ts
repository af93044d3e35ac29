/**
 * Busy-polling of a request queue (BlkDeviceOptions.pollUs): after a batch the queue spins on
 * the avail ring and the engine's completions with notifications off, so requests the driver
 * adds meanwhile are served without a kick; a never-ending stream still yields to the event
 * loop; pollUs 0 restores sleep-at-once; an idle back-end uses no CPU.
 */
import { VhostUserBackend, VhostUserFrontend } from '@vhost-ts/vhost-user';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import {
  BlkDevice, NullImage, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_IN,
  type BlkQueue, type BlkRequest, type BlockCompletionSink, type BlockEngine, type BlockImage, type EngineOptions,
} from '../src/index.js';
import { BlkRig } from './helpers.js';

/**
 * An engine that completes nothing on submit; `poll()` (the busy-poll hook) completes what is
 * pending and then runs `onPoll` — the test's stand-in for a driver that reacts to the
 * completions by adding new requests while the device is still spinning.
 */
class DeferredEngine implements BlockEngine {
  readonly pending: BlkRequest[] = [];
  pollCalls = 0;
  /** Set by a test: requests "on kernel workers" (BlockEngine.offloaded). */
  offloaded = 0;
  onPoll: (() => void) | null = null;
  /** Runs after each submit (a driver adding requests while the device works). */
  onSubmit: (() => void) | null = null;
  submits = 0;
  constructor(private readonly sink: BlockCompletionSink) {}
  get inflight(): number {
    return this.pending.length;
  }
  submit(batch: readonly BlkRequest[], count: number): void {
    for (let i = 0; i < count; i++) this.pending.push(batch[i]);
    this.submits++;
    this.onSubmit?.();
  }
  poll(): boolean {
    this.pollCalls++;
    if (this.pending.length === 0) return false;
    for (const req of this.pending.splice(0)) {
      req.status = VIRTIO_BLK_S_OK;
      this.sink.complete(req);
    }
    this.sink.completionsDone();
    this.onPoll?.();
    return true;
  }
  setWriteback(): void {}
  close(): void {}
}

class DeferredImage implements BlockImage {
  readonly kind = 'deferred';
  readonly sizeBytes = 1 << 20;
  readonly readOnly = false;
  readonly description = 'deferred test image';
  engine: DeferredEngine | null = null;
  createEngine(opts: EngineOptions): BlockEngine {
    this.engine = new DeferredEngine(opts.sink);
    return this.engine;
  }
  close(): void {}
}

/** An engine that completes each batch at once, then runs `onSubmit` (a driver reacting). */
class InstantImage implements BlockImage {
  readonly kind = 'instant-test';
  readonly sizeBytes = 1 << 20;
  readonly readOnly = false;
  readonly description = 'instant test image';
  onSubmit: (() => void) | null = null;
  createEngine(opts: EngineOptions): BlockEngine {
    const sink = opts.sink;
    const image = this;
    return {
      inflight: 0,
      submit(batch: readonly BlkRequest[], count: number): void {
        for (let i = 0; i < count; i++) { batch[i].status = VIRTIO_BLK_S_OK; sink.complete(batch[i]); }
        if (count > 0) sink.completionsDone();
        image.onSubmit?.();
      },
      setWriteback(): void {},
      close(): void {},
    };
  }
  close(): void {}
}

for (const eventIdx of [true, false]) {
  t.test(`requests added while the engine runs are taken without asking for a kick (EVENT_IDX ${eventIdx ? 'on' : 'off'})`, async (t) => {
    // The driver adds a request each time the engine runs, as a guest answering completions
    // does. The queue finds them after the pass; it must not re-enable notifications to do so,
    // or the driver kicks for requests that are about to be taken anyway.
    const image = new InstantImage();
    const rig = new BlkRig({ image, pollUs: 0 }, { eventIdx });
    // Count re-enables too: without EVENT_IDX the driver only sees the flag between passes.
    const dq = rig.guest.device;
    const enable = dq.enableNotify.bind(dq);
    let enables = 0;
    dq.enableNotify = () => { enables++; return enable(); };
    let added = 0, kicksAsked = 0;
    image.onSubmit = () => {
      if (added === 20) return;
      added++;
      rig.add({ type: VIRTIO_BLK_T_FLUSH });
      rig.guest.driver.publish();
      if (rig.guest.driver.kickNeeded()) kicksAsked++;
    };
    rig.add({ type: VIRTIO_BLK_T_FLUSH });
    rig.guest.driver.publish();
    t.equal(rig.guest.driver.kickNeeded(), true, 'the first request asks for its kick');
    rig.handler.onKick();
    t.equal(rig.collect().size, 21, 'the kicked request and the 20 added meanwhile completed');
    t.equal(kicksAsked, 0, 'no kick asked for while the queue was taking requests');
    t.equal(enables, 1, 'notifications re-enabled once, when the ring ran empty');
    t.equal(rig.device.counters[0].kicks, 1);
    // Idle again: notifications are on, the next request asks for its kick.
    rig.add({ type: VIRTIO_BLK_T_FLUSH });
    rig.guest.driver.publish();
    t.equal(rig.guest.driver.kickNeeded(), true, 'an idle queue asks for kicks');
  });
}

t.test('requests added while the queue spins are served without a kick', async (t) => {
  const image = new DeferredImage();
  const rig = new BlkRig({ image, pollUs: 2000 });
  const engine = image.engine!;
  const q = rig.handler as BlkQueue;
  t.ok(q.poller !== null, 'polling on');
  // A loaded test machine may need more than the default 1 ms for 21 requests; this test is
  // about kicks, the yield budget has its own test.
  q.poller!.yieldMs = 10_000;
  const heads: number[] = [];
  let added = 0;
  // The "driver" answers each completion with one more request, 20 times, never kicking.
  engine.onPoll = () => {
    if (added === 20) return;
    added++;
    heads.push(rig.add({ type: VIRTIO_BLK_T_FLUSH }).head);
    rig.guest.driver.publish();
  };
  heads.push(rig.add({ type: VIRTIO_BLK_T_FLUSH }).head);
  rig.kick();
  // All of it happened inside the one onKick.
  const used = rig.collect();
  t.equal(used.size, 21, 'the kicked request and the 20 added without a kick completed');
  for (const h of heads) t.equal(used.get(h), 1, `head ${h}: status byte only`);
  const c = rig.device.counters[0];
  t.equal(c.kicks, 1, 'one kick for 21 requests');
  t.equal(c.requests, 21);
  t.ok(q.poller!.counters.hits >= 20, `spin hits ${q.poller!.counters.hits}`);
  t.ok(q.poller!.counters.misses >= 1, 'the last spin ran out');
  t.equal(c.pollHits, q.poller!.counters.hits, 'hits counted per queue (Prometheus)');
  t.equal(c.pollMisses, q.poller!.counters.misses);
  t.ok(c.pollSpinUs > 0, `spin time counted: ${c.pollSpinUs.toFixed(1)} µs`);
  t.match(rig.device.metrics(), /vhost_blk_poll_hits_total\{queue="0"\} \d+/);
  t.equal(rig.guest.device.notifyEnabled, true, 'notifications re-enabled before sleeping');
  t.equal(rig.brokenReasons.length, 0);
});

t.test('no spin while the engine has requests on kernel workers (offloaded)', async (t) => {
  const image = new DeferredImage();
  const rig = new BlkRig({ image, pollUs: 2000 });
  const engine = image.engine!;
  const q = rig.handler as BlkQueue;
  engine.offloaded = 1;
  const h = rig.add({ type: VIRTIO_BLK_T_FLUSH }).head;
  rig.kick();
  t.equal(engine.pollCalls, 0, 'the engine was not polled');
  t.equal(q.poller!.counters.hits + q.poller!.counters.misses, 0, 'no spin at all');
  t.equal(rig.guest.device.notifyEnabled, true, 'asleep with notifications on');
  t.equal(rig.collect().size, 0, 'still in flight');
  // Completion arrives (the engine's eventfd in real life): it is published.
  engine.offloaded = 0;
  engine.poll();
  t.equal(rig.collect().get(h), 1, 'completed once the worker finished');
});

t.test('pollUs 0: no spin — a request waits for its kick', async (t) => {
  const image = new DeferredImage();
  const rig = new BlkRig({ image, pollUs: 0 });
  const engine = image.engine!;
  t.equal((rig.handler as BlkQueue).poller, null);
  rig.add({ type: VIRTIO_BLK_T_FLUSH });
  rig.kick();
  t.equal(engine.pollCalls, 0, 'the engine is not polled');
  t.equal(rig.device.counters[0].pollHits + rig.device.counters[0].pollMisses, 0, 'no spin counted');
  t.equal(engine.pending.length, 1, 'submitted, waiting for its completion event');
  t.equal(rig.collect().size, 0);
  t.equal(rig.guest.device.notifyEnabled, true);
});

t.test('a never-ending stream still yields to the event loop', async (t) => {
  const image = new DeferredImage();
  const rig = new BlkRig({ image, pollUs: 5000 }, { queueSize: 64, heapBytes: 0x400000 });
  const engine = image.engine!;
  let added = 0;
  let limit = 200;
  engine.onPoll = () => {
    if (added >= limit) return; // limit 50 000: a safety net, far beyond the 1 ms budget
    added++;
    rig.add({ type: VIRTIO_BLK_T_FLUSH });
    rig.guest.driver.publish();
    rig.collect(); // the driver reclaims used entries so the ring never fills
  };
  // A short stream first: on a loaded machine the first, unoptimised pass over this path could
  // take the whole 1 ms budget by itself (CI once served a single request in the measured run).
  rig.add({ type: VIRTIO_BLK_T_FLUSH });
  rig.kick();
  await new Promise((r) => setImmediate(r));
  rig.collect();
  added = 0;
  limit = 50_000;
  rig.add({ type: VIRTIO_BLK_T_FLUSH });
  const t0 = performance.now();
  rig.kick();
  const ms = performance.now() - t0;
  t.ok(added > 1, `served ${added} requests in one run`);
  t.ok(added < 50_000, 'stopped on its own, not at the safety net');
  // Budget 1 ms + one spin window (5 ms) + slack for a loaded machine.
  t.ok(ms < 200, `onKick returned after ${ms.toFixed(1)} ms`);
  // A yielding run goes on after the event loop's turn, notifications still off: the stream
  // keeps being served without a kick.
  const before = added;
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  t.ok(added > before, `served ${added - before} more after yielding, with no kick`);
  // End the stream; the queue then spins one window and sleeps (the next test measures idle CPU).
  limit = 0;
  await new Promise((r) => setTimeout(r, 20));
  rig.collect();
  rig.add({ type: VIRTIO_BLK_T_FLUSH });
  rig.guest.driver.publish();
  t.equal(rig.guest.driver.kickNeeded(), true, 'asleep again: the next request asks for a kick');
  rig.handler.onKick();
  // The quiet gap shrank the window (maybe to 0): this engine completes only when polled.
  engine.poll();
  t.equal(rig.collect().size, 1, 'the kick serves it');
});

t.test('an idle pass past its budget goes to sleep (no resume loop)', async (t) => {
  const image = new InstantImage();
  const rig = new BlkRig({ image, pollUs: 1000 });
  const q = rig.handler as BlkQueue;
  // Every run is over budget at once: a busy pass yields, an idle one must not.
  q.poller!.yieldMs = 1e-9;
  rig.add({ type: VIRTIO_BLK_T_FLUSH });
  rig.kick();
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  t.equal(rig.collect().size, 1);
  rig.add({ type: VIRTIO_BLK_T_FLUSH });
  rig.guest.driver.publish();
  t.equal(rig.guest.driver.kickNeeded(), true, 'asleep: the next request asks for a kick');
  const hits = rig.device.counters[0].pollHits;
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  t.equal(rig.collect().size, 0, 'and it is not polled for');
  t.equal(rig.device.counters[0].pollHits, hits);
  rig.handler.onKick();
  t.equal(rig.collect().size, 1, 'the kick serves it');
});

t.test('over a real socket: polled I/O is correct and an idle back-end burns no CPU', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'blk-poll-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sock = join(dir, 'b.sock');
  const device = new BlkDevice({ image: new NullImage(1 << 20), pollUs: 1000 });
  const backend = new VhostUserBackend(device);
  backend.listen(sock);
  t.teardown(() => backend.close());
  const fe = await VhostUserFrontend.connect(sock, { regions: [{ guestPhysAddr: 0x10_0000, size: 2 << 20 }] });
  t.teardown(() => fe.close());
  await fe.negotiate({ features: device.features });
  const q = await fe.setupQueue(0, 64, { regionIndex: 0 });
  const mem = fe.mem.memory;
  const hdr = fe.mem.alloc(16, 16);
  const data = fe.mem.alloc(4096, 4096);
  const st = fe.mem.alloc(1, 1);
  const h = new Uint8Array(16);
  new DataView(h.buffer).setUint32(0, VIRTIO_BLK_T_IN, true);
  mem.writeFrom(hdr, h);
  for (let i = 0; i < 50; i++) {
    mem.writeFrom(data, new Uint8Array(4096).fill(0xee));
    mem.writeFrom(st, Uint8Array.of(0xff));
    const head = q.driver.add([{ gpa: hdr, len: 16 }], [{ gpa: data, len: 4096 }, { gpa: st, len: 1 }]);
    q.driver.publish();
    if (q.driver.kickNeeded()) q.kick();
    const deadline = Date.now() + 5000;
    while (q.driver.popUsed() !== head) {
      if (Date.now() > deadline) throw new Error(`request ${i} timed out`);
      await Promise.race([q.waitCall(50), new Promise((r) => setTimeout(r, 2))]);
    }
    t.equal(q.driver.lastLen, 4097, `request ${i}: data + status written`);
    const out = new Uint8Array(4097);
    mem.readInto(data, out.subarray(0, 4096));
    mem.readInto(st, out.subarray(4096));
    if (out[4096] !== VIRTIO_BLK_S_OK || out.subarray(0, 4096).some((b) => b !== 0)) {
      t.fail(`request ${i}: expected zeroes and status OK`);
    }
  }
  t.equal(device.counters[0].requests, 50);
  // Idle: the queue spun at most one window after its last batch; from then on it sleeps.
  await new Promise((r) => setTimeout(r, 20));
  const cpu0 = process.cpuUsage();
  await new Promise((r) => setTimeout(r, 300));
  const cpu = process.cpuUsage(cpu0);
  const ms = (cpu.user + cpu.system) / 1000;
  t.ok(ms < 60, `CPU while idle for 300 ms: ${ms.toFixed(1)} ms`);
});

t.test('queues of one device take turns: a spinning queue yields to another one\'s waiting requests', async (t) => {
  // Two busy queues share the thread. Queue 1's driver has published a request and kicked (the
  // kick waits in the event loop) while queue 0 spins: queue 0 must stop spinning and let the
  // event loop run, not hold the thread for its whole window (was: queue 1 starved up to 1 ms
  // per turn — 600 k vs 190 k IOPS, p99 70 µs vs 1 ms, two queues of the null image).
  const rig0 = new BlkRig({ image: new NullImage(1 << 20), pollUs: 100, numQueues: 2 });
  const rig1 = new BlkRig(rig0.device, {}, undefined, 1);
  const q0 = rig0.handler as BlkQueue;
  const p0 = q0.poller!;
  p0.yieldMs = 10_000;
  p0.windowUs = 50_000; // a spin of 50 ms unless something ends it
  const h1 = rig1.add({ type: VIRTIO_BLK_T_IN, inLen: 512 }).head;
  rig1.guest.driver.publish();
  const h0 = rig0.add({ type: VIRTIO_BLK_T_IN, inLen: 512 }).head;
  const t0 = performance.now();
  rig0.kick();
  const ms = performance.now() - t0;
  t.ok(ms < 25, `queue 0 gave the thread back after ${ms.toFixed(1)} ms (its window: 50 ms)`);
  t.equal(p0.counters.yields, 1, 'its spin yielded once');
  t.equal(p0.counters.misses, 0, 'not counted as a miss');
  t.match(rig0.device.metrics(), /vhost_blk_poll_yields_total\{queue="0"\} 1\n/, 'counted per queue (Prometheus)');
  t.equal(rig0.collect().get(h0), 513, 'queue 0 served its request');
  t.equal(rig0.guest.device.notifyEnabled, false, 'queue 0 goes on after the turn, notifications off');
  // The event loop's turn: queue 1's kick is delivered, then queue 0 resumes.
  p0.windowUs = 4;
  rig1.handler.onKick();
  t.equal(rig1.collect().get(h1), 513, 'queue 1 served');
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  t.equal(rig0.guest.device.notifyEnabled, true, 'queue 0 resumed and went to sleep');

  // A stopped queue leaves the group: its waiting requests no longer end queue 0's spins.
  rig1.add({ type: VIRTIO_BLK_T_IN, inLen: 512 });
  rig1.guest.driver.publish();
  await rig1.handler.stop();
  p0.windowUs = 2000;
  const misses = p0.counters.misses;
  rig0.add({ type: VIRTIO_BLK_T_IN, inLen: 512 });
  rig0.kick();
  t.equal(p0.counters.yields, 1, 'no yield to a stopped queue');
  t.equal(p0.counters.misses, misses + 1, 'the spin ran its window');
  await rig0.handler.stop();
});

t.test('queues take turns also when a queue does not spin (requests on kernel workers)', async (t) => {
  // A buffered file engine with reads on io-wq workers does not spin (BlockEngine.offloaded),
  // but a driver that keeps adding requests kept the queue going round, pass after pass, while
  // the other queue waited (two queues of a tmpfs file: 253 k / 198 k IOPS, p99 165 µs / 2.2 ms).
  const image = new DeferredImage();
  const rig0 = new BlkRig({ image, pollUs: 100, numQueues: 2 });
  const e0 = image.engine!;
  const rig1 = new BlkRig(rig0.device, {}, undefined, 1);
  e0.offloaded = 1;
  let added = 0;
  e0.onSubmit = () => {
    if (added === 10) return;
    added++;
    rig0.add({ type: VIRTIO_BLK_T_FLUSH });
    rig0.guest.driver.publish();
  };
  rig1.add({ type: VIRTIO_BLK_T_FLUSH });
  rig1.guest.driver.publish(); // its kick waits in the event loop
  rig0.add({ type: VIRTIO_BLK_T_FLUSH });
  rig0.kick();
  t.equal(e0.submits, 1, 'one pass, then the other queue\'s turn (was: a pass per request added)');
  t.equal(rig0.device.counters[0].pollYields, 1, 'counted as a yield');
  rig1.handler.onKick();
  await new Promise((r) => setImmediate(r));
  t.ok(e0.submits >= 2, `queue 0 went on after the turn (${e0.submits} passes)`);
  void rig0.handler.stop();
  void rig1.handler.stop();
});
