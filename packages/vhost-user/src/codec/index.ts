/**
 * The pure vhost-user codec.
 * @module
 */
export * from './payloads.js';
export * from './schema.js';
export * from './codec.js';
export * from './framer.js';
