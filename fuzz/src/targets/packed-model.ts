/**
 * Target `packed-model`: packed-ring driver and device against a model (virtio 1.2 §2.8).
 *
 * Random interleavings of add / publish / pop / use (out of order) / publishUsed / collect /
 * notification calls, on queue sizes that are and are not powers of two, starting at any slot
 * with either wrap counter, so chains straddle the ring's end and both wrap counters flip many
 * times. Checks: every published chain is popped exactly once, in ring order, with exactly the
 * segments the driver gave (a buffer across the region 0 / 1 boundary as two segments); the
 * driver sees nothing of an unpublished used batch and then the whole batch, in push order,
 * with the reported lengths; slots and ids never leak; positions agree at the end; canaries
 * intact.
 * @module
 */
import fc from 'fast-check';
import { DescriptorChain } from '@vhost-ts/virtqueue';
import { MockPackedGuest } from '@vhost-ts/virtqueue/testing';
import type { FuzzTarget } from './target.js';

type Op =
  | { op: 'add'; bufs: number[]; writableFrom: number; indirect: boolean }
  | { op: 'publish' }
  | { op: 'pop'; n: number }
  | { op: 'use'; n: number; pick: number; len: number }
  | { op: 'publishUsed' }
  | { op: 'collect'; n: number }
  | { op: 'notify'; which: number };

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
    op: fc.constant('use' as const), n: fc.integer({ min: 1, max: 8 }), pick: fc.nat(), len: fc.oneof(fc.constant(0), fc.nat({ max: 0xffffffff })),
  }) },
  { weight: 2, arbitrary: fc.constant({ op: 'publishUsed' as const }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('collect' as const), n: fc.integer({ min: 1, max: 8 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('notify' as const), which: fc.nat({ max: 5 }) }) },
);

export const packedScenarioArb = fc.record({
  queueSize: fc.constantFrom(1, 2, 3, 5, 8, 16, 256),
  startSlot: fc.nat({ max: 255 }),
  startWrap: fc.constantFrom(0 as const, 1 as const),
  eventIdx: fc.boolean(),
  ops: fc.array(opArb, { minLength: 1, maxLength: 150 }),
});

interface Expected { id: number; segs: Array<[number, number]>; readable: number }

function fail(msg: string): never {
  throw new Error(`packed-model: ${msg}`);
}

/** Runs one scenario; throws on any disagreement with the model. */
export function runPackedModel(s: { queueSize: number; startSlot: number; startWrap: 0 | 1; eventIdx: boolean; ops: Op[] }): void {
  const g = new MockPackedGuest({
    queueSize: s.queueSize, startSlot: s.startSlot % s.queueSize, startWrap: s.startWrap, eventIdx: s.eventIdx, indirectEntries: 8,
  });
  const boundary = g.regions[1].guestPhysAddr;
  const pool = POOL.map(([r, len]) => ({ gpa: r === 'span' ? g.spanningBuffer(len) : g.alloc(len, { region: r }), len }));
  const expectedSegs = (gpa: number, len: number): Array<[number, number]> =>
    gpa < boundary && gpa + len > boundary ? [[gpa, boundary - gpa], [boundary, gpa + len - boundary]] : [[gpa, len]];

  const added: Expected[] = [];
  const published: Expected[] = [];
  const popped: number[] = [];
  const pushed: Array<[number, number]> = [];
  const usedPublished: Array<[number, number]> = [];
  const inFlight = new Set<number>();
  const chain = new DescriptorChain(64);

  const checkPop = (e: Expected | undefined): void => {
    if (!e) fail('popped a chain that was never published');
    if (chain.head !== e.id) fail(`popped id ${chain.head}, expected ${e.id}`);
    if (chain.segCount !== e.segs.length) fail(`id ${e.id}: ${chain.segCount} segments, expected ${e.segs.length}`);
    if (chain.readableSegs !== e.readable) fail(`id ${e.id}: ${chain.readableSegs} readable segments, expected ${e.readable}`);
    for (let k = 0; k < e.segs.length; k++) {
      if (chain.segGpa[k] !== e.segs[k][0] || chain.segLen[k] !== e.segs[k][1]) {
        fail(`id ${e.id} segment ${k}: ${chain.segGpa[k]}+${chain.segLen[k]}, expected ${e.segs[k]}`);
      }
    }
  };
  const collectOne = (): boolean => {
    const id = g.driver.popUsed();
    if (id < 0) {
      if (usedPublished.length !== 0) fail(`driver saw no used descriptor, ${usedPublished.length} published`);
      return false;
    }
    const want = usedPublished.shift();
    if (!want) fail(`driver collected id ${id} that was never published as used (a partial batch?)`);
    if (id !== want[0] || g.driver.lastLen !== want[1]) fail(`used ${id}/${g.driver.lastLen}, expected ${want[0]}/${want[1]}`);
    inFlight.delete(id);
    return true;
  };

  for (const op of s.ops) {
    switch (op.op) {
      case 'add': {
        const bufs = op.bufs.map((i) => pool[i]);
        const wf = Math.min(op.writableFrom, bufs.length);
        const indirect = op.indirect && bufs.length <= 8;
        const id = g.driver.add(bufs.slice(0, wf), bufs.slice(wf), { indirect });
        if (id < 0) break;
        if (inFlight.has(id)) fail(`driver reused id ${id} while in flight`);
        inFlight.add(id);
        added.push({
          id, segs: bufs.flatMap((b) => expectedSegs(b.gpa, b.len)),
          readable: bufs.slice(0, wf).flatMap((b) => expectedSegs(b.gpa, b.len)).length,
        });
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
          checkPop(published.shift());
          popped.push(chain.head);
        }
        break;
      case 'use':
        for (let i = 0; i < op.n && popped.length > 0; i++) {
          const [id] = popped.splice((op.pick + i) % popped.length, 1); // out-of-order completion
          g.device.pushUsed(id, op.len);
          pushed.push([id, op.len]);
        }
        break;
      case 'publishUsed':
        g.device.publishUsed();
        usedPublished.push(...pushed.splice(0));
        break;
      case 'collect':
        for (let i = 0; i < op.n; i++) if (!collectOne()) break;
        break;
      case 'notify':
        // Suppression calls may come at any time; none may disturb the data path.
        switch (op.which) {
          case 0: g.device.shouldNotify(); break;
          case 1: g.device.enableNotify(); break;
          case 2: g.device.disableNotify(); break;
          case 3: g.driver.kickNeeded(); break;
          case 4: g.driver.enableInterrupts(); break;
          default: g.driver.disableInterrupts(); break;
        }
        break;
    }
  }
  // Drain: everything added comes back exactly once.
  g.driver.publish();
  published.push(...added.splice(0));
  for (;;) {
    const r = g.device.pop(chain);
    if (r < 0) fail(`drain fault ${r}`);
    if (r === 0) break;
    checkPop(published.shift());
    popped.push(chain.head);
  }
  if (published.length !== 0) fail(`${published.length} published chains never popped`);
  for (const id of popped.splice(0)) { g.device.pushUsed(id, 0); pushed.push([id, 0]); }
  g.device.publishUsed();
  usedPublished.push(...pushed.splice(0));
  while (collectOne()) { /* drain */ }
  if (inFlight.size !== 0) fail(`${inFlight.size} chains never returned`);
  if (g.driver.numFree !== s.queueSize) fail(`slot leak: ${g.driver.numFree}/${s.queueSize} free`);
  if (g.device.nextAvail !== g.driver.availIdx) fail(`avail positions differ: device ${g.device.nextAvail}, driver ${g.driver.availIdx}`);
  if (g.device.usedIdx !== g.driver.usedIdx) fail(`used positions differ: device ${g.device.usedIdx}, driver ${g.driver.usedIdx}`);
  g.assertCanaries();
}

export const packedModel: FuzzTarget = {
  name: 'packed-model',
  description: 'packed ring: driver vs device against a model, random interleavings, wrap counters, out-of-order use',
  testRuns: 300,
  property: () => fc.property(packedScenarioArb, (s) => { runPackedModel(s); }),
};
