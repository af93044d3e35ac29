/**
 * The block server: flags → image → device → vhost-user back-end, and an orderly shutdown.
 * Shared by the `vhost-user-blk` CLI and `npm start`.
 * @module
 */
import { rmSync, statSync } from 'node:fs';
import { SysError } from '@vhost-ts/sys';
import { VhostUserBackend } from '@vhost-ts/vhost-user';
import { BlkDevice } from './blk-device.js';
import type { BlkServerConfig } from './cli-args.js';
import { FileImage } from './engines/file-engine.js';
import { BlkError } from './errors.js';
import type { Logger } from './logger.js';

/** A running server. */
export interface BlkServer {
  readonly device: BlkDevice;
  readonly backend: VhostUserBackend;
  readonly image: FileImage;
  /** Stops accepting, drains in-flight I/O, closes the image and removes the socket file. Idempotent. */
  close(): Promise<void>;
}

/** A start-up failure with a one-line message for the user. */
export class BlkServerError extends Error {
  override readonly name = 'BlkServerError';
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/**
 * Opens the image and starts serving it.
 * @throws BlkServerError with a one-line message (image missing/unreadable, socket in use ...).
 */
export function startBlkServer(config: BlkServerConfig, log: Logger): BlkServer {
  let image: FileImage;
  try {
    image = FileImage.open(config.blkFile, { readOnly: config.readOnly, direct: config.direct, aio: config.aio });
  } catch (err) {
    if (err instanceof BlkError) throw new BlkServerError(err.code, err.message, { cause: err });
    throw err;
  }
  let device: BlkDevice;
  try {
    device = new BlkDevice({
      image, numQueues: config.numQueues, queueSize: config.queueSize, serial: config.serial, log,
      pollUs: config.pollUs,
    });
  } catch (err) {
    image.close();
    throw new BlkServerError('bad-option', (err as Error).message, { cause: err });
  }
  const backend = new VhostUserBackend(device, { log: (line) => log.info(line), trace: (line) => log.debug(line) });
  backend.on('session', () => log.info('front-end connected'));
  backend.on('session-end', (error: Error | null) => log.info(`front-end disconnected${error ? `: ${error.message}` : ''}`));
  let ownsSocket = false;
  try {
    if (config.client) {
      backend.connect(config.socketPath);
    } else {
      backend.listen(config.socketPath);
      ownsSocket = true;
    }
  } catch (err) {
    image.close();
    const code = err instanceof SysError ? err.code : '';
    if (code === 'EADDRINUSE') {
      throw new BlkServerError('socket-in-use', `${config.socketPath}: socket path in use (another process is listening, or it is not a socket)`, { cause: err });
    }
    if (code === 'ENOENT' || code === 'EACCES') {
      throw new BlkServerError('socket-path', `${config.socketPath}: cannot create socket (${code})`, { cause: err });
    }
    throw new BlkServerError('socket', `${config.socketPath}: ${(err as Error).message}`, { cause: err });
  }
  // Remember which file we created, so shutdown never removes someone else's socket.
  const ino = ownsSocket ? safeIno(config.socketPath) : -1;
  log.info(`serving ${image.description} on ${config.socketPath}${config.client ? ' (client)' : ''}, ` +
    `${config.numQueues} queue(s) of up to ${config.queueSize}`);
  let closing: Promise<void> | null = null;
  return {
    device, backend, image,
    close(): Promise<void> {
      closing ??= (async () => {
        await backend.close();
        image.close();
        if (ownsSocket && ino !== -1 && safeIno(config.socketPath) === ino) rmSync(config.socketPath, { force: true });
      })();
      return closing;
    },
  };
}

function safeIno(path: string): number {
  try {
    return statSync(path).ino;
  } catch {
    return -1;
  }
}
