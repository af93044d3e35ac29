/**
 * Command-line flags of `vhost-user-blk` (names after qemu-storage-daemon and rust-vmm's
 * vhost-device-* conventions), parsed with node:util parseArgs.
 * @module
 */
import { parseArgs } from 'node:util';
import { DEFAULT_POLL_US, MAX_BLK_QUEUES, MAX_POLL_US } from './constants.js';
import { FILE_AIO_MODES, type FileAio } from './engines/file-engine.js';
import { isLogLevel, type LogLevel } from './logger.js';

/** A validated configuration of the block server. */
export interface BlkServerConfig {
  socketPath: string;
  blkFile: string;
  readOnly: boolean;
  numQueues: number;
  queueSize: number;
  serial: string;
  direct: boolean;
  /** How reads and writes reach the image (FileImageOptions.aio). */
  aio: FileAio;
  client: boolean;
  logLevel: LogLevel;
  /** Busy-poll window bound per queue after a batch, µs (0 = off). */
  pollUs: number;
}

/** Result of {@link parseBlkArgs}. */
export type ParseResult =
  | { kind: 'ok'; config: BlkServerConfig }
  | { kind: 'help' }
  | { kind: 'error'; message: string };

/** Usage text. */
export const USAGE = `Usage: vhost-user-blk --socket-path PATH --blk-file PATH [options]

Serves a disk image as a vhost-user-blk device (virtio-blk over vhost-user).

  --socket-path PATH   vhost-user unix socket (listened on; connected to with --client)
  --blk-file PATH      disk image: a regular file or a block device
  --read-only          expose the disk read-only (VIRTIO_BLK_F_RO); the image is opened O_RDONLY
  --num-queues N       request queues, 1..${MAX_BLK_QUEUES} (default 1)
  --queue-size N       largest virtqueue size, a power of two 4..32768 (default 1024, QEMU's largest)
  --serial S           serial number returned to GET_ID, up to 20 bytes (default vhost-ts)
  --direct             open the image with O_DIRECT (bypass the host page cache)
  --aio MODE           auto | io_uring | inline (default auto): io_uring submits reads and
                       writes to the queue's io_uring; inline runs them as plain syscalls on
                       the queue's thread (reads and writes of 128 KiB and more still go to
                       kernel workers); auto = inline for a file on tmpfs/ramfs without --direct
                       (io_uring hands each of its ops to a kernel thread), else io_uring
  --client             connect to PATH (QEMU listens, server=on) instead of listening; reconnects
  --log-level L        error | warn | info | debug (default info)
  --poll-us N          after a batch, busy-poll each queue up to N µs for the next request
                       (adaptive: grows while requests keep coming, decays to 0 when idle;
                       0 = off, max ${MAX_POLL_US}; default ${DEFAULT_POLL_US})
  -h, --help           this text

Signals: SIGINT/SIGTERM drain in-flight I/O, remove the socket and exit 0; SIGUSR1 prints the
per-queue counters (Prometheus text) to stderr.
`;

/** Defaults a caller (npm start) may supply for the otherwise required paths. */
export interface ParseDefaults {
  socketPath?: string;
  blkFile?: string;
}

function intFlag(name: string, value: string | undefined, def: number, min: number, max: number): number | string {
  if (value === undefined) return def;
  if (!/^\d+$/.test(value)) return `--${name} must be an integer, got '${value}'`;
  const n = Number(value);
  if (n < min || n > max) return `--${name} must be in ${min}..${max}, got ${n}`;
  return n;
}

/** Parses and validates `argv` (without the node and script entries). Never throws. */
export function parseBlkArgs(argv: readonly string[], defaults: ParseDefaults = {}): ParseResult {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        'socket-path': { type: 'string' },
        'blk-file': { type: 'string' },
        'read-only': { type: 'boolean' },
        'num-queues': { type: 'string' },
        'queue-size': { type: 'string' },
        serial: { type: 'string' },
        direct: { type: 'boolean' },
        aio: { type: 'string' },
        client: { type: 'boolean' },
        'log-level': { type: 'string' },
        'poll-us': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    // parseArgs messages can span lines; keep the first.
    return { kind: 'error', message: String((err as Error).message).split('\n')[0] };
  }
  if (values.help === true) return { kind: 'help' };
  const socketPath = values['socket-path'] ?? defaults.socketPath;
  const blkFile = values['blk-file'] ?? defaults.blkFile;
  if (socketPath === undefined || socketPath === '') return { kind: 'error', message: 'missing --socket-path PATH' };
  if (blkFile === undefined || blkFile === '') return { kind: 'error', message: 'missing --blk-file PATH' };
  if (Buffer.byteLength(socketPath) > 107) return { kind: 'error', message: `--socket-path is too long for a unix socket (max 107 bytes)` };
  const numQueues = intFlag('num-queues', values['num-queues'], 1, 1, MAX_BLK_QUEUES);
  if (typeof numQueues === 'string') return { kind: 'error', message: numQueues };
  const queueSize = intFlag('queue-size', values['queue-size'], 1024, 4, 32768);
  if (typeof queueSize === 'string') return { kind: 'error', message: queueSize };
  if ((queueSize & (queueSize - 1)) !== 0) return { kind: 'error', message: `--queue-size must be a power of two, got ${queueSize}` };
  const serial = values.serial ?? 'vhost-ts';
  if (Buffer.byteLength(serial) > 20) return { kind: 'error', message: `--serial is longer than 20 bytes` };
  const pollUs = intFlag('poll-us', values['poll-us'], DEFAULT_POLL_US, 0, MAX_POLL_US);
  if (typeof pollUs === 'string') return { kind: 'error', message: pollUs };
  const aio = values.aio ?? 'auto';
  if (!(FILE_AIO_MODES as readonly string[]).includes(aio)) {
    return { kind: 'error', message: `--aio must be ${FILE_AIO_MODES.join(', ')}, got '${aio}'` };
  }
  if (aio === 'inline' && values.direct === true) return { kind: 'error', message: '--aio inline cannot be combined with --direct' };
  const logLevel = values['log-level'] ?? 'info';
  if (!isLogLevel(logLevel)) return { kind: 'error', message: `--log-level must be error, warn, info or debug, got '${logLevel}'` };
  return {
    kind: 'ok',
    config: {
      socketPath,
      blkFile,
      readOnly: values['read-only'] === true,
      numQueues,
      queueSize,
      serial,
      direct: values.direct === true,
      aio: aio as FileAio,
      client: values.client === true,
      logLevel,
      pollUs,
    },
  };
}
