/**
 * The C load generator (bench/c/blk-loadgen.c): the same workload, flags and result line as
 * `loadgen.ts`, for cells where the TypeScript front-end would be the bottleneck (`npm run
 * bench:blk -- --loadgen c`). Built with the system C compiler on first use and whenever the
 * source is newer than the binary.
 * @module
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../common/child.js';

const SOURCE = join(REPO_ROOT, 'bench/c/blk-loadgen.c');
const BINARY = join(REPO_ROOT, 'bench/build/blk-loadgen');

/** The C compiler used: `$CC`, else `cc`. */
export function cCompiler(): string {
  return process.env.CC ?? 'cc';
}

/** Path of the compiled load generator; compiles it when missing or stale (throws with the compiler's message). */
export function cLoadgenPath(): string {
  if (existsSync(BINARY) && statSync(BINARY).mtimeMs >= statSync(SOURCE).mtimeMs) return BINARY;
  mkdirSync(join(REPO_ROOT, 'bench/build'), { recursive: true });
  const cc = cCompiler();
  try {
    execFileSync(cc, ['-O2', '-Wall', '-Wextra', '-o', BINARY, SOURCE], { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: Buffer; message: string };
    throw new Error(`cannot build the C load generator with ${cc}: ${err.stderr?.toString().trim() || err.message}`);
  }
  return BINARY;
}
