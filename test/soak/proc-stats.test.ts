/** The soak verdict itself: flat series pass, a steady fd, mapping or RSS leak fails. */
import t from 'tap';
import { judge, slope, type ProcSample } from './src/proc-stats.js';

const series = (n: number, f: (i: number) => Partial<ProcSample>): ProcSample[] =>
  Array.from({ length: n }, (_, i) => ({ t: i * 1000, at: i * 50, fds: 26, rssKiB: 150_000, memfdMaps: 0, ...f(i) }));
const tol = { warmup: 4, fdSlack: 0, rssTrendKiB: 32 * 1024 };

t.equal(slope([0, 1, 2, 3], [1, 3, 5, 7]), 2, 'least-squares slope');
t.ok(judge(series(20, () => ({})), tol, 'flat').ok, 'flat series passes');
t.ok(judge(series(20, (i) => ({ rssKiB: 150_000 + (i % 3) * 6000 })), tol, 'sawtooth').ok, 'GC sawtooth (±6 MiB, no trend) passes');
t.ok(judge(series(20, (i) => ({ rssKiB: i < 4 ? 100_000 + i * 20_000 : 180_000 })), tol, 'warm-up').ok, 'growth inside the warm-up is ignored');
t.notOk(judge(series(20, (i) => ({ fds: i === 15 ? 27 : 26 })), tol, 'fd').ok, 'one extra fd at one sample fails');
t.notOk(judge(series(20, (i) => ({ fds: 26 + (i >> 2) })), tol, 'fd leak').ok, 'a slow fd leak fails');
t.notOk(judge(series(20, (i) => ({ memfdMaps: i > 10 ? 1 : 0 })), tol, 'map').ok, 'a mapping left behind fails');
// 32 KiB per session over 750 sessions ≈ 23 MiB: under the CI limit of 32 MiB, which sits above
// V8's old-generation growth between major collections; a leaked session (≥ 100 KiB of rings,
// slots and batches) is far above it, and 64 KiB per session already fails.
t.notOk(judge(series(20, (i) => ({ rssKiB: 150_000 + i * 50 * 64 })), tol, 'rss leak').ok, 'RSS growing 64 KiB per session fails');
t.ok(judge(series(20, () => ({ fds: 30 })), { ...tol, fdSlack: 8, baseline: { fds: 26, memfdMaps: 0 } }, 'live').ok, 'live-session fds within the slack pass');
t.notOk(judge(series(20, () => ({ fds: 40 })), { ...tol, fdSlack: 8, baseline: { fds: 26, memfdMaps: 0 } }, 'live').ok, 'beyond the slack fails');
t.notOk(judge(series(1, () => ({})), tol, 'short').ok, 'too few samples fails');
