// touchAvailable: a cache hint only. Whatever the ring holds — good chains, a head out of range,
// a descriptor address outside memory or beyond 2^53, an avail.idx that jumps — it neither
// throws nor changes what pop hands out next, nor breaks the queue (pop judges the ring).
import t from 'tap';
import fc from 'fast-check';
import { DescriptorChain, FAULT_AVAIL_IDX_JUMP, FAULT_HEAD_OUT_OF_RANGE } from '@vhost-ts/virtqueue';
import { MockGuest, MockPackedGuest } from '@vhost-ts/virtqueue/testing';

/** Everything pop returns until the ring is empty or faults: heads, segment layout, result. */
function drain(g: MockGuest): string[] {
  const chain = new DescriptorChain(16);
  const seen: string[] = [];
  for (;;) {
    const r = g.device.pop(chain);
    if (r !== 1) { seen.push(`r=${r}`); break; }
    seen.push(`${chain.head}:${chain.readableSegs}/${chain.writableSegs}:${chain.writableBytes}:${chain.segGpa[0]}`);
  }
  return seen;
}

t.test('good chains: nothing taken, the same pops after it', async (t) => {
  const build = (): MockGuest => {
    const g = new MockGuest({ queueSize: 16 });
    for (let i = 0; i < 5; i++) g.driver.addOne(g.alloc(64 + i), 64 + i, i % 2 === 0);
    g.driver.add([{ gpa: g.alloc(16), len: 16 }], [{ gpa: g.alloc(1), len: 1 }]);
    g.driver.publish();
    return g;
  };
  const a = build(), b = build();
  const before = { next: a.device.nextAvail, count: a.device.availableCount(), popped: a.device.popped };
  a.device.touchAvailable(64);
  a.device.touchAvailable(0);
  a.device.touchAvailable(3);
  t.same({ next: a.device.nextAvail, count: a.device.availableCount(), popped: a.device.popped }, before, 'no state moved');
  t.same(drain(a), drain(b), 'pop hands out the same chains as on a ring never touched');
});

t.test('hostile rings: no throw, no state change, pop reports the fault as before', async (t) => {
  // A head out of range.
  {
    const g = new MockGuest({ queueSize: 8 });
    g.driver.addOne(g.alloc(64), 64, true);
    g.driver.pushAvailRaw(200);
    g.driver.publish();
    g.device.touchAvailable(8);
    t.equal(g.device.isBroken, false, 'bad head: the hint does not break the queue');
    const seen = drain(g);
    t.equal(seen.length, 2);
    t.equal(seen[1], `r=${FAULT_HEAD_OUT_OF_RANGE}`, 'pop still faults on it');
  }
  // avail.idx far beyond the ring.
  {
    const g = new MockGuest({ queueSize: 8 });
    g.driver.addOne(g.alloc(64), 64, true);
    g.driver.publish();
    g.memory.setU16(g.layout.availGpa + 2, 40000);
    g.device.touchAvailable(8);
    t.equal(g.device.nextAvail, 0);
    t.equal(g.device.isBroken, false);
    t.same(drain(g), [`r=${FAULT_AVAIL_IDX_JUMP}`], 'pop faults on the jump');
  }
  // Descriptor addresses outside guest memory, at 2^53 and at 2^64 - 1.
  for (const [lo, hi] of [[0, 0x1000], [0xffffffff, 0x1fffff], [0, 0x200000], [0xffffffff, 0xffffffff]] as const) {
    const g = new MockGuest({ queueSize: 8 });
    const head = g.driver.addOne(g.alloc(64), 64, true);
    const desc = g.device.ringViews.desc;
    desc[head * 4] = lo;
    desc[head * 4 + 1] = hi;
    g.driver.publish();
    t.doesNotThrow(() => g.device.touchAvailable(8), `address ${hi.toString(16)}:${lo.toString(16)}`);
    t.equal(g.device.isBroken, false);
    t.equal(drain(g).length, 1, 'pop then judges the chain');
  }
});

t.test('property: on any avail ring and descriptor table contents, touch changes nothing pop sees', async (t) => {
  // Mostly plausible rings (indices near the ring, heads in range, addresses inside the heap)
  // with wild values mixed in, so the touch loop really runs on most draws.
  const SIZE = 8;
  const word = fc.oneof(fc.integer({ min: 0, max: 0x3ffff }), fc.integer({ min: 0, max: 0xffffffff }));
  const hiWord = fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffffffff }) });
  const desc = fc.tuple(word, hiWord, word, fc.integer({ min: 0, max: 7 })); // addr lo, addr hi, len, flags
  const head = fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 0, max: SIZE - 1 }) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) });
  const idx = fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 0, max: SIZE + 2 }) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) });
  let touchedSome = 0;
  fc.assert(fc.property(fc.array(desc, { minLength: SIZE, maxLength: SIZE }), fc.array(head, { minLength: SIZE, maxLength: SIZE }), idx,
    fc.integer({ min: 0, max: 300 }), (ds, hs, availIdx, max) => {
      const build = (): MockGuest => {
        const g = new MockGuest({ queueSize: SIZE });
        g.alloc(0x40000);
        const table = g.device.ringViews.desc;
        ds.forEach(([lo, hi, len, flags], i) => {
          table[4 * i] = lo;
          table[4 * i + 1] = hi;
          table[4 * i + 2] = len;
          table[4 * i + 3] = flags; // next = 0
        });
        for (let i = 0; i < SIZE; i++) g.memory.setU16(g.layout.availGpa + 4 + 2 * i, hs[i]);
        g.memory.setU16(g.layout.availGpa + 2, availIdx);
        return g;
      };
      const a = build(), b = build();
      a.device.touchAvailable(max);
      if (availIdx > 0 && availIdx <= SIZE && max > 0) touchedSome++;
      if (a.device.nextAvail !== b.device.nextAvail || a.device.isBroken) return false;
      return JSON.stringify(drain(a)) === JSON.stringify(drain(b));
    }), { numRuns: 300 });
  t.ok(touchedSome > 100, `the touch loop ran on ${touchedSome} of 300 rings`);
});

t.test('packed rings and broken queues: nothing happens', async (t) => {
  const p = new MockPackedGuest({ queueSize: 8 });
  p.driver.addOne(p.alloc(64), 64, true);
  const before = { next: p.device.nextAvail, count: p.device.availableCount() };
  t.doesNotThrow(() => p.device.touchAvailable(8));
  t.same({ next: p.device.nextAvail, count: p.device.availableCount() }, before, 'no state moved');
  const g = new MockGuest({ queueSize: 8 });
  g.driver.pushAvailRaw(99);
  g.driver.publish();
  t.equal(g.device.pop(new DescriptorChain(4)), FAULT_HEAD_OUT_OF_RANGE);
  t.doesNotThrow(() => g.device.touchAvailable(8), 'a broken queue');
});
