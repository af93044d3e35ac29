#!/usr/bin/env node
/**
 * `vhost-user-net`: serves virtio-net over vhost-user on one or more sockets, backed by a tap,
 * an in-process L2 switch, or loopback. Exit codes: 0 clean stop, 1 runtime failure, 2 bad flags.
 * @module
 */
import { NetError } from './errors.js';
import { formatMac } from './mac-address.js';
import { LOG_LEVELS, parseCliArgs, USAGE, type LogLevel } from './cli-args.js';
import { startNetServer, type NetServer } from './net-server.js';

function main(): void {
  let opts;
  try {
    opts = parseCliArgs(process.argv.slice(2));
  } catch (e) {
    if (e instanceof NetError && e.code === 'usage') {
      process.stderr.write(`vhost-user-net: ${e.message} (see --help)\n`);
      process.exit(2);
    }
    throw e;
  }
  if (opts.help) {
    process.stdout.write(USAGE + '\n');
    return;
  }
  const level = LOG_LEVELS.indexOf(opts.logLevel);
  const logAt = (l: LogLevel, line: string) => {
    if (LOG_LEVELS.indexOf(l) >= level) process.stderr.write(`vhost-user-net: ${line}\n`);
  };
  let server: NetServer;
  try {
    server = startNetServer({ ...opts, log: (line) => logAt('info', line), trace: (line) => logAt('debug', line) });
  } catch (e) {
    process.stderr.write(`vhost-user-net: ${(e as Error).message}\n`);
    process.exit(1);
  }
  for (const d of server.devices) {
    logAt('info', `${opts.client ? 'connecting to' : 'listening on'} ${d.name} (${opts.backend.kind}, mac ${formatMac(d.config.mac)}, ` +
      `${d.maxPairs} queue pair(s), mtu ${opts.mtu ?? 1500})`);
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logAt('info', `${signal}: stopping`);
    const force = setTimeout(() => process.exit(1), 5000);
    force.unref();
    server.close().then(() => process.exit(0), (e: Error) => {
      process.stderr.write(`vhost-user-net: shutdown failed: ${e.message}\n`);
      process.exit(1);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGUSR1', () => process.stderr.write(server.metrics()));
}

main();
