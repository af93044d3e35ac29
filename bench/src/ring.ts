/**
 * Ring micro-benchmark: pop + push chains per second on one core, through the real
 * GuestMemory + SplitQueueDevice + DescriptorChain, with the driver refilling the ring in
 * batches (a full ring per batch). Reported: device-side rate (only pop/pushUsed/publishUsed
 * are timed) and end-to-end rate (driver refill and used collection included).
 *
 *   npm run bench:ring                 # all scenarios
 *   npm run bench:ring -- --seconds 3 --queue 256 --only 1desc
 * @module
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Bench } from 'tinybench';
import {
  DescriptorChain, type PackedQueueDevice, type PackedQueueDriver, type SplitQueueDevice, type SplitQueueDriver,
} from '@vhost-ts/virtqueue';
import { MockGuest, MockPackedGuest } from '@vhost-ts/virtqueue/testing';
import { bareServe, type BareRing } from './ring/bare-baseline.js';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '1' },
    samples: { type: 'string', default: '5' },
    queue: { type: 'string', default: '256' },
    only: { type: 'string' },
  },
});
const SECONDS = Number(values.seconds);
const SAMPLES = Number(values.samples);
const QUEUE = Number(values.queue);

interface Scenario {
  name: string;
  /** Refills the ring: adds chains until full, publishes. */
  refill(): void;
  /** Device work for one batch; returns chains served. */
  serve(): number;
  /** Driver collects the used ring. */
  collect(): void;
}

/** Device side of every scenario: the loop a device handler runs for one kick. */
function deviceServe(dev: SplitQueueDevice | PackedQueueDevice, chain: DescriptorChain): number {
  let n = 0;
  while (dev.pop(chain) === 1) {
    dev.pushUsed(chain.head, chain.writableBytes);
    n++;
  }
  dev.publishUsed();
  return n;
}

function collect(drv: SplitQueueDriver | PackedQueueDriver): void {
  while (drv.popUsed() >= 0) { /* frees descriptors */ }
}

function realScenario(name: string, build: (g: MockGuest) => () => void): Scenario {
  const g = new MockGuest({ queueSize: QUEUE, indirectEntries: 4, heapBytes: 0x100000 });
  const chain = new DescriptorChain(16);
  const add = build(g);
  return {
    name,
    refill: () => { add(); g.driver.publish(); },
    serve: () => {
      const n = deviceServe(g.device, chain);
      if (g.device.isBroken) throw new Error(`queue broken: ${g.device.error?.message}`);
      return n;
    },
    collect: () => collect(g.driver),
  };
}

/** Same as realScenario on a packed ring (virtio 1.2 §2.8). */
function packedScenario(name: string, build: (g: MockPackedGuest) => () => void): Scenario {
  const g = new MockPackedGuest({ queueSize: QUEUE, indirectEntries: 4, heapBytes: 0x100000 });
  const chain = new DescriptorChain(16);
  const add = build(g);
  return {
    name,
    refill: () => { add(); g.driver.publish(); },
    serve: () => {
      const n = deviceServe(g.device, chain);
      if (g.device.isBroken) throw new Error(`queue broken: ${g.device.error?.message}`);
      return n;
    },
    collect: () => collect(g.driver),
  };
}

const scenarios: Array<() => Scenario> = [
  () => realScenario('1desc', (g) => {
    const buf = g.alloc(64);
    return () => { while (g.driver.addOne(buf, 64, true) >= 0) { /* fill */ } };
  }),
  () => realScenario('3desc-blk', (g) => {
    // virtio-blk-like: 16 B header (readable), 4 KiB data + 1 B status (writable).
    const gpas = new Float64Array([g.alloc(16), g.alloc(4096, { align: 4096 }), g.alloc(1)]);
    const lens = new Float64Array([16, 4096, 1]);
    return () => { while (g.driver.addChain(gpas, lens, 3, 1) >= 0) { /* fill */ } };
  }),
  () => realScenario('indirect-blk', (g) => {
    const r = [{ gpa: g.alloc(16), len: 16 }];
    const w = [{ gpa: g.alloc(4096, { align: 4096 }), len: 4096 }, { gpa: g.alloc(1), len: 1 }];
    return () => { while (g.driver.add(r, w, { indirect: true }) >= 0) { /* fill */ } };
  }),
  () => {
    // Bare baseline over the same mock rings: the driver refills, a flat function serves.
    const g = new MockGuest({ queueSize: QUEUE });
    const v = g.device.ringViews;
    const buf = g.alloc(64);
    const region = g.regions[0];
    const bare: BareRing = {
      size: QUEUE, desc: v.desc, avail: v.avail, used16: v.used16, used32: v.used32,
      regionGpa: region.guestPhysAddr, regionSize: region.size,
      segSlab: new Int32Array(1), segOffset: new Float64Array(1), segLen: new Float64Array(1), segGpa: new Float64Array(1),
      nextAvail: 0, usedIdx: 0,
    };
    return {
      name: 'bare-1desc',
      refill: () => { while (g.driver.addOne(buf, 64, true) >= 0) { /* fill */ } g.driver.publish(); },
      serve: () => { const n = bareServe(bare); if (n < 0) throw new Error('bare fault'); return n; },
      collect: () => collect(g.driver),
    };
  },
  () => packedScenario('packed-1desc', (g) => {
    const buf = g.alloc(64);
    return () => { while (g.driver.addOne(buf, 64, true) >= 0) { /* fill */ } };
  }),
  () => packedScenario('packed-3desc', (g) => {
    // The 3desc-blk chain shape on a packed ring: three consecutive ring slots per request.
    const gpas = new Float64Array([g.alloc(16), g.alloc(4096, { align: 4096 }), g.alloc(1)]);
    const lens = new Float64Array([16, 4096, 1]);
    return () => { while (g.driver.addChain(gpas, lens, 3, 1) >= 0) { /* fill */ } };
  }),
];

/**
 * Measures one scenario with tinybench. Each iteration is one batch (a full ring): the *device*
 * task times only `serve` (the refill and used collection run in untimed per-iteration hooks);
 * the *end-to-end* task times refill + serve + collect. Rates are chains per batch × the
 * median batch throughput.
 */
async function measure(s: Scenario): Promise<{ device: number[]; e2e: number[] }> {
  let chains = 0, batches = 0;
  const countServe = (): void => { chains += s.serve(); batches++; };
  const device: number[] = [], e2e: number[] = [];
  for (let i = 0; i < SAMPLES; i++) {
    const bench = new Bench({ time: SECONDS * 1000, warmupTime: Math.min(500, SECONDS * 500), throws: true });
    bench.add(`${s.name} device`, countServe, {
      beforeAll: () => { chains = 0; batches = 0; },
      beforeEach: () => s.refill(),
      afterEach: () => s.collect(),
    });
    bench.add(`${s.name} end-to-end`, () => { s.refill(); countServe(); s.collect(); }, {
      beforeAll: () => { chains = 0; batches = 0; },
    });
    for (const task of bench.tasks) {
      await task.run();
      const r = task.result;
      if (r.state !== 'completed') throw new Error(`${task.name}: ${r.state}`);
      const rate = (chains / batches) * r.throughput.p50;
      (task.name.endsWith('device') ? device : e2e).push(rate);
    }
  }
  return { device, e2e };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const fmt = (x: number): string => `${(x / 1e6).toFixed(2)} M/s`;

const NAMES = ['1desc', '3desc-blk', 'indirect-blk', 'bare-1desc', 'packed-1desc', 'packed-3desc'];
if (values.only === undefined) {
  // One process per scenario: run in one process, the scenarios share the queue classes' call
  // sites and V8 specialises them for whichever ran first (measured: 3desc-blk 8.9 M/s after
  // 1desc in the same process vs 16 M/s alone).
  console.log(`ring micro-benchmark (tinybench): node ${process.version}, queue ${QUEUE}, ${SAMPLES} × ${SECONDS}s samples, one core, one process per scenario`);
  for (const name of NAMES) {
    const r = spawnSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2), '--only', name], { stdio: 'inherit' });
    if (r.status !== 0) process.exit(r.status ?? 1);
  }
} else {
  const i = NAMES.indexOf(values.only);
  if (i < 0) throw new Error(`--only takes one of ${NAMES.join(', ')}`);
  const s = scenarios[i]();
  const { device: dev, e2e } = await measure(s);
  if (process.env.RING_SAMPLES) console.error(`${s.name} device samples: ${dev.map(fmt).join(' ')}`);
  console.log(`${s.name.padEnd(13)} device ${fmt(median(dev)).padStart(11)} (best ${fmt(Math.max(...dev))})   end-to-end ${fmt(median(e2e)).padStart(11)}`);
}
