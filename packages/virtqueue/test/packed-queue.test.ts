import t from 'tap';
import {
  ChainError, DescriptorChain, FAULT_ADDR_RANGE, FAULT_BAD_QUEUE_SIZE, FAULT_CHAIN_TOO_LONG, FAULT_GAP,
  FAULT_HEAD_OUT_OF_RANGE, FAULT_INDIRECT_BAD_LENGTH, FAULT_INDIRECT_NOT_NEGOTIATED, FAULT_INDIRECT_TOO_LARGE,
  FAULT_INDIRECT_WITH_NEXT, FAULT_LENGTH_OVERFLOW, FAULT_NESTED_INDIRECT, FAULT_READABLE_AFTER_WRITABLE,
  FAULT_RING_MISALIGNED, FAULT_TOO_MANY_SEGMENTS, FAULT_UNMAPPED, PackedQueueDevice, QueueError,
  RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_ENABLE, VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, decodePackedVringBase, encodePackedIndex, encodePackedVringBase,
  packedNeedEvent,
} from '@vhost-ts/virtqueue';
import { MockGuest, MockPackedGuest } from '@vhost-ts/virtqueue/testing';

const N = VIRTQ_DESC_F_NEXT, W = VIRTQ_DESC_F_WRITE, I = VIRTQ_DESC_F_INDIRECT;

/** Device loop: pop everything, report len = writable bytes, publish. Returns the ids popped. */
function serve(g: MockPackedGuest, chain = new DescriptorChain(16)): number[] {
  const ids: number[] = [];
  let r;
  while ((r = g.device.pop(chain)) === 1) {
    ids.push(chain.head);
    g.device.pushUsed(chain.head, chain.writableBytes);
  }
  if (r < 0) throw new Error(`fault ${r}`);
  g.device.publishUsed();
  return ids;
}

/** Publishes one raw chain and pops it; returns pop's result. */
function popRaw(g: MockPackedGuest, descs: Array<[number, number, number, number?]>, chain = new DescriptorChain(64)): number {
  g.driver.addRaw(descs.map((d) => d[0]), descs.map((d) => d[1]), descs.map((d) => d[2]), descs.map((d) => d[3] ?? 0), descs.length);
  g.driver.publish();
  return g.device.pop(chain);
}

t.test('round trip: chains popped once with their segments, used returned with lengths', async (t) => {
  const g = new MockPackedGuest({ queueSize: 16 });
  const hdr = g.alloc(16), data = g.alloc(512, { region: 1 }), st = g.alloc(1, { region: 2 });
  const ids = [
    g.driver.add([{ gpa: hdr, len: 16 }], [{ gpa: data, len: 512 }, { gpa: st, len: 1 }]),
    g.driver.add([{ gpa: data, len: 100 }], []),
    g.driver.add([], [{ gpa: st, len: 1 }]),
  ];
  t.equal(g.device.pop(new DescriptorChain()), 0, 'nothing visible before publish (head flags held back)');
  t.equal(g.device.availableCount(), 0);
  g.driver.publish();
  t.equal(g.device.availableCount(), 3);
  const chain = new DescriptorChain(8);
  t.equal(g.device.pop(chain), 1);
  t.equal(chain.head, ids[0], 'chain.head is the buffer id');
  t.equal(chain.readableSegs, 1); t.equal(chain.writableSegs, 2);
  t.same([...chain.segGpa.subarray(0, 3)], [hdr, data, st]);
  t.same([...chain.segLen.subarray(0, 3)], [16, 512, 1]);
  t.equal(chain.readableBytes, 16); t.equal(chain.writableBytes, 513);
  t.equal(chain.descCount, 3);
  g.device.pushUsed(chain.head, 513);
  t.same(serve(g, chain), [ids[1], ids[2]]);
  t.equal(g.device.nextAvail, encodePackedIndex(5, 1), 'avail position advanced by 5 slots');
  t.equal(g.device.usedIdx, encodePackedIndex(5, 1), 'used position skipped the same 5 slots');
  const lens = [513, 0, 1];
  for (let i = 0; i < 3; i++) {
    t.equal(g.driver.popUsed(), ids[i]);
    t.equal(g.driver.lastLen, lens[i]);
  }
  t.equal(g.driver.popUsed(), -1);
  t.equal(g.driver.numFree, 16);
  t.equal(g.device.popped, 3);
  g.assertCanaries();
});

t.test('wrap counters flip at the end of the ring (virtio 1.2 §2.8.1), any queue size', async (t) => {
  for (const size of [1, 2, 5, 8, 7]) {
    const g = new MockPackedGuest({ queueSize: size });
    const b = g.alloc(64);
    let served = 0, slots = 0;
    for (let round = 0; round < 40; round++) {
      const len = 1 + (round % Math.min(3, size));
      const gpas = new Float64Array(len).fill(b), lens = new Float64Array(len).fill(8);
      const id = g.driver.addChain(gpas, lens, len, 1);
      t.not(id, -1);
      g.driver.publish();
      t.same(serve(g), [id]);
      t.equal(g.driver.popUsed(), id);
      served++; slots += len;
    }
    const lap = Math.floor(slots / size);
    const expect = encodePackedIndex(slots % size, (lap & 1) === 0 ? 1 : 0);
    t.equal(g.device.nextAvail, expect, `size ${size}: avail slot and wrap after ${slots} slots`);
    t.equal(g.device.usedIdx, expect, `size ${size}: used slot and wrap`);
    t.equal(g.driver.availIdx, expect);
    t.equal(served, 40);
  }
});

t.test('starting mid-ring on wrap 0 (restored position) works both ways', async (t) => {
  const g = new MockPackedGuest({ queueSize: 8, startSlot: 6, startWrap: 0 });
  const b = g.alloc(16);
  const ids = [0, 1, 2, 3].map(() => g.driver.addOne(b, 16, true));
  g.driver.publish();
  t.same(serve(g), ids);
  for (const id of ids) t.equal(g.driver.popUsed(), id);
  t.equal(g.device.nextAvail, encodePackedIndex(2, 1), 'crossed the end: wrap 0 → 1');
});

t.test('out-of-order completion: one used descriptor per chain, skipping its slots (virtio 1.2 §2.8.7)', async (t) => {
  const g = new MockPackedGuest({ queueSize: 8 });
  const b = g.alloc(64);
  const a3 = g.driver.addChain([b, b, b], [8, 8, 8], 3, 1);
  const a1 = g.driver.addOne(b, 8, true);
  const a2 = g.driver.addChain([b, b], [8, 8], 2, 1);
  g.driver.publish();
  const chain = new DescriptorChain();
  const popped: number[] = [];
  while (g.device.pop(chain) === 1) popped.push(chain.head);
  t.same(popped, [a3, a1, a2]);
  // Complete in reverse order: used descriptors land at slots 0, 2, 3 (skips 2, 1, 3).
  g.device.pushUsed(a2, 7);
  g.device.pushUsed(a1, 5);
  g.device.pushUsed(a3, 3);
  g.device.publishUsed();
  t.equal(g.device.usedIdx, encodePackedIndex(6, 1));
  t.equal(g.driver.usedCount(), 3);
  t.equal(g.driver.popUsed(), a2); t.equal(g.driver.lastLen, 7);
  t.equal(g.driver.popUsed(), a1); t.equal(g.driver.lastLen, 5);
  t.equal(g.driver.popUsed(), a3); t.equal(g.driver.lastLen, 3);
  t.equal(g.driver.numFree, 8);
  // The ring keeps working across the wrap after out-of-order use.
  const more = [0, 1, 2, 3].map(() => g.driver.addOne(b, 8, false));
  g.driver.publish();
  t.same(serve(g), more);
  for (const id of more) t.equal(g.driver.popUsed(), id);
  t.equal(g.device.nextAvail, encodePackedIndex(2, 0), 'second lap: wrap 0');
});

t.test('a used batch becomes visible at once: first flags stored last (virtio 1.2 §2.8.21.3)', async (t) => {
  const g = new MockPackedGuest({ queueSize: 8 });
  const b = g.alloc(8);
  const ids = [0, 1, 2].map(() => g.driver.addOne(b, 8, true));
  g.driver.publish();
  const chain = new DescriptorChain();
  for (let i = 0; i < 3; i++) { t.equal(g.device.pop(chain), 1); g.device.pushUsed(chain.head, 8); }
  const desc = g.device.ringViews.desc;
  const flags = (slot: number): number => desc[slot * 4 + 3] >>> 16;
  t.equal(flags(0) & 0x8080, 0x0080, 'slot 0 still shows the driver\'s available flags');
  t.equal(flags(1) & 0x8080, 0x8080, 'slot 1 already written as used, hidden behind slot 0');
  t.equal(g.driver.popUsed(), -1, 'the driver sees nothing before publishUsed');
  t.equal(g.driver.usedCount(), 0);
  g.device.publishUsed();
  t.equal(flags(0) & 0x8080, 0x8080);
  t.equal(g.driver.usedCount(), 3);
  for (const id of ids) t.equal(g.driver.popUsed(), id);
});

t.test('a buffer spanning two adjacent regions is two segments', async (t) => {
  const g = new MockPackedGuest({ queueSize: 4 });
  const gpa = g.spanningBuffer(100);
  g.driver.add([], [{ gpa, len: 100 }]);
  g.driver.publish();
  const chain = new DescriptorChain();
  t.equal(g.device.pop(chain), 1);
  t.equal(chain.writableSegs, 2);
  t.equal(chain.segLen[0] + chain.segLen[1], 100);
  t.equal(chain.segGpa[1], g.regions[1].guestPhysAddr);
  t.equal(chain.copyToWritable(0, new Uint8Array(100).fill(7)), 100);
  t.same([...g.read(gpa, 100)], new Array(100).fill(7));
  g.assertCanaries();
});

t.test('indirect tables (virtio 1.2 §2.8.19)', async (t) => {
  const g = new MockPackedGuest({ queueSize: 8, indirectEntries: 8 });
  const hdr = g.alloc(16), data = g.alloc(4096, { region: 2 }), st = g.alloc(1);
  const id = g.driver.add([{ gpa: hdr, len: 16 }], [{ gpa: data, len: 4096 }, { gpa: st, len: 1 }], { indirect: true });
  g.driver.publish();
  const chain = new DescriptorChain();
  t.equal(g.device.pop(chain), 1);
  t.equal(chain.head, id);
  t.ok(chain.indirect);
  t.equal(chain.readableSegs, 1); t.equal(chain.writableSegs, 2);
  t.equal(chain.writableBytes, 4097);
  t.equal(chain.descCount, 4, 'the ring descriptor plus three table entries');
  g.device.pushUsed(id, 1);
  g.device.publishUsed();
  t.equal(g.device.usedIdx, encodePackedIndex(1, 1), 'an indirect chain occupies one slot');
  t.equal(g.driver.popUsed(), id);

  // NEXT and the id inside a table are reserved and ignored: the table length ends the chain.
  const table = g.alloc(32);
  g.memory.setU64(table, hdr); g.memory.setU32(table + 8, 16); g.memory.setU16(table + 12, 999); g.memory.setU16(table + 14, N);
  g.memory.setU64(table + 16, st); g.memory.setU32(table + 24, 1); g.memory.setU16(table + 30, W | N);
  t.equal(popRaw(g, [[table, 32, I, 3]], chain), 1);
  t.equal(chain.segCount, 2, 'two entries, NEXT ignored');
  t.equal(chain.head, 3);
});

t.test('markDeviceReadOnly: indirect table entries read as device-readable whatever their WRITE flag', async (t) => {
  // DPDK virtio-user's packed TX tables: the header entry flagged writable, data entries not.
  const table = (g: MockPackedGuest): number => {
    const hdr = g.alloc(12), data = g.alloc(100), tb = g.alloc(32);
    g.memory.setU64(tb, hdr); g.memory.setU32(tb + 8, 12); g.memory.setU16(tb + 14, W);
    g.memory.setU64(tb + 16, data); g.memory.setU32(tb + 24, 100); g.memory.setU16(tb + 30, N);
    return tb;
  };
  const strict = new MockPackedGuest({ queueSize: 8, indirectEntries: 4 });
  t.equal(popRaw(strict, [[table(strict), 32, I]]), FAULT_READABLE_AFTER_WRITABLE, 'refused by default (RX queues keep this)');
  const tx = new MockPackedGuest({ queueSize: 8, indirectEntries: 4 });
  tx.device.markDeviceReadOnly();
  const chain = new DescriptorChain();
  t.equal(popRaw(tx, [[table(tx), 32, I, 5]], chain), 1);
  t.equal(chain.readableSegs, 2, 'both entries readable');
  t.equal(chain.writableSegs, 0);
  t.equal(chain.readableBytes, 112);
  const ring = new MockPackedGuest({ queueSize: 8, indirectEntries: 4 });
  ring.device.markDeviceReadOnly();
  const b = ring.alloc(8);
  t.equal(popRaw(ring, [[b, 8, W | N], [b, 8, 0]]), FAULT_READABLE_AFTER_WRITABLE, 'ring descriptors stay checked');
  const split = new MockGuest({ queueSize: 8 });
  split.device.markDeviceReadOnly();
  t.pass('split rings: accepted, nothing changes');
});

t.test('every malformed chain is a typed fault and breaks the queue', async (t) => {
  const fresh = (opts: ConstructorParameters<typeof MockPackedGuest>[0] = {}): MockPackedGuest =>
    new MockPackedGuest({ queueSize: 8, indirectEntries: 4, ...opts });
  const cases: Array<{ name: string; fault: number; run: (g: MockPackedGuest) => number; opts?: ConstructorParameters<typeof MockPackedGuest>[0] }> = [
    { name: 'chain longer than the ring (virtio 1.2 §2.8.6)', fault: FAULT_CHAIN_TOO_LONG, run: (g) => {
      const b = g.alloc(8);
      return popRaw(g, Array.from({ length: 8 }, () => [b, 8, N] as [number, number, number]));
    } },
    { name: 'indirect not negotiated', fault: FAULT_INDIRECT_NOT_NEGOTIATED, opts: { indirect: false }, run: (g) => popRaw(g, [[g.alloc(16), 16, I]]) },
    { name: 'INDIRECT with NEXT (§2.8.19.1)', fault: FAULT_INDIRECT_WITH_NEXT, run: (g) => {
      const b = g.alloc(16);
      return popRaw(g, [[b, 16, I | N], [b, 16, 0]]);
    } },
    { name: 'indirect table of length 0', fault: FAULT_INDIRECT_BAD_LENGTH, run: (g) => popRaw(g, [[g.alloc(16), 0, I]]) },
    { name: 'indirect table not a multiple of 16', fault: FAULT_INDIRECT_BAD_LENGTH, run: (g) => popRaw(g, [[g.alloc(32), 24, I]]) },
    { name: 'indirect table larger than maxIndirect', fault: FAULT_INDIRECT_TOO_LARGE, run: (g) => popRaw(g, [[g.alloc(80), 80, I]]) },
    { name: 'nested indirect (§2.8.19.1)', fault: FAULT_NESTED_INDIRECT, run: (g) => {
      const tb = g.alloc(16);
      g.memory.setU64(tb, g.alloc(16)); g.memory.setU32(tb + 8, 16); g.memory.setU16(tb + 14, I);
      return popRaw(g, [[tb, 16, I]]);
    } },
    { name: 'indirect table unmapped', fault: FAULT_UNMAPPED, run: (g) => popRaw(g, [[g.unmappedGpa, 16, I]]) },
    { name: 'buffer unmapped', fault: FAULT_UNMAPPED, run: (g) => popRaw(g, [[g.unmappedGpa, 8, 0]]) },
    { name: 'buffer running into a gap', fault: FAULT_GAP, run: (g) => {
      const r1 = g.regions[1];
      return popRaw(g, [[r1.guestPhysAddr + r1.size - 8, 16, W]]);
    } },
    { name: 'address ≥ 2^53', fault: FAULT_ADDR_RANGE, run: (g) => popRaw(g, [[2 ** 53, 8, 0]]) },
    { name: 'address ≥ 2^53 in a multi-descriptor chain', fault: FAULT_ADDR_RANGE, run: (g) => popRaw(g, [[g.alloc(8), 8, N], [2 ** 60, 8, W]]) },
    { name: 'total length ≥ 2^32 (§2.8.6)', fault: FAULT_LENGTH_OVERFLOW, run: (g) => {
      return popRaw(g, [[g.alloc(0x1000), 0x1000, N], [g.alloc(16), 0xffffffff, W]]);
    } },
    { name: 'readable after writable (§2.8.6)', fault: FAULT_READABLE_AFTER_WRITABLE, run: (g) => {
      const b = g.alloc(8);
      return popRaw(g, [[b, 8, W | N], [b, 8, 0]]);
    } },
    { name: 'readable after writable inside a table', fault: FAULT_READABLE_AFTER_WRITABLE, run: (g) => {
      const b = g.alloc(8), tb = g.alloc(32);
      g.memory.setU64(tb, b); g.memory.setU32(tb + 8, 8); g.memory.setU16(tb + 14, W);
      g.memory.setU64(tb + 16, b); g.memory.setU32(tb + 24, 8); g.memory.setU16(tb + 30, 0);
      return popRaw(g, [[tb, 32, I]]);
    } },
    { name: 'more segments than maxSegments', fault: FAULT_TOO_MANY_SEGMENTS, opts: { device: { maxSegments: 2 } }, run: (g) => {
      const b = g.alloc(8);
      return popRaw(g, [[b, 8, N], [b, 8, N], [b, 8, 0]]);
    } },
    { name: 'buffer id ≥ queue size', fault: FAULT_HEAD_OUT_OF_RANGE, run: (g) => popRaw(g, [[g.alloc(8), 8, 0, 8]]) },
    { name: 'buffer id ≥ queue size in the last descriptor of a chain', fault: FAULT_HEAD_OUT_OF_RANGE, run: (g) => {
      const b = g.alloc(8);
      return popRaw(g, [[b, 8, N, 0], [b, 8, 0, 0xffff]]);
    } },
  ];
  for (const c of cases) {
    const g = fresh(c.opts);
    const r = c.run(g);
    t.equal(r, c.fault, c.name);
    t.ok(g.device.isBroken, `${c.name}: broken`);
    t.equal(g.device.pop(new DescriptorChain()), c.fault, `${c.name}: stays broken`);
    const e = g.device.error;
    t.ok(e instanceof ChainError, `${c.name}: ChainError`);
    t.equal(e?.fault, c.fault);
    g.assertCanaries();
  }
});

t.test('a chain of exactly the ring size is fine; direct chains may wrap the ring end', async (t) => {
  const g = new MockPackedGuest({ queueSize: 4, startSlot: 2 });
  const b = g.alloc(8);
  t.equal(popRaw(g, [[b, 8, N, 1], [b, 8, N, 1], [b, 8, W | N, 1], [b, 8, W, 1]]), 1);
  t.equal(g.device.nextAvail, encodePackedIndex(2, 0));
});

t.test('driver event suppression decides used-buffer notifications (virtio 1.2 §2.8.10)', async (t) => {
  const g = new MockPackedGuest({ queueSize: 8 });
  const b = g.alloc(8);
  const cycle = (n: number): void => {
    for (let i = 0; i < n; i++) g.driver.addOne(b, 8, true);
    g.driver.publish();
    serve(g);
  };
  cycle(1);
  t.ok(g.device.shouldNotify(), 'first decision notifies');
  t.notOk(g.device.shouldNotify(), 'nothing new: no notification');
  g.driver.disableInterrupts();
  cycle(1);
  t.notOk(g.device.shouldNotify(), 'DISABLE');
  g.driver.enableInterrupts();
  cycle(1);
  t.ok(g.device.shouldNotify(), 'ENABLE');
  // DESC without EVENT_IDX negotiated is treated as ENABLE.
  g.driver.setDriverEvent(0x8005, RING_EVENT_FLAGS_DESC);
  cycle(1);
  t.ok(g.device.shouldNotify(), 'DESC without EVENT_IDX → as ENABLE');
  while (g.driver.popUsed() >= 0) { /* drain */ }
});

t.test('EVENT_IDX: notify exactly when the used position crosses off_wrap, across wraps', async (t) => {
  const g = new MockPackedGuest({ queueSize: 4, eventIdx: true });
  const b = g.alloc(8);
  let pos = 0; // slots used so far (the device's used position, unrolled)
  const step = (n: number, eventAt: number): boolean => {
    // The driver asks to be told when the device writes a used descriptor at unrolled slot `eventAt`.
    g.driver.setDriverEvent(encodePackedIndex(eventAt % 4, Math.floor(eventAt / 4) % 2 === 0 ? 1 : 0), RING_EVENT_FLAGS_DESC);
    for (let i = 0; i < n; i++) g.driver.addOne(b, 8, true);
    g.driver.publish();
    serve(g);
    const r = g.device.shouldNotify();
    while (g.driver.popUsed() >= 0) { /* drain without touching the event area */ }
    pos += n;
    return r;
  };
  t.ok(step(1, 0), 'first decision always notifies');
  for (let round = 0; round < 12; round++) {
    const n = 1 + (round % 3);
    const before = pos;
    const want = round % 2 === 0 ? before + n - 1 : before + n; // inside the batch, or just past it
    t.equal(step(n, want), want < before + n, `round ${round}: event at ${want}, batch [${before}, ${before + n})`);
  }
});

t.test('device event suppression: kicks, EVENT_IDX off_wrap set by pop and enableNotify', async (t) => {
  const g = new MockPackedGuest({ queueSize: 8 });
  const b = g.alloc(8);
  g.driver.addOne(b, 8, true); g.driver.publish();
  t.ok(g.driver.kickNeeded(), 'ENABLE by default');
  t.notOk(g.driver.kickNeeded(), 'nothing new published');
  g.device.disableNotify();
  t.equal(g.driver.deviceEvent[1], RING_EVENT_FLAGS_DISABLE);
  g.driver.addOne(b, 8, true); g.driver.publish();
  t.notOk(g.driver.kickNeeded(), 'DISABLE');
  serve(g);
  t.notOk(g.device.enableNotify(), 'nothing waiting');
  t.equal(g.driver.deviceEvent[1], RING_EVENT_FLAGS_ENABLE);
  g.driver.addOne(b, 8, true); g.driver.publish();
  t.ok(g.device.enableNotify(), 'enableNotify reports a waiting chain');

  const e = new MockPackedGuest({ queueSize: 4, eventIdx: true, startSlot: 3 });
  const c = e.alloc(8);
  t.equal(e.device.pop(new DescriptorChain()), 0);
  t.same(e.driver.deviceEvent, [encodePackedIndex(3, 1), RING_EVENT_FLAGS_DESC], 'an empty pop asks for a kick at its slot');
  e.driver.addOne(c, 8, true); e.driver.publish();
  t.ok(e.driver.kickNeeded(), 'the chain at the event slot needs a kick');
  e.driver.addOne(c, 8, true); e.driver.publish();
  t.notOk(e.driver.kickNeeded(), 'past the event slot: no kick (device has not consumed yet)');
  serve(e);
  t.equal(e.device.pop(new DescriptorChain()), 0);
  t.same(e.driver.deviceEvent, [encodePackedIndex(1, 0), RING_EVENT_FLAGS_DESC], 'event moved past the wrap');
  e.driver.addOne(c, 8, true); e.driver.publish();
  t.ok(e.driver.kickNeeded());
  e.device.disableNotify();
  e.driver.addOne(c, 8, true); e.driver.publish();
  t.notOk(e.driver.kickNeeded(), 'EVENT_IDX + DISABLE');
});

t.test('packedNeedEvent equals a brute-force model', async (t) => {
  let checked = 0;
  for (const size of [1, 3, 4]) {
    const m = 2 * size;
    for (let newU = 0; newU < 3 * m; newU++) {
      for (let adv = 0; adv <= size + 1; adv++) {
        for (let ev = 0; ev < m; ev++) {
          // Brute force: unrolled positions newU - adv … newU - 1, compared mod 2 × size.
          let want = adv >= size && adv > 0;
          if (!want) for (let k = newU - adv; k < newU; k++) if ((((k % m) + m) % m) === ev) want = true;
          const offWrap = encodePackedIndex(ev % size, ev < size ? 1 : 0);
          const got = packedNeedEvent(size, offWrap, newU % size, (newU % m) < size ? 1 : 0, adv);
          if (got !== want) t.fail(`size ${size} new ${newU} adv ${adv} ev ${ev}: ${got} ≠ ${want}`);
          checked++;
        }
      }
    }
  }
  t.ok(checked > 1000, `${checked} cases`);
});

t.test('save/restore for GET/SET_VRING_BASE (vhost-user packed encoding)', async (t) => {
  t.equal(encodePackedVringBase(5, 1, 3, 0), (5 | 0x8000 | (3 << 16)) >>> 0);
  t.equal(encodePackedVringBase(0x7fff, 1, 0x7fff, 1), 0xffffffff);
  t.same(decodePackedVringBase(0xffffffff), { availIndex: 0x7fff, availWrap: 1, usedIndex: 0x7fff, usedWrap: 1 });
  t.same(decodePackedVringBase(0x8003), { availIndex: 3, availWrap: 1, usedIndex: 3, usedWrap: 1 }, '16-bit value: used = avail');
  t.same(decodePackedVringBase(0x00028005), { availIndex: 5, availWrap: 1, usedIndex: 2, usedWrap: 0 });

  const g = new MockPackedGuest({ queueSize: 8 });
  const b = g.alloc(8);
  const ids = [0, 1, 2, 3, 4, 5].map(() => g.driver.addOne(b, 8, true));
  g.driver.publish();
  const chain = new DescriptorChain();
  for (let i = 0; i < 4; i++) t.equal(g.device.pop(chain), 1);
  g.device.pushUsed(ids[0], 8); g.device.pushUsed(ids[1], 8); g.device.publishUsed();
  g.device.pushUsed(ids[2], 8); // unpublished: not part of the saved state
  const base = g.device.vringBase;
  t.equal(base, encodePackedVringBase(4, 1, 2, 1));
  // A restarted back-end resumes from the base: the next chain is ids[4]; ids[2], ids[3] are
  // resubmitted by the device from its own records.
  const d2 = g.newDevice();
  d2.vringBase = base;
  t.equal(d2.nextAvail, encodePackedIndex(4, 1));
  t.equal(d2.publishedUsedIdx, encodePackedIndex(2, 1));
  t.equal(d2.pop(chain), 1);
  t.equal(chain.head, ids[4]);
  const d3 = g.newDevice({ nextAvail: encodePackedIndex(4, 1), nextUsed: encodePackedIndex(2, 1) });
  t.equal(d3.vringBase, base, 'constructor options give the same state');
});

t.test('dirty log marks used descriptors, the device event area and written data', async (t) => {
  const g = new MockPackedGuest({ queueSize: 8, eventIdx: true });
  const log = g.enableDirtyLog();
  const isDirty = (gpa: number): boolean => (log[Math.floor(gpa / 4096 / 8)] & (1 << (Math.floor(gpa / 4096) % 8))) !== 0;
  const data = g.alloc(64, { region: 2 });
  g.driver.addOne(data, 64, true); g.driver.publish();
  const chain = new DescriptorChain();
  t.equal(g.device.pop(chain), 1);
  chain.copyToWritable(0, new Uint8Array(8));
  g.device.pushUsed(chain.head, 8);
  g.device.publishUsed();
  g.device.enableNotify();
  t.ok(isDirty(data));
  t.ok(isDirty(g.packedLayout.descGpa));
  t.ok(isDirty(g.packedLayout.deviceGpa));
});

t.test('ring layout validation', async (t) => {
  const g = new MockPackedGuest({ queueSize: 8 });
  const l = g.packedLayout;
  const mk = (over: Partial<typeof l>): unknown => {
    try { return new PackedQueueDevice(g.memory, { ...l, ...over }, { eventIdx: false, indirect: true }); } catch (e) { return e; }
  };
  for (const size of [0, 32769, 1.5]) {
    const e = mk({ size });
    t.ok(e instanceof QueueError && e.fault === FAULT_BAD_QUEUE_SIZE, `size ${size}`);
  }
  t.ok(mk({ size: 6 }) instanceof PackedQueueDevice, 'a size that is not a power of two is allowed (§2.8)');
  let e = mk({ descGpa: l.descGpa + 8 });
  t.ok(e instanceof QueueError && e.fault === FAULT_RING_MISALIGNED, 'descriptor ring 16-aligned');
  e = mk({ driverGpa: l.driverGpa + 2 });
  t.ok(e instanceof QueueError && e.fault === FAULT_RING_MISALIGNED, 'driver area 4-aligned');
  e = mk({ deviceGpa: g.unmappedGpa });
  t.ok(e instanceof QueueError && e.fault === FAULT_UNMAPPED, 'device area mapped');
  t.throws(() => g.device.pushUsed(8, 0), RangeError, 'pushUsed with an id ≥ size is a device bug');
});
