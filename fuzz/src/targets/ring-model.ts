/**
 * Target `ring-model`: driver and device against a model.
 *
 * Random interleavings of add / publish / pop / use / publishUsed / collect, with 16-bit
 * indices starting anywhere (often just below 65535). Checks: every published chain is popped
 * exactly once, in avail order, with exactly the segments the driver gave (a buffer crossing
 * the region 0 / region 1 boundary as two segments); used elements come back in the order the
 * device pushed them, with the lengths it reported; no descriptor leaks; canaries intact.
 * @module
 */
import fc from 'fast-check';
import { DescriptorChain } from '@vhost-ts/virtqueue';
import { MockGuest } from '@vhost-ts/virtqueue/testing';
import type { FuzzTarget } from './target.js';

type Op =
  | { op: 'add'; bufs: number[]; writableFrom: number; indirect: boolean }
  | { op: 'publish' }
  | { op: 'pop'; n: number }
  | { op: 'use'; n: number; pick: number; len: number }
  | { op: 'publishUsed' }
  | { op: 'collect'; n: number };

/** Buffer pool: [region or 'span', length]. */
const POOL: Array<[number | 'span', number]> = [
  [0, 1], [0, 16], [0, 512], [1, 4096], [1, 3], [2, 64], [2, 9000], ['span', 100], ['span', 2], [2, 1],
];

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({
    op: fc.constant('add' as const),
    bufs: fc.array(fc.nat({ max: POOL.length - 1 }), { minLength: 1, maxLength: 5 }),
    writableFrom: fc.nat({ max: 5 }),
    indirect: fc.boolean(),
  }) },
  { weight: 2, arbitrary: fc.constant({ op: 'publish' as const }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('pop' as const), n: fc.integer({ min: 1, max: 8 }) }) },
  { weight: 3, arbitrary: fc.record({
    op: fc.constant('use' as const), n: fc.integer({ min: 1, max: 8 }), pick: fc.nat(), len: fc.nat({ max: 0xffffffff }),
  }) },
  { weight: 2, arbitrary: fc.constant({ op: 'publishUsed' as const }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('collect' as const), n: fc.integer({ min: 1, max: 8 }) }) },
);

export const scenarioArb = fc.record({
  queueSize: fc.constantFrom(1, 2, 4, 8, 16, 256),
  startIndex: fc.oneof(fc.integer({ min: 65500, max: 65535 }), fc.nat({ max: 0xffff })),
  eventIdx: fc.boolean(),
  /** VIRTIO_F_IN_ORDER: completion in avail order, batches as one used element, ring-order descriptors. */
  inOrder: fc.boolean(),
  ops: fc.array(opArb, { minLength: 1, maxLength: 120 }),
});

interface Expected { head: number; segs: Array<[number, number]>; readable: number }

function fail(msg: string): never {
  throw new Error(`ring-model: ${msg}`);
}

/** Runs one scenario; throws on any disagreement with the model. */
export function runRingModel(s: { queueSize: number; startIndex: number; eventIdx: boolean; inOrder?: boolean; ops: Op[] }): void {
  const inOrder = s.inOrder ?? false;
  const g = new MockGuest({ queueSize: s.queueSize, startIndex: s.startIndex, eventIdx: s.eventIdx, indirectEntries: 8, inOrder });
  const boundary = g.regions[1].guestPhysAddr;
  const pool = POOL.map(([r, len]) => ({ gpa: r === 'span' ? g.spanningBuffer(len) : g.alloc(len, { region: r }), len }));
  const expectedSegs = (gpa: number, len: number): Array<[number, number]> =>
    gpa < boundary && gpa + len > boundary ? [[gpa, boundary - gpa], [boundary, gpa + len - boundary]] : [[gpa, len]];

  const added: Expected[] = [];      // added, not yet published
  const published: Expected[] = [];  // published, not yet popped (FIFO)
  const popped: number[] = [];       // heads the device holds
  const pushed: Array<[number, number]> = [];    // pushed, not yet published
  const usedPublished: Array<[number, number]> = []; // visible to the driver, in order
  const inFlight = new Set<number>();
  const chain = new DescriptorChain(64);
  let nextDesc = 0; // in order: where the driver's next chain must start in the table

  for (const op of s.ops) {
    switch (op.op) {
      case 'add': {
        const bufs = op.bufs.map((i) => pool[i]);
        const wf = Math.min(op.writableFrom, bufs.length);
        const indirect = op.indirect && bufs.length <= 8;
        const head = g.driver.add(bufs.slice(0, wf), bufs.slice(wf), { indirect });
        if (head < 0) break; // ring full: fine
        if (inFlight.has(head)) fail(`driver reused head ${head} while in flight`);
        if (inOrder) {
          if (head !== nextDesc) fail(`in order: chain at descriptor ${head}, expected ${nextDesc}`);
          nextDesc = (nextDesc + (indirect ? 1 : bufs.length)) % s.queueSize;
        }
        inFlight.add(head);
        const segs = bufs.flatMap((b) => expectedSegs(b.gpa, b.len));
        const readable = bufs.slice(0, wf).flatMap((b) => expectedSegs(b.gpa, b.len)).length;
        added.push({ head, segs, readable });
        break;
      }
      case 'publish':
        g.driver.publish();
        published.push(...added.splice(0));
        break;
      case 'pop':
        for (let i = 0; i < op.n; i++) {
          const r = g.device.pop(chain);
          if (r < 0) fail(`valid chain faulted: ${r}`);
          if (r === 0) {
            if (published.length !== 0) fail(`empty pop with ${published.length} published`);
            break;
          }
          const e = published.shift();
          if (!e) fail('popped a chain that was never published');
          if (chain.head !== e.head) fail(`popped head ${chain.head}, expected ${e.head}`);
          if (chain.segCount !== e.segs.length) fail(`head ${e.head}: ${chain.segCount} segments, expected ${e.segs.length}`);
          if (chain.readableSegs !== e.readable) fail(`head ${e.head}: ${chain.readableSegs} readable segments, expected ${e.readable}`);
          for (let k = 0; k < e.segs.length; k++) {
            if (chain.segGpa[k] !== e.segs[k][0] || chain.segLen[k] !== e.segs[k][1]) {
              fail(`head ${e.head} segment ${k}: ${chain.segGpa[k]}+${chain.segLen[k]}, expected ${e.segs[k]}`);
            }
          }
          popped.push(chain.head);
        }
        break;
      case 'use':
        if (inOrder) {
          // Completion in avail order; a batch as one used element (virtio 1.2 §2.7.9) or one each.
          const heads = popped.splice(0, Math.min(op.n, popped.length));
          if (heads.length === 0) break;
          const last = heads.length - 1;
          if (heads.length > 1 && op.pick % 2 === 0) g.device.pushUsedInOrder(heads.length, heads[last], op.len);
          else for (let i = 0; i <= last; i++) g.device.pushUsed(heads[i], i === last ? op.len : 0);
          for (let i = 0; i <= last; i++) pushed.push([heads[i], i === last ? op.len : 0]);
          break;
        }
        for (let i = 0; i < op.n && popped.length > 0; i++) {
          const [head] = popped.splice((op.pick + i) % popped.length, 1); // out-of-order completion
          g.device.pushUsed(head, op.len);
          pushed.push([head, op.len]);
        }
        break;
      case 'publishUsed':
        g.device.publishUsed();
        usedPublished.push(...pushed.splice(0));
        break;
      case 'collect':
        for (let i = 0; i < op.n; i++) {
          const head = g.driver.popUsed();
          if (head < 0) {
            if (usedPublished.length !== 0) fail(`driver saw no used element, ${usedPublished.length} published`);
            break;
          }
          const want = usedPublished.shift();
          if (!want) fail(`driver collected head ${head} that was never published as used`);
          if (head !== want[0] || g.driver.lastLen !== want[1]) {
            fail(`used element ${head}/${g.driver.lastLen}, expected ${want[0]}/${want[1]}`);
          }
          inFlight.delete(head);
        }
        break;
    }
  }
  // Drain: everything added must come back exactly once.
  g.driver.publish();
  published.push(...added.splice(0));
  for (;;) {
    const r = g.device.pop(chain);
    if (r < 0) fail(`drain fault ${r}`);
    if (r === 0) break;
    const e = published.shift();
    if (!e || e.head !== chain.head) fail(`drain popped ${chain.head}, expected ${e?.head}`);
    popped.push(chain.head);
  }
  if (published.length !== 0) fail(`${published.length} published chains never popped`);
  for (const h of popped.splice(0)) { g.device.pushUsed(h, 0); pushed.push([h, 0]); }
  g.device.publishUsed();
  usedPublished.push(...pushed.splice(0));
  for (;;) {
    const head = g.driver.popUsed();
    if (head < 0) break;
    const want = usedPublished.shift();
    if (!want || want[0] !== head) fail(`drain collected ${head}, expected ${want?.[0]}`);
    inFlight.delete(head);
  }
  if (inFlight.size !== 0) fail(`${inFlight.size} chains never returned`);
  if (g.driver.numFree !== s.queueSize) fail(`descriptor leak: ${g.driver.numFree}/${s.queueSize} free`);
  if (g.device.nextAvail !== g.driver.availIdx) fail('device and driver disagree on the avail index');
  g.assertCanaries();
}

export const ringModel: FuzzTarget = {
  name: 'ring-model',
  description: 'driver vs device against a model, random interleavings, 16-bit wrap-around',
  testRuns: 300,
  property: () => fc.property(scenarioArb, (s) => { runRingModel(s); }),
};
