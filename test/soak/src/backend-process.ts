/**
 * The back-end under soak, as the CLI process a user runs: `vhost-user-blk` on a sparse image
 * or `vhost-user-net --loopback`, from the TypeScript sources through tsx.
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { statSync, truncateSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root (this file is test/soak/src/backend-process.ts). */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

/** Which CLI. */
export type SoakDevice = 'blk' | 'net';

/** A running back-end CLI. */
export interface SoakBackend {
  readonly device: SoakDevice;
  readonly socket: string;
  readonly pid: number;
  readonly child: ChildProcess;
  /** The last 64 KiB of its stdout+stderr. */
  logs(): string;
  /** SIGTERM; resolves with the exit code (SIGKILL after 10 s). */
  stop(): Promise<number | null>;
}

/** Queues the blk back-end offers (and the soak sessions use). */
export const BLK_QUEUES = 2;
/** Size of the blk image. */
export const BLK_IMAGE_BYTES = 64 << 20;

function isSocket(p: string): boolean {
  try { return statSync(p).isSocket(); } catch { return false; }
}

/** Starts the CLI for `device` in `dir` (socket and image live there); resolves once it listens. */
export async function startSoakBackend(device: SoakDevice, dir: string): Promise<SoakBackend> {
  const socket = join(dir, `${device}.sock`);
  let args: string[];
  if (device === 'blk') {
    const image = join(dir, 'soak.img');
    writeFileSync(image, '');
    truncateSync(image, BLK_IMAGE_BYTES);
    args = ['packages/devices-blk/src/cli.ts', '--socket-path', socket, '--blk-file', image, '--num-queues', String(BLK_QUEUES), '--log-level', 'warn'];
  } else {
    args = ['packages/devices-net/src/cli.ts', '--socket-path', socket, '--loopback', '--queues', '1', '--mac', '52:54:00:50:a4:01', '--log-level', 'warn'];
  }
  const child = spawn(process.execPath, ['--conditions=vhost-ts-source', '--import', 'tsx', ...args], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let logs = '';
  const keep = (c: string): void => { logs = (logs + c).slice(-65536); };
  child.stdout!.setEncoding('utf8').on('data', keep);
  child.stderr!.setEncoding('utf8').on('data', keep);
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  const deadline = Date.now() + 30_000;
  while (!isSocket(socket)) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${device} back-end did not start:\n${logs}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  return {
    device, socket, pid: child.pid!, child, logs: () => logs,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
        const code = await exited;
        clearTimeout(t);
        return code;
      }
      return child.exitCode;
    },
  };
}
