import t from 'tap';
import { close, copyRanges, ftruncate, memfdCreate, mmap, munmap } from '../src/index.js';
import { throwsSys } from './helpers.js';

function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

t.test('copies every range of the plan, offsets relative to the views', (t) => {
  const src = pattern(4096, 7);
  const dstBuf = new ArrayBuffer(8192);
  const dst = new Uint8Array(dstBuf, 1024, 4096); // a window: offsets count from byte 1024
  const plan = new Float64Array([0, 0, 64, 100, 200, 1518, 4000, 4000, 96, 5, 3000, 0]);
  copyRanges(dst, src, plan, 4);
  const want = new Uint8Array(4096);
  want.set(src.subarray(0, 64), 0);
  want.set(src.subarray(100, 1618), 200);
  want.set(src.subarray(4000, 4096), 4000);
  t.same(Array.from(dst), Array.from(want), 'dst window holds exactly the planned ranges');
  t.equal(new Uint8Array(dstBuf, 0, 1024).every((b) => b === 0), true, 'nothing before the window touched');
  t.equal(new Uint8Array(dstBuf, 5120).every((b) => b === 0), true, 'nothing after the window touched');
  t.end();
});

t.test('prefetchDst: the same copies (a hint only), ranges of every size, zero-length ones too', (t) => {
  const src = pattern(8192, 11);
  const plain = new Uint8Array(8192);
  const hinted = new Uint8Array(8192);
  // Lengths around line sizes, a zero-length range between, the last range's successor absent.
  const plan = new Float64Array([0, 0, 1, 10, 100, 63, 0, 200, 0, 300, 300, 64, 500, 1000, 65, 2000, 3000, 1518, 4000, 6000, 2000]);
  copyRanges(plain, src, plan, 7);
  copyRanges(hinted, src, plan, 7, true);
  t.same(Array.from(hinted), Array.from(plain));
  copyRanges(hinted, src, plan, 7, false);
  t.same(Array.from(hinted), Array.from(plain), 'false: no hint');
  const b = pattern(256, 5);
  const want = b.slice();
  want.copyWithin(16, 0, 100);
  copyRanges(b, b, new Float64Array([0, 16, 100]), 1, true);
  t.same(Array.from(b), Array.from(want), 'still memmove');
  throwsSys(t, () => copyRanges(plain, src, plan, 1, 1 as unknown as boolean), 'EINVAL', 'copyRanges', 'prefetchDst not a boolean');
  t.end();
});

t.test('only `count` triples are used', (t) => {
  const src = pattern(256, 1);
  const dst = new Uint8Array(256);
  copyRanges(dst, src, new Float64Array([0, 0, 16, 16, 16, 16]), 1);
  t.same(Array.from(dst.subarray(0, 16)), Array.from(src.subarray(0, 16)));
  t.equal(dst.subarray(16).every((b) => b === 0), true, 'second triple ignored');
  t.end();
});

t.test('overlapping ranges in one buffer behave as memmove', (t) => {
  const b = pattern(128, 3);
  const before = b.slice();
  copyRanges(b, b, new Float64Array([0, 8, 100]), 1);
  t.same(Array.from(b.subarray(8, 108)), Array.from(before.subarray(0, 100)));
  t.end();
});

t.test('typed arrays of any element size and mapped memory', (t) => {
  const fd = memfdCreate('vts-copy');
  ftruncate(fd, 65536);
  const ab = mmap(fd, 65536, 0);
  const guest = new Uint32Array(ab);
  guest.fill(0xa5a5a5a5);
  const out = new Float64Array(8);
  copyRanges(out, guest, new Float64Array([4, 0, 64]), 1);
  t.equal(new Uint8Array(out.buffer).every((v) => v === 0xa5), true, 'byte offsets, not element offsets');
  munmap(ab);
  // A detached view is empty: every non-empty range is outside it.
  throwsSys(t, () => copyRanges(out, guest, new Float64Array([0, 0, 1]), 1), 'EINVAL', 'copyRanges', 'unmapped source');
  copyRanges(out, guest, new Float64Array([0, 0, 0]), 1);
  t.pass('an empty range of an unmapped view is harmless');
  close(fd);
  t.end();
});

t.test('a bad range copies nothing and throws', (t) => {
  const src = pattern(64, 9);
  const dst = new Uint8Array(64);
  const cases: Array<[string, number[]]> = [
    ['source past the end', [0, 0, 8, 60, 0, 8]],
    ['destination past the end', [0, 0, 8, 0, 60, 8]],
    ['negative offset', [0, 0, 8, -1, 0, 1]],
    ['fractional length', [0, 0, 8, 0, 0, 1.5]],
    ['NaN', [0, 0, 8, NaN, 0, 1]],
    ['2^53', [0, 0, 8, 2 ** 53, 0, 1]],
  ];
  for (const [what, p] of cases) {
    throwsSys(t, () => copyRanges(dst, src, new Float64Array(p), 2), 'EINVAL', 'copyRanges', what);
    t.equal(dst.every((b) => b === 0), true, `${what}: the valid first range was not copied either`);
  }
  throwsSys(t, () => copyRanges(dst, src, new Float64Array(6), 3), 'EINVAL', 'copyRanges', 'count beyond the plan');
  throwsSys(t, () => copyRanges(dst, src, new Float32Array(3) as unknown as Float64Array, 1), 'EINVAL', 'copyRanges', 'plan not a Float64Array');
  throwsSys(t, () => copyRanges({} as Uint8Array, src, new Float64Array(3), 1), 'EINVAL', 'copyRanges', 'dst not a view');
  t.end();
});

t.test('a plan over a SharedArrayBuffer is taken as it was when checked', (t) => {
  const src = pattern(1024, 9);
  const dst = new Uint8Array(1024);
  const plan = new Float64Array(new SharedArrayBuffer(3 * 8));
  plan.set([10, 20, 100]);
  copyRanges(dst, src, plan, 1);
  t.same(Array.from(dst.subarray(20, 120)), Array.from(src.subarray(10, 110)));
  plan.set([0, 1000, 100]); // outside dst: refused like any other plan
  throwsSys(t, () => copyRanges(dst, src, plan, 1), 'EINVAL', 'copyRanges', 'checked first');
  t.end();
});
