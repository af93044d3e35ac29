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
export { SplitQueueDevice, type SplitQueueDeviceOptions } from './split-queue-device.js';
export {
  SplitQueueDriver, DriverError, type DriverBuffer, type SplitQueueDriverOptions,
} from './split-queue-driver.js';
