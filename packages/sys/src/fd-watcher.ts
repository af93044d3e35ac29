// FdWatcher: readiness callbacks for an fd on the Node event loop (uv_poll).
import { invalidArgument, type SysError, sysErrorFromErrno } from './errors.js';
import { addon, assertNative, type NativeFdWatcher } from './native.js';
import { assertFd, assertInt } from './validate.js';

/** The fd is readable (UV_READABLE). */
export const READABLE = 1;
/** The fd is writable (UV_WRITABLE). */
export const WRITABLE = 2;
/** The peer hung up (UV_DISCONNECT; EPOLLRDHUP). */
export const DISCONNECT = 4;

assertNative('UV_READABLE', addon.UV_READABLE, READABLE);
assertNative('UV_WRITABLE', addon.UV_WRITABLE, WRITABLE);
assertNative('UV_DISCONNECT', addon.UV_DISCONNECT, DISCONNECT);

/** Callback of {@link FdWatcher}: `events` is a mask of READABLE/WRITABLE/DISCONNECT, or 0 with `error`. */
export type FdWatcherCallback = (events: number, error?: SysError) => void;

/**
 * Watches one fd with libuv's uv_poll (level-triggered, on the Node loop).
 * At most one open watcher per fd. `close()` frees the watcher but never
 * closes the fd; closing the fd through this package's `close()` closes its
 * watcher too. A started watcher keeps the process alive unless `unref()`ed.
 */
export class FdWatcher {
  /** Event bit: readable. */
  static readonly READABLE = READABLE;
  /** Event bit: writable. */
  static readonly WRITABLE = WRITABLE;
  /** Event bit: peer hung up. */
  static readonly DISCONNECT = DISCONNECT;

  /** The watched fd. */
  readonly fd: number;
  readonly #native: NativeFdWatcher;

  constructor(fd: number, callback: FdWatcherCallback) {
    assertFd(fd, 'uv_poll_init');
    if (typeof callback !== 'function') throw invalidArgument('uv_poll_init', 'callback must be a function');
    this.fd = fd;
    this.#native = new addon.FdWatcher(fd, (events, errno) => {
      if (errno === 0) callback(events);
      else callback(0, sysErrorFromErrno(errno, 'uv_poll'));
    });
  }

  /** Starts (or changes) watching for `events` (READABLE | WRITABLE | DISCONNECT). */
  start(events: number): void {
    assertInt(events, 1, READABLE | WRITABLE | DISCONNECT, 'events', 'uv_poll_start');
    this.#native.start(events);
  }

  /** Stops watching; `start()` may be called again. */
  stop(): void {
    this.#native.stop();
  }

  /** Frees the watcher (idempotent). Does not close the fd. */
  close(): void {
    this.#native.close();
  }

  /** Lets the process exit while this watcher is active. */
  unref(): void {
    this.#native.unref();
  }

  /** Undoes `unref()`. */
  ref(): void {
    this.#native.ref();
  }
}
