/**
 * Runs the virtio-net matrix: direction × frame size × peer, `reps` times each with the peer
 * order rotated per rep, a fresh pair of processes per run; keeps the median run per cell.
 * @module
 */
import { runOnce, type Direction, type NetPeer, type RunResult } from './run-once.js';
import { median } from '../common/median.js';

/** Options of {@link runMatrix}. */
export interface MatrixOptions {
  peers: readonly NetPeer[];
  directions: readonly Direction[];
  frameSizes: readonly number[];
  reps: number;
  warmupS: number;
  windowS: number;
  ringSize: number;
  guestCpu: number;
  hostCpu: number;
  /** Budget of the vhost-ts-poll peer, µs. */
  pollUs: number;
  /** Packed virtqueues (RunOptions.packed). */
  packed?: boolean;
  workDir: string;
  log(line: string): void;
}

/** One cell: the median run and every rep's rate. */
export interface NetCell {
  peer: NetPeer;
  direction: Direction;
  frameSize: number;
  /** Median run by Mpps, null when every rep failed. */
  result: RunResult | null;
  repMpps: number[];
  failures: string[];
}


/** Runs every cell. */
export async function runMatrix(o: MatrixOptions): Promise<NetCell[]> {
  const cells: NetCell[] = [];
  let n = 0;
  for (const direction of o.directions) {
    for (const frameSize of o.frameSizes) {
      const runs = new Map<NetPeer, { results: RunResult[]; failures: string[] }>();
      for (const p of o.peers) runs.set(p, { results: [], failures: [] });
      for (let rep = 0; rep < o.reps; rep++) {
        const order = o.peers.map((_, i) => o.peers[(i + rep) % o.peers.length]);
        for (const peer of order) {
          const slot = runs.get(peer)!;
          const what = `${direction} ${String(frameSize).padStart(4)}B ${peer.padEnd(13)} rep ${rep + 1}/${o.reps}`;
          try {
            const r = await runOnce({
              peer, direction, frameSize, warmupS: o.warmupS, windowS: o.windowS, ringSize: o.ringSize,
              guestCpu: o.guestCpu, hostCpu: o.hostCpu, workDir: o.workDir, tag: `${process.pid}-${n++}`, pollUs: o.pollUs, packed: o.packed,
            });
            slot.results.push(r);
            const cpu = r.hostNsPerFrame === null ? '' : `, back-end ${r.hostNsPerFrame.toFixed(0)} ns CPU/frame`;
            o.log(`${what}: ${r.mpps.toFixed(3)} Mpps (guest ${r.guestFrames}, host ${r.hostFrames ?? '?'}${cpu}, load ${r.loadAvg1})`);
          } catch (e) {
            slot.failures.push((e as Error).message);
            o.log(`${what}: FAILED ${(e as Error).message.slice(0, 400)}`);
          }
        }
      }
      for (const peer of o.peers) {
        const { results, failures } = runs.get(peer)!;
        cells.push({ peer, direction, frameSize, result: median(results, (r) => r.mpps), repMpps: results.map((r) => r.mpps), failures });
      }
    }
  }
  return cells;
}
