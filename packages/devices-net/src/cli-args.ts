/**
 * Flag parsing of the `vhost-user-net` CLI, pure so it is unit-tested: flags in, options or a
 * {@link NetError} with code `'usage'` out.
 * @module
 */
import { MAX_MTU, MIN_MTU } from './constants.js';
import { NetError } from './errors.js';
import { parseMac } from './mac-address.js';
import type { NetServerOptions } from './net-server.js';

/** Log levels, most to least verbose. */
export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Parsed command line. */
export interface CliOptions extends NetServerOptions {
  logLevel: LogLevel;
  /** Print counters as Prometheus text to stderr on SIGUSR1 (always on). */
  help: boolean;
}

export const USAGE = `usage: vhost-user-net --socket-path PATH [--socket-path PATH ...] (--tap NAME | --switch | --loopback)
                      [--mac MAC] [--mtu N] [--queues N] [--client] [--poll-us N] [--log-level debug|info|warn|error]

  --socket-path PATH  vhost-user socket (repeat for more ports; several need --switch)
  --tap NAME          bridge the port to tap NAME (created if missing; offloads passed through)
  --switch            join all ports in an in-process L2 learning switch
  --loopback          echo every transmitted frame back to its sender
  --mac MAC           MAC of the first port (next ports: last byte + 1 ...); default random
  --mtu N             MTU reported to the driver (68..65535; default 1500)
  --queues N          queue pairs per port (1..64; default 1)
  --client            connect to the sockets (front-end listens) instead of listening
  --poll-us N         adaptive busy-poll window after a batch, 0..10000 µs (default 0: kick-driven)
  --log-level L       debug | info | warn | error (default info)
  SIGTERM/SIGINT stop cleanly; SIGUSR1 prints counters (Prometheus text) to stderr.`;

function usage(msg: string): never {
  throw new NetError('usage', msg);
}

function intFlag(name: string, v: string | undefined, min: number, max: number): number {
  if (v === undefined) usage(`${name} needs a value`);
  if (!/^\d+$/.test(v)) usage(`${name} must be an integer, got "${v}"`);
  const n = Number(v);
  if (n < min || n > max) usage(`${name} must be in ${min}..${max}, got ${n}`);
  return n;
}

/** Parses argv (without node and script). */
export function parseCliArgs(argv: readonly string[]): CliOptions {
  const socketPaths: string[] = [];
  let backend: NetServerOptions['backend'] | null = null;
  let mac: Uint8Array | undefined;
  let mtu = 1500;
  let queuePairs = 1;
  let client = false;
  let pollUs = 0;
  let logLevel: LogLevel = 'info';
  let help = false;
  const setBackend = (b: NetServerOptions['backend']) => {
    if (backend !== null) usage('choose exactly one of --tap, --switch, --loopback');
    backend = b;
  };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value: string | undefined;
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq > 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    const take = (): string | undefined => {
      if (value !== undefined) return value;
      const v = argv[i + 1];
      if (v === undefined || v.startsWith('--')) return undefined;
      i++;
      return v;
    };
    switch (arg) {
      case '--socket-path': {
        const v = take();
        if (!v) usage('--socket-path needs a path');
        socketPaths.push(v);
        break;
      }
      case '--tap': {
        const v = take();
        if (!v) usage('--tap needs an interface name');
        if (v.length > 15 || /[\s/]/.test(v)) usage(`invalid interface name "${v}" (at most 15 characters, no / or spaces)`);
        setBackend({ kind: 'tap', name: v });
        break;
      }
      case '--switch': setBackend({ kind: 'switch' }); break;
      case '--loopback': setBackend({ kind: 'loopback' }); break;
      case '--mac': {
        const v = take();
        if (!v) usage('--mac needs a value');
        try { mac = parseMac(v); } catch (e) { usage((e as Error).message); }
        break;
      }
      case '--mtu': mtu = intFlag('--mtu', take(), MIN_MTU, MAX_MTU); break;
      case '--queues': queuePairs = intFlag('--queues', take(), 1, 64); break;
      case '--client': client = true; break;
      case '--poll-us': pollUs = intFlag('--poll-us', take(), 0, 10_000); break;
      case '--log-level': {
        const v = take();
        if (!v || !(LOG_LEVELS as readonly string[]).includes(v)) usage(`--log-level must be one of ${LOG_LEVELS.join(', ')}`);
        logLevel = v as LogLevel;
        break;
      }
      case '--help': case '-h': help = true; break;
      default: usage(`unknown flag "${argv[i]}"`);
    }
  }
  if (help) return { socketPaths, backend: { kind: 'loopback' }, mtu, queuePairs, client, pollUs, logLevel, help };
  if (socketPaths.length === 0) usage('--socket-path is required');
  if (new Set(socketPaths).size !== socketPaths.length) usage('the same --socket-path was given twice');
  if (backend === null) usage('one of --tap NAME, --switch, --loopback is required');
  const b = backend as NetServerOptions['backend'];
  if (b.kind === 'tap' && socketPaths.length > 1) usage('--tap serves one socket; use --switch to join several');
  return { socketPaths, backend: b, mac, mtu, queuePairs, client, pollUs, logLevel, help };
}
