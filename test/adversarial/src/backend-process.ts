/**
 * The victims: our `vhost-user-blk` and `vhost-user-net` CLIs as real child processes, run from
 * source (the same code the unit tests load), listening on a socket in a private directory.
 * Children are registered with the e2e harness's bookkeeping, so none outlives the test.
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, statSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hasExited, stopChild, track } from '../../e2e/src/children.js';

/** Repository root (this file is test/adversarial/src/backend-process.ts). */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

/** A running back-end process. */
export class BackendProcess {
  private output = '';
  private readonly dir: string;

  private constructor(readonly kind: 'blk' | 'net', readonly child: ChildProcess, readonly socket: string,
    dir: string, readonly image: string | null) {
    this.dir = dir;
    child.stdout?.setEncoding('utf8').on('data', (s: string) => { this.output += s; });
    child.stderr?.setEncoding('utf8').on('data', (s: string) => { this.output += s; });
  }

  /** Everything the process printed so far. */
  logs(): string {
    return this.output;
  }

  /** True while the process runs. */
  get alive(): boolean {
    return !hasExited(this.child);
  }

  /** Exit description for assertion messages. */
  get exitDescription(): string {
    return `code ${this.child.exitCode}, signal ${this.child.signalCode}`;
  }

  /**
   * Asks for the counters (SIGUSR1 → Prometheus text on stderr) and returns each metric summed
   * over its labels.
   */
  async counters(timeoutMs = 3000): Promise<Map<string, number>> {
    const from = this.output.length;
    const marker = this.kind === 'blk' ? 'vhost_blk_bad_chains_total{' : 'vhost_net_notifies_suppressed_total{';
    this.child.kill('SIGUSR1');
    const deadline = Date.now() + timeoutMs;
    while (!this.output.slice(from).includes(marker)) {
      if (Date.now() > deadline || !this.alive) throw new Error(`${this.kind}: no counters after SIGUSR1`);
      await new Promise((r) => setTimeout(r, 10));
    }
    // Let the rest of the dump arrive (it is written in one go; this is for the last line).
    await new Promise((r) => setTimeout(r, 20));
    const out = new Map<string, number>();
    for (const line of this.output.slice(from).split('\n')) {
      const m = /^([a-z_]+)\{[^}]*\} ([0-9.e+-]+)$/.exec(line.trim());
      if (m !== null) out.set(m[1], (out.get(m[1]) ?? 0) + Number(m[2]));
    }
    return out;
  }

  /** SIGTERM (SIGKILL after a grace period) and removes the private directory. */
  async stop(): Promise<void> {
    await stopChild(this.child);
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Starts `vhost-user-blk` on a fresh sparse image of `imageBytes`. */
  static startBlk(opts: { imageBytes: number; queueSize?: number; extraArgs?: readonly string[] }): Promise<BackendProcess> {
    const dir = mkdtempSync(join(tmpdir(), 'adversarial-blk-'));
    const image = join(dir, 'disk.img');
    try {
      closeSync(openSync(image, 'w'));
      truncateSync(image, opts.imageBytes);
    } catch (e) {
      rmSync(dir, { recursive: true, force: true });
      throw e;
    }
    const socket = join(dir, 'blk.sock');
    const args = ['--socket-path', socket, '--blk-file', image, '--log-level', 'warn'];
    if (opts.queueSize !== undefined) args.push('--queue-size', String(opts.queueSize));
    args.push(...(opts.extraArgs ?? []));
    return BackendProcess.launch('blk', 'packages/devices-blk/src/cli.ts', args, socket, dir, image);
  }

  /** Starts `vhost-user-net --loopback`. */
  static startNetLoopback(extraArgs: readonly string[] = []): Promise<BackendProcess> {
    const dir = mkdtempSync(join(tmpdir(), 'adversarial-net-'));
    const socket = join(dir, 'net.sock');
    return BackendProcess.launch('net', 'packages/devices-net/src/cli.ts',
      ['--socket-path', socket, '--loopback', '--log-level', 'warn', ...extraArgs], socket, dir, null);
  }

  private static async launch(kind: 'blk' | 'net', entry: string, args: string[], socket: string, dir: string,
    image: string | null): Promise<BackendProcess> {
    const child = spawn(process.execPath,
      ['--conditions=vhost-ts-source', '--import', 'tsx', join(REPO_ROOT, entry), ...args],
      { stdio: ['ignore', 'pipe', 'pipe'], cwd: REPO_ROOT });
    track(child);
    const b = new BackendProcess(kind, child, socket, dir, image);
    const deadline = Date.now() + 20_000;
    for (;;) {
      try {
        if (statSync(socket).isSocket()) return b;
      } catch { /* not yet */ }
      if (!b.alive || Date.now() > deadline) {
        await b.stop();
        throw new Error(`${kind} back-end did not start (${b.exitDescription}): ${b.logs().slice(-2000)}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}
