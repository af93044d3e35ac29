/**
 * Workloads and the one-line result format shared by the load generator (which runs them)
 * and the matrix driver (which spawns it and parses its line).
 * @module
 */

/** Access pattern. */
export type Pattern = 'randread' | 'randwrite' | 'read' | 'write';

/** One load-generator run. */
export interface WorkloadSpec {
  pattern: Pattern;
  /** Request size in bytes (multiple of 512). */
  blockSize: number;
  /** Requests kept in flight per queue. */
  queueDepth: number;
  /** Queues driven (each with `queueDepth` in flight). */
  queues: number;
}

/** Named workloads of the matrix (fio-style names). */
export const WORKLOADS: Readonly<Record<string, WorkloadSpec>> = {
  '4k-randread-qd1': { pattern: 'randread', blockSize: 4096, queueDepth: 1, queues: 1 },
  '4k-randread-qd32': { pattern: 'randread', blockSize: 4096, queueDepth: 32, queues: 1 },
  '4k-randwrite-qd1': { pattern: 'randwrite', blockSize: 4096, queueDepth: 1, queues: 1 },
  '4k-randwrite-qd32': { pattern: 'randwrite', blockSize: 4096, queueDepth: 32, queues: 1 },
  '64k-read-qd8': { pattern: 'read', blockSize: 65536, queueDepth: 8, queues: 1 },
  '64k-write-qd8': { pattern: 'write', blockSize: 65536, queueDepth: 8, queues: 1 },
  '1m-read-qd4': { pattern: 'read', blockSize: 1 << 20, queueDepth: 4, queues: 1 },
  '1m-write-qd4': { pattern: 'write', blockSize: 1 << 20, queueDepth: 4, queues: 1 },
  // Two queues driven from one thread (a multi-queue guest disk): both must be served.
  '4k-randread-qd16x2q': { pattern: 'randread', blockSize: 4096, queueDepth: 16, queues: 2 },
};

/** The JSON line the load generator prints (one per run). */
export interface LoadgenResult {
  ok: boolean;
  /** Set when `ok` is false. */
  error?: string;
  socket: string;
  pattern: Pattern;
  blockSize: number;
  queueDepth: number;
  queues: number;
  /** Measured seconds (after warm-up). */
  seconds: number;
  /** Completed requests in the measured window (all statuses). */
  requests: number;
  iops: number;
  /** MB/s (10^6 bytes) of successfully transferred data. */
  mbps: number;
  /** Latency in microseconds, submit → completion seen by the driver. */
  latUs: { mean: number; p50: number; p99: number; p999: number; max: number };
  /** With several queues: each queue's IOPS and p99 (µs), in queue order. */
  perQueue?: { iops: number; p99: number }[];
  /** Requests whose status byte was not VIRTIO_BLK_S_OK (or was never written), whole run. */
  errors: number;
  /** Used elements whose length differs from what a correct device writes (informational). */
  lenMismatches: number;
  /** Kicks sent and calls received in the measured window. */
  kicks: number;
  calls: number;
  /** Watchdog rescues: a completion was found without a call signal (lost notification). */
  stalls: number;
  /** CPU seconds of the load generator itself in the measured window (user + system). */
  cpuSeconds: number;
  /**
   * CPU of the back-end process in cores (CPU seconds / wall seconds) over the whole load
   * generator run (connect, warm-up, measured window, drain); added by the matrix driver.
   */
  backendCpu?: number;
  /** Device facts read from config space. */
  capacityBytes: number;
  features: string;
}
