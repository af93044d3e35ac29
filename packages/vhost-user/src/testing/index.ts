/**
 * `@vhost-ts/vhost-user/testing` — test helpers: the echo device.
 * @module
 */
export { EchoDevice, type EchoDeviceOptions, type EchoQueueStats } from './echo-device.js';
