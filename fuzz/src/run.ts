/**
 * Running targets: bounded or time-boxed campaigns, reproducible seeds, regression files.
 * @module
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import type { FuzzTarget } from './targets/index.js';

/** Folder of saved failing cases (replayed by the tests). */
export const REGRESSIONS_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'regressions');

/** A saved failing case. */
export interface Regression {
  target: string;
  seed: number;
  /** fast-check counterexample path: replays exactly the shrunk case. */
  path?: string;
  /** Human note: what failed and (later) what fixed it. */
  note?: string;
  /** The shrunk counterexample as fast-check printed it. */
  counterexample?: string;
}

export interface RunOptions {
  numRuns?: number;
  seed?: number;
  path?: string;
  /** Stop after this many milliseconds (the campaign is then "interrupted", not failed). */
  timeMs?: number;
}

/** Seed from FUZZ_SEED, or a fresh one. */
export function defaultSeed(): number {
  const env = process.env.FUZZ_SEED;
  return env !== undefined && env !== '' ? Number(env) : (Date.now() ^ (Math.random() * 0x7fffffff)) | 0;
}

/** Runs a target (sync or async property); never rejects, resolves to fast-check's details. */
export async function checkTarget(target: FuzzTarget, opts: RunOptions = {}): Promise<fc.RunDetails<unknown[]>> {
  const params: fc.Parameters<unknown[]> = {
    seed: opts.seed ?? defaultSeed(),
    numRuns: opts.numRuns ?? target.testRuns,
  };
  if (opts.path !== undefined) params.path = opts.path;
  if (opts.timeMs !== undefined) {
    params.interruptAfterTimeLimit = opts.timeMs;
    params.markInterruptAsFailure = false;
  }
  const prop = target.property();
  // fc.check returns a promise for async properties and the details for sync ones.
  return prop.isAsync() ? await fc.check(prop as fc.IAsyncProperty<unknown[]>, params)
    : fc.check(prop as fc.IProperty<unknown[]>, params);
}

/** Multi-line report of a failed run, with the seed and path to replay it. */
export function failureReport(target: FuzzTarget, d: fc.RunDetails<unknown[]>): string {
  return [
    `${target.name} FAILED after ${d.numRuns} runs (seed ${d.seed}, path "${d.counterexamplePath ?? ''}")`,
    `replay: npm run fuzz -- --target ${target.name} --seed ${d.seed}${d.counterexamplePath ? ` --path ${d.counterexamplePath}` : ''}`,
    `counterexample: ${fc.stringify(d.counterexample)}`,
    `error: ${d.errorInstance instanceof Error ? d.errorInstance.stack ?? d.errorInstance.message : String(d.errorInstance)}`,
  ].join('\n');
}

/** Saves a failing run as a regression file; returns its path. */
export function saveRegression(target: FuzzTarget, d: fc.RunDetails<unknown[]>): string {
  mkdirSync(REGRESSIONS_DIR, { recursive: true });
  const reg: Regression = {
    target: target.name,
    seed: d.seed,
    path: d.counterexamplePath ?? undefined,
    note: d.errorInstance instanceof Error ? d.errorInstance.message : String(d.errorInstance),
    counterexample: fc.stringify(d.counterexample),
  };
  const file = join(REGRESSIONS_DIR, `${target.name}-${d.seed >>> 0}.json`);
  writeFileSync(file, `${JSON.stringify(reg, null, 2)}\n`);
  return file;
}

/** Saved regressions of one target. */
export function regressionsFor(name: string): Array<{ file: string; reg: Regression }> {
  let files: string[];
  try { files = readdirSync(REGRESSIONS_DIR); } catch { return []; }
  return files.filter((f) => f.endsWith('.json')).map((f) => ({
    file: f, reg: JSON.parse(readFileSync(join(REGRESSIONS_DIR, f), 'utf8')) as Regression,
  })).filter((x) => x.reg.target === name);
}
