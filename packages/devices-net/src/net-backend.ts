/**
 * The "port" interface between the virtio-net device and a backend (tap, switch, loopback).
 *
 * ```
 *  guest TX chains ──► device ──transmit(pair, batch)──► backend port ──► tap fd / other ports / echo
 *  guest RX chains ◄── device ◄──deliver(pair, batch)─── backend port ◄── tap fd / other ports / echo
 * ```
 * Frames travel in {@link FrameBatch} slots: 12-byte virtio_net_hdr_v1 + Ethernet frame.
 * Both directions are synchronous batch calls; a batch belongs to the caller again when the
 * call returns (the callee copies what it keeps).
 * @module
 */
import type { FrameBatch } from './frame-batch.js';
import type { PortCounters } from './port-counters.js';

/** What a backend sees of a device: its RX side. */
export interface NetPortSink {
  /** Name for logs and metrics (e.g. the socket path). */
  readonly name: string;
  /**
   * Delivers frames into RX queue `pair`: `indices[0..count)` name the slots of `batch`, or when
   * `indices` is null, slots `0..count)`. Frames the guest has no buffers for are held (bounded)
   * and retried on the next RX kick, or dropped and counted — never blocks.
   */
  deliver(pair: number, batch: FrameBatch, indices: Uint16Array | null, count: number): void;
  /** True when RX queue `pair` is running and holds no backlog (a source may read more). */
  rxReady(pair: number): boolean;
  /** Queue pairs the driver uses now (1 unless MQ set more). */
  readonly activePairs: number;
  /**
   * Pairs the driver allows at all: VQ_PAIRS_SET's count once it sent one, else every pair. No
   * frame may be queued on an RX queue at or beyond it (virtio 1.2 §5.1.6.5.5).
   */
  readonly pairLimit: number;
  readonly counters: PortCounters;
}

/** A device's connection to a backend. */
export interface NetBackendPort {
  /** The guest transmitted `batch` on queue pair `pair` (frames 0..count). */
  transmit(pair: number, batch: FrameBatch): void;
  /** RX queue `pair` got buffers again after running dry: resume input to it. */
  onRxSpace(pair: number): void;
  /** The driver acked `features`; a TAP maps GUEST_* offloads to TUNSETOFFLOAD. */
  setFeatures(features: bigint): void;
  /** The device started (pairs > 0: that many pairs active) or stopped (0). */
  setActivePairs(pairs: number): void;
  /** Detaches from the backend; frees fds. */
  close(): void;
}

/** A backend: one per process, with one port per device attached to it. */
export interface NetBackend {
  readonly kind: 'tap' | 'switch' | 'loopback';
  /** Device offload feature bits this backend can carry end to end (virtio 1.2 §5.1.3). */
  readonly offloadFeatures: bigint;
  /** Largest slot (header + frame) the backend produces or accepts. */
  readonly slotSize: number;
  /** Queue pairs a port of this backend can serve at most. */
  readonly maxPairs: number;
  /** Attaches a device. */
  connect(sink: NetPortSink): NetBackendPort;
  /** Closes every port and frees resources. */
  close(): void;
}
