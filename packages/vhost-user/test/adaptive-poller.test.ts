/**
 * AdaptivePoller: the busy-poll window grows while requests keep arriving just after a missed
 * spin, decays to zero when the queue goes quiet, never spins past its window, and tells a
 * busy handler when to yield to the event loop. A fake clock drives it.
 */
import t from 'tap';
import { AdaptivePoller, PollGroup } from '../src/index.js';

/** A clock the test moves by hand; every read may also advance it by `step` ms. */
class FakeClock {
  t = 1000;
  step = 0;
  reads = 0;
  readonly now = (): number => {
    this.reads++;
    const v = this.t;
    this.t += this.step;
    return v;
  };
}

t.test('options are checked; polling off at 0', async (t) => {
  t.throws(() => new AdaptivePoller({ maxUs: -1 }), RangeError);
  t.throws(() => new AdaptivePoller({ maxUs: Number.NaN }), RangeError);
  t.throws(() => new AdaptivePoller({ maxUs: 10, startUs: 0 }), RangeError);
  const off = new AdaptivePoller({ maxUs: 0 });
  t.equal(off.enabled, false);
  t.equal(off.windowUs, 0);
  let calls = 0;
  t.equal(off.spin(() => { calls++; return true; }), false, 'a zero window never spins');
  t.equal(calls, 0, 'ready() not even called');
  const p = new AdaptivePoller({ maxUs: 32 });
  t.equal(p.enabled, true);
  t.equal(p.windowUs, 4, 'starts at startUs (default 4)');
});

t.test('spin: a hit returns at once; a miss lasts the window and no longer', async (t) => {
  const clock = new FakeClock();
  const p = new AdaptivePoller({ maxUs: 100, startUs: 50, now: clock.now });
  let n = 0;
  t.equal(p.spin(() => ++n === 3), true, 'hit on the third look');
  t.equal(n, 3);
  t.equal(p.counters.hits, 1);
  // Each clock read advances 10 µs: a 50 µs window allows about five reads, and with reads
  // that far apart the looks between two reads stay at their first count (4).
  clock.step = 0.01;
  n = 0;
  const reads0 = clock.reads;
  t.equal(p.spin(() => { n++; return false; }), false, 'miss');
  const reads = clock.reads - reads0 - 1; // after the first
  t.ok(reads >= 4 && reads <= 6, `${reads} clock reads within 50 µs`);
  t.equal(n, 4 * reads, `looked ${n} times, four per read`);
  t.equal(p.counters.misses, 1);
  t.ok(p.counters.spinUs >= 49.9 && p.counters.spinUs <= 70, `spent ${p.counters.spinUs} µs`);
});

t.test('spin: cheap looks read the clock about once per µs, and the window still ends on time', async (t) => {
  // Time passes with the looks (10 ns each), not with the clock reads.
  const clock = new FakeClock();
  const p = new AdaptivePoller({ maxUs: 100, startUs: 50, now: clock.now });
  let n = 0;
  const reads0 = clock.reads;
  t.equal(p.spin(() => { n++; clock.t += 0.00001; return false; }), false, 'miss');
  const reads = clock.reads - reads0;
  t.ok(n >= 5000 && n <= 5100, `looked ${n} times in 50 µs`);
  t.ok(reads >= 50 && reads <= 110, `${reads} clock reads (one per ≈ 0.5–1 µs, not one per look)`);
  t.ok(p.counters.spinUs >= 50 && p.counters.spinUs <= 51, `window overshot by < 1 µs: ${p.counters.spinUs} µs`);
  // A hit after many looks: counted, and no clock read for it.
  let left = 3000;
  const before = clock.reads;
  const spent = p.counters.spinUs;
  t.equal(p.spin(() => { clock.t += 0.00001; return --left === 0; }), true, 'hit');
  t.ok(clock.reads - before < 60, `${clock.reads - before} reads for a 30 µs hit`);
  const hitUs = p.counters.spinUs - spent;
  t.ok(hitUs >= 29 && hitUs <= 30, `hit's spin time ${hitUs} µs (to the last read, under by < 1 µs)`);
});

t.test('spin: looks between clock reads stop growing at their maximum', async (t) => {
  // Looks so cheap (0.1 ns) that no number of them would take 0.5 µs: the cap (1024) decides
  // how often the clock is read — without it the spin would read the clock ~20 times.
  const clock = new FakeClock();
  const p = new AdaptivePoller({ maxUs: 100, startUs: 50, now: clock.now });
  const reads0 = clock.reads;
  t.equal(p.spin(() => { clock.t += 1e-7; return false; }), false);
  const reads = clock.reads - reads0;
  t.ok(reads > 400 && reads < 520, `${reads} clock reads for 500 000 looks`);
});

t.test('yieldMs must be a positive number', async (t) => {
  for (const y of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
    t.throws(() => new AdaptivePoller({ maxUs: 10, yieldMs: y }), RangeError, `yieldMs ${y}`);
  }
  t.equal(new AdaptivePoller({ maxUs: 10, yieldMs: 0.5 }).yieldMs, 0.5);
});

t.test('window grows when the next request comes soon after a miss, up to maxUs', async (t) => {
  const clock = new FakeClock();
  clock.step = 0.001; // every clock read is 1 µs later, so a missed spin ends
  const p = new AdaptivePoller({ maxUs: 32, startUs: 4, now: clock.now });
  const seen: number[] = [p.windowUs];
  const missThenKick = (gapMs: number): void => {
    p.woke();
    t.equal(p.spin(() => false), false);
    p.sleeping(true);
    clock.t += gapMs;
    p.woke();
    seen.push(p.windowUs);
  };
  // The kick comes 5 µs after the window ended: within maxUs of the batch, so a longer
  // window would have caught it.
  for (let i = 0; i < 3; i++) missThenKick(0.005);
  t.same(seen, [4, 8, 16, 32], 'doubles up to maxUs');
  t.equal(p.counters.grows, 3);
  // A full-size window missed: the request came later than maxUs after the batch, which no
  // allowed window catches — back off (QEMU's poll-shrink rule).
  missThenKick(0.005);
  t.equal(p.windowUs, 16);
  t.equal(p.counters.shrinks, 1);
});

t.test('window decays to zero when the queue goes quiet, and comes back under load', async (t) => {
  const clock = new FakeClock();
  const p = new AdaptivePoller({ maxUs: 32, startUs: 4, now: clock.now });
  clock.step = 0.001;
  p.windowUs = 32;
  const seen: number[] = [];
  for (let i = 0; i < 5; i++) {
    p.spin(() => false);
    p.sleeping(true);
    clock.t += 5; // 5 ms idle: far beyond maxUs
    p.woke();
    seen.push(p.windowUs);
  }
  t.same(seen, [16, 8, 4, 0, 0], 'halves, then off below startUs');
  t.equal(p.counters.shrinks, 4);
  // Off: no spinning at all, even with work pending.
  let looks = 0;
  t.equal(p.spin(() => { looks++; return true; }), false);
  t.equal(looks, 0);
  // Requests arrive back to back again: the gap (without any spin) is short, so it regrows.
  p.sleeping(false);
  clock.t += 0.002;
  p.woke();
  t.equal(p.windowUs, 4, 'regrows from startUs');
});

t.test('an idle queue costs nothing: no clock reads, no spinning without a batch', async (t) => {
  const clock = new FakeClock();
  const p = new AdaptivePoller({ maxUs: 50, now: clock.now });
  p.sleeping(true);
  const reads = clock.reads;
  await new Promise((r) => setTimeout(r, 30));
  t.equal(clock.reads, reads, 'the poller runs only when its handler does');
});

t.test('mayContinue: a run yields after yieldMs', async (t) => {
  const clock = new FakeClock();
  const p = new AdaptivePoller({ maxUs: 50, yieldMs: 1, now: clock.now });
  p.woke();
  t.equal(p.mayContinue(), true);
  clock.t += 0.9;
  t.equal(p.mayContinue(), true);
  clock.t += 0.2;
  t.equal(p.mayContinue(), false, 'past 1 ms of continuous work');
  p.woke();
  t.equal(p.mayContinue(), true, 'a new run starts a new budget');
});

t.test('poll group: a spin or a run ends when another member has work, not on its own', async (t) => {
  const clock = new FakeClock();
  const group = new PollGroup();
  const a = new AdaptivePoller({ maxUs: 100, startUs: 100, yieldMs: 1, now: clock.now, group });
  const b = new AdaptivePoller({ maxUs: 100, startUs: 100, yieldMs: 1, now: clock.now, group });
  let aWork = false, bWork = false;
  const aHas = (): boolean => aWork, bHas = (): boolean => bWork;
  a.join(aHas);
  a.join(aHas);
  b.join(bHas);
  t.equal(group.size, 2, 'joining twice counts once');
  t.equal(group.othersHaveWork(aHas), false);
  aWork = true;
  t.equal(group.othersHaveWork(aHas), false, 'its own work does not count');
  t.equal(group.othersHaveWork(bHas), true);

  // b has work a µs into a's spin: a stops, as a yield (no miss, the window does not adapt).
  aWork = false;
  clock.step = 0.0005;
  let looks = 0;
  const hit = a.spin(() => { if (++looks === 8) bWork = true; return false; });
  t.equal(hit, false);
  t.equal(a.yielded, true, 'the spin yielded');
  t.equal(a.counters.yields, 1);
  t.equal(a.counters.misses, 0, 'not a miss');
  t.ok(clock.t - 1000 < 0.01, `ended within a few clock reads (${((clock.t - 1000) * 1000).toFixed(1)} µs)`);
  t.equal(a.windowUs, 100, 'window unchanged');
  clock.step = 0;
  a.woke();
  t.equal(a.shouldYield(), true, 'a run with another member waiting yields');
  t.equal(a.counters.yields, 2);
  t.equal(a.mayContinue(), false, 'and does not go on spinning');
  bWork = false;
  t.equal(a.shouldYield(), false, 'it goes on once the other was served');
  t.equal(a.mayContinue(), true);
  t.equal(a.spin(() => true), true, 'a hit');
  t.equal(a.yielded, false, 'cleared by the next spin');

  // Without a group, or after leaving it, another handler's work is not seen.
  b.leave();
  b.leave();
  bWork = true;
  t.equal(group.size, 1);
  t.equal(a.shouldYield(), false, 'a member that left is not asked');
  const lone = new AdaptivePoller({ maxUs: 50, now: clock.now });
  lone.join(() => true);
  lone.woke();
  t.equal(lone.shouldYield(), false, 'no group: join does nothing');
  a.leave();
  t.equal(group.size, 0);
});

t.test('real clock: a miss spins about the window, not more', async (t) => {
  const p = new AdaptivePoller({ maxUs: 200, startUs: 200 });
  const t0 = performance.now();
  t.equal(p.spin(() => false), false);
  const us = (performance.now() - t0) * 1000;
  t.ok(us >= 200, `spun ${us.toFixed(0)} µs ≥ 200`);
  // Generous upper bound: the machine may preempt us, but not for 50 ms.
  t.ok(us < 50_000, `spun ${us.toFixed(0)} µs`);
});
