import { constants as osConstants } from 'node:os';

/**
 * The one error class of `@vhost-ts/sys`: a failed system call, or an argument
 * the call would have rejected (then `code` is `'EINVAL'`).
 *
 * `code` is the errno name (`'EBADF'`), stable across releases; `errno` is the
 * positive errno number; `syscall` names the call (`'mmap'`,
 * `'ioctl(TUNSETIFF)'`, `'io_uring_submit'`).
 */
export class SysError extends Error {
  /** errno name, e.g. `'ENOENT'`. */
  readonly code: string;
  /** Positive errno number. */
  readonly errno: number;
  /** The failing call. */
  readonly syscall: string;

  constructor(code: string, errno: number, syscall: string, message?: string) {
    super(message ?? `${syscall}: ${code}`);
    this.name = 'SysError';
    this.code = code;
    this.errno = errno;
    this.syscall = syscall;
  }
}

let errnoNames: Map<number, string> | null = null;

/** Builds a SysError from a positive errno number (name looked up in `os.constants.errno`). */
export function sysErrorFromErrno(errno: number, syscall: string, detail?: string): SysError {
  if (errnoNames === null) {
    errnoNames = new Map();
    for (const [name, value] of Object.entries(osConstants.errno)) if (!errnoNames.has(value)) errnoNames.set(value, name);
  }
  const code = errnoNames.get(errno) ?? `E${errno}`;
  return new SysError(code, errno, syscall, `${syscall}: ${detail ?? code} (${code})`);
}

const EINVAL = osConstants.errno.EINVAL;

/** An argument error, reported like the kernel would: EINVAL. */
export function invalidArgument(syscall: string, detail: string): SysError {
  return new SysError('EINVAL', EINVAL, syscall, `${syscall}: ${detail} (EINVAL)`);
}
