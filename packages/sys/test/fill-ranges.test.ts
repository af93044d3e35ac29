import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import fc from 'fast-check';
import t from 'tap';
import { close, FILL_SHARED_FROM, fillRanges, fillStats, ftruncate, mappingFaults, memfdCreate, mmap, munmap } from '../src/index.js';
import { throwsSys } from './helpers.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Helper threads of the pool (started by the first shared fill, which this makes). */
function helpers(): number {
  fillRanges([new Uint8Array(256 * KiB)], new Float64Array([0, 0, 256 * KiB]), 1);
  return fillStats().helpers;
}

/** Repeats a shared fill until a helper has taken part (it wakes at its own pace), at most 5 s. */
function untilHelped(fill: () => void): number {
  const before = fillStats().helperPieces;
  const end = Date.now() + 5000;
  do fill(); while (fillStats().helperPieces === before && Date.now() < end);
  return fillStats().helperPieces - before;
}

t.test('fills exactly the planned ranges of each view, offsets relative to the view', (t) => {
  const a = new Uint8Array(4096).fill(0xee);
  const bBuf = new ArrayBuffer(8192);
  const bAll = new Uint8Array(bBuf).fill(0xee);
  const b = new Uint8Array(bBuf, 1024, 4096); // a window: offsets count from byte 1024
  const plan = new Float64Array([0, 0, 64, 1, 100, 1000, 0, 4000, 96, 1, 4095, 1, 0, 200, 0]);
  fillRanges([a, b], plan, 5, 7);
  const wantA = new Uint8Array(4096).fill(0xee);
  wantA.fill(7, 0, 64);
  wantA.fill(7, 4000, 4096);
  const wantB = new Uint8Array(8192).fill(0xee);
  wantB.fill(7, 1124, 2124);
  wantB[1024 + 4095] = 7;
  t.same(Array.from(a), Array.from(wantA));
  t.same(Array.from(bAll), Array.from(wantB), 'nothing outside the window touched');
  fillRanges([a], new Float64Array([0, 0, 4096]), 1);
  t.ok(a.every((x) => x === 0), 'value defaults to 0');
  t.end();
});

t.test('large fills are shared with helper threads and come out exact', (t) => {
  const fd = memfdCreate('fill');
  ftruncate(fd, 16 * MiB);
  const buf = mmap(fd, 16 * MiB, 0);
  const mem = new Uint8Array(buf);
  const before = fillStats();
  // A 1 MiB read of zeros as a guest sends it: one big segment, odd-sized ones, a 4 KiB one.
  const plan = new Float64Array([0, 4096, 512 * KiB, 0, 3 * MiB + 512, 300 * KiB + 512, 0, 9 * MiB, 4096, 0, 12 * MiB - 1, 211 * KiB - 512 + 1]);
  const total = 512 * KiB + 300 * KiB + 512 + 4096 + 211 * KiB - 512 + 1;
  for (let round = 1; round <= 200; round++) {
    mem.fill(0xee);
    fillRanges([mem], plan, 4, round & 0xff);
    if (round % 50 === 0) {
      const want = new Uint8Array(16 * MiB).fill(0xee);
      for (let i = 0; i < 4; i++) want.fill(round & 0xff, plan[3 * i + 1], plan[3 * i + 1] + plan[3 * i + 2]);
      t.ok(Buffer.compare(Buffer.from(buf), Buffer.from(want.buffer)) === 0, `round ${round}: ${total} bytes set, none around them`);
    }
  }
  const after = fillStats();
  const n = helpers();
  t.equal(after.sharedFills - before.sharedFills, n > 0 ? 200 : 0, 'every one shared (≥ 128 KiB) when there are helpers');
  if (availableParallelism() > 1) t.ok(n >= 1 && n <= 2, `${n} helper(s)`);
  else t.equal(n, 0, 'one usable CPU: no helpers, the caller fills alone');
  if (n > 0) {
    const took = untilHelped(() => fillRanges([mem], plan, 4, 0));
    t.ok(took > 0, `helpers wrote ${took} pieces`);
  }
  const small = fillStats().sharedFills;
  fillRanges([mem], new Float64Array([0, 0, 64 * KiB, 0, MiB, 64 * KiB - 1]), 2);
  t.equal(FILL_SHARED_FROM, 128 * KiB);
  t.equal(fillStats().sharedFills, small, 'under 128 KiB: filled by the caller alone');
  munmap(buf);
  close(fd);
  t.end();
});

t.test('a fill larger than one job (64 MiB of pieces) runs as several', (t) => {
  const mem = new Uint8Array(70 * MiB).fill(1);
  const before = fillStats().sharedFills;
  fillRanges([mem], new Float64Array([0, 1, 70 * MiB - 2]), 1, 9);
  t.equal(mem[0], 1);
  t.equal(mem[70 * MiB - 1], 1);
  let bad = -1;
  for (let i = 1; i < 70 * MiB - 1; i += 4093) if (mem[i] !== 9) { bad = i; break; }
  t.equal(bad, -1, 'every sampled byte in between set');
  t.ok(mem.subarray(64 * MiB - 8, 64 * MiB + 8).every((x) => x === 9), 'across the job boundary');
  t.equal(fillStats().sharedFills - before, helpers() > 0 ? 2 : 0, 'two jobs');
  t.end();
});

t.test('matches a plain fill for any plan (property)', (t) => {
  const views = [new Uint8Array(600 * KiB), new Uint8Array(70 * KiB), new Uint8Array(new ArrayBuffer(300 * KiB), 5, 200 * KiB)];
  const range = fc.integer({ min: 0, max: 2 }).chain((v) => fc.tuple(fc.constant(v), fc.integer({ min: 0, max: views[v].length }))
    .chain(([vi, off]) => fc.tuple(fc.constant(vi), fc.constant(off), fc.integer({ min: 0, max: views[vi].length - off }))));
  fc.assert(fc.property(fc.array(range, { maxLength: 12 }), fc.integer({ min: 0, max: 255 }), (ranges, value) => {
    const models = views.map((v) => v.slice().fill(0x5a));
    for (const v of views) v.fill(0x5a);
    const plan = new Float64Array(ranges.flat());
    for (const [vi, off, len] of ranges) models[vi].fill(value, off, off + len);
    fillRanges(views, plan, ranges.length, value);
    return views.every((v, i) => Buffer.compare(Buffer.from(v.buffer, v.byteOffset, v.length), Buffer.from(models[i])) === 0);
  }), { numRuns: 150 });
  t.pass('150 plans');
  t.end();
});

t.test('a bad range fills nothing, even after good ones', (t) => {
  const a = new Uint8Array(256 * KiB).fill(1);
  const b = new Float64Array(4);
  const fails = (plan: number[], count: number, what: string, value = 0, views: unknown[] = [a, b]): void => {
    throwsSys(t, () => fillRanges(views as ArrayBufferView[], new Float64Array(plan), count, value), 'EINVAL', 'fillRanges', what);
    t.ok(a.every((x) => x === 1), `${what}: nothing written`);
  };
  const good = [0, 0, 200 * KiB];
  fails([...good, 0, 256 * KiB - 10, 11], 2, 'past the end of the view');
  fails([...good, 2, 0, 1], 2, 'a view index out of range');
  fails([...good, 0.5, 0, 1], 2, 'a fractional view index');
  fails([...good, 0, NaN, 1], 2, 'NaN offset');
  fails([...good, 0, 0, -1], 2, 'negative length');
  fails([...good, 0, 2 ** 53, 1], 2, 'offset ≥ 2^53');
  fails([...good, 1, 0, 33], 2, 'past a Float64Array view (32 bytes)');
  fails(good, 1, 'a view that is no ArrayBufferView', 0, [{}, b]);
  fails(good, 1, 'value above 255', 256);
  fails(good, 2, 'count beyond the plan');
  throwsSys(t, () => fillRanges(a as unknown as ArrayBufferView[], new Float64Array(good), 1), 'EINVAL', 'fillRanges', 'views not an array');
  throwsSys(t, () => fillRanges([a], good as unknown as Float64Array, 1), 'EINVAL', 'fillRanges', 'plan not a Float64Array');
  fillRanges([a, b], new Float64Array([1, 8, 8]), 1, 0xff);
  t.ok(Number.isNaN(b[1]) && b[0] === 0 && b[2] === 0, 'bytes of a Float64Array view are fillable (all-ones is a NaN)');
  t.end();
});

t.test('an unmapped buffer reads as empty: its ranges are refused', (t) => {
  const fd = memfdCreate('fill-gone');
  ftruncate(fd, 256 * KiB);
  const buf = mmap(fd, 256 * KiB, 0);
  const view = new Uint8Array(buf);
  munmap(buf);
  throwsSys(t, () => fillRanges([view], new Float64Array([0, 0, 256 * KiB]), 1), 'EINVAL', 'fillRanges', 'detached');
  fillRanges([view], new Float64Array([0, 0, 0]), 1);
  t.pass('an empty range of it is fine');
  close(fd);
  t.end();
});

t.test('a helper thread writing into a file shrunk under its mapping: guarded, counted, the process lives', (t) => {
  const fd = memfdCreate('fill-shrink');
  ftruncate(fd, 4 * MiB);
  const buf = mmap(fd, 4 * MiB, 0);
  const mem = new Uint8Array(buf);
  mem.fill(7);
  ftruncate(fd, MiB); // the front-end's move: the last 3 MiB are gone
  const fill = (): void => fillRanges([mem], new Float64Array([0, 0, 4 * MiB]), 1, 3);
  if (helpers() > 0) t.ok(untilHelped(fill) > 0, 'helpers took pieces (most of them in the vanished pages)');
  else fill();
  t.ok(mem[0] === 3 && mem[MiB - 1] === 3, 'the page still in the file is written');
  t.equal(mem[4 * MiB - 1], 3, 'a replaced page took the store, privately');
  t.equal(mappingFaults(buf), 3 * 256, 'every vanished page faulted once, whichever thread touched it');
  munmap(buf);
  close(fd);
  t.end();
});

t.test('runs of small ranges (4 KiB guest pages) are packed into shared pieces, exactly', (t) => {
  const mem = new Uint8Array(2 * MiB).fill(0xee);
  const ranges: number[] = [];
  // 300 pages with 512-byte gaps, two of them split across odd sizes.
  for (let i = 0, at = 100; i < 300; i++, at += 4096 + 512) ranges.push(0, at, i === 7 ? 1 : i === 8 ? 8191 - 4096 : 4096);
  const plan = new Float64Array(ranges);
  fillRanges([mem], plan, 300, 0x11);
  const want = new Uint8Array(2 * MiB).fill(0xee);
  for (let i = 0; i < 300; i++) want.fill(0x11, plan[3 * i + 1], plan[3 * i + 1] + plan[3 * i + 2]);
  t.ok(Buffer.compare(Buffer.from(mem), Buffer.from(want)) === 0, 'every page set, every gap untouched');
  t.end();
});

t.test('no helper writes after the call returned', (t) => {
  // A late write would land in bytes the caller rewrote right after the fill.
  const a = new Uint8Array(4 * MiB);
  const b = new Uint8Array(4 * MiB);
  const whole = new Float64Array([0, 0, 4 * MiB]);
  let stray = 0;
  for (let round = 0; round < 100; round++) {
    fillRanges([a], whole, 1, 1);
    a.fill(2);
    fillRanges([b], whole, 1, 3); // the pool's next job
    fillRanges([b], whole, 1, 4);
    for (let i = 0; i < a.length; i += 512) if (a[i] !== 2) { stray++; break; }
  }
  t.equal(stray, 0, '100 rounds, the bytes the caller wrote afterwards kept');
  t.end();
});

t.test('JS that runs while the views are read (getters) cannot make the fill reach memory that is gone', (t) => {
  const fd = memfdCreate('fill-getter');
  ftruncate(fd, 512 * KiB);
  const buf = mmap(fd, 512 * KiB, 0);
  const mapped = new Uint8Array(buf);
  const other = new Uint8Array(512 * KiB);
  // Index 1 is read after index 0; its getter unmaps the buffer behind index 0.
  const views: Uint8Array[] = [mapped];
  Object.defineProperty(views, 1, { get: () => { munmap(buf); return other; }, enumerable: true });
  throwsSys(t, () => fillRanges(views, new Float64Array([0, 0, 256 * KiB, 1, 0, 256 * KiB]), 2, 5), 'EINVAL', 'fillRanges', 'unmapped by a getter');
  t.ok(other.every((x) => x === 0), 'nothing filled');
  close(fd);

  // A getter that detaches the plan: the plan was copied before any getter ran.
  const plan = new Float64Array([0, 0, 200 * KiB, 1, 0, 200 * KiB]);
  const x = new Uint8Array(256 * KiB), y = new Uint8Array(256 * KiB);
  const v2: Uint8Array[] = [x];
  Object.defineProperty(v2, 1, { get: () => { structuredClone(plan.buffer, { transfer: [plan.buffer] }); return y; } });
  fillRanges(v2, plan, 2, 6);
  t.equal(plan.length, 0, 'the plan was detached meanwhile');
  t.ok(x[200 * KiB - 1] === 6 && y[200 * KiB - 1] === 6 && y[200 * KiB] === 0, 'the ranges as given were filled');

  // A getter that shrinks a resizable buffer under a view read before it.
  const rab = new ArrayBuffer(512 * KiB, { maxByteLength: 512 * KiB });
  const tracking = new Uint8Array(rab);
  const v3: Uint8Array[] = [tracking];
  Object.defineProperty(v3, 1, { get: () => { rab.resize(4096); return y; } });
  throwsSys(t, () => fillRanges(v3, new Float64Array([0, 0, 256 * KiB, 1, 0, 1]), 2, 7), 'EINVAL', 'fillRanges', 'shrunk by a getter');
  t.equal(tracking.length, 4096);

  // A getter that calls fillRanges again, and one on Array.prototype for a hole.
  const v4: Uint8Array[] = [x];
  Object.defineProperty(v4, 1, { get: () => { fillRanges([y], new Float64Array([0, 0, 1]), 1, 9); return y; } });
  t.throws(() => fillRanges(v4, new Float64Array([0, 0, 1, 1, 0, 1]), 2), /called again|EINVAL/, 'a re-entrant call is refused');
  const holey = [x, , y] as Uint8Array[]; // eslint-disable-line no-sparse-arrays
  // No test-runner call while the prototype has the getter (the runner's own arrays would see it).
  let err: unknown = null;
  Object.defineProperty(Array.prototype, 1, { get: () => 42, configurable: true });
  try {
    fillRanges(holey, new Float64Array([1, 0, 1]), 1);
  } catch (e) {
    err = e;
  } finally {
    delete (Array.prototype as unknown as Record<number, unknown>)[1];
  }
  throwsSys(t, () => { if (err !== null) throw err; }, 'EINVAL', 'fillRanges', 'a hole read through the prototype is no view');
  fillRanges(holey, new Float64Array([2, 0, 1]), 1, 8);
  t.equal(y[0], 8, 'still usable');
  t.end();
});

t.test('fills from worker threads at the same time (one pool; a busy pool means filling alone)', async (t) => {
  // Each worker loads this package's source through tsx, as the test itself runs.
  const code = `
    const { workerData, parentPort } = require('node:worker_threads');
    import(workerData.tsx).then(({ tsImport }) => tsImport(workerData.sys, workerData.sys)).then(({ fillRanges }) => {
      const mem = new Uint8Array(4 << 20);
      const plan = new Float64Array([0, 4096, (4 << 20) - 8192]);
      let bad = 0;
      for (let round = 0; round < 300; round++) {
        const v = (workerData.id * 16 + round) & 0xff;
        fillRanges([mem], plan, 1, v);
        if (mem[4095] !== 0 || mem[(4 << 20) - 4096] !== 0) bad++;
        for (let i = 4096; i < (4 << 20) - 4096; i += 4096) if (mem[i] !== v || mem[i + 4095] !== v) { bad++; break; }
      }
      parentPort.postMessage(bad);
    });
  `;
  const sys = new URL('../src/index.ts', import.meta.url).href;
  const tsx = import.meta.resolve('tsx/esm/api');
  const results = await Promise.all([1, 2, 3].map((id) => new Promise<number>((resolve, reject) => {
    const w = new Worker(code, { eval: true, workerData: { id, sys, tsx } });
    w.once('message', resolve);
    w.once('error', reject);
  })));
  t.same(results, [0, 0, 0], 'every fill in every thread exact');
});

t.test('a plan over a SharedArrayBuffer, large and small', (t) => {
  const mem = new Uint8Array(1 * MiB);
  const plan = new Float64Array(new SharedArrayBuffer(6 * 8));
  plan.set([0, 0, 512 * KiB, 0, 600 * KiB, 10]);
  fillRanges([mem], plan, 2, 3);
  t.ok(mem.subarray(0, 512 * KiB).every((x) => x === 3) && mem[512 * KiB] === 0, 'the large range');
  t.ok(mem.subarray(600 * KiB, 600 * KiB + 10).every((x) => x === 3) && mem[600 * KiB + 10] === 0, 'the small one');
  t.end();
});
