/**
 * Busy-polling of a ring's available side, the way DPDK's vhost PMD and qemu-storage-daemon's
 * adaptive polling avoid a sleep/wake-up per batch: after a batch, with guest notifications
 * still suppressed, the device spins on the ring for a short budget. If the driver adds buffers
 * meanwhile, the next batch starts without a kick (no eventfd write in the guest, no wake-up
 * here); if the budget runs out, the caller re-enables notifications and sleeps as usual.
 *
 * Polling only ever follows a batch, so an idle queue costs nothing; a stream keeps the queue
 * in its poll loop. The caller must still yield to the event loop between batches.
 * @module
 */
import type { DeviceQueue } from '@vhost-ts/virtqueue';

/** Ring checks between two clock reads (a clock read costs more than a ring check). */
const CHECKS_PER_CLOCK = 16;

/**
 * Spins until `queue` has an available chain (true), the budget of `budgetUs` µs is spent, or
 * the queue is broken (false). One Atomics load per check; nothing allocated.
 */
export function pollAvail(queue: DeviceQueue, budgetUs: number): boolean {
  if (budgetUs <= 0) return false;
  const deadline = performance.now() + budgetUs / 1000;
  for (;;) {
    for (let i = 0; i < CHECKS_PER_CLOCK; i++) {
      if (queue.isBroken) return false;
      if (queue.availableCount() !== 0) return true;
    }
    if (performance.now() >= deadline) return false;
  }
}
