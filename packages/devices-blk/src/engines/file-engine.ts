/**
 * File image: a regular file or a block device, driven through one io_uring per queue.
 *
 * Data moves straight between the file and guest memory: every GuestMemory slab is an io_uring
 * buffer (slab index = buffer index) and a request's data segments become the iovec triples of
 * one READV/WRITEV. There is no bounce buffer. What one `submit()` receives is handed to the
 * kernel in a few native calls (about 64 KiB of data each; with O_DIRECT two ops each — see
 * INLINE_BYTES_PER_CALL and DIRECT_OPS_PER_CALL); completions are reaped in batches when the
 * ring's eventfd fires, then reported to the sink once per batch.
 *
 * ```
 *  slot i ── iovs[i*segCapacity … ] triples [slab, offset, len]      userData = slot | range << 16 | generation << 32
 *  READ/WRITE  → READV/WRITEV (short transfer: resubmit the rest; 0 bytes: IOERR)
 *  FLUSH       → FDATASYNC                  (status only once it completed)
 *  DISCARD     → FALLOCATE PUNCH_HOLE|KEEP_SIZE per range (EOPNOTSUPP: ignored, discard is advisory)
 *  WRITE_ZEROES→ FALLOCATE ZERO_RANGE|KEEP_SIZE, or PUNCH_HOLE|KEEP_SIZE with UNMAP
 *                (ZERO_RANGE unsupported: retried as PUNCH_HOLE, which also reads back zeros;
 *                from then on punched straight away)
 *  writethrough: a WRITE or WRITE_ZEROES is followed by FDATASYNC before it completes.
 *  inline (a file on tmpfs/ramfs, see MEMORY_FS_TYPES): the same op records run as plain
 *            syscalls on this thread (IoUring.runInline), reads and writes of
 *            ASYNC_READ_BYTES or more still through the ring.
 *  O_DIRECT: a READ/WRITE whose guest buffers are not 512-byte aligned (address or length)
 *            goes through an aligned per-queue bounce buffer, in chunks of BOUNCE_CHUNK.
 * ```
 * @module
 */
import {
  FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, FdWatcher, IORING_OP, IOSQE_ASYNC, IOV_STRIDE, IoUring,
  MAX_BUFFERS, MAX_ENTRIES, OP_STRIDE, SysError, close as closeFd, eventfdRead, fstatSize, ftruncate, memfdCreate, mmap,
  munmap, openFile,
} from '@vhost-ts/sys';
import { fstatSync, statfsSync } from 'node:fs';
import { availableParallelism, constants as osConstants } from 'node:os';
import {
  BLK_OP_DISCARD, BLK_OP_FLUSH, BLK_OP_READ, BLK_OP_WRITE, BLK_OP_WRITE_ZEROES, type BlkRequest,
} from '../blk-request.js';
import { SECTOR_SIZE, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP } from '../constants.js';
import type { BlockCompletionSink, BlockEngine, BlockImage, EngineOptions } from '../engine.js';
import { BlkError } from '../errors.js';
import { DEFAULT_LOGICAL_BLOCK_SIZE, logicalBlockSizeOf } from './logical-block-size.js';
import { SlotFifo } from './slot-fifo.js';

const EOPNOTSUPP = -(osConstants.errno.EOPNOTSUPP ?? 95);
const EINTR = -(osConstants.errno.EINTR ?? 4);
const EAGAIN = -(osConstants.errno.EAGAIN ?? 11);
const EINVAL = -(osConstants.errno.EINVAL ?? 22);
const PUNCH = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
const ZERO = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
const RANGE_SHIFT = 0x10000;
/**
 * userData carries the slot's generation (8 bits, bumped whenever a new request takes the slot)
 * above the slot and range; the native ring takes userData below 2^40. A completion left over
 * from an earlier request of the slot — which only a double submission could produce — is
 * dropped instead of finishing the request that holds the slot now (acknowledging I/O that has
 * not run).
 */
const GEN_SHIFT = 0x100000000;
/**
 * Reads of at least this many bytes go to io-wq at once (IOSQE_ASYNC). Without the flag a
 * buffered read the kernel cannot finish inline is punted to io-wq, which adds a worker only when
 * none is running: page-cache copies never block, so every large read of the queue queued behind
 * one kernel thread (seen as a single `iou-wrk` at ~100 % of a CPU serving 1 MiB reads at QD4)
 * while qemu-storage-daemon's thread pool copied on both CPUs. Forced-async work is "concurrent":
 * io-wq starts workers for it. Small reads stay inline, where a page-cache hit costs least.
 */
const ASYNC_READ_BYTES = 128 * 1024;
/**
 * At most this many reads on kernel workers at once; further large reads wait in the engine, in
 * arrival order, for one of them to finish. The copies are CPU-bound: many more workers than CPUs
 * only share the CPUs among more requests and stretch every one of them (1 MiB reads at QD4
 * from tmpfs, p99 ours/qemu-storage-daemon 1.22–1.45 uncapped). One more than the CPUs keeps
 * each CPU copying while a finished read's worker hands over and the next one is queued: on
 * this 2-vCPU host, interleaved runs of 1m-read-qd4 (IOPS / p99 against qemu-storage-daemon),
 * cap 2: 0.93 / 0.89, 0.90 / 0.92, 0.96 / 0.71; cap 3: 1.11 / 0.92, 1.20 / 0.75, 1.15 / 0.87;
 * cap 4: 1.14 / 1.26.
 */
export const MAX_OFFLOADED = availableParallelism() + 1;
/**
 * Inside one `submit()`, reads and writes are handed to the kernel whenever this many bytes are
 * queued: page-cache copies run inside io_uring_enter, so a whole kick's batch in one call made
 * its first request wait for the copies of all the others. Between the calls, what completed is
 * published (the driver can reuse the buffers) — as the synchronous engines do every 32 KiB.
 * 64 KiB: one call per request at 64 KiB and above, one per sixteen 4 KiB requests.
 */
export const INLINE_BYTES_PER_CALL = 64 * 1024;
/**
 * With O_DIRECT, ops are handed to the kernel at most this many per call. io_uring plugs a
 * submission of more than two ops, and a plugged batch reaches the device as one dispatch (one
 * notification to a virtio disk): on this VM's virtio disk (ext4, 4 KiB random
 * reads at QD32) batches of sixteen gave 0.86 × the IOPS of one or two per call, with the
 * device's own latency up from ~215 to ~290 µs at the same depth — the device starts on the
 * first requests while the later ones are still being submitted. qemu-storage-daemon's
 * vhost-user-blk export submits requests one by one.
 */
export const DIRECT_OPS_PER_CALL = 2;
/** O_DIRECT: guest buffers whose address or length is not a multiple of this are bounced. */
const DIRECT_ALIGN = 512;
/** Bounce chunks per queue and their size: at most this much of a bounced request per op. */
const BOUNCE_CHUNKS = 4;
const BOUNCE_CHUNK = 256 * 1024;
/** io_uring buffer-table index of the bounce chunks (slabs take 0 … BOUNCE_BUFFER - 1). */
const BOUNCE_BUFFER = MAX_BUFFERS - 1;
/** bounceOf values: the request is not bounced / waits for a chunk. */
const NO_BOUNCE = -2;
const BOUNCE_WAITING = -1;
/** Private range flag (the parser rejects unknown guest flags): ZERO_RANGE already retried. */
const RETRIED = 0x80000000;

/** Request phases of this engine. */
const PHASE_IO = 0;
/** A write waiting for its writethrough FDATASYNC. */
const PHASE_SYNC = 1;

/** Options of {@link FileImage.open}. */
export interface FileImageOptions {
  /** Open read-only (the device then offers VIRTIO_BLK_F_RO). */
  readOnly?: boolean;
  /**
   * O_DIRECT: bypass the page cache. Requests whose guest buffers are not 512-byte aligned are
   * copied through an aligned bounce buffer (as QEMU does).
   */
  direct?: boolean;
  /**
   * How reads and writes reach the file: `io_uring` always through the queue's ring;
   * `inline` as plain syscalls on the queue's thread (reads and writes of 128 KiB or more still
   * go to kernel workers);
   * `auto` (default): `inline` for a regular file on a memory file system (tmpfs, ramfs)
   * opened without O_DIRECT, `io_uring` otherwise. See {@link MEMORY_FS_TYPES}.
   */
  aio?: FileAio;
}

/** See {@link FileImageOptions.aio}. */
export type FileAio = 'auto' | 'io_uring' | 'inline';
export const FILE_AIO_MODES: readonly FileAio[] = ['auto', 'io_uring', 'inline'];

/**
 * statfs f_type of the file systems whose files `aio: auto` reads and writes inline: TMPFS_MAGIC,
 * RAMFS_MAGIC. io_uring cannot run a read or write of such a file without blocking (no
 * FMODE_NOWAIT), so it punts every one of them to an io-wq kernel thread: a wake-up of that
 * thread and one of ours per request, for a copy that takes a microsecond or two and never
 * waits for a device. Measured here, 4 KiB random reads at QD1 from a tmpfs image: ~90 µs per
 * request through the ring (every op counted by the io_uring_queue_async_work tracepoint),
 * against ~20 µs for the same image on ext4, where page-cache hits complete inside
 * io_uring_enter. Inline costs the queue's thread the copy instead (and a page that tmpfs
 * swapped out would be read in on it: choose `io_uring` when the image may swap).
 */
export const MEMORY_FS_TYPES: readonly number[] = [0x01021994, 0x858458f6];

/** Whether `aio: auto` picks inline I/O for the regular file `fd` at `path` (see MEMORY_FS_TYPES). */
function onMemoryFs(path: string, fd: number): boolean {
  try {
    return fstatSync(fd).isFile() && MEMORY_FS_TYPES.includes(statfsSync(path).type);
  } catch {
    return false;
  }
}

/** A disk image file (or block device) opened once; each queue gets its own io_uring. */
export class FileImage implements BlockImage {
  readonly kind = 'file';
  readonly fd: number;
  readonly path: string;
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  readonly direct: boolean;
  /** With O_DIRECT: the sector size of the disk behind the image (see logical-block-size.ts); else 512. */
  readonly logicalBlockSize: number;
  /** Reads and writes run on the queue's thread (see FileImageOptions.aio). */
  readonly inline: boolean;
  readonly description: string;
  private closed = false;

  private constructor(path: string, fd: number, size: number, readOnly: boolean, direct: boolean, logicalBlockSize: number,
    inline: boolean) {
    this.path = path;
    this.inline = inline;
    this.fd = fd;
    this.logicalBlockSize = logicalBlockSize;
    this.sizeBytes = size;
    this.readOnly = readOnly;
    this.direct = direct;
    this.description = `${path} (${size} bytes${readOnly ? ', read-only' : ''}${direct ? ', O_DIRECT' : ''}${inline ? ', inline I/O' : ''}` +
      `${logicalBlockSize !== DEFAULT_LOGICAL_BLOCK_SIZE ? `, ${logicalBlockSize}-byte blocks` : ''})`;
  }

  /**
   * Opens `path`.
   * @throws BlkError `image-not-found`, `image-access` (permissions / read-only file system),
   *   `image-open` (anything else, e.g. O_DIRECT unsupported), `image-too-small` (< 512 bytes).
   */
  static open(path: string, opts: FileImageOptions = {}): FileImage {
    const readOnly = opts.readOnly ?? false;
    const direct = opts.direct ?? false;
    const aio = opts.aio ?? 'auto';
    if (!FILE_AIO_MODES.includes(aio)) throw new BlkError('bad-option', `aio must be one of ${FILE_AIO_MODES.join(', ')}, got ${String(aio)}`);
    if (aio === 'inline' && direct) throw new BlkError('bad-option', 'aio inline cannot be combined with O_DIRECT (the device does that I/O: the ring is the way)');
    let fd: number;
    try {
      fd = openFile(path, { write: !readOnly, direct });
    } catch (err) {
      const code = err instanceof SysError ? err.code : '';
      if (code === 'ENOENT' || code === 'ENOTDIR') throw new BlkError('image-not-found', `${path}: no such file`, { cause: err });
      if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
        throw new BlkError('image-access', `${path}: permission denied${readOnly ? '' : ' (try --read-only)'}`, { cause: err });
      }
      throw new BlkError('image-open', `${path}: cannot open (${code || String(err)})`, { cause: err });
    }
    let size: number;
    try {
      size = fstatSize(fd);
    } catch (err) {
      closeFd(fd);
      throw new BlkError('image-open', `${path}: cannot stat (${err instanceof SysError ? err.code : String(err)})`, { cause: err });
    }
    if (size < SECTOR_SIZE) {
      closeFd(fd);
      throw new BlkError('image-too-small', `${path}: ${size} bytes is smaller than one 512-byte sector`);
    }
    // The page cache takes any 512-byte sector; O_DIRECT needs whole blocks of the disk.
    const inline = aio === 'inline' || (aio === 'auto' && !direct && onMemoryFs(path, fd));
    return new FileImage(path, fd, size, readOnly, direct, direct ? logicalBlockSizeOf(path) : DEFAULT_LOGICAL_BLOCK_SIZE, inline);
  }

  createEngine(opts: EngineOptions): BlockEngine {
    return new FileEngine(this.fd, opts, this.direct, this.inline);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeFd(this.fd);
  }
}

function ringEntriesFor(slots: number): number {
  let n = 8;
  while (n < slots && n < MAX_ENTRIES) n <<= 1;
  return n;
}

/** One queue's io_uring executor (see the module comment). */
export class FileEngine implements BlockEngine {
  inflight: number;
  /** Requests whose current op was submitted with IOSQE_ASYNC and has not completed. */
  asyncInFlight = 0;
  /** Ops submitted with IOSQE_ASYNC since the engine started. */
  asyncOps = 0;
  /** O_DIRECT: the device completes the I/O; otherwise page-cache copies by the kernel. */
  private readonly direct: boolean;
  /**
   * Ops other than large reads run on this thread (IoUring.runInline) — a file on a memory file
   * system, see MEMORY_FS_TYPES. Large reads still go to io-wq with IOSQE_ASYNC.
   */
  readonly inline: boolean;
  /** Inline ops queued: inlineOps[0 … inlineQueued), results of one run in inlineOut. */
  private readonly inlineOps: Float64Array;
  private inlineQueued = 0;
  private readonly inlineOut: Float64Array;
  /** Native runInline calls made (tests check batching). */
  inlineCalls = 0;
  /** Inline ops that answered EAGAIN and went to the ring instead. */
  inlineToRing = 0;
  /** Ops handed to the ring and not yet reaped. */
  private ringPending = 0;
  /** FALLOCATE ZERO_RANGE answered EOPNOTSUPP once: write-zeroes punch holes from then on. */
  noZeroRange = false;
  /** Per slot: its current op was submitted with IOSQE_ASYNC. */
  private readonly asyncOp: Uint8Array;
  /** Per slot: generation of the request holding it (see GEN_SHIFT). */
  private readonly slotGen: Uint8Array;
  /** Completions dropped as left over from an earlier request of their slot (0 unless a bug). */
  staleCompletions = 0;
  /** O_DIRECT reads and writes that went through the bounce buffer (misaligned guest buffers). */
  bouncedRequests = 0;
  /** Per slot: NO_BOUNCE, BOUNCE_WAITING, or the bounce chunk it holds. */
  private readonly bounceOf: Int16Array;
  /** The bounce chunks (mapped on first use; page-aligned), their free list and waiting slots. */
  private bounceBytes: Uint8Array | null = null;
  private bounceMapping: ArrayBuffer | null = null;
  private readonly bounceFree: Int32Array;
  private bounceFreeCount = BOUNCE_CHUNKS;
  private readonly bounceWaiting: SlotFifo;
  /** Per io_uring buffer (slab): its view's byte offset in the mapping, mod DIRECT_ALIGN. */
  private readonly slabMisalign: Int32Array;
  /** Slots of large reads waiting for a worker. */
  private readonly waiting: SlotFifo;
  /** Native submit calls made (tests check batching). */
  submitCalls: number;
  private readonly fd: number;
  private readonly sink: BlockCompletionSink;
  private readonly ring: IoUring;
  private readonly watcher: FdWatcher;
  private readonly segCapacity: number;
  private readonly byIndex: (BlkRequest | null)[];
  /** Queued op records not yet taken by the kernel: ops[0 … queued). */
  private readonly ops: Float64Array;
  private queued: number;
  /** Scratch of failOps: the slots of the refused ops. */
  private readonly failedSlots: Int32Array;
  private readonly iovs: Float64Array;
  private readonly cqes: Float64Array;
  private generation: number;
  private buffersSet: number;
  private writeback: boolean;
  private closed: boolean;
  private referenced: boolean;

  constructor(fd: number, opts: EngineOptions, direct = false, inline = false) {
    if (direct && inline) throw new RangeError('FileEngine: inline I/O with O_DIRECT');
    this.fd = fd;
    this.direct = direct;
    this.inline = inline;
    this.bounceOf = new Int16Array(opts.slots).fill(NO_BOUNCE);
    this.bounceFree = Int32Array.from({ length: BOUNCE_CHUNKS }, (_, i) => i);
    this.bounceWaiting = new SlotFifo(opts.slots);
    this.slabMisalign = new Int32Array(BOUNCE_BUFFER);
    this.sink = opts.sink;
    this.segCapacity = opts.segCapacity;
    const entries = ringEntriesFor(opts.slots);
    this.ring = new IoUring(entries);
    this.inflight = 0;
    this.asyncOp = new Uint8Array(opts.slots);
    this.slotGen = new Uint8Array(opts.slots);
    this.waiting = new SlotFifo(opts.slots);
    this.submitCalls = 0;
    this.byIndex = new Array<BlkRequest | null>(opts.slots).fill(null);
    // Worst case every slot is a multi-range discard/write-zeroes, or a write plus its sync.
    this.ops = new Float64Array(opts.slots * Math.max(2, opts.rangeCapacity) * OP_STRIDE);
    this.queued = 0;
    this.failedSlots = new Int32Array(this.ops.length / OP_STRIDE);
    this.inlineOps = new Float64Array(inline ? this.ops.length : 0);
    this.inlineOut = new Float64Array(inline ? 2 * (this.ops.length / OP_STRIDE) : 0);
    this.iovs = new Float64Array(opts.slots * opts.segCapacity * IOV_STRIDE);
    this.cqes = new Float64Array(entries * 4);
    this.generation = -1;
    this.buffersSet = 0;
    this.writeback = true;
    this.closed = false;
    this.referenced = false;
    this.watcher = new FdWatcher(this.ring.eventFd, () => this.onCompletions());
    this.watcher.start(FdWatcher.READABLE);
    this.watcher.unref();
  }

  setWriteback(writeback: boolean): void {
    this.writeback = writeback;
  }

  submit(batch: readonly BlkRequest[], count: number): void {
    if (count === 0) return;
    if (this.closed) {
      for (let i = 0; i < count; i++) { batch[i].status = VIRTIO_BLK_S_IOERR; this.sink.complete(batch[i]); }
      this.sink.completionsDone();
      return;
    }
    const mem = batch[0].memory;
    if (mem !== null && mem.generation !== this.generation && !this.registerMemory(batch, count)) return;
    // With O_DIRECT also at most two ops per call (flushes and discards count), so the block
    // layer does not plug them.
    const callOps = this.direct ? DIRECT_OPS_PER_CALL : Number.MAX_SAFE_INTEGER;
    let bytes = 0;
    for (let i = 0; i < count; i++) {
      const req = batch[i];
      this.byIndex[req.index] = req;
      this.slotGen[req.index]++;
      this.bounceOf[req.index] = this.direct && (req.op === BLK_OP_READ || req.op === BLK_OP_WRITE) && this.misaligned(req)
        ? BOUNCE_WAITING : NO_BOUNCE;
      req.status = VIRTIO_BLK_S_OK;
      req.phase = PHASE_IO;
      req.done = 0;
      this.inflight++;
      this.queueRequest(req);
      if (req.op === BLK_OP_READ || req.op === BLK_OP_WRITE) bytes += req.length;
      if ((bytes >= INLINE_BYTES_PER_CALL || this.queued >= callOps) && i + 1 < count) {
        bytes = 0;
        this.flushQueued();
        // Reports what finished (the queue publishes it; it does not start new work mid-batch).
        // Inline ops reported themselves; the ring is looked at only when it holds some.
        if (this.ringPending > 0 || this.queued > 0) this.reapAll();
      }
    }
    this.flushQueued();
    // Buffered I/O that hits the page cache completes inside io_uring_enter: collect it now
    // (shared-memory read, no syscall) instead of one event-loop turn later via the eventfd.
    // Also when ops are still queued (the kernel took none: reapAll's flush tries again).
    if (this.ringPending > 0 || this.queued > 0) this.reapAll();
  }

  /** Points the buffer table at the slabs of the batch's memory (a new memory table). */
  private registerMemory(batch: readonly BlkRequest[], count: number): boolean {
    const mem = batch[0].memory!;
    if (mem.slabCount > (this.direct ? BOUNCE_BUFFER : MAX_BUFFERS)) {
      // Cannot happen with ≤ 1024 GiB of guest memory; fail rather than mis-address.
      for (let i = 0; i < count; i++) { batch[i].status = VIRTIO_BLK_S_IOERR; this.sink.complete(batch[i]); }
      this.sink.completionsDone();
      return false;
    }
    for (let i = 0; i < mem.slabCount; i++) {
      this.ring.setBuffer(i, mem.slabs[i]);
      this.slabMisalign[i] = mem.slabs[i].byteOffset % DIRECT_ALIGN;
    }
    for (let i = mem.slabCount; i < this.buffersSet; i++) this.ring.setBuffer(i, null);
    this.buffersSet = mem.slabCount;
    this.generation = mem.generation;
    return true;
  }

  /** Appends the op records of `req` (at its current phase / progress). */
  private queueRequest(req: BlkRequest): void {
    switch (req.op) {
      case BLK_OP_READ:
      case BLK_OP_WRITE: {
        req.pending = 1;
        const read = req.op === BLK_OP_READ;
        let flags = 0;
        if (read && !this.direct && req.length - req.done >= ASYNC_READ_BYTES) {
          if (this.asyncOp[req.index] === 0) {
            if (this.asyncInFlight >= MAX_OFFLOADED) {
              // Every worker slot is taken: wait here (clearAsync starts it).
              this.waiting.push(req.index);
              return;
            }
            this.asyncOp[req.index] = 1;
            this.asyncInFlight++;
          }
          flags = IOSQE_ASYNC;
          this.asyncOps++;
        }
        if (this.bounceOf[req.index] !== NO_BOUNCE) {
          this.queueBounced(req);
          return;
        }
        const n = this.buildIovs(req);
        // One segment (the common case): plain READ/WRITE spares the kernel the iovec import
        // (measured on this host, 4 KiB reads from tmpfs at QD32: 7.3 → 5.4 µs per op).
        const opcode = n === 1 ? (read ? IORING_OP.READ : IORING_OP.WRITE) : (read ? IORING_OP.READV : IORING_OP.WRITEV);
        // Inline: a large write goes to the ring too, where io-wq copies it on another CPU while
        // this thread serves on (unflagged: the file's inode lock serialises writes anyway, so
        // one worker is as fast as several). 1m-write-qd4 from tmpfs, C load generator: 4.2 k
        // IOPS through the ring, 3.7 k inline.
        const ring = flags === IOSQE_ASYNC || (this.inline && !read && req.length - req.done >= ASYNC_READ_BYTES);
        this.pushOp(opcode, req.offset + req.done, req.index, req.index * this.segCapacity, n, flags, 0, ring);
        return;
      }
      case BLK_OP_FLUSH:
        req.pending = 1;
        this.pushOp(IORING_OP.FDATASYNC, 0, req.index, 0, 0, 0, 0);
        return;
      case BLK_OP_DISCARD:
      case BLK_OP_WRITE_ZEROES: {
        req.pending = req.rangeCount;
        for (let r = 0; r < req.rangeCount; r++) {
          // Without ZERO_RANGE on this file system (tmpfs) a punched hole reads back zeros too.
          const mode = req.op === BLK_OP_DISCARD || (req.rangeFlags[r] & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0
            || this.noZeroRange ? PUNCH : ZERO;
          this.pushOp(IORING_OP.FALLOCATE, req.rangeOffset[r], req.index + r * RANGE_SHIFT, 0, 0, mode, req.rangeLen[r]);
        }
        return;
      }
      default:
        req.pending = 0;
        req.status = VIRTIO_BLK_S_IOERR;
        this.finish(req);
    }
  }

  /** Writes the iovec triples of `req` from `req.done` bytes on; returns how many. */
  private buildIovs(req: BlkRequest): number {
    const iovs = this.iovs;
    let t = req.index * this.segCapacity * IOV_STRIDE;
    let skip = req.done, n = 0;
    for (let s = 0; s < req.segCount; s++) {
      const len = req.segLen[s];
      if (skip >= len) { skip -= len; continue; }
      iovs[t] = req.segSlab[s];
      iovs[t + 1] = req.segOffset[s] + skip;
      iovs[t + 2] = len - skip;
      t += IOV_STRIDE;
      n++;
      skip = 0;
    }
    return n;
  }

  /**
   * O_DIRECT needs the memory and length of every iovec aligned (to the device's DMA alignment:
   * 512 covers it). The guest decides where its buffers are: boot loaders' are anywhere.
   */
  private misaligned(req: BlkRequest): boolean {
    for (let s = 0; s < req.segCount; s++) {
      if (((this.slabMisalign[req.segSlab[s]] + req.segOffset[s]) | req.segLen[s]) % DIRECT_ALIGN !== 0) return true;
    }
    return false;
  }

  /**
   * The next chunk of a misaligned O_DIRECT request through a bounce chunk (QEMU bounces such
   * requests too): a write copies the guest's bytes in first; a read's bytes are copied out
   * when it completes (handleCqe). Without a free chunk the request waits, in arrival order.
   * Rare (Linux guests align their buffers), so the copies' subarray views are acceptable here.
   */
  private queueBounced(req: BlkRequest): void {
    let b = this.bounceOf[req.index];
    if (b < 0) {
      if (this.bounceFreeCount === 0) {
        this.bounceWaiting.push(req.index);
        return;
      }
      if (this.bounceBytes === null) {
        try {
          this.mapBounce();
        } catch {
          // No memory or fds for the chunks: this request fails, the queue goes on.
          req.status = VIRTIO_BLK_S_IOERR;
          req.pending = 0;
          this.finish(req);
          this.done();
          return;
        }
      }
      b = this.bounceFree[--this.bounceFreeCount];
      this.bounceOf[req.index] = b;
      this.bouncedRequests++;
    }
    const len = Math.min(BOUNCE_CHUNK, req.length - req.done);
    const at = b * BOUNCE_CHUNK;
    if (req.op === BLK_OP_WRITE) this.copyGuest(req, at, len, true);
    const t = req.index * this.segCapacity * IOV_STRIDE;
    this.iovs[t] = BOUNCE_BUFFER;
    this.iovs[t + 1] = at;
    this.iovs[t + 2] = len;
    this.pushOp(req.op === BLK_OP_READ ? IORING_OP.READ : IORING_OP.WRITE, req.offset + req.done, req.index, req.index * this.segCapacity, 1, 0, 0);
  }

  /** Copies `len` request bytes from `req.done` on between the guest's segments and bounce byte `at`. */
  private copyGuest(req: BlkRequest, at: number, len: number, toBounce: boolean): void {
    const bounce = this.bounceBytes!;
    const slabs = req.memory!.slabs;
    let skip = req.done;
    for (let s = 0; s < req.segCount && len > 0; s++) {
      const segLen = req.segLen[s];
      if (skip >= segLen) { skip -= segLen; continue; }
      const n = Math.min(segLen - skip, len);
      const off = req.segOffset[s] + skip;
      const slab = slabs[req.segSlab[s]];
      if (toBounce) bounce.set(slab.subarray(off, off + n), at);
      else slab.set(bounce.subarray(at, at + n), off);
      at += n;
      len -= n;
      skip = 0;
    }
  }

  private mapBounce(): void {
    const fd = memfdCreate('vhost-ts-blk-bounce');
    try {
      ftruncate(fd, BOUNCE_CHUNK * BOUNCE_CHUNKS);
      this.bounceMapping = mmap(fd, BOUNCE_CHUNK * BOUNCE_CHUNKS, 0);
    } finally {
      closeFd(fd);
    }
    this.bounceBytes = new Uint8Array(this.bounceMapping);
    this.ring.setBuffer(BOUNCE_BUFFER, this.bounceMapping);
  }

  /** Gives the request's bounce chunk back and starts the oldest request waiting for one. */
  private releaseBounce(index: number): void {
    const b = this.bounceOf[index];
    this.bounceOf[index] = NO_BOUNCE;
    if (b < 0) return;
    this.bounceFree[this.bounceFreeCount++] = b;
    if (this.bounceWaiting.count > 0) {
      const req = this.byIndex[this.bounceWaiting.shift()];
      if (req !== null && req.pending > 0) this.queueRequest(req); // submitted with the next flush
    }
  }

  /** Queues an op record: for the ring, or (inline engine, unless `viaRing`) for runInline. */
  private pushOp(opcode: number, offset: number, userData: number, iovStart: number, iovCount: number, arg: number, arg2: number,
    viaRing = false): void {
    const toInline = this.inline && !viaRing;
    const o = (toInline ? this.inlineQueued++ : this.queued++) * OP_STRIDE;
    const ops = toInline ? this.inlineOps : this.ops;
    ops[o] = opcode;
    ops[o + 1] = this.fd;
    ops[o + 2] = offset;
    ops[o + 3] = userData + this.slotGen[userData % RANGE_SHIFT] * GEN_SHIFT;
    ops[o + 4] = iovStart;
    ops[o + 5] = iovCount;
    ops[o + 6] = arg;
    ops[o + 7] = arg2;
  }

  /**
   * Hands every queued ring op to the kernel in one native call (what does not fit waits for
   * completions) and runs the inline ones, with their follow-ups, until none is left.
   */
  private flushQueued(): void {
    this.flushRing();
    while (this.inlineQueued > 0) {
      this.runInlineOps();
      this.flushRing();
    }
  }

  /**
   * One runInline call for the queued inline ops; their results are handled as completions
   * (follow-ups — the rest of a short transfer, a writethrough sync — queue up again) and
   * reported once. Reported after every result is read: the sink may submit new requests
   * from its completion callback, which run their own ops (and reuse inlineOut) first.
   */
  private runInlineOps(): void {
    const n = this.inlineQueued;
    try {
      this.ring.runInline(this.inlineOps, n, this.iovs, this.inlineOut);
      this.inlineCalls++;
    } catch {
      // Refused as a whole (a buffer vanished): fail these ops, as a refused ring batch.
      this.inlineQueued = 0;
      this.failOps(this.inlineOps, n);
      return;
    }
    this.inlineQueued = 0;
    const out = this.inlineOut;
    // EAGAIN would come back at once on every retry here (only a forced `inline` on a file
    // system that refuses to block can give it): such an op goes to the ring, which waits.
    // Moved before any result is handled — handling queues follow-ups over inlineOps[0 …).
    for (let i = 0; i < n; i++) {
      if (out[2 * i + 1] !== EAGAIN) continue;
      const from = i * OP_STRIDE, to = this.queued * OP_STRIDE;
      for (let k = 0; k < OP_STRIDE; k++) this.ops[to + k] = this.inlineOps[from + k];
      this.queued++;
      this.inlineToRing++;
      out[2 * i + 1] = NaN; // skipped below
    }
    let any = false;
    for (let i = 0; i < n; i++) {
      const res = out[2 * i + 1];
      if (!Number.isNaN(res) && this.handleCqe(out[2 * i], res)) any = true;
    }
    if (any) this.done();
  }

  private flushRing(): void {
    while (this.queued > 0) {
      let taken: number;
      try {
        taken = this.ring.submit(this.ops, this.queued, this.iovs);
        this.submitCalls++;
      } catch {
        // The batch was refused as a whole (a buffer vanished, or io_uring_enter failed): fail
        // every queued op rather than guess which one. Failing large reads frees worker slots,
        // and reads waiting for one are queued then: they get their own try now, since no
        // completion may come later to flush them (nothing else in flight: a hang).
        const n = this.queued;
        this.queued = 0;
        this.failOps(this.ops, n);
        continue;
      }
      if (taken > 0 && taken < this.queued) this.ops.copyWithin(0, taken * OP_STRIDE, this.queued * OP_STRIDE);
      this.queued -= taken;
      this.ringPending += taken;
      if (this.inflight > 0 && !this.referenced) {
        this.watcher.ref();
        this.referenced = true;
      }
      return;
    }
  }

  /** Fails the `n` op records of `ops` (a refused batch), whose queue the caller emptied. */
  private failOps(ops: Float64Array, n: number): void {
    const slots = this.failedSlots;
    // Read every slot out first: clearAsync below may queue a waiting read into ops[0 …).
    for (let i = 0; i < n; i++) slots[i] = ops[i * OP_STRIDE + 3] % RANGE_SHIFT;
    let any = false;
    for (let i = 0; i < n; i++) {
      const req = this.byIndex[slots[i]];
      if (req === null) continue;
      this.clearAsync(req.index);
      req.status = VIRTIO_BLK_S_IOERR;
      if (--req.pending === 0) { this.finish(req); any = true; }
    }
    if (any) this.done();
  }

  /**
   * See BlockEngine.offloaded. Buffered I/O that did not complete inside io_uring_enter is
   * being copied by an io-wq kernel thread (tmpfs reads always are: shmem cannot read without
   * blocking), which needs a CPU; a queue spinning meanwhile took it from that thread on this
   * 2-vCPU host (64 KiB reads at QD8 from tmpfs, ours/qemu-storage-daemon: IOPS 0.80, p99 1.06
   * with the spin → 1.16, 0.93 without). With O_DIRECT the device does the work: spinning costs
   * no one, only requests forced onto workers count.
   */
  get offloaded(): number {
    // Inline: only what went to the ring (large reads and writes) is on kernel threads.
    return this.direct ? this.asyncInFlight : this.inline ? this.ringPending : this.inflight;
  }

  /** The ring's eventfd fired: reap everything, report once, submit follow-ups once. */
  private onCompletions(): void {
    if (this.closed) return;
    eventfdRead(this.ring.eventFd);
    this.reapAll();
    if (this.inflight === 0 && this.referenced) {
      this.watcher.unref();
      this.referenced = false;
    }
  }

  /**
   * Busy-poll hook: reads the completion ring directly (one native call, no syscall — the CQ
   * is shared memory). The eventfd stays signalled; its later wake-up finds nothing to reap.
   */
  poll(): boolean {
    if (this.closed || this.inflight === 0) return false;
    return this.reapAll();
  }

  /** See BlockEngine.hasCompletions: a look at the shared completion ring. */
  hasCompletions(): boolean {
    return !this.closed && this.inflight > 0 && this.ring.completionsReady();
  }

  /** Reaps every posted completion, reports once, submits follow-ups once; true if any finished. */
  private reapAll(): boolean {
    const cqes = this.cqes;
    let any = false;
    for (;;) {
      const n = this.ring.reap(cqes);
      this.ringPending = Math.max(0, this.ringPending - n);
      for (let i = 0; i < n; i++) {
        if (this.handleCqe(cqes[2 * i], cqes[2 * i + 1])) any = true;
      }
      if (n < cqes.length / 2) break;
    }
    if (any) this.done();
    this.flushQueued();
    return any;
  }

  /** @returns true when a request finished. */
  private handleCqe(userData: number, res: number): boolean {
    const index = userData % RANGE_SHIFT;
    const req = index < this.byIndex.length ? this.byIndex[index] : null;
    if (req === null || req.pending === 0) return false;
    if (Math.floor(userData / GEN_SHIFT) !== this.slotGen[index]) { this.staleCompletions++; return false; }
    this.clearAsync(index);
    if (req.phase === PHASE_SYNC) {
      // The writethrough sync after a write or write-zeroes.
      if (res < 0) req.status = VIRTIO_BLK_S_IOERR;
      return this.opDone(req);
    }
    switch (req.op) {
      case BLK_OP_READ:
      case BLK_OP_WRITE:
        if (res === EINTR || res === EAGAIN) { this.queueRequest(req); return false; }
        if (res === EINVAL && this.direct && this.bounceOf[index] === NO_BOUNCE) {
          // O_DIRECT refused buffers the 512-byte check let through (a device whose DMA
          // alignment is stricter, or memory not mapped page-aligned): bounce them too. What
          // the bounce chunks cannot fix (a range not aligned to the device's logical blocks)
          // fails again and ends as IOERR.
          this.bounceOf[index] = BOUNCE_WAITING;
          this.queueRequest(req);
          return false;
        }
        if (res <= 0) {
          // An error, or no progress (EOF: the file shrank). Never report a partial write as OK.
          req.status = VIRTIO_BLK_S_IOERR;
          return this.opDone(req);
        }
        const b = this.bounceOf[index];
        if (b >= 0 && req.op === BLK_OP_READ) this.copyGuest(req, b * BOUNCE_CHUNK, Math.min(res, req.length - req.done), false);
        req.done += res;
        if (req.done < req.length) { this.queueRequest(req); return false; }
        if (req.op === BLK_OP_READ) {
          req.written = req.length;
        } else if (!this.writeback) {
          // Writethrough (CONFIG_WCE writeback = 0): the write is durable before it completes.
          req.phase = PHASE_SYNC;
          req.pending = 1;
          this.pushOp(IORING_OP.FDATASYNC, 0, req.index, 0, 0, 0, 0);
          return false;
        }
        return this.opDone(req);
      case BLK_OP_FLUSH:
        if (res < 0) req.status = VIRTIO_BLK_S_IOERR;
        return this.opDone(req);
      case BLK_OP_DISCARD:
        // Discard is advisory (virtio 1.2 §5.2.6.2: the device MAY deallocate).
        if (res < 0 && res !== EOPNOTSUPP) req.status = VIRTIO_BLK_S_IOERR;
        return this.opDone(req);
      case BLK_OP_WRITE_ZEROES: {
        if (res === EOPNOTSUPP) {
          this.noZeroRange = true;
          const r = Math.floor(userData / RANGE_SHIFT) % RANGE_SHIFT;
          if (r < req.rangeCount && (req.rangeFlags[r] & (VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP | RETRIED)) === 0) {
            // No ZERO_RANGE here: a punched hole reads back as zeros too.
            req.rangeFlags[r] |= RETRIED;
            this.pushOp(IORING_OP.FALLOCATE, req.rangeOffset[r], req.index + r * RANGE_SHIFT, 0, 0, PUNCH, req.rangeLen[r]);
            return false;
          }
        }
        if (res < 0) req.status = VIRTIO_BLK_S_IOERR;
        if (req.pending === 1 && !this.writeback && req.status === VIRTIO_BLK_S_OK) {
          // Writethrough: zeroed ranges are durable before the request completes, as written
          // data is (QEMU makes write-zeroes FUA there).
          req.phase = PHASE_SYNC;
          this.pushOp(IORING_OP.FDATASYNC, 0, req.index, 0, 0, 0, 0);
          return false;
        }
        return this.opDone(req);
      }
      default:
        return false;
    }
  }

  private clearAsync(index: number): void {
    if (this.asyncOp[index] !== 0) {
      this.asyncOp[index] = 0;
      this.asyncInFlight--;
      if (this.waiting.count > 0) {
        // A worker slot is free: the oldest waiting read goes (submitted with the next flush).
        const req = this.byIndex[this.waiting.shift()];
        if (req !== null && req.pending > 0) this.queueRequest(req);
      }
    }
  }

  private opDone(req: BlkRequest): boolean {
    if (--req.pending > 0) return false;
    this.finish(req);
    return true;
  }

  private finish(req: BlkRequest): void {
    if (this.bounceOf[req.index] !== NO_BOUNCE) this.releaseBounce(req.index);
    this.byIndex[req.index] = null;
    this.inflight--;
    this.sink.complete(req);
  }

  private done(): void {
    this.sink.completionsDone();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.watcher.close();
    this.ring.close();
    // After the ring: its close waits for (or cancels) what still targets the chunks.
    if (this.bounceMapping !== null) munmap(this.bounceMapping);
    this.bounceMapping = null;
    this.bounceBytes = null;
  }
}
