/**
 * The device interface: what a virtio device implements to be served over vhost-user. Devices
 * never see the socket, the memory table messages or the eventfds — the back-end hands each
 * started queue a {@link QueueContext} and gets a {@link QueueHandler} back.
 *
 * ```
 *   front-end ──socket──▶ VhostUserBackend ──startQueue(i, ctx)──▶ VirtioDevice
 *                          │   kick eventfd ──────onKick()──────▶ QueueHandler
 *                          │◀──────────────notify()/broken()────── (via QueueContext)
 *                          └─ GET_VRING_BASE ─────stop()────────▶ (drains, resolves)
 * ```
 * @module
 */
import type { DescriptorChain, DeviceQueue, GuestMemory } from '@vhost-ts/virtqueue';

/** Bytes of device state kept in the inflight area (see VirtioDevice.attachPersistentState). */
export const DEVICE_STATE_BYTES = 64;

/** A virtio device served by {@link VhostUserBackend}. Feature masks are bigint (control plane only). */
export interface VirtioDevice {
  /** Virtio device id (virtio 1.2 §5: 1 = net, 2 = block). */
  readonly deviceType: number;
  /** Number of virtqueues (reported by GET_QUEUE_NUM). */
  readonly numQueues: number;
  /** Largest queue size the device accepts (≤ 32768, a power of two). */
  readonly maxQueueSize: number;
  /** Device and ring feature bits offered (VERSION_1, EVENT_IDX, INDIRECT_DESC, device bits). */
  readonly features: bigint;
  /**
   * Optional protocol bits the device wants on top of the transport's own (CONFIG, MQ,
   * INFLIGHT_SHMFD, SHARED_OBJECT, DEVICE_STATE ...). Bits the back-end cannot honour are dropped.
   */
  readonly protocolFeatures?: bigint;
  /** Called with the features the driver acked (SET_FEATURES), transport bits removed. */
  setFeatures(acked: bigint): void;
  /** Reads config space; bytes beyond the device's config read as 0. */
  readConfig(offset: number, length: number): Uint8Array;
  /**
   * Driver write to config space (absent = config is read-only; SET_CONFIG then fails). Throws
   * to refuse it — a write touching a read-only field must be refused (vhost-user.rst
   * SET_CONFIG) — unless `migration` (VHOST_SET_CONFIG_TYPE_MIGRATION: a destination restoring
   * the source's config; read-only fields are then left as the device has them).
   */
  writeConfig?(offset: number, data: Uint8Array, migration: boolean): void;
  /** Starts processing a queue; called when the ring is started and enabled. */
  startQueue(index: number, ctx: QueueContext): QueueHandler;
  /** Back to the initial state (all queues have been stopped before this is called). */
  reset(): void;
  /**
   * Optional (net devices), VHOST_USER_SEND_RARP: after a migration the front-end asks the
   * back-end to broadcast a RARP from `mac` (the guest's address) on the device's network, for
   * guests that cannot announce themselves (no VIRTIO_NET_F_GUEST_ANNOUNCE). PROTOCOL_F_RARP is
   * offered when the device has this method and asks for the bit in `protocolFeatures`.
   */
  sendRarp?(mac: Uint8Array): void;
  /**
   * Optional (net devices), VHOST_USER_NET_SET_MTU: the MTU (68..65535) the front-end exposes
   * to the guest. Returns false when the device cannot carry it (the front-end gets a failure
   * ack). PROTOCOL_F_MTU is offered as for `sendRarp`.
   */
  setMtu?(mtu: number): boolean;
  /**
   * Optional: state the device must not lose when its back-end process dies while the guest
   * runs on (the driver's cache-mode choice, which QEMU does not send again after a reconnect).
   * With INFLIGHT_SHMFD the back-end reserves {@link DEVICE_STATE_BYTES} bytes after the queue
   * regions of the inflight area — which the front-end keeps and hands to the next back-end —
   * and passes them here when an area is installed (zeros in a fresh one: the device then
   * writes its current state), or null when there are none (an area without room for them, from
   * another back-end) and when the session ends, before the device's reset: the device must not
   * write them any more (a back-end stopping must not overwrite what the next one should find).
   * The bytes are front-end controlled: validate what is read.
   */
  attachPersistentState?(bytes: Uint8Array | null): void;
  /**
   * Optional: the front-end is gone (after the device's reset at the session's end). The device
   * forgets what only that front-end knew — a new front-end reads the config afresh.
   */
  sessionEnded?(): void;
  /** The back-end sets this; the device calls it to raise CONFIG_CHANGE_MSG. */
  onConfigChanged?: (() => void) | null;
}

/** What a started queue gets from the back-end. */
export interface QueueContext {
  readonly index: number;
  readonly queue: DeviceQueue;
  readonly memory: GuestMemory;
  /** Signals the call eventfd (or in-band call). The device decides when via `queue.shouldNotify()`. */
  notify(): void;
  /** Marks the device broken (status NEEDS_RESET, VRING_ERR signalled where set); logged once. */
  broken(reason: string): void;
  /** Present when INFLIGHT_SHMFD was negotiated and the front-end shared an inflight area. */
  inflight: InflightTracker | null;
}

/** A device's per-queue worker. */
export interface QueueHandler {
  /** Called when the kick eventfd fired (after it was drained), or when polling/in-band kicks. */
  onKick(): void;
  /** Stop popping, wait for in-flight requests to complete, then resolve. */
  stop(): Promise<void>;
}

/**
 * Inflight I/O tracking in the shared area of vhost-user.rst "Inflight I/O tracking" (split
 * rings: SplitInflightTracker, indexed by head; packed rings: PackedInflightTracker, indexed by
 * buffer id, `begin` right after the `pop` of that chain). A device that completes requests out of order calls `begin` when it pops a head,
 * `end` when it pushes the used element, and `commit` right after publishing used.idx. After a
 * reconnect, `resubmit` lists the heads that were in flight when the old back-end died, in
 * the order they were popped; the device must process them (e.g. with `queue.chainAt`) before
 * popping new ones.
 */
export interface InflightTracker {
  /** Marks `head` in flight (desc[head].inflight = 1, counter = global counter++). */
  begin(head: number): void;
  /** Adds `head` to the batch being completed (desc[head].next = last_batch_head ...). */
  end(head: number): void;
  /** After used.idx was published: clears the batch's inflight flags, records used_idx. */
  commit(): void;
  /** Heads to resubmit, in counter order (empty after a clean start). */
  readonly resubmit: readonly number[];
  /**
   * Present on packed rings: fills `chain` with resubmitted buffer `head` from the descriptors
   * saved in the area (the ring slots may already hold used descriptors), and prepares the
   * queue to skip its slots when it is answered. Returns 0 or a FAULT_* (the device should
   * then break). A device resubmitting must prefer it to re-reading the ring.
   */
  chainAt?(head: number, chain: DescriptorChain): number;
}
