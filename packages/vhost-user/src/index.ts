/**
 * vhost-user: wire codec, back-end state machine, device interface, front-end.
 * @module
 */
export * from './constants.js';
export * from './errors.js';
export * from './codec/index.js';
