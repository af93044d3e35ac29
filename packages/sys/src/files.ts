// Plain file-descriptor calls (disk images, block devices, fd hygiene).
import { invalidArgument } from './errors.js';
import { addon } from './native.js';
import { assertFd, assertInt, assertPath, optionalBool } from './validate.js';

/** Options of {@link openFile}. */
export interface OpenFileOptions {
  /** O_RDWR instead of O_RDONLY. */
  write?: boolean;
  /** O_CREAT. */
  create?: boolean;
  /** O_DIRECT: I/O bypasses the page cache (buffers and offsets must be aligned). */
  direct?: boolean;
  /** Permission bits for a created file (default 0o644). */
  mode?: number;
}

/** `open(path, flags | O_CLOEXEC, mode)`. */
export function openFile(path: string, opts: OpenFileOptions = {}): number {
  assertPath(path, 'path', 'open');
  if (typeof opts !== 'object' || opts === null) throw invalidArgument('open', 'opts must be an object');
  const mode = opts.mode ?? 0o644;
  assertInt(mode, 0, 0o7777, 'mode', 'open');
  return addon.openFile(
    path,
    optionalBool(opts.write, false, 'write', 'open'),
    optionalBool(opts.create, false, 'create', 'open'),
    optionalBool(opts.direct, false, 'direct', 'open'),
    mode,
  );
}

/** Size in bytes: `st_size`, or `BLKGETSIZE64` for a block device. */
export function fstatSize(fd: number): number {
  assertFd(fd, 'fstat');
  return addon.fstatSize(fd);
}

/** `fdatasync(fd)`. */
export function fdatasync(fd: number): void {
  assertFd(fd, 'fdatasync');
  addon.fdatasync(fd);
}

/** `fsync(fd)`. */
export function fsync(fd: number): void {
  assertFd(fd, 'fsync');
  addon.fsync(fd);
}

/** `fcntl(fd, F_DUPFD_CLOEXEC, 3)`: a duplicate, never 0–2. */
export function dup(fd: number): number {
  assertFd(fd, 'dup');
  return addon.dup(fd);
}

/**
 * `close(fd)`. An {@link FdWatcher} still watching `fd` is closed first
 * (libuv aborts the process if it must re-arm a closed fd).
 */
export function close(fd: number): void {
  assertFd(fd, 'close');
  addon.close(fd);
}

/** Number of open fds of this process (entries of /proc/self/fd); for leak tests. */
export function openFdCount(): number {
  return addon.openFdCount();
}
