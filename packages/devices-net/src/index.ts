/**
 * @vhost-ts/devices-net — the virtio-net device and its backends (tap, switch, loopback).
 * @module
 */
export * from './constants.js';
export { NetError } from './errors.js';
export * from './mac-address.js';
export * from './net-header.js';
export * from './net-config.js';
export { FrameBatch, FrameRing } from './frame-batch.js';
export { PortCounters, countersToPrometheus, switchToPrometheus, type SwitchMetricsSource } from './port-counters.js';
export type { NetBackend, NetBackendPort, NetPortSink } from './net-backend.js';
export { MacTable, DEFAULT_MAC_AGE_MS } from './mac-table.js';
export { SwitchBackend, SwitchCounters, type SwitchOptions } from './switch-backend.js';
export { LoopbackBackend } from './loopback-backend.js';
export { RxFilter, MAC_TABLE_ENTRIES } from './rx-filter.js';
export { RxQueue, type RxSettings } from './rx-queue.js';
export { TxQueue, type TxSettings } from './tx-queue.js';
export { CtrlQueue, type CtrlTarget } from './ctrl-queue.js';
export { copyToChain, copyFromChain } from './chain-copy.js';
export { VirtioNetDevice, type VirtioNetDeviceOptions } from './virtio-net-device.js';
export { buildRarpFrame, ETH_P_RARP, RARP_FRAME_SIZE, RARP_OP_REQUEST_REVERSE } from './rarp-frame.js';
export { TapBackend, type TapBackendOptions } from './tap-backend.js';
export { startNetServer, createBackend, type NetServer, type NetServerOptions } from './net-server.js';
export { parseCliArgs, USAGE, LOG_LEVELS, type CliOptions, type LogLevel } from './cli-args.js';
