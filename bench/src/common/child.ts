/**
 * Child processes of the system benches: start a back-end and wait for its socket, run a
 * one-line-result process, stop everything we started (and only that) — also when the bench
 * itself is interrupted.
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root (bench/src/common → ../../..). */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

/** Arguments that make `node` run a TypeScript entry of this repository from source. */
export function tsEntry(path: string): string[] {
  // BENCH_FROM_DIST=1: the packages load from their compiled dist/ (run `npx tsc -b` first), so
  // --cpu-prof profiles carry real line numbers (tsx's transformed sources report line 1).
  if (process.env.BENCH_FROM_DIST === '1') return ['--import', 'tsx', resolve(REPO_ROOT, path)];
  return ['--conditions=vhost-ts-source', '--import', 'tsx', resolve(REPO_ROOT, path)];
}

const live = new Set<ChildProcess>();
let hooked = false;

function killAll(): void {
  for (const c of live) {
    try { c.kill('SIGKILL'); } catch { /* gone */ }
  }
  live.clear();
}

function track(child: ChildProcess): void {
  if (!hooked) {
    hooked = true;
    process.on('exit', killAll);
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
      process.once(sig, () => {
        killAll();
        if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
      });
    }
  }
  live.add(child);
  child.once('exit', () => live.delete(child));
}

/** Optional CPU pinning: prefixes the command with `taskset -c CPUS`. */
function pinned(cmd: string, args: readonly string[], cpus: string | null): [string, string[]] {
  return cpus === null ? [cmd, [...args]] : ['taskset', ['-c', cpus, cmd, ...args]];
}

function exited(c: ChildProcess): boolean {
  return c.exitCode !== null || c.signalCode !== null;
}

/** A running back-end process. */
export interface RunningBackend {
  readonly argv: readonly string[];
  readonly child: ChildProcess;
  /** stdout + stderr so far. */
  logs(): string;
  /** SIGTERM, SIGKILL after `graceMs`; resolves once it exited. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * Starts `cmd args` (optionally pinned to `cpus`) and resolves once `socket` exists as a
 * unix socket. Rejects (after killing it) if it exits first or `timeoutMs` passes.
 */
export async function startListening(cmd: string, args: readonly string[], socket: string,
  opts: { cpus?: string | null; timeoutMs?: number } = {}): Promise<RunningBackend> {
  rmSync(socket, { force: true });
  const [c, a] = pinned(cmd, args, opts.cpus ?? null);
  const child = spawn(c, a, { stdio: ['ignore', 'pipe', 'pipe'], cwd: REPO_ROOT });
  track(child);
  let logs = '';
  child.stdout?.setEncoding('utf8').on('data', (s: string) => { logs += s; });
  child.stderr?.setEncoding('utf8').on('data', (s: string) => { logs += s; });
  let spawnError: Error | null = null;
  child.once('error', (e) => { spawnError = e; });
  const stop = async (graceMs = 3000): Promise<void> => {
    if (exited(child) || child.pid === undefined) return;
    const done = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGTERM');
    const t = setTimeout(() => { if (!exited(child)) child.kill('SIGKILL'); }, graceMs);
    await done;
    clearTimeout(t);
  };
  const backend: RunningBackend = { argv: [c, ...a], child, logs: () => logs, stop };
  const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
  for (;;) {
    try {
      if (statSync(socket).isSocket()) return backend;
    } catch { /* not yet */ }
    if (spawnError !== null || exited(child)) {
      await stop();
      throw new Error(`${[c, ...a].join(' ')} exited before listening (${spawnError ?? `code ${child.exitCode}`}): ${logs.trim()}`);
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`${[c, ...a].join(' ')} did not create ${socket} in time: ${logs.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Runs a process that prints one JSON line on stdout (a load generator) and resolves with
 * the parsed line, its exit code and stderr. Killed after `timeoutMs`.
 */
export function runJsonLine<T>(cmd: string, args: readonly string[],
  opts: { cpus?: string | null; timeoutMs: number }): Promise<{ line: T | null; code: number | null; stderr: string }> {
  const [c, a] = pinned(cmd, args, opts.cpus ?? null);
  const child = spawn(c, a, { stdio: ['ignore', 'pipe', 'pipe'], cwd: REPO_ROOT });
  track(child);
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => { out += s; });
  child.stderr.setEncoding('utf8').on('data', (s: string) => { err += s; });
  return new Promise((resolvePromise) => {
    const t = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
    child.once('error', (e) => { err += String(e); });
    child.once('close', (code) => {
      clearTimeout(t);
      const last = out.trim().split('\n').pop() ?? '';
      let line: T | null = null;
      try { line = last === '' ? null : JSON.parse(last) as T; } catch { line = null; }
      resolvePromise({ line, code, stderr: err });
    });
  });
}
