// AF_UNIX stream sockets with SCM_RIGHTS fd passing (the vhost-user transport).
import { invalidArgument } from './errors.js';
import { addon, assertNative } from './native.js';
import { assertFd, assertInt, assertPath } from './validate.js';

/** Most fds one message may carry (vhost-user sends at most 8). */
export const MAX_FDS_PER_MESSAGE = 8;
assertNative('maxFdsPerMessage', addon.maxFdsPerMessage, MAX_FDS_PER_MESSAGE);

/** Result of {@link recvMsg}: byte count (0 = EOF) and received fds (close-on-exec, now yours). */
export interface RecvResult {
  bytes: number;
  fds: number[];
}

/**
 * A non-blocking listening socket at `path`. A stale socket file (nobody
 * listening) is replaced; a live socket or a non-socket file gives EADDRINUSE.
 */
export function unixListen(path: string, backlog = 128): number {
  assertPath(path, 'path', 'bind');
  assertInt(backlog, 1, 65535, 'backlog', 'listen');
  return addon.unixListen(path, backlog);
}

/** Accepts one connection (non-blocking, cloexec); -1 when none is pending. */
export function unixAccept(listenFd: number): number {
  assertFd(listenFd, 'accept4');
  return addon.unixAccept(listenFd);
}

/** Connects to `path`, then makes the socket non-blocking. */
export function unixConnect(path: string): number {
  assertPath(path, 'path', 'connect');
  return addon.unixConnect(path);
}

/** A connected AF_UNIX SOCK_STREAM pair, both ends non-blocking and cloexec. */
export function socketpair(): [number, number] {
  return addon.socketpair();
}

/**
 * Sends `data` with up to 8 fds attached (SCM_RIGHTS). Returns the bytes sent
 * (possibly fewer than `data.length`), or -1 when the socket buffer is full.
 */
export function sendMsg(fd: number, data: Uint8Array, fds?: readonly number[]): number {
  assertFd(fd, 'sendmsg');
  if (!(data instanceof Uint8Array)) throw invalidArgument('sendmsg', 'data must be a Uint8Array');
  if (fds !== undefined) {
    if (!Array.isArray(fds)) throw invalidArgument('sendmsg', 'fds must be an array');
    if (fds.length > MAX_FDS_PER_MESSAGE) throw invalidArgument('sendmsg', `at most ${MAX_FDS_PER_MESSAGE} fds per message`);
    for (const f of fds) assertFd(f, 'sendmsg');
    if (fds.length > 0 && data.length === 0) throw invalidArgument('sendmsg', 'fds need at least one byte of data');
  }
  return addon.sendMsg(fd, data, fds);
}

/**
 * Receives into `buf`. Returns null when nothing is pending (EAGAIN);
 * `bytes === 0` means the peer closed. If the peer attached more fds than
 * fit (control data truncated), the fds that did arrive are closed and
 * EMSGSIZE is thrown.
 */
export function recvMsg(fd: number, buf: Uint8Array): RecvResult | null {
  assertFd(fd, 'recvmsg');
  if (!(buf instanceof Uint8Array) || buf.length === 0) {
    throw invalidArgument('recvmsg', 'buf must be a non-empty Uint8Array');
  }
  return addon.recvMsg(fd, buf);
}
