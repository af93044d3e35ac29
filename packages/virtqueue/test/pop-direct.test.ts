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

t.test('packed rings have no direct form: 0, and pop serves them', async (t) => {
  const g = new MockPackedGuest({ queueSize: 8 });
  g.driver.addOne(g.alloc(64), 64, true);
  g.driver.publish();
  t.equal(g.device.popDirect(new Float64Array(32), 8, true), 0);
  t.equal(g.device.pop(new DescriptorChain(4)), 1);
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
  t.throws(() => new MockPackedGuest({ queueSize: 8 }).device.unpop(1), RangeError, 'packed: only 0');
  new MockPackedGuest({ queueSize: 8 }).device.unpop(0);
});
