/**
 * `@vhost-ts/virtqueue/testing` — the mock guest shared by unit tests, fuzzing, benches and
 * device tests.
 * @module
 */
export { MockGuest, SPAN_RESERVE, type MockGuestOptions, type MockRegionSpec } from './mock-guest.js';
