/**
 * In-process micro-benchmark of our virtio-net datapath: CPU time per frame of the device's TX
 * path (ring → batch → sink backend) and RX path (source batch → ring), with a {@link MockGuest}
 * as the driver in the same thread. No sockets, no second process, no scheduler: this is the
 * cost the system bench's back-end pays per frame when it never sleeps, measured in CPU time
 * (`process.cpuUsage`), so other jobs on the machine inflate it far less than wall-clock rates.
 *
 *   node --conditions=vhost-ts-source --import tsx bench/src/net/datapath.ts [--frames 64,1518] [--seconds 1] [--samples 5]
 *     [--in-order on|off]   (VIRTIO_F_IN_ORDER on the mock rings, as DPDK negotiates it; default on)
 *     [--paths tx,rx]       (which paths to measure; one alone keeps a profile of it clean)
 *
 * Prints one line per (path, frame size): device-only ns/frame (the driver's refill timed
 * apart) and the implied Mpps of one core, median of the samples.
 * @module
 */
import { parseArgs } from 'node:util';
import { VIRTIO_NET_HDR_V1_SIZE, VirtioNetDevice } from '@vhost-ts/devices-net';
import type { QueueContext, QueueHandler } from '@vhost-ts/vhost-user';
import { VIRTIO_F_IN_ORDER } from '@vhost-ts/virtqueue';
import { MockGuest } from '@vhost-ts/virtqueue/testing';
import { SinkBackend } from './sink-backend.js';
import { SourceBackend } from './source-backend.js';

const { values } = parseArgs({
  options: {
    frames: { type: 'string', default: '64,1518' },
    seconds: { type: 'string', default: '1' },
    samples: { type: 'string', default: '5' },
    queue: { type: 'string', default: '1024' },
    'in-order': { type: 'string', default: 'on' },
    paths: { type: 'string', default: 'tx,rx' },
  },
});
const QSIZE = Number(values.queue);
if (values['in-order'] !== 'on' && values['in-order'] !== 'off') throw new Error(`--in-order on|off, got ${values['in-order']}`);
const IN_ORDER = values['in-order'] === 'on';

function cpuNs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) * 1000;
}

interface Q { guest: MockGuest; handler: QueueHandler }

function startQueues(device: VirtioNetDevice): Q[] {
  device.setFeatures(IN_ORDER ? device.features : device.features & ~(1n << BigInt(VIRTIO_F_IN_ORDER)));
  const qs: Q[] = [];
  for (let i = 0; i < device.numQueues; i++) {
    const guest = new MockGuest({ queueSize: QSIZE, eventIdx: true, heapBytes: QSIZE * 2048 + 0x10000, inOrder: IN_ORDER });
    const ctx: QueueContext = {
      index: i, queue: guest.device, memory: guest.memory, inflight: null, notify: () => {}, broken: (r) => { throw new Error(r); },
    };
    qs.push({ guest, handler: device.startQueue(i, ctx) });
  }
  return qs;
}

/** TX: the guest fills the ring with frames of `size`, kicks; the device drains it into the sink. */
function txSample(size: number, seconds: number): { ns: number; frames: number } {
  const sink = new SinkBackend(1518);
  const device = new VirtioNetDevice({ backend: sink, ctrlQueue: false });
  const [, tx] = startQueues(device);
  const g = tx.guest;
  const len = VIRTIO_NET_HDR_V1_SIZE + size;
  const bufs: number[] = [];
  const frame = new Uint8Array(len);
  frame.fill(0xff, 12, 18);
  for (let i = 0; i < QSIZE; i++) {
    const gpa = g.alloc(len);
    g.write(gpa, frame);
    bufs.push(gpa);
  }
  let deviceNs = 0;
  const end = performance.now() + seconds * 1000;
  while (performance.now() < end) {
    for (let i = 0; i < QSIZE; i++) if (g.driver.addOne(bufs[i], len, false) < 0) throw new Error('ring full');
    g.driver.publish();
    const t0 = cpuNs();
    tx.handler.onKick();
    deviceNs += cpuNs() - t0;
    while (g.driver.popUsed() >= 0) { /* collect */ }
  }
  return { ns: deviceNs, frames: sink.counters.frames };
}

/** RX: the guest posts a ring of 2 KiB buffers; the source delivers frames of `size` into them. */
function rxSample(size: number, seconds: number): { ns: number; frames: number } {
  const source = new SourceBackend(size, 64);
  const device = new VirtioNetDevice({ backend: source, ctrlQueue: false });
  const [rx] = startQueues(device);
  const g = rx.guest;
  const bufs: number[] = [];
  for (let i = 0; i < QSIZE; i++) bufs.push(g.alloc(2048));
  let deviceNs = 0;
  const end = performance.now() + seconds * 1000;
  while (performance.now() < end) {
    for (let i = 0; i < QSIZE; i++) if (g.driver.addOne(bufs[i], 2048, true) < 0) throw new Error('ring full');
    g.driver.publish();
    const t0 = cpuNs();
    rx.handler.onKick(); // the source resumes (onRxSpace) and fills the ring until frames are held
    deviceNs += cpuNs() - t0;
    while (g.driver.popUsed() >= 0) { /* collect */ }
  }
  return { ns: deviceNs, frames: device.counters.rxFrames };
}

const paths = values.paths.split(',');
for (const p of paths) if (p !== 'tx' && p !== 'rx') throw new Error(`--paths takes tx and/or rx, got ${p}`);
const seconds = Number(values.seconds);
const samples = Number(values.samples);
for (const size of values.frames.split(',').map(Number)) {
  for (const [path, name, fn] of [['tx', 'tx (g→h)', txSample], ['rx', 'rx (h→g)', rxSample]] as const) {
    if (!paths.includes(path)) continue;
    fn(size, 0.2); // warm-up: JIT
    const per: number[] = [];
    for (let s = 0; s < samples; s++) {
      const r = fn(size, seconds);
      per.push(r.ns / r.frames);
    }
    per.sort((a, b) => a - b);
    const med = per[Math.floor((per.length - 1) / 2)];
    console.log(`${name} ${String(size).padStart(4)} B: ${med.toFixed(1)} ns/frame device CPU (best ${per[0].toFixed(1)}) → ${(1e3 / med).toFixed(2)} Mpps per core`);
  }
}
