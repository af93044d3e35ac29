#!/usr/bin/env node
/**
 * `vhost-user-blk` — serves a disk image to QEMU over vhost-user.
 *
 *   vhost-user-blk --socket-path /tmp/vhost-blk.sock --blk-file disk.img [--read-only] [--num-queues N]
 *
 * Exit codes: 0 after SIGINT/SIGTERM (in-flight I/O drained, socket removed), 1 for a start-up
 * failure (image, socket), 2 for bad flags. Errors are one line on stderr.
 * @module
 */
import { runBlkCli } from './run-cli.js';

// Exit explicitly: a clean shutdown has nothing left to wait for, and a stray handle must not
// keep a stopped server alive.
process.exit(await runBlkCli(process.argv.slice(2), { name: 'vhost-user-blk' }));
