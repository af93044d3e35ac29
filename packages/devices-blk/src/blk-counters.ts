/**
 * Per-queue counters of the block device, and their Prometheus text form.
 * @module
 */

/** Counters of one queue (monotonic; kept across queue restarts). */
export class BlkQueueCounters {
  /** Requests completed (any status). */
  requests = 0;
  /** Bytes read from the image into the guest. */
  bytesRead = 0;
  /** Bytes written from the guest to the image. */
  bytesWritten = 0;
  /** Requests completed with IOERR. */
  errors = 0;
  /** Requests completed with UNSUPP. */
  unsupported = 0;
  /** Flush requests completed. */
  flushes = 0;
  /** Discard and write-zeroes requests completed. */
  discards = 0;
  /** Kicks handled. */
  kicks = 0;
  /** Used-buffer notifications sent. */
  notifications = 0;
  /** Notifications the driver's suppression (EVENT_IDX / NO_INTERRUPT) made unnecessary. */
  notificationsSuppressed = 0;
  /** Chains that could not be answered (no status byte) or queue faults. */
  badChains = 0;
  /** Busy-poll spins that found work (a request or a completion) before their window ended. */
  pollHits = 0;
  /** Busy-poll spins that ran out their window (the queue then slept until a kick). */
  pollMisses = 0;
  /** Microseconds spent spinning (the CPU price of polling). */
  pollSpinUs = 0;
  /** Spins and busy runs cut short to let another queue of the device run (PollGroup). */
  pollYields = 0;
}

/** Metric name, help text and field of each counter. */
const METRICS: readonly [string, string, keyof BlkQueueCounters][] = [
  ['vhost_blk_requests_total', 'Requests completed', 'requests'],
  ['vhost_blk_read_bytes_total', 'Bytes read from the image into guest memory', 'bytesRead'],
  ['vhost_blk_written_bytes_total', 'Bytes written from guest memory to the image', 'bytesWritten'],
  ['vhost_blk_errors_total', 'Requests completed with VIRTIO_BLK_S_IOERR', 'errors'],
  ['vhost_blk_unsupported_total', 'Requests completed with VIRTIO_BLK_S_UNSUPP', 'unsupported'],
  ['vhost_blk_flushes_total', 'Flush requests completed', 'flushes'],
  ['vhost_blk_discards_total', 'Discard and write-zeroes requests completed', 'discards'],
  ['vhost_blk_kicks_total', 'Kicks (available-buffer notifications) handled', 'kicks'],
  ['vhost_blk_notifications_total', 'Used-buffer notifications sent', 'notifications'],
  ['vhost_blk_notifications_suppressed_total', 'Used-buffer notifications suppressed by the driver', 'notificationsSuppressed'],
  ['vhost_blk_bad_chains_total', 'Malformed chains and queue faults', 'badChains'],
  ['vhost_blk_poll_hits_total', 'Busy-poll spins that found work', 'pollHits'],
  ['vhost_blk_poll_misses_total', 'Busy-poll spins that ran out their window', 'pollMisses'],
  ['vhost_blk_poll_spin_microseconds_total', 'Time spent busy-polling', 'pollSpinUs'],
  ['vhost_blk_poll_yields_total', 'Spins and busy runs cut short for another queue of the device', 'pollYields'],
];

/** Prometheus text exposition (format 0.0.4) of every queue's counters. */
export function countersToPrometheus(queues: readonly BlkQueueCounters[], labels = ''): string {
  let out = '';
  const extra = labels === '' ? '' : `${labels},`;
  for (const [name, help, field] of METRICS) {
    out += `# HELP ${name} ${help}\n# TYPE ${name} counter\n`;
    for (let q = 0; q < queues.length; q++) out += `${name}{${extra}queue="${q}"} ${queues[q][field]}\n`;
  }
  return out;
}
