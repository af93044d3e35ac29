/**
 * Back-end restarts over a shared inflight area (vhost-user.rst "Inflight I/O tracking"):
 * where a restarted back-end resumes the ring, and what a graceful close leaves behind.
 * Both cases come from the e2e restart tests (test/e2e/restart-*.test.ts), where QEMU 7.2 with
 * `reconnect=1` hit them.
 */
import t from 'tap';
import { close } from '@vhost-ts/sys';
import { VhostUserFrontend, type FrontendQueue, SplitInflightTracker, inflightQueueRegionSize } from '../src/index.js';
import { connectAndNegotiate, pattern, reattachRing, startBackend, until } from './helpers.js';

/** used.idx as stored in the ring (what QEMU reads when the back-end goes away). */
function ringUsedIdx(fe: VhostUserFrontend, q: FrontendQueue): number {
  return fe.mem.memory.getU16(q.layout.used + 2);
}

t.test('regression: a restart on a used inflight area resumes at used.idx + in flight, not at a stale SET_VRING_BASE', async (t) => {
  const first = startBackend({ numQueues: 1 });
  const fe = await connectAndNegotiate(first.path);
  const inf = await fe.getInflightFd(1, 16);
  await fe.setInflightFd(inf.fd, inf.mmapSize, 1, 16);
  const q = await fe.setupQueue(0, 16);
  for (let i = 0; i < 3; i++) t.same(await fe.roundTrip(0, pattern(8, i)), pattern(8, i), `request ${i} answered`);
  await first.backend.close();
  t.equal(ringUsedIdx(fe, q), 3, 'three answers published');

  // The front-end's base lags used.idx by two (QEMU snapshots used.idx when the connection
  // drops; an answer published after that is not in it). Nothing is flagged in flight.
  const second = startBackend({ numQueues: 1 });
  const fe2 = await VhostUserFrontend.connect(second.path, { memory: fe.mem });
  await fe2.negotiate();
  await fe2.setInflightFd(inf.fd, inf.mmapSize, 1, 16);
  await reattachRing(fe2, fe, q, 16, 1);
  // roundTrip throws on any used head but its own: a re-executed answered request shows up.
  t.same(await fe.roundTrip(0, pattern(8, 9)), pattern(8, 9), 'the new request is answered, nothing else');
  t.equal(second.device.queues.get(0)!.stats.requests, 1, 'answered requests are not executed again');
  t.equal(second.device.queues.get(0)!.stats.resubmitted, 0, 'nothing to resubmit');
  t.ok(second.logs.some((l) => /next avail 3 from the inflight area \(SET_VRING_BASE said 1\)/.test(l)), 'the override is logged');
  t.equal(await fe2.getVringBase(0), 4, 'GET_VRING_BASE: next avail after the new request');
  close(inf.fd);
  fe2.close();
  fe.close();
  await second.backend.close();
});

t.test('regression: a ring smaller than the area\'s queues is tracked (SeaBIOS: 128 entries on a queue-size=1024 disk)', async (t) => {
  const first = startBackend({ numQueues: 1 });
  const fe = await connectAndNegotiate(first.path);
  const inf = await fe.getInflightFd(1, 64);
  await fe.setInflightFd(inf.fd, inf.mmapSize, 1, 64);
  const q = await fe.setupQueue(0, 16);
  for (let i = 0; i < 3; i++) t.same(await fe.roundTrip(0, pattern(8, i)), pattern(8, i), `request ${i} answered`);
  t.notOk(first.logs.some((l) => /does not cover/.test(l)), 'the area covers the smaller ring');
  await first.backend.close();
  t.equal(ringUsedIdx(fe, q), 3);

  // As in the test above: only a tracked ring can tell the new back-end where it stopped.
  const second = startBackend({ numQueues: 1 });
  const fe2 = await VhostUserFrontend.connect(second.path, { memory: fe.mem });
  await fe2.negotiate();
  await fe2.setInflightFd(inf.fd, inf.mmapSize, 1, 64);
  await reattachRing(fe2, fe, q, 16, 1);
  t.same(await fe.roundTrip(0, pattern(8, 9)), pattern(8, 9), 'the new request is answered, nothing else');
  t.ok(second.logs.some((l) => /next avail 3 from the inflight area \(SET_VRING_BASE said 1\)/.test(l)), 'resumed from the area');
  close(inf.fd);
  fe2.close();
  fe.close();
  await second.backend.close();
});

t.test('a ring larger than the area\'s queues runs without it', async (t) => {
  const b = startBackend({ numQueues: 1 });
  const fe = await connectAndNegotiate(b.path);
  const inf = await fe.getInflightFd(1, 16);
  await fe.setInflightFd(inf.fd, inf.mmapSize, 1, 16);
  await fe.setupQueue(0, 32);
  t.same(await fe.roundTrip(0, pattern(8, 1)), pattern(8, 1));
  t.ok(b.logs.some((l) => /ring 0: inflight area \(1x16\) does not cover it/.test(l)), 'logged');
  close(inf.fd);
  fe.close();
  await b.backend.close();
});

t.test('a fresh inflight area leaves SET_VRING_BASE in charge', async (t) => {
  const b = startBackend({ numQueues: 1 });
  const fe = await connectAndNegotiate(b.path);
  const inf = await fe.getInflightFd(1, 16);
  await fe.setInflightFd(inf.fd, inf.mmapSize, 1, 16);
  // A ring restored at avail index 5 (e.g. after migration): used.idx in the new ring is 0,
  // and the area is blank, so the base is the only source.
  await fe.setupQueue(0, 16, { base: 5 });
  t.same(await fe.roundTrip(0, pattern(8, 1)), pattern(8, 1));
  t.equal(await fe.getVringBase(0), 6, 'resumed at the given base');
  t.notOk(b.logs.some((l) => /from the inflight area/.test(l)), 'no override');
  close(inf.fd);
  fe.close();
  await b.backend.close();
});

t.test('regression: close() answers in-flight requests before the socket closes', async (t) => {
  const b = startBackend({ numQueues: 1, delayMs: 150 });
  const fe = await connectAndNegotiate(b.path);
  const q = await fe.setupQueue(0, 16);
  let usedAtClose = -1;
  fe.once('close', () => { usedAtClose = ringUsedIdx(fe, q); });
  const answer = fe.roundTrip(0, pattern(8, 4), 8, 3000);
  await until(() => b.device.queues.get(0)?.stats.requests === 1);
  t.equal(ringUsedIdx(fe, q), 0, 'request in flight');
  await b.backend.close();
  await until(() => fe.closed);
  // A front-end that reconnects (QEMU reconnect=1) takes used.idx at the close as the next
  // back-end's base: an answer trailing the close would be executed twice.
  t.equal(usedAtClose, 1, 'the answer was published before the front-end saw the close');
  t.same(await answer, pattern(8, 4), 'and it is the right answer');
  fe.close();
});

t.test('tracker: a batch published but not committed is not resubmitted (vhost-user.rst "When reconnecting")', (t) => {
  const size = 8;
  const region = new Uint8Array(inflightQueueRegionSize(size));
  let used = 0;
  const a = new SplitInflightTracker(region, size, () => used);
  t.ok(a.fresh, 'a blank region is fresh');
  for (const h of [6, 3, 5]) a.begin(h);
  a.end(5);
  a.end(3);
  used = 2; // the batch of two answers reached used.idx; the process dies before commit()
  const b = new SplitInflightTracker(region, size, () => used);
  t.notOk(b.fresh, 'a used region is not fresh');
  t.same(b.resubmit, [6], 'only the unanswered head is resubmitted');
  t.same(b.inflightHeads(), [6], 'the published batch is cleared in the area');
  // The next back-end resumes at used.idx + in flight = 3 and keeps counting after 6's counter.
  b.begin(1);
  b.end(6);
  b.end(1);
  used = 4;
  b.commit();
  const c = new SplitInflightTracker(region, size, () => used);
  t.same(c.resubmit, [], 'all answered and committed');
  t.end();
});

t.test('tracker: an area whose desc_num is the area\'s queue size (libvhost-user) serves a smaller ring', (t) => {
  const region = new Uint8Array(inflightQueueRegionSize(64));
  const a = new SplitInflightTracker(region, 64, () => 0);
  for (const h of [5, 3]) a.begin(h);
  t.equal(new DataView(region.buffer).getUint16(10, true), 64, 'desc_num 64');
  const b = new SplitInflightTracker(region, 16, () => 0);
  t.equal(b.fresh, false, 'a 16-entry ring keeps the area (not initialised again)');
  t.same(b.resubmit, [5, 3], 'and resubmits its heads');
  const big = new Uint8Array(inflightQueueRegionSize(16));
  new SplitInflightTracker(big, 16, () => 0);
  new DataView(big.buffer).setUint16(10, 200, true); // more entries than the region holds
  t.equal(new SplitInflightTracker(big, 16, () => 0).fresh, true, 'desc_num beyond the region: initialised again');
  t.end();
});

t.test('tracker: heads are resubmitted in the order they were popped, not by index', (t) => {
  const size = 16;
  const region = new Uint8Array(inflightQueueRegionSize(size));
  const a = new SplitInflightTracker(region, size, () => 0);
  for (const h of [9, 2, 14, 0]) a.begin(h);
  const b = new SplitInflightTracker(region, size, () => 0);
  t.same(b.resubmit, [9, 2, 14, 0], 'counter order');
  t.end();
});

t.test('regression: the front-end leaving during a drain does not unmap memory under in-flight requests', async (t) => {
  const b = startBackend({ numQueues: 1, delayMs: 200 });
  const fe = await connectAndNegotiate(b.path);
  await fe.setupQueue(0, 16);
  void fe.roundTrip(0, pattern(8, 5), 8, 3000).catch(() => {});
  await until(() => b.device.queues.get(0)?.stats.requests === 1);
  const started = Date.now();
  const closing = b.backend.close(); // drain: the request needs ~200 ms more
  await new Promise((r) => setTimeout(r, 20));
  t.ok(b.backend.activeSession !== null, 'still draining');
  // The front-end goes away: the session's cleanup must wait for the drain's stop instead of
  // unmapping guest memory at once (the answer would then be written into a detached buffer:
  // "Cannot perform Atomics.store on a detached ArrayBuffer", uncaught, in the timer).
  fe.close();
  await closing;
  t.ok(Date.now() - started >= 150, 'close() waited for the in-flight request');
  t.same(b.logs.filter((l) => /threw|failed/.test(l)), [], 'no handler error');
});
