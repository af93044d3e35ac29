// eventfd counters: vring kick/call notifications and io_uring completions.
import { addon } from './native.js';
import { assertFd, assertInt, MAX_SAFE } from './validate.js';

/** `eventfd(initial, EFD_NONBLOCK | EFD_CLOEXEC)`. */
export function eventfd(initial = 0): number {
  assertInt(initial, 0, 0xffffffff, 'initial', 'eventfd');
  return addon.eventfd(initial);
}

/** Reads and resets the counter; 0 when nothing is pending (EAGAIN). */
export function eventfdRead(fd: number): number {
  assertFd(fd, 'eventfd_read');
  return addon.eventfdRead(fd);
}

/** Adds `value` (default 1) to the counter. Throws EAGAIN if it would overflow. */
export function eventfdWrite(fd: number, value = 1): void {
  assertFd(fd, 'eventfd_write');
  assertInt(value, 1, MAX_SAFE, 'value', 'eventfd_write');
  addon.eventfdWrite(fd, value);
}
