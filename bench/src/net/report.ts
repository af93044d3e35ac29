/**
 * Turns virtio-net bench cells into the console table, the ours/DPDK ratios against the issue's
 * targets, the "## virtio-net" section of docs/benchmarks.md and its SVG chart.
 * @module
 */
import type { MachineFacts } from '../common/machine.js';
import { renderBarChart } from '../common/svg-bars.js';
import type { NetCell } from './matrix.js';
import { isOurs, type Direction, type NetPeer } from './run-once.js';

/** Ours / DPDK targets of the issue, by frame size: 64 B ≥ 0.5, 1518 B ≥ 0.9. */
export function targetRatio(frameSize: number): number {
  return frameSize <= 64 ? 0.5 : 0.9;
}

/** One compared pair. */
export interface NetRatio {
  /** Our variant compared with DPDK. */
  peer: NetPeer;
  direction: Direction;
  frameSize: number;
  ours: number;
  dpdk: number;
  ratio: number;
  target: number;
  meets: boolean;
}

const DIR_NAME: Record<Direction, string> = { g2h: 'guest→host', h2g: 'host→guest' };

function find(cells: readonly NetCell[], peer: string, d: Direction, fs: number): NetCell | undefined {
  return cells.find((c) => c.peer === peer && c.direction === d && c.frameSize === fs);
}

/** ours / DPDK for every (our variant, direction, size) where both ran. */
export function ratios(cells: readonly NetCell[]): NetRatio[] {
  const out: NetRatio[] = [];
  const keys = [...new Set(cells.map((c) => `${c.direction}/${c.frameSize}`))];
  const ours = [...new Set(cells.map((c) => c.peer).filter(isOurs))];
  for (const peer of ours) {
    for (const k of keys) {
      const [d, s] = k.split('/') as [Direction, string];
      const fs = Number(s);
      const a = find(cells, peer, d, fs)?.result;
      const b = find(cells, 'dpdk-vhost', d, fs)?.result;
      if (!a || !b || b.mpps === 0) continue;
      const ratio = a.mpps / b.mpps;
      out.push({ peer, direction: d, frameSize: fs, ours: a.mpps, dpdk: b.mpps, ratio, target: targetRatio(fs), meets: ratio >= targetRatio(fs) });
    }
  }
  return out;
}

const pad = (s: string, n: number, right = false): string => (right ? s.padStart(n) : s.padEnd(n));

function spread(c: NetCell): string {
  return c.repMpps.length > 1 ? `${Math.min(...c.repMpps).toFixed(2)}–${Math.max(...c.repMpps).toFixed(2)}` : '';
}

/** Console table. */
export function consoleTable(cells: readonly NetCell[]): string {
  const L: string[] = [];
  L.push(`${pad('direction', 11)} ${pad('frame', 6, true)} ${pad('peer', 13)} ${pad('Mpps', 7, true)} ${pad('Gbit/s', 7, true)} ${pad('ns/frame', 8, true)} ${pad('reps', 11)} load`);
  for (const c of cells) {
    const r = c.result;
    if (r === null) {
      L.push(`${pad(DIR_NAME[c.direction], 11)} ${pad(String(c.frameSize), 6, true)} ${pad(c.peer, 13)} FAILED: ${(c.failures[0] ?? '').slice(0, 120)}`);
      continue;
    }
    L.push(`${pad(DIR_NAME[c.direction], 11)} ${pad(String(c.frameSize), 6, true)} ${pad(c.peer, 13)} ${pad(r.mpps.toFixed(3), 7, true)} ` +
      `${pad(r.gbps.toFixed(2), 7, true)} ${pad(r.hostNsPerFrame === null ? '' : r.hostNsPerFrame.toFixed(0), 8, true)} ${pad(spread(c), 11)} ${r.loadAvg1}`);
  }
  const rs = ratios(cells);
  if (rs.length > 0) {
    L.push('', `${pad('ours', 13)} ${pad('direction', 11)} ${pad('frame', 6, true)} ${pad('ours/DPDK', 10, true)} ${pad('target', 7, true)}`);
    for (const r of rs) {
      L.push(`${pad(r.peer, 13)} ${pad(DIR_NAME[r.direction], 11)} ${pad(String(r.frameSize), 6, true)} ${pad(r.ratio.toFixed(2), 10, true)} ${pad(`≥ ${r.target}`, 7, true)}  ${r.meets ? 'met' : 'MISSED'}`);
    }
  }
  return L.join('\n');
}

/** Inputs of the markdown section. */
export interface NetReportInput {
  cells: readonly NetCell[];
  facts: MachineFacts;
  /** Load average (1 min) when the run ended. */
  loadEnd: number;
  command: string;
  warmupS: number;
  windowS: number;
  reps: number;
  ringSize: number;
  guestCpu: number;
  hostCpu: number;
  pollUs: number;
  testpmdVersion: string;
  svgRel: string;
  notes: string;
}

/** The "## virtio-net" section (heading included). */
export function markdownSection(x: NetReportInput): string {
  const f = x.facts;
  const L: string[] = [];
  L.push('## virtio-net');
  L.push('');
  L.push('What it measures: frames per second through one virtio-net queue pair over vhost-user, with DPDK\'s');
  L.push('`dpdk-testpmd` and its virtio-user PMD as the guest (`--vdev net_virtio_user0,path=SOCK,queues=1`), against');
  L.push('two back-ends in the same run, a fresh pair of processes per run:');
  L.push('');
  L.push('- `vhost-ts` — our `VirtioNetDevice` (packages/devices-net, its real TX/RX paths) served by `VhostUserBackend`,');
  L.push('  `bench/src/net/ts-server.ts`. guest→host: the TX path copies every frame out of guest memory into a');
  L.push('  preallocated batch and a sink backend counts it; host→guest: a source backend hands one preallocated');
  L.push('  batch of frames to the RX path again and again, which copies them into whatever buffers the guest posted.');
  L.push('  Kick-driven, the device default: when the ring is empty it asks for a kick and sleeps in the event loop.');
  L.push(`- \`vhost-ts-poll\` — the same with \`pollUs: ${x.pollUs}\` (\`vhost-user-net --poll-us ${x.pollUs}\`): after a batch it spins on`);
  L.push(`  the ring, with notifications off, for an adaptive window of up to ${x.pollUs} µs before asking for a kick (the`);
  L.push('  `AdaptivePoller` of packages/vhost-user, shared with devices-blk; it yields to the event loop every 1 ms) —');
  L.push('  the closest our event-loop design gets to the vhost PMD\'s always-polling loop.');
  L.push('- `dpdk-vhost` — a second testpmd with DPDK\'s vhost PMD (`--vdev net_vhost0,iface=SOCK,queues=1`):');
  L.push('  `rxonly` for guest→host, `txonly` for host→guest.');
  L.push('');
  L.push('The guest runs `txonly` (guest→host) or `rxonly` (host→guest) with `--txpkts=<frame size>` (Ethernet');
  L.push('frame without CRC). The rate is read on the same instrument for both peers — the guest testpmd\'s');
  L.push('`show port stats 0` (TX-packets for guest→host, RX-packets for host→guest), once after the warm-up and');
  L.push('once after a fixed window; the back-end\'s own count over the whole run is checked against the guest\'s.');
  L.push(`Each side has one CPU: the guest\'s two lcores are \`--lcores 0@${x.guestCpu},1@${x.guestCpu}\`, the back-end is`);
  L.push(`\`taskset -c ${x.hostCpu}\` (ours) or \`--lcores 0@${x.hostCpu},1@${x.hostCpu}\` (DPDK); EAL runs with \`--no-huge -m 256 --no-pci\`,`);
  L.push(`rings of ${x.ringSize} descriptors, bursts of 32. "Back-end CPU ns/frame" is our process\'s CPU time over the window`);
  L.push('(`process.cpuUsage`, sampled on SIGUSR2 at both edges) per frame it handled — event-loop wake-ups and, for');
  L.push('`vhost-ts-poll`, the spinning included; it is far less sensitive to the shared machine than the rates.');
  L.push('DPDK\'s vhost PMD spins on its core all the time.');
  L.push('');
  L.push(`Machine: ${f.nproc} vCPUs (${f.cpuModel}), ${f.memGiB} GiB, kernel ${f.kernel}, Node ${f.node}, ${x.testpmdVersion};`);
  L.push(`commit ${f.gitCommit}${f.gitDirty ? ' (+ uncommitted changes under packages/)' : ''}, ${f.date}.`);
  // Two pinned pollers (the guest testpmd, and DPDK's vhost PMD or our back-end) keep the load
  // near 2 by themselves; more than that means other jobs shared the CPUs.
  const busy = Math.max(f.loadAvg1, x.loadEnd) > 2.5;
  L.push(`Load average ${f.loadAvg1} at the start and ${x.loadEnd} at the end (the two pinned pollers alone make ≈ 2)${busy ? ': **other jobs shared the 2 vCPUs**, so each' : '.'}`);
  if (busy) L.push('pinned poller got only part of its CPU and absolute rates are far below an idle machine\'s.');
  L.push('Even on a quiet machine rates move a lot between runs (the "runs" column; the vCPUs share physical cores with');
  L.push('other tenants): the ratios of medians from interleaved runs and the back-end CPU per frame are the meaningful figures.');
  L.push(`${x.warmupS} s warm-up + ${x.windowS} s window per run, median of ${x.reps} run${x.reps === 1 ? '' : 's'} (peer order rotated per rep).`);
  L.push('');
  L.push('```');
  L.push(x.command);
  L.push('```');
  L.push('');
  L.push('| direction | frame | peer | Mpps | Gbit/s | back-end CPU ns/frame | runs (Mpps) | guest frames / host frames |');
  L.push('|---|---:|---|---:|---:|---:|---|---|');
  for (const c of x.cells) {
    const r = c.result;
    if (r === null) {
      L.push(`| ${DIR_NAME[c.direction]} | ${c.frameSize} B | ${c.peer} | failed | | | | ${(c.failures[0] ?? '').replace(/\|/g, '/').replace(/\n/g, ' ').slice(0, 100)} |`);
      continue;
    }
    const check = r.hostFrames === null ? 'n/a' : `${r.guestFrames} / ${r.hostFrames}`;
    const ns = r.hostNsPerFrame === null ? (isOurs(c.peer) ? '' : 'polls 100 %') : r.hostNsPerFrame.toFixed(0);
    L.push(`| ${DIR_NAME[c.direction]} | ${c.frameSize} B | ${c.peer} | ${r.mpps.toFixed(3)} | ${r.gbps.toFixed(2)} | ${ns} | ${c.repMpps.map((v) => v.toFixed(2)).join(', ')} | ${check} |`);
  }
  const rs = ratios(x.cells);
  if (rs.length > 0) {
    L.push('');
    L.push('Ours / DPDK vhost PMD (targets: ≥ 0.5 at 64 B, ≥ 0.9 at 1518 B):');
    L.push('');
    L.push('| ours | direction | frame | ours Mpps | DPDK Mpps | ours/DPDK | target |');
    L.push('|---|---|---:|---:|---:|---:|---|');
    for (const r of rs) {
      L.push(`| ${r.peer} | ${DIR_NAME[r.direction]} | ${r.frameSize} B | ${r.ours.toFixed(3)} | ${r.dpdk.toFixed(3)} | ${r.ratio.toFixed(2)} | ≥ ${r.target}: ${r.meets ? 'met' : '**missed**'} |`);
    }
  }
  L.push('');
  L.push(`![virtio-net Mpps per direction and frame size](${x.svgRel})`);
  if (x.notes.trim() !== '') {
    L.push('');
    L.push(x.notes.trim());
  }
  L.push('');
  return L.join('\n');
}

const COLORS: Record<string, string> = { 'vhost-ts': '#1f77b4', 'vhost-ts-poll': '#6baed6', 'dpdk-vhost': '#ff7f0e' };

/** SVG chart: Mpps per (direction, frame size), one bar per peer. */
export function chart(cells: readonly NetCell[]): string {
  const keys = [...new Set(cells.map((c) => `${c.direction}/${c.frameSize}`))];
  const peers = [...new Set(cells.map((c) => c.peer))];
  return renderBarChart({
    title: 'virtio-net over vhost-user, testpmd virtio-user guest: Mpps (higher is better)',
    unit: 'frames per second',
    categories: keys.map((k) => {
      const [d, s] = k.split('/');
      return `${DIR_NAME[d as Direction]} ${s} B`;
    }),
    series: peers.map((p) => ({
      name: p, color: COLORS[p] ?? '#444',
      values: keys.map((k) => {
        const [d, s] = k.split('/');
        const r = find(cells, p, d as Direction, Number(s))?.result;
        return r ? r.mpps * 1e6 : null;
      }),
    })),
  });
}
