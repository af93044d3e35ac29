/**
 * Target `ring-corrupt`: a hostile guest.
 *
 * Valid chains are published, then the descriptor table, indirect tables, the available ring
 * and the indices are corrupted at random points between pops. The device side may only ever
 * return 1 (with segments inside guest memory), 0, or a known FAULT_* code: it never throws,
 * never hangs (pops are bounded), never hands out a segment outside a slab, and never writes
 * outside what the guest gave (canaries checked after every case).
 * @module
 */
import fc from 'fast-check';
import { ALL_FAULTS, DescriptorChain } from '@vhost-ts/virtqueue';
import { MockGuest } from '@vhost-ts/virtqueue/testing';
import { DirectPopper, popStepArb, type PopStep } from './direct-pops.js';
import type { FuzzTarget } from './target.js';

type Mutation =
  | { m: 'descWord'; index: number; word: number; value: number }
  | { m: 'descSmart'; index: number; field: 'next' | 'flags' | 'len' | 'addr'; pick: number }
  | { m: 'availEntry'; index: number; value: number }
  | { m: 'availIdx'; delta: number }
  | { m: 'indirect'; offset: number; value: number }
  | { m: 'usedEvent'; value: number };

type Step = { s: 'mutate'; mut: Mutation } | PopStep | { s: 'add'; n: number; indirect: boolean };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ m: fc.constant('descWord' as const), index: fc.nat({ max: 300 }), word: fc.nat({ max: 3 }), value: fc.nat({ max: 0xffffffff }) }),
  fc.record({ m: fc.constant('descSmart' as const), index: fc.nat({ max: 300 }), field: fc.constantFrom('next' as const, 'flags' as const, 'len' as const, 'addr' as const), pick: fc.nat() }),
  fc.record({ m: fc.constant('availEntry' as const), index: fc.nat({ max: 300 }), value: fc.oneof(fc.nat({ max: 16 }), fc.nat({ max: 0xffff })) }),
  fc.record({ m: fc.constant('availIdx' as const), delta: fc.integer({ min: -3, max: 300 }) }),
  fc.record({ m: fc.constant('indirect' as const), offset: fc.nat({ max: 4095 }), value: fc.nat({ max: 255 }) }),
  fc.record({ m: fc.constant('usedEvent' as const), value: fc.nat({ max: 0xffff }) }),
);

/** Steps of a scenario; `direct` adds `popDirect` pops (either direction) to the pop step. */
function stepArb(direct: boolean): fc.Arbitrary<Step> {
  const pop = popStepArb(direct);
  return fc.oneof(
    { weight: 3, arbitrary: fc.record({ s: fc.constant('mutate' as const), mut: mutationArb }) },
    { weight: 2, arbitrary: pop },
    { weight: 1, arbitrary: fc.record({ s: fc.constant('add' as const), n: fc.integer({ min: 1, max: 6 }), indirect: fc.boolean() }) },
  );
}

function scenarioArb(direct: boolean) {
  return fc.record({
    queueSize: fc.constantFrom(1, 4, 8, 64, 256),
    startIndex: fc.oneof(fc.integer({ min: 65520, max: 65535 }), fc.nat({ max: 0xffff })),
    eventIdx: fc.boolean(),
    indirect: fc.boolean(),
    steps: fc.array(stepArb(direct), { minLength: 1, maxLength: 60 }),
  });
}

export const corruptArb = scenarioArb(false);
/** The same scenarios with pops done by `popDirect` (either direction) as well as `pop`. */
export const directArb = scenarioArb(true);

const KNOWN = new Set<number>([0, 1, ...ALL_FAULTS]);

function fail(msg: string): never {
  throw new Error(`ring-corrupt: ${msg}`);
}

/** Runs one hostile scenario; throws if the device misbehaves. */
export function runRingCorrupt(sc: { queueSize: number; startIndex: number; eventIdx: boolean; indirect: boolean; steps: Step[] }): void {
  const g = new MockGuest({
    queueSize: sc.queueSize, startIndex: sc.startIndex, eventIdx: sc.eventIdx, indirect: sc.indirect, indirectEntries: 16,
  });
  const mem = g.memory;
  const size = sc.queueSize;
  const views = g.device.ringViews;
  // Candidate values for "smart" mutations: real buffers, the gap, region ends, 2^53 neighbours.
  const bufs = [g.alloc(64), g.alloc(4096, { region: 1 }), g.alloc(512, { region: 2 }), g.spanningBuffer(64)];
  const addrs = [...bufs, g.unmappedGpa, g.indirectGpa, g.regions[2].guestPhysAddr + g.regions[2].size - 8,
    2 ** 53 - 16, 2 ** 53, 2 ** 64 - 4096, 0];
  const lens = [0, 1, 8, 16, 48, 64, 4096, 0x1000000, 0xffffffff, 17 * 16];
  const chain = new DescriptorChain(32);
  const payload = new Uint8Array(4096).fill(0x5a);
  let faulted = false;

  const pop = (n: number): void => {
    for (let i = 0; i < n; i++) {
      let r: number;
      try {
        r = g.device.pop(chain);
      } catch (e) {
        fail(`pop threw ${String(e)}`);
      }
      if (!KNOWN.has(r)) fail(`pop returned unknown value ${r}`);
      if (r < 0) {
        faulted = true;
        if (!g.device.isBroken) fail('fault without a broken queue');
        if (g.device.pop(chain) !== r) fail('a broken queue returned something else');
        return;
      }
      if (faulted) fail('a broken queue popped');
      if (r === 0) return;
      // Every segment lies inside its slab and its slab's GPA range.
      const n2 = chain.segCount;
      if (n2 > chain.capacity) fail('segment count over capacity');
      let bytes = 0;
      for (let k = 0; k < n2; k++) {
        const s = chain.segSlab[k], off = chain.segOffset[k], len = chain.segLen[k];
        if (s < 0 || s >= mem.slabCount) fail(`segment ${k}: slab ${s}`);
        if (!(off >= 0 && len > 0 && off + len <= mem.slabs[s].length)) fail(`segment ${k}: ${off}+${len} outside slab ${s}`);
        if (chain.segGpa[k] !== mem.slabGpa[s] + off) fail(`segment ${k}: gpa mismatch`);
        bytes += len;
      }
      if (bytes !== chain.readableBytes + chain.writableBytes || bytes > 0xffffffff) fail('byte counts inconsistent');
      if (chain.head < 0 || chain.head >= size) fail(`head ${chain.head} out of range`);
      // Use the chain as a device would: read its header, fill the writable part.
      chain.copyFromReadable(0, payload.subarray(0, 16));
      let w = 0;
      while (w < chain.writableBytes && w < 1 << 16) {
        const c = chain.copyToWritable(w, payload);
        if (c <= 0) fail('copyToWritable stalled');
        w += c;
      }
      g.device.pushUsed(chain.head, w);
      g.device.publishUsed();
      g.device.shouldNotify();
    }
  };

  // popDirect: the run form of pop's one-descriptor fast path, under the same hostile ring.
  const direct = new DirectPopper(fail);
  const popDirect = (n: number, writable: boolean): void => {
    direct.faulted = faulted;
    direct.run(g.device, mem, n, writable);
    faulted = direct.faulted;
  };

  for (const step of sc.steps) {
    if (step.s === 'pop') {
      if (step.direct === true) popDirect(step.n, step.writable === true);
      else pop(step.n);
      continue;
    }
    if (step.s === 'add') {
      for (let i = 0; i < step.n; i++) {
        const h = g.driver.add([{ gpa: bufs[0], len: 16 }], [{ gpa: bufs[i % 4], len: 64 }], { indirect: sc.indirect && step.indirect });
        if (h < 0) break;
      }
      g.driver.publish();
      continue;
    }
    const mu = step.mut;
    switch (mu.m) {
      case 'descWord': views.desc[((mu.index % size) << 2) + mu.word] = mu.value; break;
      case 'descSmart': {
        const w = (mu.index % size) << 2;
        if (mu.field === 'next') views.desc[w + 3] = (views.desc[w + 3] & 0xffff) | ((mu.pick % (size + 2)) << 16);
        else if (mu.field === 'flags') views.desc[w + 3] = (views.desc[w + 3] & 0xffff0000) | (mu.pick & 7);
        else if (mu.field === 'len') views.desc[w + 2] = lens[mu.pick % lens.length];
        else {
          const a = addrs[mu.pick % addrs.length];
          views.desc[w] = a % 0x100000000;
          views.desc[w + 1] = Math.floor(a / 0x100000000) >>> 0;
        }
        break;
      }
      case 'availEntry': views.avail[2 + (mu.index % size)] = mu.value; break;
      case 'availIdx': views.avail[1] = (views.avail[1] + mu.delta) & 0xffff; break;
      case 'indirect': mem.setU8(g.indirectGpa + (mu.offset % (size * 16 * 16)), mu.value); break;
      case 'usedEvent': views.avail[views.usedEventIndex] = mu.value; break;
    }
  }
  pop(2 * size + 2);
  // Only the canaries outside the regions: a hostile descriptor may legitimately name the
  // allocator's guard bytes, which are guest memory.
  const bad = g.checkCanaries('regions');
  if (bad.length > 0) fail(`canaries: ${bad.join('; ')}`);
}

export const ringCorrupt: FuzzTarget = {
  name: 'ring-corrupt',
  description: 'random corruption of descriptors, indirect tables, avail ring and indices',
  testRuns: 300,
  property: () => fc.property(corruptArb, (s) => { runRingCorrupt(s); }),
};

export const ringDirect: FuzzTarget = {
  name: 'ring-direct',
  description: 'ring-corrupt with popDirect runs (writable or readable) mixed with pop',
  testRuns: 300,
  property: () => fc.property(directArb, (s) => { runRingCorrupt(s); }),
};
