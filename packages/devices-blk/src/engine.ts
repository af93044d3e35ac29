/**
 * The engine interface: what executes parsed block requests.
 *
 * ```
 *  BlockImage (one per device: the file, the ArrayBuffer, or nothing)
 *     └─ createEngine(queue) ─▶ BlockEngine (one per queue: its own io_uring, buffers, scratch)
 *                                 submit(batch) ─▶ … ─▶ sink.complete(req) × n ; sink.completionsDone()
 * ```
 * Per-queue engines share nothing mutable, so a queue can later move to a worker thread with
 * its engine. Engines complete requests through a {@link BlockCompletionSink}: `complete` per
 * request (with `req.status` set), then one `completionsDone` per completion batch so the queue
 * publishes the used ring once and notifies at most once.
 * @module
 */
import type { BlkRequest } from './blk-request.js';

/** Where an engine reports completions (implemented by the queue handler). */
export interface BlockCompletionSink {
  /** `req` finished; `req.status` (VIRTIO_BLK_S_*) is final. Called from the engine. */
  complete(req: BlkRequest): void;
  /** End of a batch of `complete` calls. */
  completionsDone(): void;
  /**
   * Publishes what was completed so far without ending the batch (no new work is started).
   * A synchronous engine calls it inside a long batch so the driver can reuse the first
   * buffers while the rest are still being processed.
   */
  progress(): void;
}

/** Per-queue executor. */
export interface BlockEngine {
  /** Requests submitted and not completed. */
  readonly inflight: number;
  /**
   * Optional: requests being executed by kernel worker threads (for buffered file I/O: every
   * request that did not complete inside the submit). While any are, the queue does not
   * busy-poll: on a small machine the spinning would take the CPU those workers need.
   */
  readonly offloaded?: number;
  /**
   * Executes `batch[0..count)` (ops READ, WRITE, FLUSH, DISCARD, WRITE_ZEROES). Completion may
   * happen synchronously (inside this call) or later; either way through the sink.
   */
  submit(batch: readonly BlkRequest[], count: number): void;
  /** Writeback (true, default) or writethrough (false: writes are durable before completing). */
  setWriteback(writeback: boolean): void;
  /**
   * Optional: collects finished requests without waiting and without a system call (the
   * queue's busy-poll loop calls it while requests are in flight). Completions go through the
   * sink as usual. @returns true when at least one request finished.
   */
  poll?(): boolean;
  /**
   * Optional, with `poll`: whether finished requests wait to be collected — a look only, no
   * completion is reported (another queue's poller asks it, see PollGroup).
   */
  hasCompletions?(): boolean;
  /** Releases the engine (call after every request completed). Idempotent. */
  close(): void;
}

/** What a new per-queue engine is told. */
export interface EngineOptions {
  /** Queue index. */
  queueIndex: number;
  /** Request slots of the queue (most requests in flight). */
  slots: number;
  /** Data segments per slot. */
  segCapacity: number;
  /** Discard / write-zeroes ranges per slot. */
  rangeCapacity: number;
  /** Completion target. */
  sink: BlockCompletionSink;
  /**
   * The driver negotiated VIRTIO_RING_F_EVENT_IDX: it names the completion it wants to be
   * signalled for, so an extra publish inside a batch costs no extra interrupt (without it,
   * every publish may raise one).
   */
  eventIdx: boolean;
}

/** The backing store of a device; creates one engine per queue. */
export interface BlockImage {
  /** 'file' | 'memory' | 'null'. */
  readonly kind: string;
  /** Size in bytes (the capacity exposed is this rounded down to 512-byte sectors). */
  readonly sizeBytes: number;
  /** The image cannot be written. */
  readonly readOnly: boolean;
  /**
   * Optional: the block size the image needs (O_DIRECT on a 4 KiB-sector disk); the device
   * advertises it as `blk_size`. Default 512.
   */
  readonly logicalBlockSize?: number;
  /** Human description for logs. */
  readonly description: string;
  createEngine(opts: EngineOptions): BlockEngine;
  /** Releases the image (after every engine was closed). Idempotent. */
  close(): void;
}
