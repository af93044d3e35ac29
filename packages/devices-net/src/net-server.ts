/**
 * Assembly used by the CLI and the tests: one backend (tap | switch | loopback), one
 * {@link VirtioNetDevice} per socket path, each served by a {@link VhostUserBackend}.
 * @module
 */
import { unlinkSync } from 'node:fs';
import { PollGroup, VhostUserBackend } from '@vhost-ts/vhost-user';
import { NetError } from './errors.js';
import { LoopbackBackend } from './loopback-backend.js';
import type { NetBackend } from './net-backend.js';
import { countersToPrometheus, switchToPrometheus } from './port-counters.js';
import { SwitchBackend } from './switch-backend.js';
import { TapBackend } from './tap-backend.js';
import { VirtioNetDevice } from './virtio-net-device.js';

/** Options of {@link startNetServer}. */
export interface NetServerOptions {
  socketPaths: string[];
  backend: { kind: 'tap'; name: string } | { kind: 'switch' } | { kind: 'loopback' };
  /** MAC of the first port; port i gets the last byte + i. Default random per port. */
  mac?: Uint8Array;
  mtu?: number;
  queuePairs?: number;
  /** Connect to the sockets (the front-end listens) instead of listening. */
  client?: boolean;
  /** Adaptive busy-poll window of every queue, µs (VirtioNetDeviceOptions.pollUs; default 0). */
  pollUs?: number;
  log?: (line: string) => void;
  /** vhost-user message trace (one line per request and reply); off when absent. */
  trace?: (line: string) => void;
}

/** A running server. */
export interface NetServer {
  readonly backend: NetBackend;
  readonly devices: VirtioNetDevice[];
  readonly servers: VhostUserBackend[];
  /** Prometheus text of every port's counters (plus the switch's own counters with a switch backend). */
  metrics(): string;
  /** Stops serving, closes fds, removes socket files we created. */
  close(): Promise<void>;
}

/** Builds the backend named in `opts`. */
export function createBackend(opts: NetServerOptions): NetBackend {
  const mtu = opts.mtu ?? 1500;
  switch (opts.backend.kind) {
    case 'loopback': return new LoopbackBackend({ mtu });
    case 'switch': return new SwitchBackend({ mtu });
    case 'tap': return new TapBackend({ name: opts.backend.name, queuePairs: opts.queuePairs ?? 1, log: opts.log });
    default: throw new NetError('bad-option', 'unknown backend');
  }
}

/** Starts serving every socket path. */
export function startNetServer(opts: NetServerOptions): NetServer {
  if (opts.socketPaths.length === 0) throw new NetError('bad-option', 'at least one socket path is needed');
  if (opts.backend.kind === 'tap' && opts.socketPaths.length > 1) {
    throw new NetError('bad-option', 'a tap backend serves exactly one socket (use --switch to join several)');
  }
  const log = opts.log ?? ((line: string) => console.error(line));
  const backend = createBackend(opts);
  const devices: VirtioNetDevice[] = [];
  const servers: VhostUserBackend[] = [];
  // Every port's queues run on this thread: they take turns as one group.
  const pollGroup = new PollGroup();
  try {
    opts.socketPaths.forEach((path, i) => {
      let mac: Uint8Array | undefined;
      if (opts.mac) {
        mac = opts.mac.slice(0, 6);
        mac[5] = (mac[5] + i) & 0xff;
      }
      const device = new VirtioNetDevice({ backend, name: path, mac, mtu: opts.mtu, queuePairs: opts.queuePairs, pollUs: opts.pollUs, pollGroup });
      devices.push(device);
      const server = new VhostUserBackend(device, { log, trace: opts.trace });
      // Info level, as vhost-user-blk: an operator sees a front-end come and go (a reconnect).
      server.on('session', () => log(`${path}: front-end connected`));
      server.on('session-end', (error: Error | null) => {
        log(`${path}: front-end disconnected${error ? `: ${error.message}` : ''}`);
        device.reset();
      });
      servers.push(server);
      if (opts.client) server.connect(path);
      else server.listen(path);
    });
  } catch (e) {
    for (const s of servers) void s.close();
    backend.close();
    throw e;
  }
  let closed = false;
  return {
    backend, devices, servers,
    metrics: () => countersToPrometheus(devices.map((d) => ({ name: d.name, counters: d.counters })))
      + (backend instanceof SwitchBackend ? switchToPrometheus(backend) : ''),
    close: async () => {
      if (closed) return;
      closed = true;
      await Promise.all(servers.map((s) => s.close()));
      for (const d of devices) d.close();
      backend.close();
      if (!opts.client) {
        for (const p of opts.socketPaths) {
          try { unlinkSync(p); } catch { /* already gone */ }
        }
      }
    },
  };
}
