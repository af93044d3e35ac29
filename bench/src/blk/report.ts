/**
 * Turns matrix cells into the console table, the ours/QSD ratios, the markdown section of
 * docs/benchmarks.md and the SVG chart.
 * @module
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import type { MachineFacts } from '../common/machine.js';
import { renderBarChart } from '../common/svg-bars.js';
import { cellP99, type Cell } from './matrix.js';
import type { PeerId } from './peers.js';

/** Pairs compared: ours vs the reference on the same storage. */
export const PAIRS: readonly { engine: string; ours: PeerId; ref: PeerId }[] = [
  { engine: 'file (tmpfs)', ours: 'vhost-ts-file', ref: 'qsd-file' },
  { engine: 'null', ours: 'vhost-ts-null', ref: 'qsd-null' },
];

/** One ratio row. */
export interface Ratio {
  workload: string;
  engine: string;
  iopsRatio: number;
  p99Ratio: number;
  /** IOPS ≥ QSD and p99 ≤ QSD (the issue's target). */
  meets: boolean;
}

function cell(cells: readonly Cell[], workload: string, peer: PeerId): Cell | undefined {
  return cells.find((c) => c.workload === workload && c.peer === peer);
}

/** ours / QSD ratios for every workload where both ran. */
export function ratios(cells: readonly Cell[]): Ratio[] {
  const out: Ratio[] = [];
  const workloads = [...new Set(cells.map((c) => c.workload))];
  for (const w of workloads) {
    for (const p of PAIRS) {
      const ca = cell(cells, w, p.ours), cb = cell(cells, w, p.ref);
      const a = ca?.result, b = cb?.result;
      if (!a || !b || b.iops === 0) continue;
      const pb = cellP99(cb!);
      if (pb === 0) continue;
      const iopsRatio = a.iops / b.iops;
      const p99Ratio = cellP99(ca!) / pb;
      out.push({ workload: w, engine: p.engine, iopsRatio, p99Ratio, meets: iopsRatio >= 1 && p99Ratio <= 1 && a.errors === 0 });
    }
  }
  return out;
}

/**
 * Whether a cell is limited by something other than the back-end's own work: its load
 * generator was CPU-saturated (≥ 90 % of one core: the TS front-end is the bottleneck), or —
 * for our back-end — it reached ≥ 90 % of the TS instant device, i.e. the vhost-user/event-loop
 * plumbing every TS back-end shares, not the blk device, sets the pace.
 */
export function harnessBound(cells: readonly Cell[], c: Cell): string | null {
  const r = c.result;
  if (r === null) return null;
  const cpu = r.cpuSeconds / r.seconds;
  if (cpu >= 0.9) return `load generator at ${Math.round(cpu * 100)} % CPU`;
  const ceil = cell(cells, c.workload, 'ts-instant')?.result;
  if (c.peer.startsWith('vhost-ts') && ceil && r.iops >= 0.9 * ceil.iops) return '≥ 90 % of ts-instant: plumbing-bound';
  return null;
}

/** Several queues: each one's IOPS and p99 (from the median run), so a starved queue shows. */
export function perQueueNote(r: { perQueue?: { iops: number; p99: number }[] }): string | null {
  const q = r.perQueue;
  if (q === undefined || q.length < 2) return null;
  return `per queue: ${q.map((x) => `${Math.round(x.iops / 1000)} k`).join(' / ')} IOPS, p99 ${q.map((x) => x.p99.toFixed(0)).join(' / ')} µs`;
}

/** Back-end CPU in % of one core, or '–' when unknown. */
function backendCpu(r: { backendCpu?: number }): string {
  return r.backendCpu === undefined ? '–' : `${Math.round(r.backendCpu * 100)}%`;
}

function pad(s: string, n: number, right = false): string {
  return right ? s.padStart(n) : s.padEnd(n);
}

/** Console table. */
export function consoleTable(cells: readonly Cell[]): string {
  const lines: string[] = [];
  lines.push(`${pad('workload', 18)} ${pad('peer', 14)} ${pad('IOPS', 9, true)} ${pad('MB/s', 8, true)} ${pad('p50 µs', 8, true)} ` +
    `${pad('p99 µs', 8, true)} ${pad('errors', 6, true)} ${pad('lg CPU', 6, true)} ${pad('be CPU', 6, true)}  note`);
  for (const c of cells) {
    const r = c.result;
    if (r === null) {
      lines.push(`${pad(c.workload, 18)} ${pad(c.peer, 14)} FAILED: ${c.failures[0]?.slice(0, 120) ?? ''}`);
      continue;
    }
    const hb = harnessBound(cells, c);
    lines.push(`${pad(c.workload, 18)} ${pad(c.peer, 14)} ${pad(String(r.iops), 9, true)} ${pad(r.mbps.toFixed(1), 8, true)} ` +
      `${pad(r.latUs.p50.toFixed(1), 8, true)} ${pad(cellP99(c).toFixed(1), 8, true)} ${pad(String(r.errors), 6, true)} ` +
      `${pad(`${Math.round((r.cpuSeconds / r.seconds) * 100)}%`, 6, true)} ${pad(backendCpu(r), 6, true)}  ${hb ?? ''}`);
  }
  const rs = ratios(cells);
  if (rs.length > 0) {
    lines.push('', `${pad('workload', 18)} ${pad('engine', 13)} ${pad('IOPS ours/QSD', 14, true)} ${pad('p99 ours/QSD', 13, true)}  target`);
    for (const r of rs) {
      lines.push(`${pad(r.workload, 18)} ${pad(r.engine, 13)} ${pad(r.iopsRatio.toFixed(2), 14, true)} ${pad(r.p99Ratio.toFixed(2), 13, true)}  ${r.meets ? 'met' : 'MISSED'}`);
    }
  }
  return lines.join('\n');
}

/** Everything the markdown section is built from. */
export interface ReportInput {
  cells: readonly Cell[];
  facts: MachineFacts;
  command: string;
  durationS: number;
  warmupS: number;
  reps: number;
  pin: boolean;
  qsdAio: string;
  /** Relative path of the SVG from docs/. */
  svgRel: string;
  /** Free-form findings (profile, bottlenecks) appended to the section. */
  notes: string;
  /** Load generator of the run (runs saved before the C one existed used the TS one). */
  loadgen?: 'ts' | 'c';
}

/** The "## virtio-blk" section (heading included). */
export function markdownSection(x: ReportInput): string {
  const f = x.facts;
  const L: string[] = [];
  L.push('## virtio-blk');
  L.push('');
  if (x.loadgen === 'c') {
    L.push('What it measures: a load generator in C (`bench/c/blk-loadgen.c`: a small vhost-user-blk front-end in one');
    L.push('thread — the guest side as QEMU plays it, split ring, blocking on the call eventfd) keeps a fixed number of');
    L.push('virtio-blk requests in flight against a back-end process over vhost-user, and reports IOPS, MB/s and');
    L.push('submit→completion latency (p50/p99). Every status byte is checked. The TypeScript load generator');
    L.push('(`bench/src/blk/loadgen.ts`, through `VhostUserFrontend`; `--loadgen ts`) does the same with the same flags and');
    L.push('result line, but at QD32 it needed a whole CPU against qemu-storage-daemon — it was the bottleneck there, so');
    L.push('this table uses the C one. Peers, each a fresh process per run:');
  } else {
    L.push('What it measures: a TypeScript load generator (`bench/src/blk/loadgen.ts`, the guest side through');
    L.push('`VhostUserFrontend` and `SplitQueueDriver`) keeps a fixed number of virtio-blk requests in flight');
    L.push('against a back-end process over vhost-user, and reports IOPS, MB/s and submit→completion latency');
    L.push('(p50/p99). Every status byte is checked. Peers, each a fresh process per run:');
  }
  L.push('');
  L.push('- `vhost-ts-file` — our `vhost-user-blk` CLI serving a raw image on tmpfs (file engine, `--aio auto`: reads and');
  L.push('  writes inline on the queue\'s thread, reads and writes of 128 KiB or more through io_uring kernel workers);');
  L.push('  `qsd-file` — qemu-storage-daemon `driver=file` on the same image (`aio=' + x.qsdAio + '`, exported without a format node).');
  L.push('- `vhost-ts-null` — our `BlkDevice` over the library `NullImage` (reads zero the buffer, writes are dropped;');
  L.push('  reads of 128 KiB or more are zeroed by the caller and a helper thread together, sys `fillRanges`),');
  L.push('  served by `bench/src/blk/ts-server.ts` (the CLI serves files only); `qsd-null` — `driver=null-co,read-zeroes=on`');
  L.push('  (its main loop\'s thread zeroes every read).');
  L.push('- Our peers busy-poll adaptively after each batch (`--poll-us`, default 100 µs; `npm run bench:blk -- --poll-us 0` for the');
  L.push('  sleep-at-once behaviour), the instant device with the same `AdaptivePoller`.');
  L.push('- `ts-instant` — a bench-only device that completes every request at once without touching data, served by');
  L.push('  the same `VhostUserBackend`: the ceiling of any TS back-end on this plumbing. The front-end\'s own ceiling is');
  L.push('  at least the best IOPS any peer reached, and the "loadgen CPU" column shows how busy it was (≥ 90 % = front-end-bound).');
  L.push('  "back-end CPU" is the back-end process\'s CPU (all threads) over the whole load-generator run, warm-up included:');
  L.push('  it shows what busy-polling costs (our peers poll adaptively after each batch; qemu-storage-daemon, exporting from');
  L.push('  its main loop, does not poll in this configuration).');
  L.push('');
  L.push(`Machine: ${f.nproc} vCPUs (${f.cpuModel}), ${f.memGiB} GiB, kernel ${f.kernel}, Node ${f.node}, ${f.qsdVersion};`);
  L.push(`commit ${f.gitCommit}${f.gitDirty ? ' (+ uncommitted changes under packages/)' : ''}, ${f.date}; load average at start ${f.loadAvg1}`);
  L.push(`(the machine is shared with other jobs: expect ±15 % between runs). ${x.pin ? 'Load generator pinned to CPU 0, back-end to CPU 1' : 'No CPU pinning'};`);
  L.push(`${x.warmupS} s warm-up + ${x.durationS} s measured per run, ${x.reps === 1 ? 'one run per cell' : `${x.reps} runs per cell: the median run's IOPS, MB/s and p50 (the IOPS range in brackets), and the median of the runs' p99s (their range in brackets)`}.`);
  L.push('');
  L.push('```');
  L.push(x.command);
  L.push('```');
  L.push('');
  L.push('| workload | peer | IOPS | MB/s | p50 µs | p99 µs | errors | loadgen CPU | back-end CPU | note |');
  L.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---|');
  for (const c of x.cells) {
    const r = c.result;
    if (r === null) {
      L.push(`| ${c.workload} | ${c.peer} | failed | | | | | | | ${(c.failures[0] ?? '').replace(/\|/g, '/').slice(0, 100)} |`);
      continue;
    }
    const spread = c.repIops.length > 1 ? ` (${Math.min(...c.repIops)}–${Math.max(...c.repIops)})` : '';
    const ps = c.repP99 ?? [];
    const p99Spread = ps.length > 1 ? ` (${Math.min(...ps).toFixed(1)}–${Math.max(...ps).toFixed(1)})` : '';
    L.push(`| ${c.workload} | ${c.peer} | ${r.iops}${spread} | ${r.mbps.toFixed(1)} | ${r.latUs.p50.toFixed(1)} | ${cellP99(c).toFixed(1)}${p99Spread} | ` +
      `${r.errors} | ${Math.round((r.cpuSeconds / r.seconds) * 100)} % | ${backendCpu(r).replace('%', ' %')} | ${[harnessBound(x.cells, c), perQueueNote(r)].filter((n) => n !== null).join('; ')} |`);
  }
  const rs = ratios(x.cells);
  if (rs.length > 0) {
    L.push('');
    L.push('Ours / qemu-storage-daemon (target: IOPS ratio ≥ 1.00 and p99 ratio ≤ 1.00):');
    L.push('');
    L.push('| workload | storage | IOPS ours/QSD | p99 ours/QSD | target |');
    L.push('|---|---|---:|---:|---|');
    for (const r of rs) L.push(`| ${r.workload} | ${r.engine} | ${r.iopsRatio.toFixed(2)} | ${r.p99Ratio.toFixed(2)} | ${r.meets ? 'met' : '**missed**'} |`);
  }
  L.push('');
  L.push(`![virtio-blk IOPS per workload and peer](${x.svgRel})`);
  if (x.notes.trim() !== '') {
    L.push('');
    L.push(x.notes.trim());
  }
  L.push('');
  return L.join('\n');
}

const COLORS: Record<string, string> = {
  'vhost-ts-file': '#1f77b4', 'qsd-file': '#ff7f0e', 'vhost-ts-null': '#6baed6', 'qsd-null': '#fdae6b', 'ts-instant': '#999999',
};

/** The SVG chart of IOPS (log scale). */
export function chart(cells: readonly Cell[]): string {
  const workloads = [...new Set(cells.map((c) => c.workload))];
  const peers = [...new Set(cells.map((c) => c.peer))];
  return renderBarChart({
    title: 'virtio-blk over vhost-user: IOPS per workload (higher is better)',
    unit: 'IOPS (log scale)',
    categories: workloads,
    log: true,
    series: peers.map((p) => ({
      name: p, color: COLORS[p] ?? '#444',
      values: workloads.map((w) => cell(cells, w, p)?.result?.iops ?? null),
    })),
  });
}

