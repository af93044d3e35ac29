/**
 * One load-generator run: plays the guest against any vhost-user-blk back-end through
 * {@link VhostUserFrontend} — negotiate, read capacity from config space, set up the rings,
 * keep `queueDepth` requests in flight per queue through a warm-up and a measured window —
 * and returns a {@link LoadgenResult}. `loadgen.ts` is the process wrapper around it.
 * @module
 */
import { parseArgs } from 'node:util';
import {
  VhostUserFrontend, VHOST_USER_F_PROTOCOL_FEATURES, VHOST_USER_PROTOCOL_F_CONFIG, VHOST_USER_PROTOCOL_F_MQ,
  VHOST_USER_PROTOCOL_F_REPLY_ACK, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, bit,
} from '@vhost-ts/vhost-user';
import { Histogram } from '../common/histogram.js';
import { QueueLoad } from './queue-load.js';
import {
  CFG_CAPACITY, CFG_READ_LEN, CFG_SIZE_MAX, SECTOR_SIZE, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_MQ,
  VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_SIZE_MAX,
} from './virtio-blk.js';
import type { LoadgenResult, Pattern, WorkloadSpec } from './workload.js';

/** Parsed command line of the load generator. */
export interface LoadgenArgs extends WorkloadSpec {
  socket: string;
  queueSize: number;
  durationS: number;
  warmupS: number;
  seed: number;
  eventIdx: boolean;
}

/** Parses the load generator flags; throws with a message on a bad one. */
export function parseLoadgenArgs(argv: string[]): LoadgenArgs {
  const { values } = parseArgs({
    args: argv,
    options: {
      socket: { type: 'string' },
      pattern: { type: 'string', default: 'randread' },
      bs: { type: 'string', default: '4096' },
      qd: { type: 'string', default: '1' },
      queues: { type: 'string', default: '1' },
      'queue-size': { type: 'string', default: '256' },
      duration: { type: 'string', default: '5' },
      warmup: { type: 'string', default: '1' },
      seed: { type: 'string', default: '1' },
      'no-event-idx': { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (values.socket === undefined) throw new Error('--socket is required');
  const pattern = values.pattern as Pattern;
  if (!['randread', 'randwrite', 'read', 'write'].includes(pattern)) throw new Error(`bad --pattern ${pattern}`);
  const num = (name: string, v: string, min: number): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min) throw new Error(`bad --${name} ${v}`);
    return n;
  };
  const blockSize = num('bs', values.bs, SECTOR_SIZE);
  if (blockSize % SECTOR_SIZE !== 0) throw new Error('--bs must be a multiple of 512');
  return {
    socket: values.socket,
    pattern,
    blockSize,
    queueDepth: Math.floor(num('qd', values.qd, 1)),
    queues: Math.floor(num('queues', values.queues, 1)),
    queueSize: Math.floor(num('queue-size', values['queue-size'], 2)),
    durationS: num('duration', values.duration, 0.05),
    warmupS: num('warmup', values.warmup, 0),
    seed: Math.floor(num('seed', values.seed, 0)),
    eventIdx: !values['no-event-idx'],
  };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Guest memory needed: rings plus every request slot, with alignment slack, rounded to 2 MiB. */
function memoryBytes(a: LoadgenArgs): number {
  const perQueue = a.queueSize * 32 + 4096 + a.queueDepth * (a.blockSize + 4096 + 64);
  const need = a.queues * perQueue + (1 << 20);
  return Math.ceil(need / (2 << 20)) * (2 << 20);
}

/** Runs one load and returns its result (throws when it cannot run). */
export async function runLoad(a: LoadgenArgs): Promise<LoadgenResult> {
  const fe = await VhostUserFrontend.connect(a.socket, {
    regions: [{ guestPhysAddr: 0x10_0000, size: memoryBytes(a) }],
    connectTimeoutMs: 5000,
  });
  const loads: QueueLoad[] = [];
  try {
    const want = bit(VIRTIO_F_VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES) | bit(VIRTIO_BLK_F_SIZE_MAX)
      | bit(VIRTIO_BLK_F_SEG_MAX) | bit(VIRTIO_BLK_F_BLK_SIZE) | bit(VIRTIO_BLK_F_FLUSH)
      | (a.eventIdx ? bit(VIRTIO_RING_F_EVENT_IDX) : 0n) | (a.queues > 1 ? bit(VIRTIO_BLK_F_MQ) : 0n);
    const wantProto = bit(VHOST_USER_PROTOCOL_F_CONFIG) | bit(VHOST_USER_PROTOCOL_F_MQ) | bit(VHOST_USER_PROTOCOL_F_REPLY_ACK);
    await fe.negotiate({ features: want, protocolFeatures: wantProto });
    if ((fe.features & bit(VIRTIO_F_VERSION_1)) === 0n) throw new Error('back-end does not offer VIRTIO_F_VERSION_1');
    if (a.queues > 1 && (fe.features & bit(VIRTIO_BLK_F_MQ)) === 0n) throw new Error('back-end does not offer VIRTIO_BLK_F_MQ');
    if ((fe.protocol & bit(VHOST_USER_PROTOCOL_F_CONFIG)) === 0n) throw new Error('back-end does not offer PROTOCOL_F_CONFIG (capacity unknown)');
    const cfg = await fe.getConfig(0, CFG_READ_LEN);
    if (cfg === null) throw new Error('GET_CONFIG failed');
    const cv = new DataView(cfg.buffer, cfg.byteOffset, cfg.byteLength);
    const capacityBytes = Number(cv.getBigUint64(CFG_CAPACITY, true)) * SECTOR_SIZE;
    const sizeMax = (fe.features & bit(VIRTIO_BLK_F_SIZE_MAX)) !== 0n ? cv.getUint32(CFG_SIZE_MAX, true) : 0;
    // One data descriptor per request unless the device limits segment size (virtio 1.2 §5.2.6.1:
    // the driver must respect size_max when negotiated).
    const segBytes = sizeMax > 0 ? Math.min(a.blockSize, sizeMax) : a.blockSize;
    const hists: Histogram[] = [];
    for (let i = 0; i < a.queues; i++) {
      const fq = await fe.setupQueue(i, a.queueSize, { regionIndex: 0 });
      const h = new Histogram();
      hists.push(h);
      loads.push(new QueueLoad(fq, { mem: fe.mem, regionIndex: 0 }, a, capacityBytes, segBytes, h, a.seed * 7919 + i));
    }
    let closedEarly: Error | null = null;
    fe.on('close', (e: Error | null) => { closedEarly = e ?? new Error('back-end closed the connection'); });
    const dog = setInterval(() => { for (const l of loads) l.watchdog(); }, 100);
    try {
      for (const l of loads) l.start();
      await sleep(a.warmupS * 1000);
      for (const l of loads) {
        const c = l.counters;
        c.completed = 0; c.bytes = 0; c.kicks = 0; c.calls = 0; c.stalls = 0; c.lenMismatches = 0;
      }
      for (const h of hists) h.reset();
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      await sleep(a.durationS * 1000);
      const seconds = (performance.now() - t0) / 1000;
      const cpu = process.cpuUsage(cpu0);
      // Snapshot before stopping: the drain below adds completions outside the window.
      let requests = 0, bytes = 0, kicks = 0, calls = 0, stalls = 0, lenMismatches = 0;
      for (const l of loads) {
        const c = l.counters;
        requests += c.completed; bytes += c.bytes; kicks += c.kicks; calls += c.calls; stalls += c.stalls;
        lenMismatches += c.lenMismatches;
      }
      const all = new Histogram();
      for (const h of hists) all.add(h);
      const drained = await Promise.all(loads.map((l) => l.stop(3000)));
      if (closedEarly !== null) throw closedEarly;
      const errors = loads.reduce((s, l) => s + l.counters.errors, 0);
      const us = (ns: number): number => Math.round(ns / 10) / 100;
      const result: LoadgenResult = {
        ok: drained.every(Boolean) && requests > 0,
        socket: a.socket, pattern: a.pattern, blockSize: a.blockSize, queueDepth: a.queueDepth, queues: a.queues,
        seconds: Math.round(seconds * 1000) / 1000,
        requests,
        iops: Math.round(requests / seconds),
        mbps: Math.round((bytes / seconds / 1e6) * 10) / 10,
        latUs: { mean: us(all.mean()), p50: us(all.quantile(0.5)), p99: us(all.quantile(0.99)), p999: us(all.quantile(0.999)), max: us(all.max) },
        errors, lenMismatches, kicks, calls, stalls,
        cpuSeconds: Math.round(((cpu.user + cpu.system) / 1e6) * 1000) / 1000,
        capacityBytes,
        features: `0x${fe.features.toString(16)}`,
      };
      if (!result.ok) {
        result.error = requests === 0 ? 'no request completed in the measured window'
          : `${loads.reduce((s, l) => s + l.inFlight, 0)} requests still in flight 3 s after stop`;
      }
      return result;
    } finally {
      clearInterval(dog);
    }
  } finally {
    fe.close();
  }
}

