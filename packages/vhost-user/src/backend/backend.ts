/**
 * VhostUserBackend: serves one {@link VirtioDevice} to one front-end at a time, as a socket
 * server (QEMU connects) or client (QEMU listens; reconnect with backoff).
 *
 * ```
 *  listen(path) ──accept──▶ session ──EOF / bad message──▶ cleanup (stop rings, unmap, close fds)
 *       ▲                                                          │
 *       └──────────────────── accept the next front-end ◀──────────┘
 * ```
 * @module
 */
import { EventEmitter } from 'node:events';
import { FdWatcher, READABLE, close, onMappingFault, unixAccept, unixConnect, unixListen } from '@vhost-ts/sys';
import type { VirtioDevice } from '../device.js';
import { ProtocolError } from '../errors.js';
import { MessageConnection } from '../transport/message-connection.js';
import { BackendSession } from './session.js';

/** Options of {@link VhostUserBackend}. */
export interface BackendOptions {
  /** Log sink (one line per event); default console.error. */
  log?: (line: string) => void;
  /** Answer to GET_MAX_MEM_SLOTS; default 32. */
  maxMemSlots?: number;
  /** Poll period for "no fd" kick rings; default 5 ms. */
  pollIntervalMs?: number;
  /** Time allowed for a queue handler's stop(); default 10 s. */
  stopTimeoutMs?: number;
  /** Message trace sink: one line per request received and per reply (off when absent). */
  trace?: (line: string) => void;
}

/** Client-mode options. */
export interface ConnectOptions {
  /** Reconnect after the front-end goes away or cannot be reached; default true. */
  reconnect?: boolean;
  /** First retry delay; default 50 ms (doubles up to maxDelayMs). */
  minDelayMs?: number;
  /** Longest retry delay; default 2 s. */
  maxDelayMs?: number;
}

/**
 * The vhost-user back-end. Events: `session` (a front-end connected), `session-end`
 * (`error: Error | null`, after cleanup finished), `error` is never emitted — failures are logged.
 */
export class VhostUserBackend extends EventEmitter {
  readonly device: VirtioDevice;
  private readonly opts: BackendOptions;
  private readonly logFn: (line: string) => void;
  private listenFd = -1;
  private listenWatcher: FdWatcher | null = null;
  private conn: MessageConnection | null = null;
  /** Ends the current session's watch for memory faults (see startSession). */
  private stopFaultWatch: (() => void) | null = null;
  private session: BackendSession | null = null;
  private cleanup: Promise<void> | null = null;
  private stopped = false;
  private retryTimer: NodeJS.Timeout | null = null;
  /** Number of sessions served (tests, metrics). */
  sessions = 0;

  constructor(device: VirtioDevice, opts: BackendOptions = {}) {
    super();
    this.device = device;
    this.opts = opts;
    this.logFn = opts.log ?? ((line) => console.error(line));
  }

  /** The active session, if a front-end is connected. */
  get activeSession(): BackendSession | null {
    return this.session;
  }

  /** Server mode: listens on `path` (a stale socket file is replaced) and serves front-ends one at a time. */
  listen(path: string): void {
    this.listenFd = unixListen(path, 16);
    this.listenWatcher = new FdWatcher(this.listenFd, () => this.acceptOne());
    this.listenWatcher.start(READABLE);
  }

  private acceptOne(): void {
    if (this.conn !== null || this.cleanup !== null || this.stopped) {
      // One front-end at a time: leave further connections in the backlog until cleanup ends.
      this.listenWatcher?.stop();
      return;
    }
    let fd: number;
    try {
      fd = unixAccept(this.listenFd);
    } catch (e) {
      this.logFn(`vhost-user: accept failed: ${(e as Error).message}`);
      return;
    }
    if (fd >= 0) this.startSession(fd, null);
  }

  /** Client mode: connects to a listening front-end at `path`, reconnecting with backoff. */
  connect(path: string, opts: ConnectOptions = {}): void {
    const reconnect = opts.reconnect ?? true;
    const min = opts.minDelayMs ?? 50;
    const max = opts.maxDelayMs ?? 2000;
    let delay = min;
    const attempt = (): void => {
      this.retryTimer = null;
      if (this.stopped) return;
      let fd: number;
      try {
        fd = unixConnect(path);
      } catch (e) {
        if (!reconnect) {
          this.logFn(`vhost-user: connect to ${path} failed: ${(e as Error).message}`);
          return;
        }
        this.retryTimer = setTimeout(attempt, delay);
        delay = Math.min(delay * 2, max);
        return;
      }
      delay = min;
      this.startSession(fd, reconnect ? () => { this.retryTimer = setTimeout(attempt, min); } : null);
    };
    attempt();
  }

  private startSession(fd: number, after: (() => void) | null): void {
    this.sessions++;
    const conn = new MessageConnection(fd, 'frontend', false, {
      onFrame: (frame) => (this.session as BackendSession).handle(frame),
      onClose: (error) => this.endSession(error, after),
    });
    this.conn = conn;
    // A front-end that shrinks the file behind its memory made the process die of SIGBUS; the
    // native guard now keeps the process alive (the pages read as zeros), and the session whose
    // memory it was ends here.
    const stopFaultWatch = onMappingFault(() => {
      const faults = this.conn === conn ? (this.session?.memoryFaults() ?? 0) : 0;
      if (faults > 0) {
        conn.close(new ProtocolError('BAD_MEMORY',
          `the front-end shrank the file behind its shared memory (${faults} page(s) gone, now read as zeros)`));
      }
    });
    this.stopFaultWatch = stopFaultWatch;
    this.session = new BackendSession({
      device: this.device,
      send: (bytes, fds) => conn.send(bytes, fds),
      log: this.logFn,
      maxMemSlots: this.opts.maxMemSlots,
      pollIntervalMs: this.opts.pollIntervalMs,
      stopTimeoutMs: this.opts.stopTimeoutMs,
      trace: this.opts.trace,
    });
    this.emit('session');
  }

  private endSession(error: Error | null, after: (() => void) | null): void {
    if (error !== null) this.logFn(`vhost-user: closing connection: ${error.message}`);
    this.stopFaultWatch?.();
    this.stopFaultWatch = null;
    const session = this.session as BackendSession;
    this.conn = null;
    this.cleanup = session.close().catch((e: Error) => {
      this.logFn(`vhost-user: session cleanup failed: ${e.message}`);
    }).then(() => {
      this.session = null;
      this.cleanup = null;
      this.emit('session-end', error);
      if (this.stopped) return;
      this.listenWatcher?.start(READABLE);
      after?.();
    });
  }

  /** Resolves once no session is active or being cleaned up. */
  async idle(): Promise<void> {
    while (this.cleanup !== null || this.conn !== null) {
      if (this.cleanup !== null) await this.cleanup;
      else await new Promise((resolve) => this.once('session-end', resolve));
    }
  }

  /**
   * Stops listening/reconnecting, drains the current session (in-flight requests answered and
   * published while the front-end is still connected), ends it and waits for its cleanup.
   */
  async close(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.listenWatcher?.close();
    this.listenWatcher = null;
    if (this.listenFd >= 0) close(this.listenFd);
    this.listenFd = -1;
    // Drain before the socket closes: the front-end snapshots used.idx when it sees the close.
    if (this.conn !== null && this.session !== null) await this.session.drain();
    this.conn?.close();
    await this.idle();
  }
}
