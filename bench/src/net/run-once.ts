/**
 * One measured run of the virtio-net bench: a back-end (ours or DPDK's vhost PMD) on one CPU,
 * testpmd with virtio-user as the guest on the other, warm-up, then the front-end's port
 * counters read twice around a fixed window.
 *
 * ```
 *  CPU 0: testpmd (virtio-user)  ──vhost-user socket──  CPU 1: back-end
 *         g→h: txonly                                     ours: TX path → sink      DPDK: vhost PMD rxonly
 *         h→g: rxonly                                     ours: source → RX path    DPDK: vhost PMD txonly
 * ```
 * The rate is always read on the same instrument — the front-end's port counters (TX-packets
 * for g→h: frames the back-end took off the ring; RX-packets for h→g: frames it put in) — so
 * both peers are measured the same way. The back-end's own count is returned as a cross-check.
 * @module
 */
import { rmSync, statSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { startListening, tsEntry, type RunningBackend } from '../common/child.js';
import { findTestpmd, Testpmd } from './testpmd.js';

/** Traffic direction, named from the guest. */
export type Direction = 'g2h' | 'h2g';
/**
 * Back-end peers: ours kick-driven (the device default), ours busy-polling the ring for
 * {@link RunOptions.pollUs} after each batch, DPDK's vhost PMD (which always busy-polls).
 */
export type NetPeer = 'vhost-ts' | 'vhost-ts-poll' | 'dpdk-vhost';

/** True for our back-end's variants. */
export function isOurs(p: NetPeer): boolean {
  return p !== 'dpdk-vhost';
}

/** What one run needs. */
export interface RunOptions {
  peer: NetPeer;
  direction: Direction;
  /** Ethernet frame bytes (CRC excluded), e.g. 64 or 1518. */
  frameSize: number;
  warmupS: number;
  windowS: number;
  ringSize: number;
  /** CPU of the front-end and of the back-end. */
  guestCpu: number;
  hostCpu: number;
  /** Directory for the socket. */
  workDir: string;
  /** Unique tag for DPDK file prefixes. */
  tag: string;
  /** Longest adaptive busy-poll window in µs of the `vhost-ts-poll` peer (default 1000). */
  pollUs?: number;
  /** virtio-user asks for packed virtqueues (`packed_vq=1`; every back-end here offers them). */
  packed?: boolean;
}

/** Result of one run. */
export interface RunResult {
  peer: NetPeer;
  direction: Direction;
  frameSize: number;
  /** Million frames per second over the window (front-end counters). */
  mpps: number;
  /** Ethernet payload Gbit/s over the window (frames × frameSize × 8). */
  gbps: number;
  /** Window length actually measured, seconds. */
  seconds: number;
  /** Frames the front-end sent (g→h) or received (h→g) over the whole run. */
  guestFrames: number;
  /** Frames the back-end counted over the whole run (sink/RX counter, or the vhost PMD's). */
  hostFrames: number | null;
  /** Our device's port counters (vhost-ts only). */
  device: Record<string, number> | null;
  /** 1-minute load average when the window ended (the machine is shared). */
  loadAvg1: number;
  /** CPU seconds our back-end process used over its whole life (vhost-ts only). */
  hostCpuSeconds: number | null;
  /** Our back-end's CPU time per frame over the window, ns (vhost-ts only; polling counts as busy). */
  hostNsPerFrame: number | null;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitSocket(path: string, alive: () => boolean, what: () => string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (statSync(path).isSocket()) return;
    } catch { /* not yet */ }
    if (!alive()) throw new Error(`back-end exited before listening: ${what().slice(-1500)}`);
    if (Date.now() > deadline) throw new Error(`back-end did not create ${path}: ${what().slice(-1500)}`);
    await sleep(20);
  }
}

/** A started back-end, either kind. */
interface Host {
  /** Asks our back-end to log its CPU time and frame count now (no-op for DPDK). */
  mark(): void;
  /** CPU ns per frame between the first two marks, or null. */
  nsPerFrame(): number | null;
  stop(): Promise<{ frames: number | null; device: Record<string, number> | null; cpuSeconds: number | null }>;
  kill(): Promise<void>;
  logs(): string;
}

async function startOurs(o: RunOptions, socket: string): Promise<Host> {
  const mode = o.direction === 'g2h' ? 'sink' : 'source';
  // BENCH_NET_NODE_ARGS: extra node flags for our back-end, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".
  const extra = (process.env.BENCH_NET_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const b: RunningBackend = await startListening(process.execPath, [...extra, ...tsEntry('bench/src/net/ts-server.ts'),
    '--socket', socket, '--mode', mode, '--frame-size', String(o.frameSize), '--queue-size', String(o.ringSize), '--poll-us', String(o.peer === 'vhost-ts-poll' ? (o.pollUs ?? 1000) : 0)],
  socket, { cpus: String(o.hostCpu) });
  return {
    logs: () => b.logs(),
    mark: () => { if (b.child.pid !== undefined) process.kill(b.child.pid, 'SIGUSR2'); },
    nsPerFrame: () => {
      const marks = b.logs().split('\n').filter((l) => l.startsWith('{"mark"'))
        .map((l) => (JSON.parse(l) as { mark: { cpuSeconds: number; frames: number } }).mark);
      if (marks.length < 2 || marks[1].frames === marks[0].frames) return null;
      return ((marks[1].cpuSeconds - marks[0].cpuSeconds) * 1e9) / (marks[1].frames - marks[0].frames);
    },
    kill: () => b.stop(0),
    stop: async () => {
      await b.stop(10_000);
      const line = b.logs().split('\n').find((l) => l.startsWith('{"device"'));
      if (line === undefined) return { frames: null, device: null, cpuSeconds: null };
      const j = JSON.parse(line) as { device: Record<string, number>; sink: { frames: number } | null; cpuSeconds: number };
      return { frames: o.direction === 'g2h' ? (j.sink?.frames ?? null) : j.device.rxFrames, device: j.device, cpuSeconds: j.cpuSeconds };
    },
  };
}

async function startDpdk(o: RunOptions, socket: string, bin: string): Promise<Host> {
  rmSync(socket, { force: true });
  const t = new Testpmd(bin, {
    cpu: o.hostCpu, filePrefix: `bn-h-${o.tag}`, vdev: `net_vhost0,iface=${socket},queues=1`,
    forwardMode: o.direction === 'g2h' ? 'rxonly' : 'txonly', frameSize: o.frameSize, ringSize: o.ringSize, interactive: false,
  });
  await waitSocket(socket, () => !t.exited, () => t.output).catch(async (e: unknown) => {
    await t.kill();
    throw e;
  });
  return {
    logs: () => t.output,
    mark: () => {},
    nsPerFrame: () => null,
    kill: () => t.kill(),
    stop: async () => {
      const r = await t.quit();
      const f = r.fwd;
      return { frames: f === null ? null : (o.direction === 'g2h' ? f.rx : f.tx), device: null, cpuSeconds: null };
    },
  };
}

/** Runs one measurement. Throws with the processes' output on failure. */
export async function runOnce(o: RunOptions): Promise<RunResult> {
  const bin = findTestpmd();
  if (bin === null) throw new Error('dpdk-testpmd not found (apt-get install dpdk)');
  const socket = join(o.workDir, `net-${o.tag}.sock`);
  const host = isOurs(o.peer) ? await startOurs(o, socket) : await startDpdk(o, socket, bin);
  let guest: Testpmd | null = null;
  try {
    guest = new Testpmd(bin, {
      cpu: o.guestCpu, filePrefix: `bn-g-${o.tag}`, vdev: `net_virtio_user0,path=${socket},queues=1${o.packed === true ? ',packed_vq=1' : ''}`,
      forwardMode: o.direction === 'g2h' ? 'txonly' : 'rxonly', frameSize: o.frameSize, ringSize: o.ringSize, interactive: true,
    });
    await guest.ready();
    await guest.start();
    await sleep(o.warmupS * 1000);
    const s0 = await guest.stats();
    host.mark();
    await sleep(o.windowS * 1000);
    const s1 = await guest.stats();
    host.mark();
    const loadAvg1 = Math.round(loadavg()[0] * 100) / 100;
    const seconds = (s1.at - s0.at) / 1000;
    const frames = o.direction === 'g2h' ? s1.txPackets - s0.txPackets : s1.rxPackets - s0.rxPackets;
    const q = await guest.quit();
    if (q.code !== 0) throw new Error(`testpmd (virtio-user) exited ${q.code}: ${guest.output.slice(-1500)}`);
    const guestFrames = q.fwd === null ? 0 : (o.direction === 'g2h' ? q.fwd.tx : q.fwd.rx);
    // The front-end stopped the rings before exiting; let the back-end see the session end.
    await sleep(200);
    const h = await host.stop();
    const hostNsPerFrame = host.nsPerFrame();
    const mpps = frames / seconds / 1e6;
    return {
      peer: o.peer, direction: o.direction, frameSize: o.frameSize, mpps, gbps: (mpps * 1e6 * o.frameSize * 8) / 1e9,
      seconds, guestFrames, hostFrames: h.frames, device: h.device, loadAvg1, hostCpuSeconds: h.cpuSeconds, hostNsPerFrame,
    };
  } catch (e) {
    const g = guest === null ? '' : `\n--- guest testpmd ---\n${guest.output.slice(-1500)}`;
    await guest?.kill();
    await host.kill();
    throw new Error(`${(e as Error).message}${g}\n--- back-end ---\n${host.logs().slice(-1500)}`);
  }
}
