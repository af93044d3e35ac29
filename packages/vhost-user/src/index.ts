/**
 * vhost-user: wire codec, back-end state machine, device interface, front-end.
 * @module
 */
export * from './constants.js';
export * from './errors.js';
export * from './codec/index.js';
export * from './device.js';
export { MessageConnection, type ConnectionHandlers, type ConnectionOptions } from './transport/message-connection.js';
export { BackendSession, type SessionOptions, TRANSPORT_PROTOCOL_FEATURES, DEVICE_OPTIONAL_PROTOCOL_FEATURES,
  TRANSPORT_FEATURES, UNSUPPORTED_FEATURES } from './backend/session.js';
export { VhostUserBackend, type BackendOptions, type ConnectOptions } from './backend/backend.js';
export { AdaptivePoller, PollCounters, type AdaptivePollerOptions } from './backend/adaptive-poller.js';
export { PollGroup, type HasWork } from './backend/poll-group.js';
export { SplitInflightTracker, inflightQueueRegionSize } from './backend/inflight.js';
export { PackedInflightTracker, packedInflightQueueRegionSize, PACKED_INFLIGHT_HEADER_SIZE, PACKED_INFLIGHT_DESC_SIZE } from './backend/packed-inflight.js';
export { VhostUserFrontend, FrontendQueue, type FrontendOptions, type BackendRequestRecord } from './frontend/frontend.js';
export { FrontendMemory, DEFAULT_REGIONS, type FrontendRegionSpec, type FrontendRegion } from './frontend/frontend-memory.js';
export { replayFixture, describeFd, entryFromFrame, type FixtureEntry, type FixtureFd, type ReplayResult } from './frontend/fixture.js';
export { startRecordProxy, type RecordProxy } from './tools/record-proxy.js';
