/**
 * Target `packed-corrupt`: a hostile guest on a packed ring.
 *
 * Valid chains are published, then descriptor words (addresses, lengths, ids, every flag bit
 * including AVAIL/USED), indirect tables and both event suppression areas are corrupted at random
 * points between pops. The device may only ever return 1 (segments inside guest memory, id below
 * the queue size), 0, or a known FAULT_* code: it never throws, never hangs (pops are bounded),
 * and never writes outside what the guest gave (canaries checked after every case).
 * @module
 */
import fc from 'fast-check';
import { ALL_FAULTS, DescriptorChain } from '@vhost-ts/virtqueue';
import { MockPackedGuest } from '@vhost-ts/virtqueue/testing';
import { DirectPopper, popStepArb, type PopStep } from './direct-pops.js';
import type { FuzzTarget } from './target.js';

type Mutation =
  | { m: 'descWord'; index: number; word: number; value: number }
  | { m: 'descSmart'; index: number; field: 'flags' | 'id' | 'len' | 'addr' | 'own'; pick: number }
  | { m: 'indirect'; offset: number; value: number }
  | { m: 'event'; driver: boolean; value: number };

type Step = { s: 'mutate'; mut: Mutation } | PopStep
  | { s: 'add'; n: number; indirect: boolean; chain: number } | { s: 'collect'; n: number } | { s: 'notify'; which: number };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ m: fc.constant('descWord' as const), index: fc.nat({ max: 300 }), word: fc.nat({ max: 3 }), value: fc.nat({ max: 0xffffffff }) }),
  fc.record({ m: fc.constant('descSmart' as const), index: fc.nat({ max: 300 }),
    field: fc.constantFrom('flags' as const, 'id' as const, 'len' as const, 'addr' as const, 'own' as const), pick: fc.nat() }),
  fc.record({ m: fc.constant('indirect' as const), offset: fc.nat({ max: 4095 }), value: fc.nat({ max: 255 }) }),
  fc.record({ m: fc.constant('event' as const), driver: fc.boolean(), value: fc.nat({ max: 0xffffffff }) }),
);

/** Steps of a scenario; `direct` adds `popDirect` pops (either direction) to the pop step. */
function stepArb(direct: boolean): fc.Arbitrary<Step> {
  const pop = popStepArb(direct);
  return fc.oneof(
    { weight: 3, arbitrary: fc.record({ s: fc.constant('mutate' as const), mut: mutationArb }) },
    { weight: 2, arbitrary: pop },
    // With popDirect, mostly runs of single descriptors (what it takes; others end its runs).
    { weight: 2, arbitrary: fc.record({ s: fc.constant('add' as const), n: fc.integer({ min: 1, max: direct ? 12 : 6 }), indirect: fc.boolean(), chain: direct
      ? fc.oneof({ weight: 4, arbitrary: fc.constant(1) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 3 }) })
      : fc.integer({ min: 1, max: 3 }) }) },
    { weight: 1, arbitrary: fc.record({ s: fc.constant('collect' as const), n: fc.integer({ min: 1, max: 6 }) }) },
    { weight: 1, arbitrary: fc.record({ s: fc.constant('notify' as const), which: fc.nat({ max: 3 }) }) },
  );
}

function scenarioArb(direct: boolean) {
  return fc.record({
    queueSize: fc.constantFrom(1, 3, 4, 8, 64, 256),
    startSlot: fc.nat({ max: 255 }),
    startWrap: fc.constantFrom(0 as const, 1 as const),
    eventIdx: fc.boolean(),
    indirect: fc.boolean(),
    steps: fc.array(stepArb(direct), { minLength: 1, maxLength: 60 }),
  });
}

export const packedCorruptArb = scenarioArb(false);
/** The same scenarios with pops done by `popDirect` (either direction) as well as `pop`. */
export const packedDirectArb = scenarioArb(true);

const KNOWN = new Set<number>([0, 1, ...ALL_FAULTS]);

function fail(msg: string): never {
  throw new Error(`packed-corrupt: ${msg}`);
}

/** Runs one hostile scenario; throws if the device misbehaves. */
export function runPackedCorrupt(sc: { queueSize: number; startSlot: number; startWrap: 0 | 1; eventIdx: boolean; indirect: boolean; steps: Step[] }): void {
  const size = sc.queueSize;
  const g = new MockPackedGuest({
    queueSize: size, startSlot: sc.startSlot % size, startWrap: sc.startWrap, eventIdx: sc.eventIdx, indirect: sc.indirect, indirectEntries: 16,
  });
  const mem = g.memory;
  const views = g.device.ringViews;
  const bufs = [g.alloc(64), g.alloc(4096, { region: 1 }), g.alloc(512, { region: 2 }), g.spanningBuffer(64)];
  const addrs = [...bufs, g.unmappedGpa, g.indirectGpa, g.regions[2].guestPhysAddr + g.regions[2].size - 8,
    2 ** 53 - 16, 2 ** 53, 2 ** 64 - 4096, 0];
  const lens = [0, 1, 8, 16, 48, 64, 4096, 0x1000000, 0xffffffff, 17 * 16];
  const chain = new DescriptorChain(32);
  const payload = new Uint8Array(4096).fill(0x5a);
  const gpas = new Float64Array(3), blens = new Float64Array(3);
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
        if (g.device.error === null || g.device.error.fault !== r) fail('no typed error for the fault');
        return;
      }
      if (faulted) fail('a broken queue popped');
      if (r === 0) return;
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
      if (chain.head < 0 || chain.head >= size) fail(`buffer id ${chain.head} out of range`);
      chain.copyFromReadable(0, payload.subarray(0, 16));
      let w = 0;
      while (w < chain.writableBytes && w < 1 << 16) {
        const c = chain.copyToWritable(w, payload);
        if (c <= 0) fail('copyToWritable stalled');
        w += c;
      }
      try {
        g.device.pushUsed(chain.head, w);
        g.device.publishUsed();
        g.device.shouldNotify();
      } catch (e) {
        fail(`used path threw ${String(e)}`);
      }
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
    switch (step.s) {
      case 'pop':
        if (step.direct === true) popDirect(step.n, step.writable === true);
        else pop(step.n);
        continue;
      case 'add':
        for (let i = 0; i < step.n; i++) {
          let id: number;
          if (sc.indirect && step.indirect) {
            id = g.driver.add([{ gpa: bufs[0], len: 16 }], [{ gpa: bufs[i % 4], len: 64 }], { indirect: true });
          } else {
            // Single descriptors mostly in one place (popDirect's runs stay in one slab).
            for (let k = 0; k < step.chain; k++) { gpas[k] = step.chain === 1 && i % 4 !== 3 ? bufs[0] : bufs[(i + k) % 4]; blens[k] = 16 + k; }
            // Single descriptors come in runs of readable or writable ones (TX, RX buffers).
            id = g.driver.addChain(gpas, blens, step.chain, step.chain === 1 && step.n % 2 === 1 ? 0 : 1);
          }
          if (id < 0) break;
        }
        g.driver.publish();
        continue;
      case 'collect':
        // The driver may legitimately reject what a corrupted ring shows it; it must not loop.
        for (let i = 0; i < step.n; i++) {
          try { if (g.driver.popUsed() < 0) break; } catch { break; }
        }
        continue;
      case 'notify':
        if (step.which === 0) g.device.enableNotify();
        else if (step.which === 1) g.device.disableNotify();
        else if (step.which === 2) g.device.shouldNotify();
        else g.device.availableCount();
        continue;
      case 'mutate':
        break;
    }
    const mu = step.mut;
    switch (mu.m) {
      case 'descWord': views.desc[((mu.index % size) << 2) + mu.word] = mu.value; break;
      case 'descSmart': {
        const w = (mu.index % size) << 2;
        const fw = views.desc[w + 3];
        if (mu.field === 'flags') views.desc[w + 3] = ((fw & 0x8080ffff) | ((mu.pick & 7) << 16)) >>> 0;
        else if (mu.field === 'own') views.desc[w + 3] = ((fw & 0x7f7fffff) | (((mu.pick & 1) << 23) | ((mu.pick & 2) << 30))) >>> 0;
        else if (mu.field === 'id') views.desc[w + 3] = ((fw & 0xffff0000) | (mu.pick % (size + 2))) >>> 0;
        else if (mu.field === 'len') views.desc[w + 2] = lens[mu.pick % lens.length];
        else {
          const a = addrs[mu.pick % addrs.length];
          views.desc[w] = a % 0x100000000;
          views.desc[w + 1] = Math.floor(a / 0x100000000) >>> 0;
        }
        break;
      }
      case 'indirect': mem.setU8(g.indirectGpa + (mu.offset % (size * 16 * 16)), mu.value); break;
      case 'event': (mu.driver ? views.driver32 : views.device32)[0] = mu.value; break;
    }
  }
  pop(2 * size + 2);
  const bad = g.checkCanaries('regions');
  if (bad.length > 0) fail(`canaries: ${bad.join('; ')}`);
}

export const packedCorrupt: FuzzTarget = {
  name: 'packed-corrupt',
  description: 'packed ring: random corruption of descriptors, ownership bits, ids, indirect tables and event areas',
  testRuns: 300,
  property: () => fc.property(packedCorruptArb, (s) => { runPackedCorrupt(s); }),
};

export const packedDirect: FuzzTarget = {
  name: 'packed-direct',
  description: 'packed-corrupt with popDirect runs (writable or readable), unpop and pop mixed',
  testRuns: 1000,
  property: () => fc.property(packedDirectArb, (s) => { runPackedCorrupt(s); }),
};
