/**
 * What the soak watches in a back-end process: its open fds (`/proc/PID/fd`) and resident set
 * (`VmRSS` in `/proc/PID/status`), plus the small statistics the verdicts use.
 * @module
 */
import { readdirSync, readFileSync } from 'node:fs';

/** One sample of a process. */
export interface ProcSample {
  /** Milliseconds since the soak started. */
  readonly t: number;
  /** Progress marker when sampled (cycles done, or seconds of load). */
  readonly at: number;
  readonly fds: number;
  readonly rssKiB: number;
  /** Mappings of memfds (guest memory, inflight areas, logs) in `/proc/PID/maps`. */
  readonly memfdMaps: number;
}

/** Open fds of `pid`. */
export function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** VmRSS of `pid` in KiB. */
export function rssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (m === null) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]);
}

/** Mappings whose backing file is a memfd: a guest-memory mapping left behind shows here exactly. */
export function memfdMappings(pid: number): number {
  let n = 0;
  for (const line of readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) if (line.includes('/memfd:')) n++;
  return n;
}

/** Samples `pid` now. */
export function sample(pid: number, t0: number, at: number): ProcSample {
  return { t: Date.now() - t0, at, fds: fdCount(pid), rssKiB: rssKiB(pid), memfdMaps: memfdMappings(pid) };
}

/** Least-squares slope of y over x (0 for fewer than two points). */
export function slope(xs: readonly number[], ys: readonly number[]): number {
  const n = xs.length;
  if (n < 2) return 0;
  let sx = 0, sy = 0;
  for (let i = 0; i < n; i++) { sx += xs[i]; sy += ys[i]; }
  const mx = sx / n, my = sy / n;
  let num = 0, den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i] - mx) * (ys[i] - my);
    den += (xs[i] - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

/** Verdict on a series of samples. */
export interface Verdict {
  readonly ok: boolean;
  /** Human-readable findings, one per check. */
  readonly lines: string[];
  /** fd count at the first post-warm-up sample. */
  readonly fdBaseline: number;
  readonly fdMax: number;
  /** Most memfd mappings seen after warm-up. */
  readonly memfdMapsMax: number;
  readonly rssFirstKiB: number;
  readonly rssLastKiB: number;
  readonly rssMaxKiB: number;
  /** RSS growth the post-warm-up regression predicts over the measured span, KiB. */
  readonly rssTrendKiB: number;
}

/** Tolerances of {@link judge}. */
export interface Tolerance {
  /** Samples to ignore at the start (JIT, heap growth to its working size). */
  readonly warmup: number;
  /** fds (and memfd mappings) allowed above the first post-warm-up sample (0: every sample must equal it). */
  readonly fdSlack: number;
  /** Largest RSS growth over the measured span the trend may predict, KiB. */
  readonly rssTrendKiB: number;
  /** Idle fd / memfd-mapping counts to measure from (default: the first post-warm-up sample). */
  readonly baseline?: { readonly fds: number; readonly memfdMaps: number };
}

/**
 * memfd mappings: the same rule as fds.
 * fds: every post-warm-up sample within `fdSlack` of the first one, and the fd trend flat
 * (< 1 fd over the span). RSS: the least-squares trend over the post-warm-up samples, times
 * the span, below `rssTrendKiB` — a leak of a few hundred bytes per session shows as a steady
 * slope, while GC sawtooth averages out.
 */
export function judge(samples: readonly ProcSample[], tol: Tolerance, label: string): Verdict {
  const s = samples.slice(Math.min(tol.warmup, Math.max(0, samples.length - 2)));
  const lines: string[] = [];
  if (s.length < 2) return { ok: false, lines: [`${label}: too few samples (${samples.length})`], fdBaseline: 0, fdMax: 0, memfdMapsMax: 0, rssFirstKiB: 0, rssLastKiB: 0, rssMaxKiB: 0, rssTrendKiB: 0 };
  const xs = s.map((x) => x.at);
  const span = xs[xs.length - 1] - xs[0];
  const fdBaseline = tol.baseline?.fds ?? s[0].fds;
  const fdMax = Math.max(...s.map((x) => x.fds));
  const fdTrend = slope(xs, s.map((x) => x.fds)) * span;
  const rssTrend = slope(xs, s.map((x) => x.rssKiB)) * span;
  const rssMax = Math.max(...s.map((x) => x.rssKiB));
  const fdOk = fdMax - fdBaseline <= tol.fdSlack && Math.min(...s.map((x) => x.fds)) >= fdBaseline - tol.fdSlack && Math.abs(fdTrend) < 1 + tol.fdSlack;
  const rssOk = rssTrend < tol.rssTrendKiB;
  const maps = s.map((x) => x.memfdMaps);
  const memfdMapsMax = Math.max(...maps);
  const mapsBase = tol.baseline?.memfdMaps ?? maps[0];
  const mapsOk = memfdMapsMax - mapsBase <= tol.fdSlack && Math.min(...maps) >= mapsBase - tol.fdSlack && Math.abs(slope(xs, maps) * span) < 1 + tol.fdSlack;
  lines.push(`${label}: fds ${fdBaseline} → ${s[s.length - 1].fds} (max ${fdMax}, trend ${fdTrend.toFixed(2)} over the span, slack ${tol.fdSlack}) ${fdOk ? 'OK' : 'GROWING'}`);
  lines.push(`${label}: memfd mappings ${mapsBase} → ${maps[maps.length - 1]} (max ${memfdMapsMax}) ${mapsOk ? 'OK' : 'GROWING'}`);
  lines.push(`${label}: RSS ${(s[0].rssKiB / 1024).toFixed(1)} → ${(s[s.length - 1].rssKiB / 1024).toFixed(1)} MiB (max ${(rssMax / 1024).toFixed(1)}), ` +
    `trend ${(rssTrend / 1024).toFixed(2)} MiB over ${s.length} samples (limit ${(tol.rssTrendKiB / 1024).toFixed(1)}) ${rssOk ? 'OK' : 'GROWING'}`);
  return { ok: fdOk && mapsOk && rssOk, lines, fdBaseline, fdMax, memfdMapsMax, rssFirstKiB: s[0].rssKiB, rssLastKiB: s[s.length - 1].rssKiB, rssMaxKiB: rssMax, rssTrendKiB: rssTrend };
}
