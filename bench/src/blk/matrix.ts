/**
 * Runs the matrix: for every workload, every rep and every peer, a fresh back-end process and
 * a fresh load-generator process; collects the JSON lines.
 * @module
 */
import { closeSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { runJsonLine, tsEntry } from '../common/child.js';
import { median, medianValue } from '../common/median.js';
import { cLoadgenPath } from './c-loadgen.js';
import { peerById, type PeerContext, type PeerId } from './peers.js';
import type { LoadgenResult, WorkloadSpec } from './workload.js';

/** Options of a matrix run. */
export interface MatrixOptions {
  peers: readonly PeerId[];
  workloads: readonly { name: string; spec: WorkloadSpec }[];
  durationS: number;
  warmupS: number;
  reps: number;
  queueSize: number;
  /** Back-end size in bytes (image file and null disks). */
  sizeBytes: number;
  /** Pin load generator and back-end to different CPUs. */
  pin: boolean;
  qsdAio: string;
  /** Busy-poll bound of our peers (µs), or null for their default. */
  pollUs: number | null;
  /** Null peers' read-zeroes (PeerContext.nullReadZeroes; default true). */
  nullReadZeroes?: boolean;
  /** Load generator: the TypeScript one (`loadgen.ts`) or the C one (`bench/c/blk-loadgen.c`). */
  loadgen: 'ts' | 'c';
  /** Directory of the socket. */
  workDir: string;
  /** Directory of the file peers' image (default /dev/shm: tmpfs). */
  imageDir?: string;
  /** File peers open the image with O_DIRECT (ours `--direct`, QSD `cache.direct=on`). */
  direct?: boolean;
  /** Progress lines. */
  log(line: string): void;
}

/** One measured cell (a median over reps when reps > 1). */
export interface Cell {
  peer: PeerId;
  workload: string;
  spec: WorkloadSpec;
  /** The median run by IOPS (null when every rep failed). */
  result: LoadgenResult | null;
  /** IOPS of each rep, for the spread. */
  repIops: number[];
  /**
   * p99 latency of each rep, µs (absent in JSON written before it was recorded). The cell's
   * p99 is their median: taking the median-IOPS rep's own p99 compared different reps of the
   * two peers and let one slow rep decide.
   */
  repP99?: number[];
  /** Failure messages of failed reps. */
  failures: string[];
}

/** The cell's p99 in µs: the median of its reps' p99s (see Cell.repP99), else its median rep's. */
export function cellP99(c: Cell): number {
  const ps = c.repP99;
  if (ps === undefined || ps.length === 0) return c.result === null ? 0 : c.result.latUs.p99;
  return medianValue(ps);
}

/** Creates a fully written (not sparse) image, so reads and writes hit real pages or blocks. */
export function makeImage(path: string, sizeBytes: number): void {
  const fd = openSync(path, 'w');
  try {
    const chunk = Buffer.alloc(1 << 20, 0x6b);
    for (let off = 0; off < sizeBytes; off += chunk.length) writeSync(fd, chunk, 0, Math.min(chunk.length, sizeBytes - off), off);
  } finally {
    closeSync(fd);
  }
}

/** CPU seconds (user + system, all threads) of process `pid` from /proc, or -1. */
export function processCpuSeconds(pid: number): number {
  if (pid <= 0) return -1;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised command name (which may contain spaces): utime is field
    // 14, stime 15 (proc(5)), in clock ticks — 100 per second on Linux.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) / 100;
  } catch {
    return -1;
  }
}

/** Runs one cell once: back-end up, load generator, back-end down. */
export async function runOnce(peerId: PeerId, spec: WorkloadSpec, ctx: PeerContext,
  o: Pick<MatrixOptions, 'durationS' | 'warmupS' | 'pin' | 'queueSize' | 'loadgen'>): Promise<LoadgenResult> {
  const peer = peerById(peerId);
  const backend = await peer.start({ ...ctx, queues: spec.queues });
  try {
    const flags = ['--socket', ctx.socket, '--pattern', spec.pattern,
      '--bs', String(spec.blockSize), '--qd', String(spec.queueDepth), '--queues', String(spec.queues),
      '--queue-size', String(o.queueSize), '--duration', String(o.durationS), '--warmup', String(o.warmupS)];
    const cmd = o.loadgen === 'c' ? cLoadgenPath() : process.execPath;
    const args = o.loadgen === 'c' ? flags : [...tsEntry('bench/src/blk/loadgen.ts'), ...flags];
    const pid = backend.child.pid ?? -1;
    const cpu0 = processCpuSeconds(pid);
    const t0 = performance.now();
    const r = await runJsonLine<LoadgenResult>(cmd, args,
      { cpus: o.pin ? '0' : null, timeoutMs: (o.durationS + o.warmupS) * 1000 + 30_000 });
    const cpu1 = processCpuSeconds(pid);
    const wall = (performance.now() - t0) / 1000;
    if (r.line === null) throw new Error(`loadgen printed no result (exit ${r.code}): ${r.stderr.trim().slice(0, 500)}`);
    if (!r.line.ok) throw new Error(`loadgen: ${r.line.error ?? 'failed'}; back-end log: ${backend.logs().trim().slice(-500)}`);
    if (cpu0 >= 0 && cpu1 >= 0 && wall > 0) r.line.backendCpu = Math.round(((cpu1 - cpu0) / wall) * 1000) / 1000;
    return r.line;
  } finally {
    await backend.stop();
  }
}

/** Runs the whole matrix. */
export async function runMatrix(o: MatrixOptions): Promise<Cell[]> {
  const image = `${o.imageDir ?? '/dev/shm'}/vtbench-blk-${process.pid}.img`;
  const needsImage = o.peers.some((p) => p.endsWith('-file'));
  if (needsImage) makeImage(image, o.sizeBytes);
  const ctx: PeerContext = {
    socket: `${o.workDir}/blk.sock`, image, sizeBytes: o.sizeBytes, queues: 1, queueSize: o.queueSize,
    cpus: o.pin ? '1' : null, qsdAio: o.qsdAio, pollUs: o.pollUs, nullReadZeroes: o.nullReadZeroes, direct: o.direct ?? false,
  };
  const cells: Cell[] = [];
  try {
    for (const w of o.workloads) {
      const runs = new Map<PeerId, { results: LoadgenResult[]; failures: string[] }>();
      for (const p of o.peers) runs.set(p, { results: [], failures: [] });
      for (let rep = 0; rep < o.reps; rep++) {
        // Rotate the peer order each rep so slow drift of the machine does not favour one peer.
        const order = o.peers.map((_, i) => o.peers[(i + rep) % o.peers.length]);
        for (const p of order) {
          const slot = runs.get(p)!;
          try {
            const r = await runOnce(p, w.spec, ctx, o);
            slot.results.push(r);
            o.log(`${w.name.padEnd(18)} ${p.padEnd(14)} rep ${rep + 1}/${o.reps}: ${r.iops} IOPS, p99 ${r.latUs.p99} µs, errors ${r.errors}`);
          } catch (e) {
            slot.failures.push((e as Error).message);
            o.log(`${w.name.padEnd(18)} ${p.padEnd(14)} rep ${rep + 1}/${o.reps}: FAILED ${(e as Error).message.slice(0, 300)}`);
          }
        }
      }
      for (const p of o.peers) {
        const { results, failures } = runs.get(p)!;
        cells.push({
          peer: p, workload: w.name, spec: w.spec,
          result: median(results, (r) => r.iops),
          repIops: results.map((r) => r.iops), repP99: results.map((r) => r.latUs.p99), failures,
        });
      }
    }
  } finally {
    if (needsImage) rmSync(image, { force: true });
  }
  return cells;
}
