/**
 * System benchmark: vhost-ts's virtio-net back-end against DPDK's vhost PMD, with dpdk-testpmd's
 * virtio-user PMD as the guest, guest→host and host→guest, 64 B and 1518 B frames. Prints a
 * table and the ours/DPDK ratios, writes the "virtio-net" section of docs/benchmarks.md and
 * docs/img/bench-net.svg.
 *
 *   npm run bench:net                                   # full matrix, 3 reps (~3 min)
 *   npm run bench:net -- --quick                        # 1 rep, short window, no docs written
 *   npm run bench:net -- --directions g2h --sizes 64 --peers vhost-ts --reps 1
 *   npm run bench:net -- --json out.json --no-docs
 *   npm run bench:net -- --from-json out.json           # re-render from a saved run
 *   npm run bench:net -- --packed --json out.json       # packed virtqueues (packed_vq=1); never writes the docs
 *
 * Guest on CPU 0, back-end on CPU 1 (`--guest-cpu`, `--host-cpu`). Peers: vhost-ts (kick-driven),
 * vhost-ts-poll (adaptive busy-polling, window up to `--poll-us`, default 1000 µs), dpdk-vhost.
 * @module
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { REPO_ROOT } from './common/child.js';
import { replaceSection } from './common/doc-section.js';
import { machineFacts, type MachineFacts } from './common/machine.js';
import { runMatrix, type NetCell } from './net/matrix.js';
import { chart, consoleTable, markdownSection } from './net/report.js';
import type { Direction, NetPeer } from './net/run-once.js';
import { findTestpmd } from './net/testpmd.js';

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    warmup: { type: 'string' },
    window: { type: 'string' },
    reps: { type: 'string' },
    peers: { type: 'string', default: 'vhost-ts,vhost-ts-poll,dpdk-vhost' },
    'poll-us': { type: 'string', default: '1000' },
    directions: { type: 'string', default: 'g2h,h2g' },
    sizes: { type: 'string', default: '64,1518' },
    'ring-size': { type: 'string', default: '1024' },
    'guest-cpu': { type: 'string', default: '0' },
    'host-cpu': { type: 'string', default: '1' },
    'no-docs': { type: 'boolean', default: false },
    json: { type: 'string' },
    'from-json': { type: 'string' },
    packed: { type: 'boolean', default: false },
  },
});

const list = (s: string): string[] => s.split(',').map((x) => x.trim()).filter(Boolean);
const quick = values.quick;
const peers = list(values.peers) as NetPeer[];
for (const p of peers) {
  if (p !== 'vhost-ts' && p !== 'vhost-ts-poll' && p !== 'dpdk-vhost') throw new Error(`unknown peer ${p} (vhost-ts, vhost-ts-poll, dpdk-vhost)`);
}
const directions = list(values.directions) as Direction[];
for (const d of directions) if (d !== 'g2h' && d !== 'h2g') throw new Error(`unknown direction ${d} (g2h, h2g)`);
const sizes = list(values.sizes).map(Number);
for (const s of sizes) if (!Number.isInteger(s) || s < 60 || s > 1518) throw new Error(`frame size ${s} not in 60..1518`);

interface Saved {
  facts: MachineFacts; loadEnd: number; cells: NetCell[]; command: string; warmupS: number; windowS: number; reps: number;
  ringSize: number; guestCpu: number; hostCpu: number; testpmdVersion: string; pollUs: number;
}

function testpmdVersion(): string {
  try {
    const out = execFileSync('dpkg-query', ['-W', '-f', '${Version}', 'dpdk'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    return `DPDK ${out.trim()} (Debian package)`;
  } catch {
    return 'DPDK (version unknown)';
  }
}

let saved: Saved;
if (values['from-json'] !== undefined) {
  saved = JSON.parse(readFileSync(values['from-json'], 'utf8')) as Saved;
} else {
  if (findTestpmd() === null) {
    console.error('dpdk-testpmd not found (apt-get install dpdk)');
    process.exit(1);
  }
  const warmupS = Number(values.warmup ?? (quick ? 0.5 : 1));
  const windowS = Number(values.window ?? (quick ? 1 : 3));
  const reps = Number(values.reps ?? (quick ? 1 : 3));
  const ringSize = Number(values['ring-size']);
  const guestCpu = Number(values['guest-cpu']);
  const hostCpu = Number(values['host-cpu']);
  const pollUs = Number(values['poll-us']);
  const facts = machineFacts(REPO_ROOT);
  console.error(`virtio-net bench: ${peers.join(', ')} × ${directions.join(', ')} × ${sizes.join(', ')} B, ${warmupS}+${windowS} s, ` +
    `reps ${reps}, ${facts.nproc} CPUs, load ${facts.loadAvg1}${values.packed ? ', packed virtqueues' : ''}`);
  const workDir = mkdtempSync(join(tmpdir(), 'bench-net-'));
  let cells: NetCell[];
  try {
    cells = await runMatrix({
      peers, directions, frameSizes: sizes, reps, warmupS, windowS, ringSize, guestCpu, hostCpu, pollUs, workDir, packed: values.packed,
      log: (l) => console.error(l),
    });
  } finally {
    rmSync(workDir, { recursive: true, force: true });
  }
  const argv = process.argv.slice(2);
  saved = {
    facts, loadEnd: Math.round(loadavg()[0] * 100) / 100, cells, command: `npm run bench:net${argv.length > 0 ? ` -- ${argv.join(' ')}` : ''}`,
    warmupS, windowS, reps, ringSize, guestCpu, hostCpu, pollUs, testpmdVersion: testpmdVersion(),
  };
}

console.log(consoleTable(saved.cells));
if (values.json !== undefined) writeFileSync(values.json, `${JSON.stringify(saved, null, 2)}\n`);
const failed = saved.cells.filter((c) => c.result === null).length;
// The docs' table is the split-ring one: a packed run only prints (and saves with --json).
if (!quick && !values['no-docs'] && !values.packed) {
  const svgRel = 'img/bench-net.svg';
  writeFileSync(join(REPO_ROOT, 'docs', svgRel), chart(saved.cells));
  const notesPath = join(REPO_ROOT, 'bench/src/net/findings.md');
  const notes = existsSync(notesPath) ? readFileSync(notesPath, 'utf8') : '';
  replaceSection(join(REPO_ROOT, 'docs/benchmarks.md'), 'virtio-net', markdownSection({ ...saved, svgRel, notes }));
  console.error('wrote docs/benchmarks.md (section virtio-net) and docs/img/bench-net.svg');
}
if (failed > 0) {
  console.error(`${failed} failed cells`);
  process.exit(1);
}
