/**
 * The CLI driver shared by `vhost-user-blk` (src/cli.ts) and `npm start` (src/main.ts).
 * @module
 */
import { startBlkServer, BlkServerError, type BlkServer } from './blk-server.js';
import { parseBlkArgs, USAGE, type BlkServerConfig, type ParseDefaults } from './cli-args.js';
import { createLogger, type Logger } from './logger.js';

/** Options of {@link runBlkCli}. */
export interface RunOptions {
  /** Program name for messages. */
  name: string;
  /** Defaults for the path flags (npm start). */
  defaults?: ParseDefaults;
  /** Called once the server runs (npm start prints the QEMU command line). */
  onStarted?: (config: BlkServerConfig, server: BlkServer, log: Logger) => void;
  /** Called before the server starts (npm start creates the default image). */
  prepare?: (config: BlkServerConfig, log: Logger) => void;
}

/**
 * Parses flags, runs the server until SIGINT/SIGTERM, and resolves with the exit code
 * (0 clean shutdown, 1 start-up failure, 2 bad flags).
 */
export async function runBlkCli(argv: readonly string[], opts: RunOptions): Promise<number> {
  const parsed = parseBlkArgs(argv, opts.defaults);
  if (parsed.kind === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  if (parsed.kind === 'error') {
    process.stderr.write(`${opts.name}: error: ${parsed.message} (see --help)\n`);
    return 2;
  }
  const config = parsed.config;
  const log = createLogger(config.logLevel, opts.name);
  let server: BlkServer;
  try {
    opts.prepare?.(config, log);
    server = startBlkServer(config, log);
  } catch (err) {
    const msg = err instanceof BlkServerError ? err.message : `${(err as Error).message}`;
    process.stderr.write(`${opts.name}: error: ${msg.split('\n')[0]}\n`);
    return 1;
  }
  opts.onStarted?.(config, server, log);
  return await new Promise<number>((resolve) => {
    let shuttingDown = false;
    const onSignal = (signal: NodeJS.Signals): void => {
      if (shuttingDown) {
        log.warn(`${signal} again: exiting without waiting`);
        resolve(1);
        process.exit(1);
      }
      shuttingDown = true;
      log.info(`${signal}: draining in-flight I/O and shutting down`);
      server.close().then(() => {
        log.info('stopped');
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        process.off('SIGUSR1', onUsr1);
        resolve(0);
      }, (err: Error) => {
        log.error(`shutdown failed: ${err.message}`);
        resolve(1);
      });
    };
    const onUsr1 = (): void => {
      process.stderr.write(server.device.metrics());
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    process.on('SIGUSR1', onUsr1);
  });
}
