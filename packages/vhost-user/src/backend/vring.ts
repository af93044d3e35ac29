/**
 * Per-virtqueue state of a back-end session.
 *
 * vhost-user.rst "Ring states": a ring is *started* once it has everything it needs (size,
 * addresses, memory, and a kick fd or the polling flag) and stopped by GET_VRING_BASE; it is
 * *enabled* by SET_VRING_ENABLE 1, or at once when VHOST_USER_F_PROTOCOL_FEATURES was not
 * negotiated. Here a started ring gets its device handler when it is also enabled; kicks that
 * arrive while it is disabled are remembered and delivered on enable (we do not process a
 * started-but-disabled ring — see docs/protocol.md).
 * @module
 */
import type { FdWatcher } from '@vhost-ts/sys';
import type { DeviceQueue } from '@vhost-ts/virtqueue';
import type { InflightTracker, QueueHandler } from '../device.js';

/** Addresses from SET_VRING_ADDR (front-end virtual). */
export interface VringAddresses {
  descUserAddr: number;
  availUserAddr: number;
  usedUserAddr: number;
  logGuestAddr: number;
  flags: number;
}

/** Mutable state of one ring. */
export class Vring {
  /** Ring size from SET_VRING_NUM (0 = not set). */
  size = 0;
  addr: VringAddresses | null = null;
  /** Next avail index from SET_VRING_BASE (or saved at stop). */
  base = 0;
  /** `base` came from SET_VRING_BASE (not from the back-end's own stop). */
  baseFromFrontEnd = false;
  kickFd = -1;
  callFd = -1;
  errFd = -1;
  /** SET_VRING_KICK with the "no fd" flag: poll instead of waiting for kicks. */
  polling = false;
  enabled = false;
  /** A kick arrived while disabled (delivered on enable). */
  pendingKick = false;
  /** The device marked this ring broken: kicks are no longer delivered. */
  broken = false;
  /**
   * Stopped by a memory table change whose table does not hold the ring: it restarts with the
   * next table (or SET_VRING_ADDR) that does. Kicks meanwhile wait in the kept kick fd.
   */
  awaitingMemory = false;
  queue: DeviceQueue | null = null;
  handler: QueueHandler | null = null;
  inflight: InflightTracker | null = null;
  kickWatcher: FdWatcher | null = null;
  pollTimer: NodeJS.Timeout | null = null;
  /** The stop under way (stopRing), awaited by any concurrent stop. */
  stopping: Promise<void> | null = null;

  constructor(readonly index: number) {}

  /** True once the ring has a queue and a handler. */
  get running(): boolean {
    return this.handler !== null;
  }
}
