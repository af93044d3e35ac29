// io_uring for block I/O: one native call submits a whole batch.
import { invalidArgument } from './errors.js';
import { addon, assertNative, type NativeIoUring } from './native.js';
import { assertInt } from './validate.js';

/**
 * Op codes of a submit record (our stable numbering, not the kernel's).
 * 0 is deliberately unused so a zero-filled record is rejected.
 */
export const IORING_OP = Object.freeze({
  /** readv into the record's iovec triples. */
  READV: 1,
  /** writev from the record's iovec triples. */
  WRITEV: 2,
  /** fsync of the whole file. */
  FSYNC: 3,
  /** fdatasync of the whole file (IORING_FSYNC_DATASYNC). */
  FDATASYNC: 4,
  /** fallocate: arg = mode (FALLOC_FL_*), arg2 = length. */
  FALLOCATE: 5,
  /** read into exactly one iovec triple. */
  READ: 6,
  /** write from exactly one iovec triple. */
  WRITE: 7,
} as const);

/**
 * Read/write records: `arg` holds SQE flags, of which only this one is accepted. It makes the
 * kernel run the op in an io-wq worker at once; without it, work punted to io-wq that never
 * blocks (a copy from the page cache) queues behind one worker, since io-wq adds a worker only
 * when none is running or the work is marked concurrent, as forced-async work is.
 */
export const IOSQE_ASYNC = 16;

/** Doubles per op record: [opcode, fd, fileOffset, userData (integer < 2^40), iovStart, iovCount, arg, arg2]. */
export const OP_STRIDE = 8;
/** Doubles per iovec triple: [bufferIndex, byteOffset, byteLength]. */
export const IOV_STRIDE = 3;
/** Size of the buffer table (valid indices 0..1023). */
export const MAX_BUFFERS = 1024;
/** Most iovecs one READV/WRITEV may carry (UIO_MAXIOV). */
export const MAX_IOV_PER_OP = 1024;
/** Largest ring. */
export const MAX_ENTRIES = 4096;

/** fallocate mode: do not change the file size. */
export const FALLOC_FL_KEEP_SIZE = 0x01;
/** fallocate mode: deallocate the range (needs KEEP_SIZE). */
export const FALLOC_FL_PUNCH_HOLE = 0x02;
/** fallocate mode: zero the range. */
export const FALLOC_FL_ZERO_RANGE = 0x10;

for (const [name, value] of Object.entries(IORING_OP)) assertNative(`IORING_OP.${name}`, addon.ioringOps[name], value);
assertNative('sizeof(io_uring_sqe)', addon.ioUringLayout.io_uring_sqe, 64);
assertNative('sizeof(io_uring_cqe)', addon.ioUringLayout.io_uring_cqe, 16);
assertNative('sizeof(iovec)', addon.ioUringLayout.iovec, 16);
assertNative('OP_STRIDE', addon.ioUringLayout.opStride, OP_STRIDE);
assertNative('IOSQE_ASYNC', addon.IOSQE_ASYNC, IOSQE_ASYNC);
assertNative('IOV_STRIDE', addon.ioUringLayout.iovStride, IOV_STRIDE);
assertNative('MAX_BUFFERS', addon.ioUringLayout.maxBuffers, MAX_BUFFERS);
assertNative('FALLOC_FL_KEEP_SIZE', addon.fallocConstants.FALLOC_FL_KEEP_SIZE, FALLOC_FL_KEEP_SIZE);
assertNative('FALLOC_FL_PUNCH_HOLE', addon.fallocConstants.FALLOC_FL_PUNCH_HOLE, FALLOC_FL_PUNCH_HOLE);
assertNative('FALLOC_FL_ZERO_RANGE', addon.fallocConstants.FALLOC_FL_ZERO_RANGE, FALLOC_FL_ZERO_RANGE);

/**
 * An io_uring driven by raw syscalls. Needs IORING_FEAT_SINGLE_MMAP,
 * IORING_FEAT_SUBMIT_STABLE and IORING_FEAT_NODROP (Linux ≥ 5.6, which also brings the READ/WRITE opcodes and IOSQE_ASYNC used here); otherwise
 * the constructor throws SysError EOPNOTSUPP.
 *
 * ```
 *  ops  (Float64Array, OP_STRIDE per record)
 *  ┌────────┬────┬────────────┬──────────┬──────────┬──────────┬─────┬──────┐
 *  │ opcode │ fd │ fileOffset │ userData │ iovStart │ iovCount │ arg │ arg2 │
 *  └────────┴────┴────────────┴──────────┴──────────┴──────────┴─────┴──────┘
 *  iovs (Float64Array, IOV_STRIDE per triple)
 *  ┌─────────────┬────────────┬────────────┐
 *  │ bufferIndex │ byteOffset │ byteLength │   checked against the buffer's current length
 *  └─────────────┴────────────┴────────────┘
 * ```
 *
 * Completion: the kernel signals {@link IoUring.eventFd}; watch it with an
 * FdWatcher, drain it with eventfdRead, then {@link IoUring.reap}.
 *
 * Buffers stay referenced while any request is in flight (replaced or
 * cleared slots are released once the ring is idle), so the GC cannot free
 * memory the kernel still writes. Do not `munmap()` a buffer with requests
 * in flight: the kernel would fault on (or, if the address is reused, write
 * into) whatever is mapped there.
 */
export class IoUring {
  /** SQ size (a power of two). Keep in-flight requests ≤ 2 × entries (the CQ size) to avoid the overflow backlog. */
  readonly entries: number;
  /** eventfd registered with IORING_REGISTER_EVENTFD: readable when CQEs were posted. */
  readonly eventFd: number;
  readonly #native: NativeIoUring;

  /** @param entries power of two, 1..4096 */
  constructor(entries: number) {
    assertInt(entries, 1, MAX_ENTRIES, 'entries', 'io_uring_setup');
    if ((entries & (entries - 1)) !== 0) throw invalidArgument('io_uring_setup', 'entries must be a power of two');
    this.#native = new addon.IoUring(entries);
    this.entries = this.#native.entries;
    this.eventFd = this.#native.eventFd;
  }

  /** Requests submitted and not yet reaped. */
  get inflight(): number {
    return this.#native.inflight;
  }

  /**
   * Puts `buffer` at `index` of the buffer table (or clears it with null).
   * A Uint8Array/DataView stands for its window of the underlying ArrayBuffer.
   */
  setBuffer(index: number, buffer: ArrayBuffer | Uint8Array | DataView | null): void {
    assertInt(index, 0, MAX_BUFFERS - 1, 'index', 'io_uring_setbuffer');
    if (buffer !== null && !(buffer instanceof ArrayBuffer) && !(buffer instanceof Uint8Array) && !(buffer instanceof DataView)) {
      throw invalidArgument('io_uring_setbuffer', 'buffer must be an ArrayBuffer, Uint8Array, DataView or null');
    }
    this.#native.setBuffer(index, buffer);
  }

  /**
   * Submits `count` op records from `ops` in one native call and returns how
   * many the kernel took (fewer when the SQ is full: resubmit the rest
   * later). The whole batch is validated first — records and every iovec
   * triple (buffer present, range inside its current length) — and a bad
   * one throws SysError EINVAL with nothing submitted. Per-request failures
   * (bad fd, I/O error) arrive as negative `res` in {@link reap}.
   */
  submit(ops: Float64Array, count: number, iovs: Float64Array): number {
    // Only the containers are checked here; the records are checked in the
    // addon, once, instead of twice per request on the hot path.
    if (!(ops instanceof Float64Array) || !(iovs instanceof Float64Array)) {
      throw invalidArgument('io_uring_submit', 'ops and iovs must be Float64Arrays');
    }
    assertInt(count, 0, Math.floor(ops.length / OP_STRIDE), 'count', 'io_uring_submit');
    return this.#native.submit(ops, count, iovs);
  }

  /**
   * Runs `count` op records on the calling thread with the plain syscalls (pread, pwrite,
   * preadv, pwritev, fsync, fdatasync, fallocate) instead of the ring, and stores their results
   * in `out` as [userData, res] pairs, as {@link reap} would (res = bytes transferred or 0, or
   * -errno); returns `count`. Same records, validation and buffer table as {@link submit}
   * (a bad record throws SysError EINVAL with nothing run); the IOSQE_ASYNC flag is ignored.
   * For files whose I/O never waits for a device but which io_uring cannot run without
   * blocking: it punts every read and write of a tmpfs file to an io-wq thread, and the wake-up
   * costs more than the copy. The call blocks for as long as the syscalls do.
   */
  runInline(ops: Float64Array, count: number, iovs: Float64Array, out: Float64Array): number {
    if (!(ops instanceof Float64Array) || !(iovs instanceof Float64Array) || !(out instanceof Float64Array)) {
      throw invalidArgument('io_uring_run_inline', 'ops, iovs and out must be Float64Arrays');
    }
    assertInt(count, 0, Math.floor(ops.length / OP_STRIDE), 'count', 'io_uring_run_inline');
    if (out.length < 2 * count) throw invalidArgument('io_uring_run_inline', 'out must hold two numbers per op');
    return this.#native.runInline(ops, count, iovs, out);
  }

  /**
   * Whether a `reap` would find a completion: reads the shared completion ring, no syscall,
   * consumes nothing (false once closed). For a poller deciding whom to serve.
   */
  completionsReady(): boolean {
    return this.#native.completionsReady();
  }

  /** Copies up to `out.length / 2` completions as [userData, res] pairs (res < 0 is -errno); returns the count. */
  reap(out: Float64Array): number {
    if (!(out instanceof Float64Array) || out.length < 2) {
      throw invalidArgument('io_uring_reap', 'out must be a Float64Array of length >= 2');
    }
    return this.#native.reap(out);
  }

  /**
   * Cancels and waits (up to ~2 s) for in-flight requests, then closes the
   * ring and its eventfd. Idempotent. Requests still running after that
   * keep their buffers referenced forever (a leak, never a use-after-free).
   */
  close(): void {
    this.#native.close();
  }
}
