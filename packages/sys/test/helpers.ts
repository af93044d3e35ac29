// Shared test helpers (not a test file: no .test.ts suffix).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { SysError } from '../src/index.js';

/** A fresh temporary directory removed at the end of `t`. */
export function tempDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'vts-sys-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Asserts that `fn` throws a SysError with `code` (and `syscall`, when given). */
export function throwsSys(t: Test, fn: () => unknown, code: string, syscall?: string, msg?: string): void {
  let caught: unknown = null;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  t.ok(caught instanceof SysError, `${msg ?? code}: throws SysError (got ${String(caught)})`);
  if (caught instanceof SysError) {
    t.equal(caught.code, code, `${msg ?? code}: code`);
    t.ok(caught.errno > 0, `${msg ?? code}: errno is positive`);
    if (syscall !== undefined) t.equal(caught.syscall, syscall, `${msg ?? code}: syscall`);
  }
}

/** Resolves after `ms` milliseconds. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` on the event loop until true or `timeoutMs` passes. */
export async function waitFor(cond: () => boolean, timeoutMs = 2000): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) return false;
    await sleep(2);
  }
  return true;
}
