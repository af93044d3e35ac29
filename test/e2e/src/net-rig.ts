/**
 * Pieces the vhost-user-net e2e tests share: our `vhost-user-net` CLI as a child process (with
 * its counters read through SIGUSR1), a throw-away network namespace to hold the tap, and the
 * TCP peer (`tcp-peer.ts`) running inside that namespace.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './backends.js';
import { hasExited, stopChild, track } from './children.js';
import { diesWithParent } from './child-guard.js';

const NET_CLI = join(REPO_ROOT, 'packages/devices-net/src/cli.ts');
const TCP_PEER = join(REPO_ROOT, 'test/e2e/src/tcp-peer.ts');
const TSX_ARGS = ['--conditions=vhost-ts-source', '--import', 'tsx'];

function isSocket(p: string): boolean {
  try {
    return statSync(p).isSocket();
  } catch {
    return false;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A running `vhost-user-net` process. */
export interface NetCli {
  readonly process: ChildProcess;
  readonly sockets: readonly string[];
  /** Everything it printed so far (stdout + stderr). */
  logs(): string;
  exited(): boolean;
  /**
   * Asks for the counters (SIGUSR1 → Prometheus text on stderr) and parses them:
   * `metric{port="socket"}` → value. Waits for every port's block, and for the metrics named
   * in `also` (back-end-wide ones, e.g. the switch's).
   */
  metrics(opts?: { timeoutMs?: number; also?: readonly string[] }): Promise<Map<string, number>>;
  /** SIGTERM and wait; resolves with the exit code (null when killed by a signal). */
  stop(): Promise<number | null>;
}

/** The metric the CLI prints last for each port (see port-counters.ts); marks a complete dump. */
const LAST_METRIC = 'vhost_net_notifies_suppressed_total';

/** Parses `name{labels} value` lines of Prometheus text. */
export function parsePrometheus(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (m !== null) out.set(m[1], Number(m[2]));
  }
  return out;
}

/** Key of a per-port metric in {@link parsePrometheus}'s map. */
export function portMetric(name: string, socket: string): string {
  return `${name}{port="${socket.replace(/["\\\n]/g, '_')}"}`;
}

/**
 * Starts `vhost-user-net` from the TypeScript source and resolves once every socket listens.
 * `args` must contain the `--socket-path` flags for `sockets`.
 */
export async function startNetCli(args: readonly string[], sockets: readonly string[], timeoutMs = 20_000): Promise<NetCli> {
  const child = spawn(...diesWithParent(process.execPath, [...TSX_ARGS, NET_CLI, ...args]), { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  track(child);
  let logs = '';
  child.stdout!.setEncoding('utf8').on('data', (c: string) => (logs += c));
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (logs += c));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const cli: NetCli = {
    process: child,
    sockets,
    logs: () => logs,
    exited: () => hasExited(child),
    metrics: async (opts = {}) => {
      const from = logs.length;
      child.kill('SIGUSR1');
      const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
      for (;;) {
        const text = logs.slice(from);
        const lines = text.split('\n');
        // A line counts once its newline arrived (stderr may come in several chunks).
        lines.pop();
        const done = lines.filter((l) => l.startsWith(`${LAST_METRIC}{`)).length >= sockets.length
          && (opts.also ?? []).every((name) => lines.some((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`)));
        if (done) return parsePrometheus(lines.join('\n'));
        if (hasExited(child) || Date.now() > deadline) throw new Error(`no counters from vhost-user-net:\n${logs.slice(-2000)}`);
        await sleep(20);
      }
    },
    stop: async () => {
      if (!hasExited(child)) child.kill('SIGTERM');
      const code = await Promise.race([exited, sleep(8000).then(() => 'timeout' as const)]);
      if (code === 'timeout') {
        await stopChild(child);
        return null;
      }
      return code;
    },
  };
  const deadline = Date.now() + timeoutMs;
  while (!sockets.every(isSocket)) {
    if (hasExited(child) || Date.now() > deadline) {
      await stopChild(child);
      throw new Error(`vhost-user-net did not start listening on ${sockets.join(', ')}:\n${logs.slice(-2000)}`);
    }
    await sleep(25);
  }
  return cli;
}

/** A network namespace owned by one test (deleted by `close()`). */
export class NetNamespace {
  constructor(readonly name: string) {
    execFileSync('ip', ['netns', 'add', name]);
  }

  /** `ip -n NAME ...`, returns stdout. */
  ip(...args: string[]): string {
    return execFileSync('ip', ['-n', this.name, ...args], { encoding: 'utf8' });
  }

  /** Moves a host interface into the namespace, gives it `cidr` and brings it up. */
  adopt(ifname: string, cidr: string): void {
    execFileSync('ip', ['link', 'set', ifname, 'netns', this.name]);
    this.ip('addr', 'add', cidr, 'dev', ifname);
    this.ip('link', 'set', ifname, 'up');
  }

  /** `ip -s link` counters of an interface inside the namespace. */
  linkStats(ifname: string): { rx: { packets: number; bytes: number }; tx: { packets: number; bytes: number } } {
    const j = JSON.parse(this.ip('-j', '-s', 'link', 'show', ifname)) as { stats64: { rx: { packets: number; bytes: number }; tx: { packets: number; bytes: number } } }[];
    return j[0].stats64;
  }

  close(): void {
    try {
      execFileSync('ip', ['netns', 'del', this.name], { stdio: 'ignore' });
    } catch {
      // already gone
    }
  }
}

/** One JSON event of the TCP peer. */
export interface PeerEvent {
  readonly event: 'ready' | 'sink' | 'source' | 'source-held' | 'error';
  readonly bytes?: number;
  readonly sha256?: string;
  readonly sourceSha256?: string;
  readonly ms?: number;
  readonly message?: string;
}

/** The TCP peer running inside a namespace. */
export interface TcpPeer {
  /** SHA-256 of the bytes the source port sends. */
  readonly sourceSha256: string;
  /** Events so far. */
  events(): PeerEvent[];
  /** Lets a held source (`holdSource`) send. */
  release(): void;
  logs(): string;
  stop(): Promise<void>;
}

/** Starts `tcp-peer.ts` inside `ns` and resolves once both ports listen. */
export async function startTcpPeer(
  ns: NetNamespace, opts: { host: string; sinkPort: number; sourcePort: number; bytes: number; holdSource?: boolean }, timeoutMs = 20_000,
): Promise<TcpPeer> {
  const args = ['netns', 'exec', ns.name, process.execPath, ...TSX_ARGS, TCP_PEER,
    '--host', opts.host, '--sink-port', String(opts.sinkPort), '--source-port', String(opts.sourcePort), '--bytes', String(opts.bytes)];
  if (opts.holdSource === true) args.push('--hold-source');
  const child = spawn(...diesWithParent('ip', args), { cwd: REPO_ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  track(child);
  let out = '';
  let err = '';
  child.stdin.on('error', () => { /* the peer is gone; its exit is reported elsewhere */ });
  child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => (err += c));
  const events = (): PeerEvent[] => out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as PeerEvent);
  const peer: TcpPeer = {
    get sourceSha256() {
      return events().find((e) => e.event === 'ready')?.sourceSha256 ?? '';
    },
    events,
    release: () => {
      if (!hasExited(child)) child.stdin.write('go\n');
    },
    logs: () => out + err,
    stop: () => stopChild(child),
  };
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (events().some((e) => e.event === 'ready')) return peer;
    if (hasExited(child) || Date.now() > deadline) {
      await stopChild(child);
      throw new Error(`tcp peer did not start:\n${out}${err}`);
    }
    await sleep(25);
  }
}
