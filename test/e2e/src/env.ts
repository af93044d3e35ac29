/**
 * Detects what the end-to-end tests need on the host (QEMU, a guest kernel with its modules,
 * busybox, qemu-storage-daemon) and applies the one rule every e2e test follows:
 * a missing prerequisite SKIPS the test, except under `E2E=1` (CI), where it FAILS — CI
 * installs everything, so a missing piece there is a broken machine, not an optional feature.
 */
import { accessSync, constants, existsSync, readdirSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { Test } from 'tap';

/** A guest kernel image together with its module tree. */
export interface KernelInfo {
  /** `uname -r` style version, e.g. `6.1.0-56-amd64`. */
  readonly version: string;
  /** Path of the bzImage handed to `-kernel`. */
  readonly vmlinuz: string;
  /** `/lib/modules/<version>`, holding `modules.dep`. */
  readonly modulesDir: string;
}

/** What was found on this host; a `null` entry is missing. */
export interface E2eEnv {
  readonly qemu: string | null;
  readonly qemuStorageDaemon: string | null;
  readonly busybox: string | null;
  readonly kernel: KernelInfo | null;
  /** cpio(1); only the harness's own format check uses it (the initramfs is written in TS). */
  readonly cpio: string | null;
  /** DPDK's testpmd, the reference vhost-user-net peer (vhost PMD). */
  readonly testpmd: string | null;
}

/** Names of the prerequisites a test can ask for. */
export type Prerequisite = 'qemu' | 'qemuStorageDaemon' | 'busybox' | 'kernel' | 'cpio' | 'testpmd';

const HINTS: Record<Prerequisite, string> = {
  qemu: 'qemu-system-x86_64 not found (apt-get install qemu-system-x86)',
  qemuStorageDaemon: 'qemu-storage-daemon not found (apt-get install qemu-system-x86 / qemu-utils)',
  busybox: 'static busybox not found (apt-get install busybox-static)',
  kernel: 'no /boot/vmlinuz-<ver> with /lib/modules/<ver>/modules.dep (apt-get install linux-image-amd64)',
  cpio: 'cpio(1) not found (apt-get install cpio)',
  testpmd: 'dpdk-testpmd not found (apt-get install dpdk)',
};

/** Finds an executable on PATH (plus the sbin directories a non-root PATH may lack). */
export function which(name: string): string | null {
  const dirs = (process.env.PATH ?? '').split(delimiter).concat(['/usr/sbin', '/sbin', '/usr/bin', '/bin']);
  for (const dir of dirs) {
    if (dir === '') continue;
    const p = join(dir, name);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return null;
}

/** Compares kernel versions numerically part by part (`6.1.0-56` > `6.1.0-9`). */
function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.-]/);
  const pb = b.split(/[.-]/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? '';
    const y = pb[i] ?? '';
    const nx = Number(x);
    const ny = Number(y);
    const c = Number.isInteger(nx) && Number.isInteger(ny) && x !== '' && y !== '' ? nx - ny : x.localeCompare(y);
    if (c !== 0) return c;
  }
  return 0;
}

/**
 * Finds a guest kernel: `E2E_KERNEL_VERSION` if set, otherwise the newest `/boot/vmlinuz-<ver>`
 * that has `/lib/modules/<ver>/modules.dep`. The host's running kernel is irrelevant (the
 * test machine may run a different one than the installed package), so it is not consulted.
 */
export function findKernel(): KernelInfo | null {
  const wanted = process.env.E2E_KERNEL_VERSION;
  let versions: string[];
  try {
    versions = readdirSync('/boot')
      .filter((f) => f.startsWith('vmlinuz-'))
      .map((f) => f.slice('vmlinuz-'.length));
  } catch {
    return null;
  }
  if (wanted !== undefined && wanted !== '') versions = versions.filter((v) => v === wanted);
  versions.sort(compareVersions).reverse();
  for (const version of versions) {
    const vmlinuz = `/boot/vmlinuz-${version}`;
    const modulesDir = `/lib/modules/${version}`;
    try {
      accessSync(vmlinuz, constants.R_OK);
    } catch {
      continue;
    }
    if (existsSync(join(modulesDir, 'modules.dep'))) return { version, vmlinuz, modulesDir };
  }
  return null;
}

/** Finds a statically linked busybox (a dynamic one would need its libraries in the initramfs). */
function findBusybox(): string | null {
  for (const p of [process.env.E2E_BUSYBOX, '/bin/busybox', '/usr/bin/busybox']) {
    if (p !== undefined && p !== '' && existsSync(p)) return p;
  }
  return which('busybox');
}

let cached: E2eEnv | null = null;

/** Detects (once per process) what is installed. */
export function detectEnv(): E2eEnv {
  cached ??= {
    qemu: which('qemu-system-x86_64'),
    qemuStorageDaemon: which('qemu-storage-daemon'),
    busybox: findBusybox(),
    kernel: findKernel(),
    cpio: which('cpio'),
    testpmd: which('dpdk-testpmd'),
  };
  return cached;
}

/** True when the run demands every e2e test to really run (CI sets `E2E=1`). */
export function e2eRequired(): boolean {
  return process.env.E2E === '1';
}

/** Human-readable reasons for each missing prerequisite (empty when all are present). */
export function missingPrerequisites(needs: readonly Prerequisite[], env: E2eEnv = detectEnv()): string[] {
  return needs.filter((n) => env[n] === null).map((n) => HINTS[n]);
}

/** What to do with a test, given its prerequisites. */
export type Verdict =
  | { readonly action: 'run' }
  | { readonly action: 'skip'; readonly reason: string }
  | { readonly action: 'fail'; readonly reason: string };

/**
 * The shared rule: all prerequisites present → run; something missing → skip with the reasons,
 * or fail when `required` (E2E=1). `pendingReason` (code of this repository not written yet)
 * always skips — it is temporary and not a property of the machine.
 */
export function verdict(
  needs: readonly Prerequisite[],
  opts: { env?: E2eEnv; required?: boolean; pendingReason?: string | null } = {},
): Verdict {
  const missing = missingPrerequisites(needs, opts.env ?? detectEnv());
  if (missing.length > 0) {
    const reason = missing.join('; ');
    return (opts.required ?? e2eRequired())
      ? { action: 'fail', reason: `E2E=1 but a prerequisite is missing: ${reason}` }
      : { action: 'skip', reason };
  }
  if (opts.pendingReason !== undefined && opts.pendingReason !== null) return { action: 'skip', reason: opts.pendingReason };
  return { action: 'run' };
}

/** Options of {@link e2eTest}. */
export interface E2eTestOptions {
  /** Host tools the test needs; checked with the skip-or-fail rule. */
  readonly needs: readonly Prerequisite[];
  /**
   * A further reason to skip that is NOT turned into a failure by `E2E=1` — for pieces of
   * this repository that are not written yet. Temporary by nature.
   */
  readonly pendingReason?: string | null;
  /** tap timeout of the subtest in ms (default 180 s). */
  readonly timeout?: number;
}

/**
 * Declares an e2e subtest with the shared prerequisite rule ({@link verdict}): if something in
 * `needs` is missing, the subtest is skipped with the reason — or, under `E2E=1`, fails with it.
 */
export function e2eTest(t: Test, name: string, opts: E2eTestOptions, fn: (t: Test) => Promise<void>): Promise<unknown> {
  const v = verdict(opts.needs, { pendingReason: opts.pendingReason ?? null });
  switch (v.action) {
    case 'fail':
      return t.test(name, async (tt) => {
        tt.fail(v.reason);
      });
    case 'skip':
      return t.test(name, { skip: v.reason }, async () => {});
    case 'run':
      return t.test(name, { timeout: opts.timeout ?? 180_000 }, fn);
  }
}
