import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { cellP99, type Cell } from '../src/blk/matrix.js';
import { chart, perQueueNote, ratios } from '../src/blk/report.js';
import { replaceSection } from '../src/common/doc-section.js';
import type { LoadgenResult } from '../src/blk/workload.js';

function result(iops: number, p99: number, errors = 0): LoadgenResult {
  return {
    ok: true, socket: 's', pattern: 'randread', blockSize: 4096, queueDepth: 32, queues: 1, seconds: 1, requests: iops, iops,
    mbps: 1, latUs: { mean: 1, p50: 1, p99, p999: p99, max: p99 }, errors, lenMismatches: 0, kicks: 0, calls: 0, stalls: 0,
    cpuSeconds: 0.5, capacityBytes: 1, features: '0x0',
  };
}
const spec = { pattern: 'randread' as const, blockSize: 4096, queueDepth: 32, queues: 1 };
const cell = (peer: Cell['peer'], r: LoadgenResult | null): Cell => ({ peer, workload: 'w', spec, result: r, repIops: [], failures: [] });

t.test('ratios: ours/QSD per storage; the target needs IOPS ≥ and p99 ≤ and no errors', async (tt) => {
  const rs = ratios([
    cell('vhost-ts-file', result(200, 50)), cell('qsd-file', result(100, 100)),
    cell('vhost-ts-null', result(90, 50)), cell('qsd-null', result(100, 100)),
  ]);
  tt.equal(rs.length, 2);
  tt.same(rs.map((r) => [r.engine, r.iopsRatio, r.p99Ratio, r.meets]), [['file (tmpfs)', 2, 0.5, true], ['null', 0.9, 0.5, false]]);
  const withErrors = ratios([cell('vhost-ts-file', result(200, 50, 3)), cell('qsd-file', result(100, 100))]);
  tt.equal(withErrors[0].meets, false, 'errors never meet the target');
  tt.same(ratios([cell('vhost-ts-file', null), cell('qsd-file', result(1, 1))]), [], 'a failed cell has no ratio');
});

t.test('ratios: the p99 of a cell is the median of its reps\' p99s, not the median-IOPS rep\'s', async (tt) => {
  // Ours has the lower p99 in every rep, but its median-IOPS rep happens to be its slowest.
  const ours: Cell = { ...cell('vhost-ts-file', result(110, 43)), repIops: [100, 110, 120], repP99: [40, 43, 37] };
  const qsd: Cell = { ...cell('qsd-file', result(100, 41)), repIops: [90, 100, 95], repP99: [45, 41, 44] };
  tt.equal(cellP99(ours), 40);
  tt.equal(cellP99(qsd), 44);
  const [r] = ratios([ours, qsd]);
  tt.equal(r.p99Ratio, 40 / 44);
  tt.equal(r.meets, true);
  tt.equal(cellP99({ ...ours, repP99: [40, 43, 37, 50] }), 41.5, 'even count: the mean of the middle two');
  tt.equal(cellP99(cell('qsd-file', result(100, 41))), 41, 'JSON without per-rep p99s: the median rep\'s');
});

t.test('replaceSection replaces only the named section', async (tt) => {
  const dir = mkdtempSync(join(tmpdir(), 'vtbr-'));
  tt.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const p = join(dir, 'b.md');
  writeFileSync(p, '# B\n\n## Ring micro-benchmark\n\nring text\n\n## virtio-blk\n\nold\n\n## Later\n\nlater text\n');
  replaceSection(p, 'virtio-blk', '## virtio-blk\n\nnew\n');
  tt.equal(readFileSync(p, 'utf8'), '# B\n\n## Ring micro-benchmark\n\nring text\n\n## virtio-blk\n\nnew\n\n## Later\n\nlater text\n');
  const q = join(dir, 'c.md');
  writeFileSync(q, '# B\n\n## Ring micro-benchmark\n\nring\n');
  replaceSection(q, 'virtio-blk', '## virtio-blk\n\nnew\n');
  tt.equal(readFileSync(q, 'utf8'), '# B\n\n## Ring micro-benchmark\n\nring\n\n## virtio-blk\n\nnew\n', 'appended when absent');
  const m = join(dir, 'missing.md');
  replaceSection(m, 'virtio-blk', '## virtio-blk\n\nx\n');
  tt.match(readFileSync(m, 'utf8'), /^# Benchmarks\n[\s\S]*## virtio-blk\n\nx\n$/, 'created when the file is missing');
});

t.test('chart is a well-formed SVG with one bar per measured cell', async (tt) => {
  const svg = chart([cell('vhost-ts-null', result(200, 1)), cell('qsd-null', result(100, 1)), cell('ts-instant', null)]);
  tt.match(svg, /^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  tt.match(svg, /<\/svg>\n$/);
  tt.equal(svg.match(/<rect x=/g)?.length, 2 + 3, 'two bars plus three legend swatches');
});

t.test('perQueueNote: each queue of a multi-queue run, nothing for one queue', async (tt) => {
  tt.equal(perQueueNote({}), null);
  tt.equal(perQueueNote({ perQueue: [{ iops: 5000, p99: 10 }] }), null);
  tt.equal(perQueueNote({ perQueue: [{ iops: 402_736, p99: 94.3 }, { iops: 185_727, p99: 1019.5 }] }),
    'per queue: 403 k / 186 k IOPS, p99 94 / 1020 µs');
});
