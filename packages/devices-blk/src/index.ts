/**
 * `@vhost-ts/devices-blk` — the virtio-blk device, its engines (file via io_uring, memory,
 * null) and the `vhost-user-blk` CLI.
 * @module
 */
export * from './constants.js';
export { BlkError, type BlkErrorCode } from './errors.js';
export { BLK_CONFIG_SIZE, BLK_CONFIG_WRITEBACK_OFFSET, encodeBlkConfig, capacitySectors, type BlkConfigValues } from './blk-config.js';
export {
  BlkRequest, BlkRequestParser, type BlkLimits, PARSE_OK, PARSE_NO_STATUS, BLK_OP_NONE, BLK_OP_READ, BLK_OP_WRITE,
  BLK_OP_FLUSH, BLK_OP_DISCARD, BLK_OP_WRITE_ZEROES, BLK_OP_GET_ID,
} from './blk-request.js';
export type { BlockEngine, BlockImage, BlockCompletionSink, EngineOptions } from './engine.js';
export { MemoryImage, NullImage } from './engines/memory-engine.js';
export { FileImage, FileEngine, type FileImageOptions } from './engines/file-engine.js';
export { BlkQueueCounters, countersToPrometheus } from './blk-counters.js';
export { BlkQueue, BLK_BROKEN_CHANNEL, encodeSerial, type BlkQueueOptions } from './blk-queue.js';
export { BlkDevice, type BlkDeviceOptions } from './blk-device.js';
export { createLogger, silentLogger, isLogLevel, LOG_LEVELS, type Logger, type LogLevel } from './logger.js';
