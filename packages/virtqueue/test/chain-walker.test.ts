import t from 'tap';
import {
  ChainError, DescriptorChain, FAULT_ADDR_RANGE, FAULT_CHAIN_TOO_LONG, FAULT_GAP, FAULT_HEAD_OUT_OF_RANGE,
  FAULT_INDIRECT_BAD_LENGTH, FAULT_INDIRECT_NOT_NEGOTIATED, FAULT_INDIRECT_TOO_LARGE, FAULT_INDIRECT_WITH_NEXT,
  FAULT_LENGTH_OVERFLOW, FAULT_NESTED_INDIRECT, FAULT_NEXT_OUT_OF_RANGE, FAULT_READABLE_AFTER_WRITABLE,
  FAULT_TOO_MANY_SEGMENTS, FAULT_UNMAPPED, VIRTQ_DESC_F_INDIRECT as IND, VIRTQ_DESC_F_NEXT as NEXT,
  VIRTQ_DESC_F_WRITE as WR, faultName, type SplitQueueDriver,
} from '@vhost-ts/virtqueue';
import { MockGuest, type MockGuestOptions } from '@vhost-ts/virtqueue/testing';

/** Builds raw descriptors with `setup`, publishes `head`, pops once. */
function popRaw(setup: (d: SplitQueueDriver, g: MockGuest) => number, opts: MockGuestOptions = {}, capacity = 64) {
  const g = new MockGuest({ queueSize: 8, ...opts });
  const head = setup(g.driver, g);
  g.driver.pushAvailRaw(head);
  g.driver.publish();
  const chain = new DescriptorChain(capacity);
  const r = g.device.pop(chain);
  return { g, r, chain };
}

/** Writes an indirect table entry. */
function indDesc(g: MockGuest, table: number, i: number, addr: number, len: number, flags: number, next: number): void {
  const d = table + i * 16;
  g.memory.setU64(d, addr); g.memory.setU32(d + 8, len); g.memory.setU16(d + 12, flags); g.memory.setU16(d + 14, next);
}

const faults: Array<[string, number, (d: SplitQueueDriver, g: MockGuest) => number, MockGuestOptions?, number?]> = [
  ['a two-descriptor loop is cut by the queue-size budget (virtio 1.2 §2.7.5.3.1)', FAULT_CHAIN_TOO_LONG, (d, g) => {
    const b = g.alloc(16);
    d.writeDesc(0, b, 16, NEXT, 1); d.writeDesc(1, b, 16, NEXT, 0); return 0;
  }],
  ['a self-loop', FAULT_CHAIN_TOO_LONG, (d, g) => { d.writeDesc(3, g.alloc(8), 8, NEXT, 3); return 3; }],
  ['next ≥ queue size', FAULT_NEXT_OUT_OF_RANGE, (d, g) => { d.writeDesc(0, g.alloc(8), 8, NEXT, 8); return 0; }],
  ['head ≥ queue size', FAULT_HEAD_OUT_OF_RANGE, () => 8],
  ['head 65535', FAULT_HEAD_OUT_OF_RANGE, () => 0xffff],
  ['INDIRECT together with NEXT (virtio 1.2 §2.7.5.3.1)', FAULT_INDIRECT_WITH_NEXT, (d, g) => {
    d.writeDesc(0, g.indirectGpa, 32, IND | NEXT, 1); return 0;
  }],
  ['nested indirect (virtio 1.2 §2.7.5.3.1)', FAULT_NESTED_INDIRECT, (d, g) => {
    indDesc(g, g.indirectGpa, 0, g.indirectGpa + 256, 16, IND, 0);
    d.writeDesc(0, g.indirectGpa, 16, IND, 0); return 0;
  }],
  ['indirect table of length 0', FAULT_INDIRECT_BAD_LENGTH, (d, g) => { d.writeDesc(0, g.indirectGpa, 0, IND, 0); return 0; }],
  ['indirect table length not a multiple of 16', FAULT_INDIRECT_BAD_LENGTH, (d, g) => { d.writeDesc(0, g.indirectGpa, 24, IND, 0); return 0; }],
  ['indirect table larger than allowed', FAULT_INDIRECT_TOO_LARGE, (d, g) => { d.writeDesc(0, g.indirectGpa, 17 * 16, IND, 0); return 0; }],
  ['indirect without VIRTIO_RING_F_INDIRECT_DESC', FAULT_INDIRECT_NOT_NEGOTIATED, (d, g) => {
    indDesc(g, g.indirectGpa, 0, g.alloc(8), 8, 0, 0);
    d.writeDesc(0, g.indirectGpa, 16, IND, 0); return 0;
  }, { indirect: false }],
  ['indirect table in unmapped memory', FAULT_UNMAPPED, (d, g) => { d.writeDesc(0, g.unmappedGpa, 32, IND, 0); return 0; }],
  ['indirect table address ≥ 2^53', FAULT_ADDR_RANGE, (d) => { d.writeDesc(0, 2 ** 53, 32, IND, 0); return 0; }],
  ['next out of range inside an indirect table', FAULT_NEXT_OUT_OF_RANGE, (d, g) => {
    indDesc(g, g.indirectGpa, 0, g.alloc(8), 8, NEXT, 2);
    indDesc(g, g.indirectGpa, 1, g.alloc(8), 8, 0, 0);
    d.writeDesc(0, g.indirectGpa, 32, IND, 0); return 0;
  }],
  ['loop inside an indirect table', FAULT_CHAIN_TOO_LONG, (d, g) => {
    const b = g.alloc(8);
    indDesc(g, g.indirectGpa, 0, b, 8, NEXT, 1);
    indDesc(g, g.indirectGpa, 1, b, 8, NEXT, 0);
    d.writeDesc(0, g.indirectGpa, 32, IND, 0); return 0;
  }],
  ['readable after writable (virtio 1.2 §2.7.5.2)', FAULT_READABLE_AFTER_WRITABLE, (d, g) => {
    d.writeDesc(0, g.alloc(8), 8, WR | NEXT, 1); d.writeDesc(1, g.alloc(8), 8, 0, 0); return 0;
  }],
  ['readable after writable inside an indirect table', FAULT_READABLE_AFTER_WRITABLE, (d, g) => {
    indDesc(g, g.indirectGpa, 0, g.alloc(8), 8, WR | NEXT, 1);
    indDesc(g, g.indirectGpa, 1, g.alloc(8), 8, 0, 0);
    d.writeDesc(0, g.indirectGpa, 32, IND, 0); return 0;
  }],
  ['total length ≥ 2^32 (virtio 1.2 §2.7.5.2)', FAULT_LENGTH_OVERFLOW, (d, g) => {
    d.writeDesc(0, g.alloc(0x1000), 0x1000, NEXT, 1); d.writeDesc(1, g.alloc(16), 0xffffffff, WR, 0); return 0;
  }],
  ['buffer address ≥ 2^53', FAULT_ADDR_RANGE, (d) => { d.writeDesc(0, 2 ** 53, 1, 0, 0); return 0; }],
  ['buffer at 2^64 - 4096', FAULT_ADDR_RANGE, (d) => { d.writeDesc(0, 2 ** 64 - 4096, 1, 0, 0); return 0; }],
  ['buffer in unmapped memory', FAULT_UNMAPPED, (d, g) => { d.writeDesc(0, g.unmappedGpa, 8, WR, 0); return 0; }],
  ['buffer running into a gap', FAULT_GAP, (d, g) => {
    const r = g.regions[2]; d.writeDesc(0, r.guestPhysAddr + r.size - 4, 8, 0, 0); return 0;
  }],
  ['more segments than the chain holds', FAULT_TOO_MANY_SEGMENTS, (d, g) => {
    const b = g.alloc(8);
    d.writeDesc(0, b, 8, NEXT, 1); d.writeDesc(1, b, 8, NEXT, 2); d.writeDesc(2, b, 8, 0, 0); return 0;
  }, {}, 2],
];

for (const [name, fault, setup, opts, cap] of faults) {
  t.test(`fault ${faultName(fault)}: ${name}`, async (t) => {
    const { g, r } = popRaw(setup, opts, cap);
    t.equal(r, fault, faultName(r));
    t.ok(g.device.isBroken, 'the queue is broken');
    t.equal(g.device.pop(new DescriptorChain()), fault, 'and stays broken');
    const e = g.device.error;
    t.ok(e, 'a typed error exists');
    t.equal(e?.code, faultName(fault));
    if (fault !== FAULT_HEAD_OUT_OF_RANGE) t.ok(e instanceof ChainError);
    t.same(g.checkCanaries(), []);
  });
}

t.test('readable then writable segments, in order (virtio 1.2 §2.7.5.2)', async (t) => {
  const g = new MockGuest({ queueSize: 8 });
  const a = g.alloc(16), b = g.alloc(4096), c = g.alloc(1, { region: 2 });
  const head = g.driver.add([{ gpa: a, len: 16 }], [{ gpa: b, len: 4096 }, { gpa: c, len: 1 }]);
  g.driver.publish();
  const ch = new DescriptorChain(8);
  t.equal(g.device.pop(ch), 1);
  t.equal(ch.head, head);
  t.equal(ch.descCount, 3);
  t.equal(ch.readableSegs, 1);
  t.equal(ch.writableSegs, 2);
  t.equal(ch.readableBytes, 16);
  t.equal(ch.writableBytes, 4097);
  t.same([...ch.segGpa.subarray(0, 3)], [a, b, c]);
  t.same([...ch.segLen.subarray(0, 3)], [16, 4096, 1]);
  t.equal(ch.segSlab[2], 2, 'c is in region 2');
  t.equal(ch.segOffset[2], c - g.regions[2].guestPhysAddr);
  t.notOk(ch.indirect);
});

t.test('a buffer spanning two adjacent regions becomes two segments', async (t) => {
  const g = new MockGuest({ queueSize: 8 });
  const span = g.spanningBuffer(64);
  g.driver.add([], [{ gpa: span, len: 64 }]);
  g.driver.publish();
  const ch = new DescriptorChain(8);
  t.equal(g.device.pop(ch), 1);
  t.equal(ch.writableSegs, 2);
  t.equal(ch.descCount, 1);
  t.same([...ch.segLen.subarray(0, 2)], [32, 32]);
  t.same([ch.segSlab[0], ch.segSlab[1]], [0, 1]);
  t.equal(ch.segOffset[1], 0);
  t.equal(ch.copyToWritable(0, Uint8Array.from({ length: 64 }, (_, i) => i + 1)), 64);
  t.same([...g.read(span, 64)], Array.from({ length: 64 }, (_, i) => i + 1));
  t.same(g.checkCanaries(), []);
});

t.test('zero-length descriptors produce no segment', async (t) => {
  const { r, chain } = popRaw((d, g) => {
    d.writeDesc(0, g.alloc(8), 8, NEXT, 1); d.writeDesc(1, 0, 0, NEXT, 2); d.writeDesc(2, g.alloc(4), 4, WR, 0); return 0;
  });
  t.equal(r, 1);
  t.equal(chain.descCount, 3);
  t.equal(chain.segCount, 2);
});

t.test('indirect chains (virtio 1.2 §2.7.5.3)', async (t) => {
  const g = new MockGuest({ queueSize: 8 });
  const hdr = g.alloc(16), data = g.alloc(512), st = g.alloc(1);
  g.driver.add([{ gpa: hdr, len: 16 }], [{ gpa: data, len: 512 }, { gpa: st, len: 1 }], { indirect: true });
  g.driver.publish();
  const ch = new DescriptorChain(8);
  t.equal(g.device.pop(ch), 1);
  t.ok(ch.indirect);
  t.equal(ch.descCount, 4, 'the pointer plus three table entries');
  t.same([...ch.segGpa.subarray(0, 3)], [hdr, data, st]);
  t.equal(ch.readableSegs, 1);
  t.equal(ch.writableBytes, 513);
});

t.test('direct descriptors followed by one indirect one (virtio 1.2 §2.7.5.3.2); its WRITE flag is ignored', async (t) => {
  const { r, chain, g } = popRaw((d, g) => {
    const h = g.alloc(16);
    indDesc(g, g.indirectGpa, 0, g.alloc(32), 32, WR, 0);
    d.writeDesc(5, h, 16, NEXT, 6);
    d.writeDesc(6, g.indirectGpa, 16, IND | WR, 0);
    return 5;
  });
  t.equal(r, 1, faultName(r));
  t.equal(chain.readableSegs, 1);
  t.equal(chain.writableSegs, 1);
  t.equal(chain.descCount, 3);
  t.notOk(g.device.isBroken);
});

t.test('an unaligned indirect table and one spanning two regions are read correctly', async (t) => {
  for (const where of ['unaligned', 'spanning'] as const) {
    const { r, chain } = popRaw((d, g) => {
      const table = where === 'unaligned' ? g.alloc(64) + 2 : g.spanningBuffer(48);
      const b0 = g.alloc(8), b1 = g.alloc(8), b2 = g.alloc(8);
      indDesc(g, table, 0, b0, 8, NEXT, 1);
      indDesc(g, table, 1, b1, 8, NEXT, 2);
      indDesc(g, table, 2, b2, 8, WR, 0);
      d.writeDesc(0, table, 48, IND, 0);
      return 0;
    });
    t.equal(r, 1, `${where}: ${faultName(r)}`);
    t.equal(chain.segCount, 3, where);
    t.equal(chain.writableSegs, 1, where);
  }
});

t.test('a chain as long as the queue is accepted, one longer is not', async (t) => {
  const ok = popRaw((d, g) => {
    const b = g.alloc(8);
    for (let i = 0; i < 8; i++) d.writeDesc(i, b, 8, i < 7 ? NEXT : 0, i + 1);
    return 0;
  });
  t.equal(ok.r, 1);
  t.equal(ok.chain.descCount, 8);
});

t.test('copyFromReadable / copyToWritable with skip across segments', async (t) => {
  const g = new MockGuest({ queueSize: 8 });
  const a = g.alloc(4), b = g.alloc(4), w1 = g.alloc(3), w2 = g.alloc(5);
  g.write(a, Uint8Array.of(1, 2, 3, 4));
  g.write(b, Uint8Array.of(5, 6, 7, 8));
  g.driver.add([{ gpa: a, len: 4 }, { gpa: b, len: 4 }], [{ gpa: w1, len: 3 }, { gpa: w2, len: 5 }]);
  g.driver.publish();
  const ch = new DescriptorChain(8);
  t.equal(g.device.pop(ch), 1);
  const dst = new Uint8Array(5);
  t.equal(ch.copyFromReadable(2, dst), 5);
  t.same([...dst], [3, 4, 5, 6, 7]);
  t.equal(ch.copyFromReadable(6, dst), 2, 'short at the end');
  t.equal(ch.copyToWritable(1, Uint8Array.of(9, 9, 9, 9, 9, 9, 9, 9)), 7, 'only 7 writable bytes after skip 1');
  t.same([...g.read(w1, 3)], [0, 9, 9]);
  t.same([...g.read(w2, 5)], [9, 9, 9, 9, 9]);
  t.same(g.checkCanaries(), []);
});
