// The addon validates its own arguments: calling it directly with junk
// (bypassing the TS wrapper, as a buggy caller could) must throw SysError
// EINVAL and never crash the process.
import t from 'tap';
import { addon } from '../src/native.js';
import { SysError } from '../src/index.js';

const junk: unknown[] = [
  undefined, null, -1, 1.5, NaN, Infinity, 2 ** 53, '3', {}, [], () => 0, Symbol('s'), 10n, new ArrayBuffer(4),
  new Float64Array(4),
];

type AnyFn = (...args: unknown[]) => unknown;

t.test('every native function rejects junk arguments with SysError', (t) => {
  const fns: string[] = [
    'memfdCreate', 'ftruncate', 'mmap', 'munmap', 'openFile', 'fstatSize', 'fdatasync', 'fsync', 'dup', 'close',
    'eventfdRead', 'eventfdWrite', 'unixListen', 'unixAccept', 'unixConnect', 'sendMsg', 'recvMsg', 'tapOpen',
    'tapSetVnetHdrSize', 'tapSetOffload', 'copyRanges', 'fillRanges',
  ];
  let calls = 0;
  for (const name of fns) {
    const fn = (addon as unknown as Record<string, AnyFn>)[name]!;
    // Strings are valid names/paths for these; junk strings would create files, memfds or taps.
    const takesName = name === 'memfdCreate' || name === 'unixListen' || name === 'unixConnect' || name === 'tapOpen' || name === 'openFile';
    for (const a of junk) {
      if (takesName && typeof a === 'string') continue;
      for (const b of [undefined, -5, 'x', {}]) {
        calls++;
        try {
          fn(a, b, b, b, b);
        } catch (e) {
          if (!(e instanceof SysError)) t.fail(`${name}(${String(a)}, ${String(b)}) threw ${String(e)}`);
          continue;
        }
        t.fail(`${name}(${String(a)}, ${String(b)}) did not throw`);
      }
    }
  }
  t.ok(calls > 1000, `${calls} junk calls survived`);
  t.end();
});

t.test('native IoUring and FdWatcher reject junk', (t) => {
  for (const a of junk) {
    t.throws(() => new addon.IoUring(a as number), SysError, `IoUring(${String(a)})`);
    t.throws(() => new addon.FdWatcher(a as number, () => {}), SysError, `FdWatcher(${String(a)})`);
  }
  const ring = new addon.IoUring(2);
  const r = ring as unknown as Record<string, AnyFn>;
  for (const a of junk) {
    for (const b of junk) {
      t.throws(() => r.submit!.call(ring, a, b, a), SysError);
      if (!(a instanceof Float64Array)) t.throws(() => r.reap!.call(ring, a), SysError);
    }
    t.throws(() => r.setBuffer!.call(ring, a, 'x'), SysError);
  }
  // methods called on the wrong receiver do not crash
  t.throws(() => r.submit!.call({}, new Float64Array(8), 0, new Float64Array(0)));
  ring.close();
  t.end();
});

t.test('records with junk numbers are rejected natively', (t) => {
  const ring = new addon.IoUring(2);
  ring.setBuffer(0, new ArrayBuffer(64));
  const values = [NaN, -1, 0.5, Infinity, -Infinity, 2 ** 53, 2 ** 64, -0];
  let rejected = 0;
  for (let field = 0; field < 8; field++) {
    for (const v of values) {
      const ops = new Float64Array([2, 999999, 0, 1, 0, 1, 0, 0]); // WRITEV to a bad fd
      ops[field] = v;
      try {
        const n = ring.submit(ops, 1, new Float64Array([0, 0, 8]));
        // accepted: must have been harmless (fields the op ignores, or -0)
        t.ok(n === 1 && (field >= 6 || Object.is(v, -0)), `field ${field} = ${v} accepted harmlessly`);
        const out = new Float64Array(2);
        const end = Date.now() + 1000;
        while (ring.reap(out) === 0 && Date.now() < end);
      } catch (e) {
        t.ok(e instanceof SysError && e.code === 'EINVAL', `field ${field} = ${v} rejected`);
        rejected++;
      }
    }
  }
  t.ok(rejected >= 40, `${rejected} rejected`);
  ring.close();
  t.end();
});
