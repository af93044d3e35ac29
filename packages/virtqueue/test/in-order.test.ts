// VIRTIO_F_IN_ORDER on split rings (virtio 1.2 §2.7.9): the device may return a batch with one
// used element at the batch's first position naming its last chain; the driver takes
// descriptors in ring order and reads such batches back one chain at a time.
import t from 'tap';
import fc from 'fast-check';
import { DescriptorChain, VIRTQ_DESC_F_NEXT } from '@vhost-ts/virtqueue';
import { MockGuest } from '@vhost-ts/virtqueue/testing';

function usedEntry(g: MockGuest, pos: number): [number, number] {
  const u = g.device.ringViews.used32;
  const i = pos & (g.device.size - 1);
  return [u[1 + i * 2], u[2 + i * 2]];
}

t.test('pushUsedInOrder: one element at the batch start, used.idx moves by the batch', async (t) => {
  const g = new MockGuest({ queueSize: 16, inOrder: true });
  const heads = [0, 1, 2, 3, 4].map(() => g.driver.addOne(g.alloc(64), 64, true));
  g.driver.publish();
  const chain = new DescriptorChain(4);
  for (let i = 0; i < 5; i++) t.equal(g.device.pop(chain), 1);
  // Mark the used ring so unwritten entries show.
  for (let i = 0; i < 16; i++) g.device.ringViews.used32[1 + i * 2] = 0xdead;
  g.device.pushUsed(heads[0], 10);
  g.device.pushUsedInOrder(3, heads[3], 40);
  g.device.pushUsed(heads[4], 50);
  g.device.publishUsed();
  t.equal(g.device.usedIdx, 5);
  t.same(usedEntry(g, 0), [heads[0], 10]);
  t.same(usedEntry(g, 1), [heads[3], 40], 'the batch: its last head at its first position');
  t.equal(usedEntry(g, 2)[0], 0xdead, 'skipped positions are not written');
  t.equal(usedEntry(g, 3)[0], 0xdead);
  t.same(usedEntry(g, 4), [heads[4], 50]);
  const got: [number, number][] = [];
  let h: number;
  while ((h = g.driver.popUsed()) >= 0) got.push([h, g.driver.lastLen]);
  t.same(got, [[heads[0], 10], [heads[1], 0], [heads[2], 0], [heads[3], 40], [heads[4], 50]]);
  t.equal(g.driver.numFree, 16);
  t.equal(g.driver.inFlight, 0);
});

t.test('pushUsedInOrder: never more positions waiting for a publish than the ring has', async (t) => {
  // A later batch would overwrite an earlier one's slot, and publishUsed would follow its stale
  // skip count (it looped forever on such a sequence before the check).
  const g = new MockGuest({ queueSize: 16, inOrder: true });
  g.device.pushUsedInOrder(13, 0, 0);
  g.device.pushUsedInOrder(3, 1, 0);
  t.throws(() => g.device.pushUsedInOrder(1, 2, 0), RangeError, '16 waiting: full');
  t.throws(() => g.device.pushUsedInOrder(1.5, 2, 0), RangeError, 'not an integer');
  g.device.publishUsed();
  t.equal(g.device.publishedUsedIdx, 16);
  g.device.pushUsedInOrder(10, 3, 0);
  t.throws(() => g.device.pushUsedInOrder(7, 4, 0), RangeError);
  g.device.pushUsedInOrder(6, 4, 0);
  g.device.publishUsed();
  t.equal(g.device.publishedUsedIdx, 32, 'published and ended');
});

t.test('pushUsedInOrder refuses use without IN_ORDER and bad arguments', async (t) => {
  const plain = new MockGuest({ queueSize: 8 });
  t.equal(plain.device.inOrder, false);
  t.throws(() => plain.device.pushUsedInOrder(1, 0, 0), RangeError);
  const g = new MockGuest({ queueSize: 8, inOrder: true });
  t.throws(() => g.device.pushUsedInOrder(0, 0, 0), RangeError);
  t.throws(() => g.device.pushUsedInOrder(9, 0, 0), RangeError);
  t.throws(() => g.device.pushUsedInOrder(1, 8, 0), RangeError);
  t.equal(g.device.usedIdx, 0, 'nothing recorded');
});

t.test('in-order driver: a used element naming a chain not in flight in this batch is a device error', async (t) => {
  const g = new MockGuest({ queueSize: 8, inOrder: true });
  const heads = [0, 1, 2].map(() => g.driver.addOne(g.alloc(8), 8, false));
  g.driver.publish();
  // The device claims one chain used but names the third one.
  const u = g.device.ringViews.used32;
  u[1] = heads[2];
  u[2] = 0;
  Atomics.store(g.device.ringViews.used16, 1, 1);
  t.throws(() => g.driver.popUsed(), { code: 'bad-used-id' });
});

t.test('in-order driver takes descriptors in ring order, chains linked x → x+1, wrapping to 0', async (t) => {
  const g = new MockGuest({ queueSize: 8, inOrder: true });
  const chain = new DescriptorChain(8);
  const desc = g.device.ringViews.desc;
  let expectNext = 0;
  for (let round = 0; round < 6; round++) {
    const n = 1 + (round % 3);
    const bufs = Array.from({ length: n }, () => ({ gpa: g.alloc(16), len: 16 }));
    const head = g.driver.add(bufs, []);
    t.equal(head, expectNext, `round ${round}: head at the ring position`);
    for (let k = 0; k < n; k++) {
      const d = (head + k) % 8;
      const flags = desc[d * 4 + 3] & 0xffff, next = desc[d * 4 + 3] >>> 16;
      if (k + 1 < n) {
        t.ok(flags & VIRTQ_DESC_F_NEXT);
        t.equal(next, (d + 1) % 8, 'next is x + 1, or 0 after the last');
      }
    }
    g.driver.publish();
    t.equal(g.device.pop(chain), 1);
    g.device.pushUsed(chain.head, 0);
    g.device.publishUsed();
    t.equal(g.driver.popUsed(), head);
    expectNext = (head + n) % 8;
  }
});

t.test('property: any mix of batches and single elements comes back in avail order with each length', async (t) => {
  await fc.assert(fc.property(
    fc.array(fc.record({ descs: fc.integer({ min: 1, max: 3 }), len: fc.integer({ min: 0, max: 4096 }) }), { minLength: 1, maxLength: 60 }),
    fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 1, maxLength: 60 }),
    fc.constantFrom(0, 65530, 65535),
    (reqs, cuts, startIndex) => {
      const size = 16;
      const g = new MockGuest({ queueSize: size, inOrder: true, heapBytes: 1 << 20, startIndex });
      const chain = new DescriptorChain(size);
      const expected: [number, number][] = [];
      const got: [number, number][] = [];
      let next = 0;
      let cut = 0;
      while (next < reqs.length || g.driver.inFlight > 0) {
        // Add what fits, then the device takes everything and returns it in random batches.
        while (next < reqs.length) {
          const r = reqs[next];
          const head = g.driver.add([], Array.from({ length: r.descs }, () => ({ gpa: g.alloc(8), len: 8 })));
          if (head < 0) break;
          next++;
        }
        g.driver.publish();
        const popped: number[] = [];
        while (g.device.pop(chain) === 1) popped.push(chain.head);
        let i = 0;
        while (i < popped.length) {
          const n = Math.min(cuts[cut++ % cuts.length], popped.length - i);
          const len = reqs[expected.length + n - 1].len;
          for (let k = 0; k < n; k++) expected.push([popped[i + k], k === n - 1 ? len : 0]);
          if (n === 1) g.device.pushUsed(popped[i], len);
          else g.device.pushUsedInOrder(n, popped[i + n - 1], len);
          i += n;
        }
        g.device.publishUsed();
        let h: number;
        while ((h = g.driver.popUsed()) >= 0) got.push([h, g.driver.lastLen]);
      }
      if (JSON.stringify(got) !== JSON.stringify(expected)) throw new Error(`got ${JSON.stringify(got)}, want ${JSON.stringify(expected)}`);
      if (g.driver.numFree !== size) throw new Error(`free ${g.driver.numFree}`);
    }), { numRuns: 300 });
  t.pass('300 runs');
});
