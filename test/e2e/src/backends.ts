/**
 * Starts and stops vhost-user-blk backends as child processes: qemu-storage-daemon (the
 * reference) and this repository's `vhost-user-blk` CLI. Both listen on a unix socket that
 * QEMU then connects to; `start*` resolves once the socket exists.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hasExited, stopChild, track } from './children.js';
import { detectEnv } from './env.js';
import { diesWithParent } from './child-guard.js';

/** Options shared by every blk backend. */
export interface BlkBackendOptions {
  /** Raw image file exported as the disk. */
  readonly image: string;
  /** Unix socket path the backend listens on (≤ 107 bytes). */
  readonly socket: string;
  readonly readOnly?: boolean;
  readonly numQueues?: number;
  /** How long to wait for the socket to appear (default 15 s; tsx start-up is slow). */
  readonly startTimeoutMs?: number;
  /** Further flags for our CLI (e.g. `--direct`); qemu-storage-daemon ignores them. */
  readonly extraArgs?: readonly string[];
}

/** A running backend process. */
export interface Backend {
  /** Which implementation this is. */
  readonly kind: BackendKind;
  readonly socket: string;
  readonly argv: readonly string[];
  readonly process: ChildProcess;
  /** Everything the backend wrote to stdout and stderr so far. */
  logs(): string;
  /** True once the process has exited. */
  exited(): boolean;
  /** SIGTERM, SIGKILL after a grace period; resolves when gone. Idempotent. */
  stop(): Promise<void>;
}

/** The blk backends the tests can drive. */
export type BlkBackendKind = 'qemu-storage-daemon' | 'vhost-ts';

/** Every kind of backend process this module starts. */
export type BackendKind = BlkBackendKind | 'testpmd';

/** Failure to start a backend; carries its logs. */
export class BackendError extends Error {
  override readonly name = 'BackendError';
  constructor(readonly code: 'NOT_FOUND' | 'EXITED' | 'TIMEOUT', message: string, readonly logs: string) {
    super(logs === '' ? message : `${message}\n--- backend output ---\n${logs.slice(-4000)}`);
  }
}

/** Repository root (this file is test/e2e/src/backends.ts). */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

/** A fresh short-named directory for sockets and images; `cleanup()` removes it. */
export function makeWorkDir(prefix = 'vte2e-'): { dir: string; cleanup(): void } {
  // Unix socket paths are limited to 108 bytes: stay directly under the tmpdir.
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

function isSocket(path: string): boolean {
  try {
    return statSync(path).isSocket();
  } catch {
    return false;
  }
}

async function launch(
  kind: BackendKind,
  cmd: string,
  args: readonly string[],
  socket: string,
  timeoutMs: number,
  stdin: 'ignore' | 'pipe' = 'ignore',
): Promise<Backend> {
  // A stale socket would make us "see" the backend before it listens.
  rmSync(socket, { force: true });
  const child = spawn(...diesWithParent(cmd, args), { stdio: [stdin, 'pipe', 'pipe'], cwd: REPO_ROOT });
  track(child);
  let logs = '';
  child.stdout?.setEncoding('utf8').on('data', (c: string) => (logs += c));
  child.stderr?.setEncoding('utf8').on('data', (c: string) => (logs += c));
  let spawnError: Error | null = null;
  child.once('error', (e) => (spawnError = e));
  const backend: Backend = {
    kind,
    socket,
    argv: [cmd, ...args],
    process: child,
    logs: () => logs,
    exited: () => hasExited(child),
    stop: () => stopChild(child),
  };
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (isSocket(socket)) return backend;
    if (spawnError !== null || hasExited(child)) {
      await backend.stop();
      const why = spawnError !== null ? (spawnError as Error).message : `exit code ${child.exitCode}, signal ${child.signalCode}`;
      throw new BackendError('EXITED', `${kind} exited before listening on ${socket} (${why}); argv: ${[cmd, ...args].join(' ')}`, logs);
    }
    if (Date.now() > deadline) {
      await backend.stop();
      throw new BackendError('TIMEOUT', `${kind} did not create ${socket} within ${timeoutMs} ms`, logs);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * Starts qemu-storage-daemon exporting `image` as vhost-user-blk (QEMU 7.2 syntax, see
 * `qemu-storage-daemon --help`). `discard=unmap` on both nodes lets guest discards punch holes.
 */
export function startQemuStorageDaemon(opts: BlkBackendOptions): Promise<Backend> {
  const qsd = detectEnv().qemuStorageDaemon;
  if (qsd === null) return Promise.reject(new BackendError('NOT_FOUND', 'qemu-storage-daemon not found', ''));
  const ro = opts.readOnly === true;
  const args = [
    '--blockdev', `driver=file,node-name=file0,filename=${opts.image},discard=unmap${ro ? ',read-only=on' : ''}`,
    '--blockdev', `driver=raw,node-name=disk0,file=file0,discard=unmap${ro ? ',read-only=on' : ''}`,
    '--export',
    `type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path=${opts.socket},writable=${ro ? 'off' : 'on'}` +
      (opts.numQueues !== undefined ? `,num-queues=${opts.numQueues}` : ''),
  ];
  return launch('qemu-storage-daemon', qsd, args, opts.socket, opts.startTimeoutMs ?? 15_000);
}

/**
 * How to run our `vhost-user-blk` CLI: `VHOST_TS_BLK_CLI` (a .js or .ts path) if set, else the
 * TypeScript source through tsx (what the unit tests run too, so no stale dist/), else the built
 * `dist/cli.js`. Null when neither exists yet.
 */
export function findVhostTsBlkCli(): { readonly command: string; readonly prefixArgs: readonly string[]; readonly path: string } | null {
  const override = process.env.VHOST_TS_BLK_CLI;
  const candidates = [
    ...(override !== undefined && override !== '' ? [resolve(override)] : []),
    join(REPO_ROOT, 'packages/devices-blk/src/cli.ts'),
    join(REPO_ROOT, 'packages/devices-blk/dist/cli.js'),
  ];
  for (const path of candidates) {
    if (!existsSync(path)) continue;
    const prefixArgs = path.endsWith('.ts') ? ['--conditions=vhost-ts-source', '--import', 'tsx', path] : [path];
    return { command: process.execPath, prefixArgs, path };
  }
  return null;
}

/** Starts our CLI: `vhost-user-blk --socket-path SOCK --blk-file IMG [--read-only] [--num-queues N]`. */
export function startVhostTsBlk(opts: BlkBackendOptions): Promise<Backend> {
  const cli = findVhostTsBlkCli();
  if (cli === null) return Promise.reject(new BackendError('NOT_FOUND', 'vhost-user-blk CLI not built yet', ''));
  const args = [...cli.prefixArgs, '--socket-path', opts.socket, '--blk-file', opts.image];
  if (opts.readOnly === true) args.push('--read-only');
  if (opts.numQueues !== undefined) args.push('--num-queues', String(opts.numQueues));
  args.push(...(opts.extraArgs ?? []));
  return launch('vhost-ts', cli.command, args, opts.socket, opts.startTimeoutMs ?? 15_000);
}

/** Starts the named blk backend. */
export function startBlkBackend(kind: BlkBackendKind, opts: BlkBackendOptions): Promise<Backend> {
  return kind === 'qemu-storage-daemon' ? startQemuStorageDaemon(opts) : startVhostTsBlk(opts);
}

/** Options of {@link startTestpmd}. */
export interface TestpmdOptions {
  /** Unix socket the vhost PMD listens on. */
  readonly socket: string;
  /** Queue pairs offered (default 1). */
  readonly queuePairs?: number;
  /** testpmd forwarding mode (default `icmpecho`: answers ARP and ICMP echo requests). */
  readonly forwardMode?: string;
  readonly startTimeoutMs?: number;
}

/**
 * Starts DPDK testpmd as a vhost-user-net backend (vhost PMD in server mode) — the reference
 * peer for net e2e tests. No hugepages (`--no-huge`: the vhost PMD copies into its own mbufs,
 * guest memory comes from QEMU's fds) and no PCI; a per-process `--file-prefix` keeps parallel
 * instances apart. Non-interactive testpmd exits on a byte (or EOF) on stdin, so stdin is a
 * pipe held open until stop().
 */
export function startTestpmd(opts: TestpmdOptions): Promise<Backend> {
  const testpmd = detectEnv().testpmd;
  if (testpmd === null) return Promise.reject(new BackendError('NOT_FOUND', 'dpdk-testpmd not found', ''));
  const qp = opts.queuePairs ?? 1;
  const prefix = `vte2e${process.pid}x${Date.now() % 100000}`;
  const args = [
    '-l', '0-1', '--no-huge', '-m', '256', '--no-pci', '--no-shconf', '--no-telemetry',
    '--file-prefix', prefix,
    '--vdev', `net_vhost0,iface=${opts.socket},queues=${qp}`,
    '--',
    `--forward-mode=${opts.forwardMode ?? 'icmpecho'}`, '--auto-start', '--stats-period', '0',
    '--nb-cores=1', `--rxq=${qp}`, `--txq=${qp}`, '--total-num-mbufs=4096',
  ];
  // EAL still creates a runtime directory per prefix; remove it with the process.
  const runtimeDirs = [join('/var/run/dpdk', prefix), join(process.env.XDG_RUNTIME_DIR ?? tmpdir(), 'dpdk', prefix)];
  const removeRuntime = (): void => runtimeDirs.forEach((d) => rmSync(d, { recursive: true, force: true }));
  return launch('testpmd', testpmd, args, opts.socket, opts.startTimeoutMs ?? 15_000, 'pipe').then(
    (b) => ({ ...b, stop: () => b.stop().then(removeRuntime) }),
    (err: unknown) => {
      removeRuntime();
      throw err;
    },
  );
}

/**
 * An AbortSignal that fires when any of `backends` exits (reason: which one, with its exit
 * status and the end of its logs). Pass it to `runGuest({ signal })`.
 */
export function abortOnExit(backends: readonly Backend[]): AbortSignal {
  const controller = new AbortController();
  for (const b of backends) {
    const fire = (): void => {
      if (controller.signal.aborted) return;
      const p = b.process;
      controller.abort(new Error(`${b.kind} backend on ${b.socket} exited (code ${p.exitCode}, signal ${p.signalCode}):\n${b.logs().slice(-2000)}`));
    };
    if (b.exited()) fire();
    else b.process.once('exit', fire);
  }
  return controller.signal;
}
