/**
 * @vhost-ts/virtqueue — guest memory, split virtqueues (device and driver side) and descriptor
 * chains. Pure TypeScript, no I/O.
 * @module
 */
export * from './constants.js';
export * from './faults.js';
export * from './errors.js';
export { GuestMemory, copyBytes, type MemoryRegion, type MemorySegment } from './guest-memory.js';
export { DescriptorChain, DEFAULT_CHAIN_CAPACITY } from './descriptor-chain.js';
export { ChainWalker, type ChainWalkerOptions } from './chain-walker.js';
export { vringNeedEvent } from './event-idx.js';
export {
  SplitRingViews, type SplitQueueLayout, AVAIL_FLAGS, AVAIL_IDX, AVAIL_RING, USED_FLAGS, USED_IDX,
} from './ring-views.js';
export type { DeviceQueue } from './device-queue.js';
export { SplitQueueDevice, type SplitQueueDeviceOptions } from './split-queue-device.js';
export {
  SplitQueueDriver, DriverError, type DriverBuffer, type SplitQueueDriverOptions,
} from './split-queue-driver.js';
export {
  PackedRingViews, type PackedQueueLayout, type PackedPosition, type PackedVringBase, VIRTIO_F_RING_PACKED,
  VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED, RING_EVENT_FLAGS_ENABLE, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_DESC,
  MAX_PACKED_QUEUE_SIZE, PACKED_DESC_ALIGN, PACKED_EVENT_ALIGN, PACKED_EVENT_BYTES, EVENT_OFF_WRAP, EVENT_FLAGS,
  encodePackedIndex, encodePackedVringBase, decodePackedVringBase, packedNeedEvent,
} from './packed-ring.js';
export { PackedChainWalker } from './packed-chain-walker.js';
export { PackedQueueDevice, type PackedQueueDeviceOptions } from './packed-queue-device.js';
export { PackedQueueDriver, type PackedQueueDriverOptions } from './packed-queue-driver.js';
