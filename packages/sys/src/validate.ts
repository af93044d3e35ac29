// Argument checks done in JS before every native call. The addon repeats
// them (a caller may bypass this wrapper), so these exist to give precise
// messages and to keep junk from crossing the boundary at all.
import { invalidArgument } from './errors.js';

/** 2^53 - 1: lengths, offsets and sizes above this are not exact Numbers. */
export const MAX_SAFE = Number.MAX_SAFE_INTEGER;

/** Throws EINVAL unless `value` is an integer in [min, max]. */
export function assertInt(value: unknown, min: number, max: number, name: string, syscall: string): asserts value is number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalidArgument(syscall, `${name} must be an integer in [${min}, ${max}], got ${String(value)}`);
  }
}

/** Throws EINVAL unless `fd` is a plausible file descriptor (0 ≤ fd < 2^31). */
export function assertFd(fd: unknown, syscall: string): asserts fd is number {
  assertInt(fd, 0, 0x7fffffff, 'fd', syscall);
}

/** Throws EINVAL unless `value` is a string without NUL (a NUL would truncate a path). */
export function assertPath(value: unknown, name: string, syscall: string): asserts value is string {
  if (typeof value !== 'string' || value.includes('\0')) {
    throw invalidArgument(syscall, `${name} must be a string without NUL characters`);
  }
}

/** Throws EINVAL unless `value` is undefined or a boolean; returns it or `dflt`. */
export function optionalBool(value: unknown, dflt: boolean, name: string, syscall: string): boolean {
  if (value === undefined) return dflt;
  if (typeof value !== 'boolean') throw invalidArgument(syscall, `${name} must be a boolean`);
  return value;
}
