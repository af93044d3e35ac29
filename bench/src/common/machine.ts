/**
 * Facts about the machine and the tree a benchmark ran on, printed next to every result so
 * numbers are never quoted without their context.
 * @module
 */
import { execFileSync } from 'node:child_process';
import { accessSync, constants, readFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { delimiter, join } from 'node:path';

/** Finds an executable on PATH (plus the sbin directories). */
export function which(name: string): string | null {
  const dirs = (process.env.PATH ?? '').split(delimiter).concat(['/usr/sbin', '/sbin', '/usr/bin', '/bin']);
  for (const d of dirs) {
    if (d === '') continue;
    const p = join(d, name);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch { /* next */ }
  }
  return null;
}

function run(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return '';
  }
}

/** What the results depend on. */
export interface MachineFacts {
  nproc: number;
  cpuModel: string;
  memGiB: number;
  kernel: string;
  node: string;
  qsdVersion: string;
  gitCommit: string;
  gitDirty: boolean;
  loadAvg1: number;
  date: string;
}

/** Collects the facts (cheap; a few short commands). */
export function machineFacts(repoRoot: string): MachineFacts {
  let kernel = '';
  try { kernel = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(); } catch { kernel = run('uname', ['-r']); }
  const qsd = which('qemu-storage-daemon');
  return {
    nproc: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    memGiB: Math.round(totalmem() / 2 ** 30),
    kernel,
    node: process.version,
    qsdVersion: qsd === null ? 'absent' : (run(qsd, ['--version']).split('\n')[0] ?? ''),
    gitCommit: run('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD']),
    gitDirty: run('git', ['-C', repoRoot, 'status', '--porcelain', '--', 'packages']) !== '',
    loadAvg1: Math.round(loadavg()[0] * 100) / 100,
    date: new Date().toISOString(),
  };
}
