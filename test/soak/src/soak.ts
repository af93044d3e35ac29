/**
 * The soak runs: {@link runCycles} (many short full sessions, samples at idle) and
 * {@link runMixed} (bench-sized blk load and net traffic with reconnects, sampled every second).
 * Both watch the back-end CLI processes' fds and RSS and return the samples with a verdict.
 * @module
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runLoad, type LoadgenArgs } from '../../../bench/src/blk/run-load.js';
import type { LoadgenResult } from '../../../bench/src/blk/workload.js';
import { BLK_QUEUES, startSoakBackend, type SoakBackend, type SoakDevice } from './backend-process.js';
import { netTraffic, type NetCounters } from './net-traffic.js';
import { fdCount, judge, memfdMappings, sample, type ProcSample, type Tolerance, type Verdict } from './proc-stats.js';
import { blkSession, netSession } from './sessions.js';

/** Samples and verdict for one back-end. */
export interface DeviceReport {
  readonly device: SoakDevice;
  readonly samples: ProcSample[];
  readonly verdict: Verdict;
  /** fds when idle before the first and after the last session. */
  readonly idleFdsBefore: number;
  readonly idleFdsAfter: number;
  readonly exitCode: number | null;
  readonly work: string;
}

/** Waits (≤ `ms`) until the back-end's fd count is `want`; returns the count seen last. */
async function settleFds(pid: number, want: number, ms = 2000): Promise<number> {
  const end = Date.now() + ms;
  for (;;) {
    const n = fdCount(pid);
    if (n === want || Date.now() > end) return n;
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * Waits (≤ `ms`) until the back-end is idle: `fds` open and `maps` memfd mappings. A session
 * ends in steps — its fds close as its rings stop, its guest memory is unmapped after — so a
 * sample taken when the fd count is back can still see the last mapping (seen once in CI: one
 * sample of twenty with one mapping, none after). A leak keeps the count up past the wait.
 */
async function settleIdle(pid: number, fds: number, maps: number, ms = 2000): Promise<void> {
  await settleFds(pid, fds, ms);
  const end = Date.now() + ms;
  while (memfdMappings(pid) !== maps && Date.now() <= end) await new Promise((r) => setTimeout(r, 10));
}

async function withBackends<T>(devices: readonly SoakDevice[], fn: (b: Map<SoakDevice, SoakBackend>) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), 'vhost-ts-soak-'));
  const backends = new Map<SoakDevice, SoakBackend>();
  try {
    for (const d of devices) backends.set(d, await startSoakBackend(d, dir));
    return await fn(backends);
  } finally {
    for (const b of backends.values()) {
      if (b.child.exitCode === null) b.child.kill('SIGKILL');
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Options of {@link runCycles}. */
export interface CycleOptions {
  readonly devices: readonly SoakDevice[];
  readonly cycles: number;
  /** Sample every this many cycles (at idle: after the back-end closed the session). */
  readonly every: number;
  /** Cycles before the first sample counted (the verdict's warm-up is in samples: this / every). */
  readonly warmupCycles: number;
  readonly rssTrendKiB: number;
  readonly onSample?: (device: SoakDevice, s: ProcSample) => void;
}

/** Connect/disconnect cycles of full sessions, the devices side by side. */
export function runCycles(o: CycleOptions): Promise<DeviceReport[]> {
  return withBackends(o.devices, async (backends) => {
    const t0 = Date.now();
    return Promise.all([...backends.values()].map(async (b) => {
      const session = b.device === 'blk' ? blkSession : netSession;
      const idleFdsBefore = fdCount(b.pid);
      const idleMaps = memfdMappings(b.pid);
      const samples: ProcSample[] = [];
      for (let i = 1; i <= o.cycles; i++) {
        await session(b.socket, i);
        if (i % o.every === 0 || i === o.cycles) {
          await settleIdle(b.pid, idleFdsBefore, idleMaps);
          const s = sample(b.pid, t0, i);
          samples.push(s);
          o.onSample?.(b.device, s);
        }
      }
      const idleFdsAfter = await settleFds(b.pid, idleFdsBefore);
      const tol: Tolerance = { warmup: Math.ceil(o.warmupCycles / o.every), fdSlack: 0, rssTrendKiB: o.rssTrendKiB,
        baseline: { fds: idleFdsBefore, memfdMaps: idleMaps } };
      const verdict = judge(samples, tol, `${b.device} ${o.cycles} cycles`);
      const exitCode = await b.stop();
      return { device: b.device, samples, verdict, idleFdsBefore, idleFdsAfter, exitCode, work: `${o.cycles} sessions` };
    }));
  });
}

/** Options of {@link runMixed}. */
export interface MixedOptions {
  readonly seconds: number;
  /** Seconds of samples the verdict ignores. */
  readonly warmupSeconds: number;
  readonly rssTrendKiB: number;
  /** fds a live session may hold above the idle count. */
  readonly fdSlack: number;
  /** Length of each blk loadgen run and each net session, seconds. */
  readonly phaseSeconds: number;
  readonly onSample?: (device: SoakDevice, s: ProcSample) => void;
  readonly onLoad?: (r: LoadgenResult) => void;
}

/** Totals of the mixed load. */
export interface MixedWork {
  blkRuns: number;
  blkRequests: number;
  blkErrors: number;
  blkSessions: number;
  net: NetCounters;
}

const MIX: readonly Pick<LoadgenArgs, 'pattern' | 'blockSize' | 'queueDepth' | 'queues'>[] = [
  { pattern: 'randread', blockSize: 4096, queueDepth: 32, queues: BLK_QUEUES },
  { pattern: 'randwrite', blockSize: 4096, queueDepth: 32, queues: BLK_QUEUES },
  { pattern: 'read', blockSize: 65536, queueDepth: 8, queues: 1 },
  { pattern: 'write', blockSize: 65536, queueDepth: 8, queues: BLK_QUEUES },
];

/**
 * For `seconds`: the blk back-end takes the bench load generator's workloads in turn (a
 * fresh connection each, `phaseSeconds` long) with a short full session between them; the net
 * back-end carries bursts of frames in sessions of `phaseSeconds`. Both sampled every second.
 */
export function runMixed(o: MixedOptions): Promise<{ reports: DeviceReport[]; work: MixedWork }> {
  return withBackends(['blk', 'net'], async (backends) => {
    const blk = backends.get('blk')!;
    const net = backends.get('net')!;
    const idle = new Map<SoakDevice, number>([['blk', fdCount(blk.pid)], ['net', fdCount(net.pid)]]);
    const idleMaps = new Map<SoakDevice, number>([['blk', memfdMappings(blk.pid)], ['net', memfdMappings(net.pid)]]);
    const samples = new Map<SoakDevice, ProcSample[]>([['blk', []], ['net', []]]);
    const t0 = Date.now();
    const endAt = t0 + o.seconds * 1000;
    const work: MixedWork = { blkRuns: 0, blkRequests: 0, blkErrors: 0, blkSessions: 0, net: { sessions: 0, framesSent: 0, framesEchoed: 0 } };
    const timer = setInterval(() => {
      for (const b of [blk, net]) {
        const s = sample(b.pid, t0, Math.round((Date.now() - t0) / 1000));
        samples.get(b.device)!.push(s);
        o.onSample?.(b.device, s);
      }
    }, 1000);
    try {
      const blkLoop = async (): Promise<void> => {
        for (let i = 0; Date.now() < endAt; i++) {
          const left = (endAt - Date.now()) / 1000;
          const spec = MIX[i % MIX.length];
          const r = await runLoad({ ...spec, socket: blk.socket, queueSize: 256, durationS: Math.max(0.2, Math.min(o.phaseSeconds, left - 0.3)),
            warmupS: 0.2, seed: i + 1, eventIdx: i % 2 === 0 });
          o.onLoad?.(r);
          work.blkRuns++;
          work.blkRequests += r.requests;
          work.blkErrors += r.errors + (r.ok ? 0 : 1);
          if (Date.now() < endAt) {
            await blkSession(blk.socket, i);
            work.blkSessions++;
          }
        }
      };
      const netLoop = async (): Promise<void> => {
        while (Date.now() < endAt) await netTraffic(net.socket, Math.min(endAt, Date.now() + o.phaseSeconds * 1000), work.net);
      };
      await Promise.all([blkLoop(), netLoop()]);
    } finally {
      clearInterval(timer);
    }
    const reports: DeviceReport[] = [];
    for (const b of [blk, net]) {
      const idleFdsAfter = await settleFds(b.pid, idle.get(b.device)!);
      const s = samples.get(b.device)!;
      const verdict = judge(s, { warmup: o.warmupSeconds, fdSlack: o.fdSlack, rssTrendKiB: o.rssTrendKiB,
        baseline: { fds: idle.get(b.device)!, memfdMaps: idleMaps.get(b.device)! } }, `${b.device} mixed ${o.seconds} s`);
      const exitCode = await b.stop();
      reports.push({ device: b.device, samples: s, verdict, idleFdsBefore: idle.get(b.device)!, idleFdsAfter, exitCode,
        work: b.device === 'blk' ? `${work.blkRuns} loadgen runs, ${work.blkRequests} requests, ${work.blkSessions} extra sessions`
          : `${work.net.sessions} sessions, ${work.net.framesSent} frames sent, ${work.net.framesEchoed} echoed` });
    }
    return { reports, work };
  });
}
