import { close } from './files.js';
import { assertFd } from './validate.js';

/**
 * An fd with one owner: `close()` is idempotent, `using` closes it at scope
 * end, and `release()` hands the number on without closing. Use it for fds
 * received from a peer so every rejection path closes them.
 */
export class OwnedFd implements Disposable {
  #fd: number;

  constructor(fd: number) {
    assertFd(fd, 'OwnedFd');
    this.#fd = fd;
  }

  /** The fd number, or -1 once closed or released. */
  get fd(): number {
    return this.#fd;
  }

  /** True once closed or released. */
  get closed(): boolean {
    return this.#fd < 0;
  }

  /** Gives up ownership and returns the fd (the caller must close it). */
  release(): number {
    const fd = this.#fd;
    this.#fd = -1;
    return fd;
  }

  /** Closes the fd; later calls do nothing. */
  close(): void {
    const fd = this.release();
    if (fd >= 0) close(fd);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
