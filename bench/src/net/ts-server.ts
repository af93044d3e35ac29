/**
 * The vhost-ts peer of the virtio-net bench: our {@link VirtioNetDevice} (the real TX/RX paths of
 * packages/devices-net) served by {@link VhostUserBackend}, with a bench backend behind it:
 *
 * - `--mode sink`: consumes what the guest transmits (guest→host), see {@link SinkBackend};
 * - `--mode source`: generates frames of `--frame-size` bytes into the guest's RX ring
 *   (host→guest), see {@link SourceBackend}.
 *
 *   node --conditions=vhost-ts-source --import tsx bench/src/net/ts-server.ts \
 *     --socket S --mode sink|source [--frame-size 64] [--queue-size 1024] [--poll-us 0]
 *
 * `--poll-us`: the device's busy-poll budget (VirtioNetDeviceOptions.pollUs).
 *
 * On SIGTERM/SIGINT it prints one JSON line `{ device, sink, cpuSeconds }` (the port counters,
 * the sink's own totals, the process's CPU time); SIGUSR2 prints a `{ mark }` line (CPU time, frames) to stdout, closes the back-end and exits 0.
 * @module
 */
import { parseArgs } from 'node:util';
import { VirtioNetDevice, type NetBackend } from '@vhost-ts/devices-net';
import { VhostUserBackend } from '@vhost-ts/vhost-user';
import { SinkBackend } from './sink-backend.js';
import { SourceBackend } from './source-backend.js';

const { values } = parseArgs({
  options: {
    socket: { type: 'string' },
    mode: { type: 'string', default: 'sink' },
    'frame-size': { type: 'string', default: '64' },
    'queue-size': { type: 'string', default: '1024' },
    'poll-us': { type: 'string', default: '0' },
  },
});
if (values.socket === undefined) {
  process.stderr.write('net ts-server: --socket is required\n');
  process.exit(2);
}
const frameSize = Number(values['frame-size']);
if (!Number.isInteger(frameSize) || frameSize < 60 || frameSize > 1518) {
  process.stderr.write(`net ts-server: --frame-size must be 60..1518, got ${values['frame-size']}\n`);
  process.exit(2);
}
let backend: NetBackend;
let sink: SinkBackend | null = null;
switch (values.mode) {
  case 'sink':
    sink = new SinkBackend(1518);
    backend = sink;
    break;
  case 'source':
    backend = new SourceBackend(frameSize);
    break;
  default:
    process.stderr.write(`net ts-server: unknown --mode ${values.mode}\n`);
    process.exit(2);
}
const device = new VirtioNetDevice({
  backend, name: values.socket, mtu: 1500, maxQueueSize: Number(values['queue-size']),
  // virtio-user handles its control queue itself; offering ours changes nothing here.
  ctrlQueue: false,
  pollUs: Number(values['poll-us']),
  // BENCH_NET_TX_BATCH: TX batch capacity in frames (A/B runs of the device default).
  ...(process.env.BENCH_NET_TX_BATCH !== undefined ? { txBatchFrames: Number(process.env.BENCH_NET_TX_BATCH) } : {}),
});
const server = new VhostUserBackend(device, { log: (line) => process.stderr.write(`${line}\n`) });
server.on('session-end', () => device.reset());
server.listen(values.socket);

let closing = false;
const shutdown = (): void => {
  if (closing) return;
  closing = true;
  const cpu = process.cpuUsage();
  process.stdout.write(`${JSON.stringify({
    device: device.counters.snapshot(), sink: sink === null ? null : { ...sink.counters }, cpuSeconds: (cpu.user + cpu.system) / 1e6,
  })}\n`);
  server.close().then(() => process.exit(0), () => process.exit(1));
};
// SIGUSR2: one `{"mark":...}` line with the CPU time and frame counters now, so the bench can
// compute back-end CPU per frame over exactly its measuring window.
process.on('SIGUSR2', () => {
  const cpu = process.cpuUsage();
  const c = device.counters;
  process.stdout.write(`${JSON.stringify({ mark: { cpuSeconds: (cpu.user + cpu.system) / 1e6, frames: sink === null ? c.rxFrames : sink.counters.frames } })}\n`);
});
process.once('SIGTERM', shutdown);
process.once('SIGINT', shutdown);
