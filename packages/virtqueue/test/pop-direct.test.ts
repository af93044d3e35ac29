// popDirect: the run form of pop's one-descriptor fast path. It must hand out exactly what pop
// would (same heads, same slab ranges, same order), stop untouched before any chain of another
// shape, and fault like pop on a bad head.
import t from 'tap';
import { DescriptorChain, FAULT_AVAIL_IDX_JUMP, FAULT_HEAD_OUT_OF_RANGE } from '@vhost-ts/virtqueue';
import { MockGuest, MockPackedGuest } from '@vhost-ts/virtqueue/testing';

t.test('pops a run of single writable descriptors, stops before a longer chain', async (t) => {
  const g = new MockGuest({ queueSize: 32 });
  const bufs = [64, 100, 2048, 7, 512].map((n) => ({ gpa: g.alloc(n), len: n }));
  const heads = bufs.map((b) => g.driver.addOne(b.gpa, b.len, true));
  const two = g.driver.add([], [{ gpa: g.alloc(10), len: 10 }, { gpa: g.alloc(20), len: 20 }]);
  const tail = [g.driver.addOne(g.alloc(30), 30, true), g.driver.addOne(g.alloc(40), 40, true)];
  g.driver.publish();
  const out = new Float64Array(4 * 32);
  const n = g.device.popDirect(out, 32, true);
  t.equal(n, 5, 'the five single-descriptor chains');
  const mem = g.memory;
  for (let k = 0; k < n; k++) {
    t.equal(out[4 * k], heads[k], `chain ${k}: head`);
    t.equal(out[4 * k + 3], bufs[k].len, `chain ${k}: length`);
    const slab = out[4 * k + 1];
    t.equal(mem.slabGpa[slab] + out[4 * k + 2], bufs[k].gpa, `chain ${k}: slab + offset = its guest address`);
  }
  const chain = new DescriptorChain(8);
  t.equal(g.device.pop(chain), 1, 'the two-descriptor chain is left for pop');
  t.equal(chain.head, two);
  t.equal(chain.writableSegs, 2);
  t.equal(g.device.popDirect(out, 32, true), 2, 'then the rest');
  t.same([out[0], out[4]], tail);
  t.equal(g.device.popDirect(out, 32, true), 0, 'empty');
  t.equal(g.device.popped, 8, 'every chain counted once');
});

t.test('respects max and the output size; the other direction ends the run', async (t) => {
  const g = new MockGuest({ queueSize: 16 });
  for (let i = 0; i < 6; i++) g.driver.addOne(g.alloc(64), 64, true);
  const readable = g.driver.addOne(g.alloc(64), 64, false);
  g.driver.publish();
  const out = new Float64Array(4 * 2);
  t.equal(g.device.popDirect(out, 10, true), 2, 'no more than the output holds');
  t.equal(g.device.popDirect(out, 1, true), 1, 'no more than max');
  t.equal(g.device.popDirect(new Float64Array(64), 16, true), 3, 'the writable ones left');
  t.equal(g.device.popDirect(out, 2, true), 0, 'a readable chain is not taken for writable');
  t.equal(g.device.popDirect(out, 2, false), 1, 'but is for readable');
  t.equal(out[0], readable);
});

t.test('a head out of range breaks the queue as pop does, after the good chains before it', async (t) => {
  const g = new MockGuest({ queueSize: 8 });
  const good = g.driver.addOne(g.alloc(64), 64, true);
  g.driver.pushAvailRaw(200);
  g.driver.publish();
  const out = new Float64Array(32);
  t.equal(g.device.popDirect(out, 8, true), 1, 'the good chain is handed out first');
  t.equal(out[0], good);
  t.equal(g.device.isBroken, false);
  t.equal(g.device.popDirect(out, 8, true), FAULT_HEAD_OUT_OF_RANGE, 'then the bad head faults');
  t.equal(g.device.isBroken, true);
  t.equal(g.device.popped, 1, 'only the good chain counted');
  t.equal(g.device.popDirect(out, 8, true), FAULT_HEAD_OUT_OF_RANGE, 'stays broken');
  t.equal(g.device.pop(new DescriptorChain(4)), FAULT_HEAD_OUT_OF_RANGE);
});

t.test('an avail.idx jump found mid-run: the chains taken are returned, the next call faults', async (t) => {
  const g = new MockGuest({ queueSize: 8 });
  const heads = [0, 1].map(() => g.driver.addOne(g.alloc(64), 64, true));
  g.driver.publish();
  const out = new Float64Array(32);
  t.equal(g.device.popDirect(out, 1, true), 1, 'first chain (the second stays in the read window)');
  g.memory.setU16(g.layout.availGpa + 2, 102); // the driver claims 100 more than the ring holds
  t.equal(g.device.popDirect(out, 8, true), 1, 'the second chain, before avail.idx is read again');
  t.equal(out[0], heads[1]);
  t.equal(g.device.popDirect(out, 8, true), FAULT_AVAIL_IDX_JUMP, 'then the fault');
  t.equal(g.device.isBroken, true);
  t.equal(g.device.popped, 2, 'both chains counted, none lost');
});

t.test('giving chains back: nextAvail rewinds and pop sees them again', async (t) => {
  const g = new MockGuest({ queueSize: 8 });
  const heads = [0, 1, 2].map(() => g.driver.addOne(g.alloc(64), 64, true));
  g.driver.publish();
  const out = new Float64Array(32);
  t.equal(g.device.popDirect(out, 8, true), 3);
  g.device.nextAvail = (g.device.nextAvail - 2) & 0xffff;
  const chain = new DescriptorChain(4);
  t.equal(g.device.pop(chain), 1);
  t.equal(chain.head, heads[1]);
  t.equal(g.device.popDirect(out, 8, true), 1);
  t.equal(out[0], heads[2]);
});

t.test('packed: a run of single descriptors across the wrap, the same chains pop would give', async (t) => {
  // Start two slots before the end: the run crosses the ring's end and flips the wrap counter.
  const build = () => {
    const g = new MockPackedGuest({ queueSize: 8, startSlot: 6 });
    const bufs = [64, 100, 2048, 7].map((n) => ({ gpa: g.alloc(n), len: n }));
    const ids = bufs.map((b) => g.driver.addOne(b.gpa, b.len, true));
    const two = g.driver.add([], [{ gpa: g.alloc(10), len: 10 }, { gpa: g.alloc(20), len: 20 }]);
    const tail = g.driver.addOne(g.alloc(30), 30, true);
    g.driver.publish();
    return { g, bufs, ids, two, tail };
  };
  const { g, bufs, ids, two, tail } = build();
  const out = new Float64Array(4 * 32);
  t.equal(g.device.popDirect(out, 32, true), 4, 'the four single-descriptor chains');
  for (let k = 0; k < 4; k++) {
    t.equal(out[4 * k], ids[k], `chain ${k}: buffer id`);
    t.equal(out[4 * k + 3], bufs[k].len, `chain ${k}: length`);
    t.equal(g.memory.slabGpa[out[4 * k + 1]] + out[4 * k + 2], bufs[k].gpa, `chain ${k}: guest address`);
  }
  const chain = new DescriptorChain(8);
  t.equal(g.device.pop(chain), 1, 'the two-descriptor chain is left for pop');
  t.equal(chain.head, two);
  t.equal(g.device.popDirect(out, 32, true), 1);
  t.equal(out[0], tail);
  t.equal(g.device.popDirect(out, 32, true), 0, 'empty');
  t.equal(g.device.popped, 6);
  // Used side: what popDirect took goes back to the driver like popped chains.
  for (let k = 0; k < 4; k++) g.device.pushUsed(ids[k], 50 + k);
  g.device.pushUsed(two, 30);
  g.device.pushUsed(tail, 30);
  g.device.publishUsed();
  const back: number[] = [];
  for (let id = g.driver.popUsed(); id >= 0; id = g.driver.popUsed()) back.push(id);
  t.same(back, [...ids, two, tail], 'the driver gets every buffer back, in order');
  // A ring of the same contents served by pop alone hands out the same chains.
  const other = build();
  const seen: number[] = [];
  while (other.g.device.pop(chain) === 1) seen.push(chain.head);
  t.same(seen, [...ids, two, tail]);
});

t.test('packed: direction, indirect, max and a bad buffer id end the run', async (t) => {
  const g = new MockPackedGuest({ queueSize: 16, indirect: true });
  const w = [0, 1].map(() => g.driver.addOne(g.alloc(64), 64, true));
  const r = g.driver.addOne(g.alloc(64), 64, false);
  const ind = g.driver.add([{ gpa: g.alloc(16), len: 16 }], [{ gpa: g.alloc(64), len: 64 }], { indirect: true });
  g.driver.publish();
  const out = new Float64Array(4 * 16);
  t.equal(g.device.popDirect(out, 1, true), 1, 'max');
  t.equal(g.device.popDirect(new Float64Array(4), 8, true), 1, 'no more than the output holds');
  t.equal(out[0], w[0]);
  t.equal(g.device.popDirect(out, 8, true), 0, 'a readable descriptor is not taken for writable');
  t.equal(g.device.popDirect(out, 8, false), 1, 'but is for readable');
  t.equal(out[0], r);
  t.equal(g.device.popDirect(out, 8, false), 0, 'an indirect descriptor is left for pop');
  const chain = new DescriptorChain(8);
  t.equal(g.device.pop(chain), 1);
  t.equal(chain.head, ind);
  // A buffer id beyond the ring: popDirect leaves it, pop faults on it.
  const bad = new MockPackedGuest({ queueSize: 8 });
  const good = bad.driver.addOne(bad.alloc(64), 64, true);
  bad.driver.addOne(bad.alloc(64), 64, true);
  bad.driver.publish();
  const words = bad.device.ringViews.desc;
  words[4 + 3] = ((words[4 + 3] & 0xffff0000) | 200) >>> 0; // slot 1's id
  t.equal(bad.device.popDirect(out, 8, true), 1, 'the good chain first');
  t.equal(out[0], good);
  t.equal(bad.device.popDirect(out, 8, true), 0, 'the bad id is not taken');
  t.equal(bad.device.isBroken, false);
  t.equal(bad.device.pop(chain), FAULT_HEAD_OUT_OF_RANGE, 'pop faults on it');
  t.equal(bad.device.popDirect(out, 8, true), FAULT_HEAD_OUT_OF_RANGE, 'and popDirect reports the fault after');
});

t.test('packed: unpop gives back chains of the last popDirect, across the wrap', async (t) => {
  const g = new MockPackedGuest({ queueSize: 4, startSlot: 2 });
  const ids = [0, 1, 2].map(() => g.driver.addOne(g.alloc(64), 64, true));
  g.driver.publish();
  const out = new Float64Array(4 * 8);
  const before = g.device.nextAvail;
  t.equal(g.device.popDirect(out, 8, true), 3);
  g.device.unpop(2);
  t.equal(g.device.popped, 1);
  t.equal(g.device.nextAvail, (before & 0x8000) | 3, 'back to slot 3, before the wrap');
  t.throws(() => g.device.unpop(2), RangeError, 'only what the last popDirect took and did not give back');
  t.equal(g.device.popDirect(out, 8, true), 2, 'the two come back');
  t.same([out[0], out[4]], [ids[1], ids[2]]);
  g.device.unpop(2);
  g.device.pop(new DescriptorChain(4));
  t.throws(() => g.device.unpop(1), RangeError, 'after pop, nothing of a popDirect to give back');
  g.device.unpop(0);
});

t.test('packed: a driver racing the run cannot make it longer than the ring, unpop stays exact', async (t) => {
  // A driver on another CPU may mark a slot available again right after the device read it.
  // Simulated: every flags load on the ring also re-publishes slot 0 for the device's next wrap.
  const g = new MockPackedGuest({ queueSize: 1 });
  const gpa = g.alloc(64);
  g.driver.addOne(gpa, 64, true);
  g.driver.publish();
  const desc = g.device.ringViews.desc;
  const load = Atomics.load;
  let wrap = 1;
  (Atomics as { load: typeof Atomics.load }).load = ((arr: Uint32Array, i: number) => {
    const v = load(arr, i);
    if (arr === desc && i === 3) {
      // Next wrap's "available" ownership bits (AVAIL = wrap, USED = !wrap), other flags and id kept.
      wrap ^= 1;
      desc[3] = ((desc[3] & 0x7f7fffff) | ((wrap ? 0x0080 : 0x8000) << 16)) >>> 0;
    }
    return v;
  }) as typeof Atomics.load;
  let n: number;
  const before = g.device.nextAvail;
  try {
    n = g.device.popDirect(new Float64Array(4 * 32), 32, true);
  } finally {
    (Atomics as { load: typeof Atomics.load }).load = load;
  }
  t.equal(n, 1, 'one ring slot, one chain, however often the driver flips it');
  g.device.unpop(n);
  t.equal(g.device.nextAvail, before, 'given back to the exact position, wrap counter included');
});

t.test('packed: an empty popDirect arms EVENT_IDX like pop', async (t) => {
  const event = (fn: (g: MockPackedGuest) => void) => {
    const g = new MockPackedGuest({ queueSize: 8, eventIdx: true, startSlot: 3 });
    g.device.enableNotify();
    g.device.ringViews.device32[0] = 0x1234; // stale: only a re-arm on the empty pop rewrites it
    fn(g);
    return [...g.device.ringViews.device32.subarray(0, 1)];
  };
  const byPop = event((g) => g.device.pop(new DescriptorChain(4)));
  const byDirect = event((g) => g.device.popDirect(new Float64Array(8), 2, true));
  t.not(byPop[0], 0x1234, 'pop re-armed');
  t.same(byDirect, byPop, 'the same device event (kick me at this slot)');
});

t.test('unpop gives chains back without touching the notification state', async (t) => {
  const g = new MockGuest({ queueSize: 8, eventIdx: true });
  const heads = [0, 1, 2, 3].map(() => g.driver.addOne(g.alloc(64), 64, true));
  g.driver.publish();
  const out = new Float64Array(32);
  t.equal(g.device.popDirect(out, 1, true), 1);
  g.device.pushUsed(out[0], 64);
  g.device.publishUsed();
  g.driver.setUsedEvent(0);
  t.equal(g.device.shouldNotify(), true, 'the first completion is signalled');
  t.equal(g.device.popDirect(out, 8, true), 3);
  g.device.unpop(2);
  t.equal(g.device.popped, 2, 'two chains given back');
  t.equal(g.device.shouldNotify(), false, 'nothing new published: no signal (setting nextAvail would force one)');
  t.equal(g.device.popDirect(out, 8, true), 2, 'the two come back');
  t.same([out[0], out[4]], [heads[2], heads[3]]);
  t.throws(() => g.device.unpop(9), RangeError, 'more than the ring holds');
  t.throws(() => new MockPackedGuest({ queueSize: 8 }).device.unpop(1), RangeError, 'packed: nothing popped');
  new MockPackedGuest({ queueSize: 8 }).device.unpop(0);
});
