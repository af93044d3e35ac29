/**
 * `@vhost-ts/virtqueue/testing` — the mock guests shared by unit tests, fuzzing, benches and
 * device tests.
 * @module
 */
export { MockGuestMemory, SPAN_RESERVE, type MockMemoryOptions, type MockRegionSpec } from './mock-memory.js';
export { MockGuest, type MockGuestOptions } from './mock-guest.js';
export { MockPackedGuest, type MockPackedGuestOptions } from './mock-packed-guest.js';
