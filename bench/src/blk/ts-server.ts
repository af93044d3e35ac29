/**
 * A bench-only vhost-user-blk server for the engines the `vhost-user-blk` CLI does not expose
 * (it serves files only): `null` is the real {@link BlkDevice} over the library's NullImage
 * (writes are dropped; reads zero the data with `--read-zeroes on`, the default, or leave it —
 * the counterparts of qemu-storage-daemon's `null-co,read-zeroes=on|off`); `instant` is
 * {@link InstantBlkDevice}, the harness ceiling.
 *
 *   node --conditions=vhost-ts-source --import tsx bench/src/blk/ts-server.ts \
 *     --socket S --engine null|instant [--size BYTES] [--num-queues N] [--queue-size N] [--poll-us N]
 *     [--read-zeroes on|off]
 *
 * `--poll-us` bounds the adaptive busy-poll window after each batch (both engines; default the
 * device default, 0 = off), like the CLI's flag.
 *
 * SIGTERM/SIGINT close the back-end and exit 0.
 * @module
 */
import { parseArgs } from 'node:util';
import { BlkDevice, DEFAULT_POLL_US, NullImage } from '@vhost-ts/devices-blk';
import { VhostUserBackend, type VirtioDevice } from '@vhost-ts/vhost-user';
import { InstantBlkDevice } from './instant-device.js';

const { values } = parseArgs({
  options: {
    socket: { type: 'string' },
    engine: { type: 'string', default: 'null' },
    size: { type: 'string', default: String(1 << 30) },
    'num-queues': { type: 'string', default: '1' },
    'queue-size': { type: 'string', default: '256' },
    'poll-us': { type: 'string', default: String(DEFAULT_POLL_US) },
    'read-zeroes': { type: 'string', default: 'on' },
  },
});
if (values['read-zeroes'] !== 'on' && values['read-zeroes'] !== 'off') {
  process.stderr.write(`ts-server: --read-zeroes on|off, got ${values['read-zeroes']}\n`);
  process.exit(2);
}
if (values.socket === undefined) {
  process.stderr.write('ts-server: --socket is required\n');
  process.exit(2);
}
const size = Number(values.size);
const numQueues = Number(values['num-queues']);
const queueSize = Number(values['queue-size']);
const pollUs = Number(values['poll-us']);
let device: VirtioDevice;
switch (values.engine) {
  case 'null':
    device = new BlkDevice({ image: new NullImage(size, { readZeroes: values['read-zeroes'] === 'on' }), numQueues, queueSize, pollUs });
    break;
  case 'instant':
    device = new InstantBlkDevice(numQueues, size, pollUs);
    break;
  default:
    process.stderr.write(`ts-server: unknown --engine ${values.engine}\n`);
    process.exit(2);
}
const backend = new VhostUserBackend(device, { log: (line) => process.stderr.write(`${line}\n`) });
backend.listen(values.socket);
const shutdown = (): void => {
  backend.close().then(() => process.exit(0), () => process.exit(1));
};
process.once('SIGTERM', shutdown);
process.once('SIGINT', shutdown);
