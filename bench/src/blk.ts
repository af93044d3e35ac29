/**
 * System benchmark: vhost-ts's virtio-blk back-end against qemu-storage-daemon, driven by the
 * same TypeScript front-end in the same run. Prints a table and the ours/QSD ratios, writes the
 * "virtio-blk" section of docs/benchmarks.md and docs/img/bench-blk.svg.
 *
 *   npm run bench:blk                                  # full matrix (~6 min)
 *   npm run bench:blk -- --quick                       # short runs, no docs written
 *   npm run bench:blk -- --peers vhost-ts,qsd --engines null --workloads 4k-randread-qd32 --reps 3
 *   npm run bench:blk -- --json out.json --no-docs
 *   npm run bench:blk -- --from-json out.json          # re-render table + docs from a saved run (no measuring)
 *   npm run bench:blk -- --pin                         # taskset: load generator CPU 0, back-end CPU 1
 *   npm run bench:blk -- --poll-us 0                   # our peers without busy-polling (A/B)
 *   npm run bench:blk -- --loadgen c                   # the C load generator (bench/c/blk-loadgen.c) instead of the TS one
 *   npm run bench:blk -- --null-read-zeroes off        # null peers leave read buffers as they are (null-co's default)
 *   npm run bench:blk -- --engines file --image-dir /var/tmp --direct --qsd-aio io_uring --no-docs
 *                                                      # the file peers on a disk, O_DIRECT (docs: tmpfs matrix only)
 *
 * `--peers` takes families (vhost-ts, qsd, ceiling) or peer ids (vhost-ts-file, qsd-null, ...).
 * `BENCH_BLK_NODE_ARGS="--cpu-prof --cpu-prof-dir=DIR"` passes node flags to our back-ends only
 * (with `BENCH_FROM_DIST=1` the packages load from dist/, so profiles carry line numbers).
 * @module
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { REPO_ROOT } from './common/child.js';
import { machineFacts, type MachineFacts } from './common/machine.js';
import { runMatrix, type Cell } from './blk/matrix.js';
import { PEERS, type PeerId } from './blk/peers.js';
import { chart, consoleTable, markdownSection } from './blk/report.js';
import { replaceSection } from './common/doc-section.js';
import { WORKLOADS } from './blk/workload.js';

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    duration: { type: 'string' },
    warmup: { type: 'string' },
    reps: { type: 'string' },
    peers: { type: 'string', default: 'vhost-ts,qsd,ceiling' },
    engines: { type: 'string', default: 'file,null,instant' },
    workloads: { type: 'string' },
    'queue-size': { type: 'string', default: '256' },
    size: { type: 'string', default: String(512 << 20) },
    'qsd-aio': { type: 'string', default: 'threads' },
    'poll-us': { type: 'string' },
    pin: { type: 'boolean', default: false },
    loadgen: { type: 'string', default: 'ts' },
    'null-read-zeroes': { type: 'string', default: 'on' },
    'image-dir': { type: 'string', default: '/dev/shm' },
    direct: { type: 'boolean', default: false },
    'no-docs': { type: 'boolean', default: false },
    json: { type: 'string' },
    'from-json': { type: 'string' },
  },
});

const quick = values.quick;
const durationS = Number(values.duration ?? (quick ? 1 : 5));
const warmupS = Number(values.warmup ?? (quick ? 0.3 : 1));
const reps = Number(values.reps ?? 1);
if (values.loadgen !== 'ts' && values.loadgen !== 'c') throw new Error(`--loadgen ts|c, got ${values.loadgen}`);
const loadgen: 'ts' | 'c' = values.loadgen;
if (values['null-read-zeroes'] !== 'on' && values['null-read-zeroes'] !== 'off') throw new Error(`--null-read-zeroes on|off, got ${values['null-read-zeroes']}`);
const families = values.peers.split(',').map((s) => s.trim()).filter(Boolean);
const engines = values.engines.split(',').map((s) => s.trim()).filter(Boolean);
const peers: PeerId[] = PEERS.filter((p) => families.includes(p.id) || (families.includes(p.family) && engines.includes(p.engine)))
  .map((p) => p.id);
for (const f of families) {
  if (!PEERS.some((p) => p.id === f || p.family === f)) throw new Error(`unknown peer or family ${f}`);
}
const names = values.workloads?.split(',').map((s) => s.trim()) ?? Object.keys(WORKLOADS);
const workloads = names.map((n) => {
  const spec = WORKLOADS[n];
  if (spec === undefined) throw new Error(`unknown workload ${n} (known: ${Object.keys(WORKLOADS).join(', ')})`);
  return { name: n, spec };
});

const usable: PeerId[] = [];
for (const id of peers) {
  const why = PEERS.find((p) => p.id === id)!.unavailable();
  if (why === null) usable.push(id);
  else console.error(`skipping ${id}: ${why}`);
}
if (usable.length === 0) {
  console.error('no peer can run');
  process.exit(1);
}

interface Saved {
  facts: MachineFacts; cells: Cell[]; command: string; durationS: number; warmupS: number; reps: number; pin: boolean; qsdAio: string;
  /** Absent in runs saved before the C load generator existed (those used the TS one). */
  loadgen?: 'ts' | 'c';
  /** The file peers' image directory and O_DIRECT (absent before they were options: /dev/shm, off). */
  imageDir?: string;
  direct?: boolean;
}
let saved: Saved;
if (values['from-json'] !== undefined) {
  saved = JSON.parse(readFileSync(values['from-json'], 'utf8')) as Saved;
} else {
  const facts = machineFacts(REPO_ROOT);
  // Pinning (load generator on CPU 0, back-end on CPU 1) is off by default: on a small shared
  // machine a pinned process waits behind whatever else runs on its CPU (measured here: p99 of
  // ~3 ms pinned vs ~0.2 ms unpinned, 4k QD1 with load average 3 on 2 vCPUs).
  const pin = values.pin && facts.nproc >= 2;
  console.error(`virtio-blk bench: ${usable.join(', ')} × ${workloads.length} workloads, ${warmupS}+${durationS} s, reps ${reps}, ` +
    `${facts.nproc} CPUs, kernel ${facts.kernel}, load ${facts.loadAvg1}`);
  const workDir = mkdtempSync(join(tmpdir(), 'vtb-'));
  let cells: Cell[];
  try {
    cells = await runMatrix({
      peers: usable, workloads, durationS, warmupS, reps, pin,
      queueSize: Number(values['queue-size']), sizeBytes: Number(values.size), qsdAio: values['qsd-aio'], workDir,
      pollUs: values['poll-us'] === undefined ? null : Number(values['poll-us']),
      loadgen, nullReadZeroes: values['null-read-zeroes'] === 'on', imageDir: values['image-dir'], direct: values.direct,
      log: (l) => console.error(l),
    });
  } finally {
    rmSync(workDir, { recursive: true, force: true });
  }
  const argv = process.argv.slice(2);
  saved = {
    facts, cells, command: `npm run bench:blk${argv.length > 0 ? ` -- ${argv.join(' ')}` : ''}`,
    durationS, warmupS, reps, pin, qsdAio: values['qsd-aio'], loadgen, imageDir: values['image-dir'], direct: values.direct,
  };
}
const { cells } = saved;

console.log(consoleTable(cells));
if (values.json !== undefined) writeFileSync(values.json, `${JSON.stringify(saved, null, 2)}\n`);

const errors = cells.reduce((s, c) => s + (c.result?.errors ?? 0), 0);
const failed = cells.filter((c) => c.result === null).length;
// The published table is the tmpfs matrix (its labels say so); other images are run with --no-docs.
const tmpfsImage = (saved.imageDir ?? '/dev/shm') === '/dev/shm' && saved.direct !== true;
if (!quick && !values['no-docs'] && !tmpfsImage) {
  console.error('not writing docs: the published table is the tmpfs matrix (no --image-dir, no --direct)');
} else if (!quick && !values['no-docs']) {
  const svgRel = 'img/bench-blk.svg';
  writeFileSync(join(REPO_ROOT, 'docs', svgRel), chart(cells));
  const notesPath = join(REPO_ROOT, 'bench/src/blk/findings.md');
  const notes = existsSync(notesPath) ? readFileSync(notesPath, 'utf8') : '';
  replaceSection(join(REPO_ROOT, 'docs/benchmarks.md'), 'virtio-blk',
    markdownSection({ ...saved, svgRel, notes }));
  console.error('wrote docs/benchmarks.md (section virtio-blk) and docs/img/bench-blk.svg');
}
if (errors > 0 || failed > 0) {
  console.error(`${errors} request errors, ${failed} failed cells`);
  process.exit(1);
}
