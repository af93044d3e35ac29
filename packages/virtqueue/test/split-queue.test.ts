import t from 'tap';
import {
  DescriptorChain, GuestMemory, FAULT_AVAIL_IDX_JUMP, FAULT_BAD_QUEUE_SIZE, FAULT_RING_MISALIGNED, FAULT_RING_NOT_CONTIGUOUS,
  FAULT_UNMAPPED, QueueError, SplitQueueDevice, VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_USED_F_NO_NOTIFY,
  USED_FLAGS, vringNeedEvent,
} from '@vhost-ts/virtqueue';
import { MockGuest } from '@vhost-ts/virtqueue/testing';

/** Device loop: pop everything, report `len` = writable bytes, publish. Returns heads popped. */
function serve(g: MockGuest, chain = new DescriptorChain(16)): number[] {
  const heads: number[] = [];
  let r;
  while ((r = g.device.pop(chain)) === 1) {
    heads.push(chain.head);
    g.device.pushUsed(chain.head, chain.writableBytes);
  }
  if (r < 0) throw new Error(`fault ${r}`);
  g.device.publishUsed();
  return heads;
}

t.test('round trip: every chain popped once, used returned in order with lengths', async (t) => {
  const g = new MockGuest({ queueSize: 16 });
  const bufs = [10, 20, 30].map((n) => ({ gpa: g.alloc(n), len: n }));
  const heads = bufs.map((b) => g.driver.add([], [b]));
  t.equal(g.device.availableCount(), 0, 'nothing before publish');
  t.same(serve(g), [], 'nothing popped before publish');
  g.driver.publish();
  t.equal(g.device.availableCount(), 3);
  t.same(serve(g), heads);
  for (let i = 0; i < 3; i++) {
    t.equal(g.driver.popUsed(), heads[i]);
    t.equal(g.driver.lastLen, bufs[i].len);
  }
  t.equal(g.driver.popUsed(), -1);
  t.equal(g.driver.numFree, 16, 'all descriptors freed');
  t.equal(g.device.popped, 3);
});

t.test('16-bit index wrap-around', async (t) => {
  for (const start of [65530, 65535, 0xfff0]) {
    const g = new MockGuest({ queueSize: 8, startIndex: start });
    const b = g.alloc(64);
    let seen = 0;
    for (let round = 0; round < 10; round++) {
      for (let i = 0; i < 5; i++) g.driver.addOne(b, 64, i % 2 === 0);
      g.driver.publish();
      t.equal(serve(g).length, 5);
      for (let i = 0; i < 5; i++) { t.not(g.driver.popUsed(), -1); seen++; }
    }
    t.equal(seen, 50);
    t.equal(g.device.nextAvail, (start + 50) & 0xffff, `start ${start}: nextAvail wrapped`);
    t.equal(g.device.usedIdx, (start + 50) & 0xffff);
  }
});

t.test('avail.idx may not run ahead by more than the queue size', async (t) => {
  const g = new MockGuest({ queueSize: 8 });
  const mem = g.memory;
  mem.setU16(g.layout.availGpa + 2, 9);
  t.equal(g.device.pop(new DescriptorChain()), FAULT_AVAIL_IDX_JUMP);
  t.ok(g.device.error instanceof QueueError);
  t.equal(g.device.error?.code, 'avail-index-jump');

  const h = new MockGuest({ queueSize: 8, startIndex: 100 });
  h.memory.setU16(h.layout.availGpa + 2, 99);
  t.equal(h.device.pop(new DescriptorChain()), FAULT_AVAIL_IDX_JUMP, 'a backwards move is a jump of 65535');

  const k = new MockGuest({ queueSize: 8 });
  const b = k.alloc(8);
  for (let i = 0; i < 8; i++) k.driver.addOne(b, 8, false);
  k.driver.publish();
  t.equal(serve(k).length, 8, 'exactly queue-size entries is fine');
});

t.test('save/restore nextAvail (GET/SET_VRING_BASE) and the used index', async (t) => {
  const g = new MockGuest({ queueSize: 8 });
  const b = g.alloc(8);
  const heads = [0, 1, 2, 3, 4].map(() => g.driver.addOne(b, 8, true));
  g.driver.publish();
  const ch = new DescriptorChain();
  for (let i = 0; i < 2; i++) { t.equal(g.device.pop(ch), 1); g.device.pushUsed(ch.head, 8); }
  g.device.publishUsed();
  const base = g.device.nextAvail;
  t.equal(base, 2);
  const d2 = g.newDevice({ nextAvail: base });
  t.equal(d2.usedIdx, 2, 'used index taken from the ring');
  t.equal(d2.pop(ch), 1);
  t.equal(ch.head, heads[2], 'resumes with the third chain');
  d2.nextAvail = 4;
  t.equal(d2.pop(ch), 1);
  t.equal(ch.head, heads[4]);
  t.equal(d2.pop(ch), 0);
  d2.setUsedIdx(7);
  t.equal(d2.usedIdx, 7);
  t.equal(d2.syncUsedIdxFromRing(), 2);
});

t.test('disableNotify stores the flag only when it changes (no write per batch into the driver\'s line)', async (t) => {
  const g = new MockGuest({ queueSize: 8 });
  const used16 = g.device.ringViews.used16;
  g.device.disableNotify();
  t.equal(used16[USED_FLAGS] & VIRTQ_USED_F_NO_NOTIFY, VIRTQ_USED_F_NO_NOTIFY, 'first call sets NO_NOTIFY');
  used16[USED_FLAGS] = 0x8000; // a marker: any store by the device would overwrite it
  g.device.disableNotify();
  t.equal(used16[USED_FLAGS], 0x8000, 'second call stores nothing');
  g.device.enableNotify();
  t.equal(used16[USED_FLAGS], 0, 'enableNotify clears the flag');
  g.device.disableNotify();
  t.equal(used16[USED_FLAGS], VIRTQ_USED_F_NO_NOTIFY, 'and the next disable sets it again');
});

t.test('flag-based notification suppression (virtio 1.2 §2.7.7, §2.7.10)', async (t) => {
  const g = new MockGuest({ queueSize: 8 });
  const b = g.alloc(8);
  g.driver.addOne(b, 8, true); g.driver.publish();
  t.ok(g.driver.kickNeeded(), 'kick while the device has not set NO_NOTIFY');
  t.notOk(g.driver.kickNeeded(), 'no kick when nothing new was published');
  g.device.disableNotify();
  t.equal(g.driver.usedFlags & VIRTQ_USED_F_NO_NOTIFY, VIRTQ_USED_F_NO_NOTIFY);
  g.driver.addOne(b, 8, true); g.driver.publish();
  t.notOk(g.driver.kickNeeded(), 'NO_NOTIFY suppresses the kick');
  t.ok(g.device.enableNotify(), 'enableNotify reports entries waiting');
  t.equal(g.driver.usedFlags, 0);
  serve(g);
  t.notOk(g.device.enableNotify(), 'nothing waiting');
  t.ok(g.device.shouldNotify(), 'interrupt: driver did not set NO_INTERRUPT');
  t.notOk(g.device.shouldNotify(), 'no interrupt when nothing new was published');
  g.driver.disableInterrupts();
  g.driver.addOne(b, 8, true); g.driver.publish();
  serve(g);
  t.notOk(g.device.shouldNotify(), 'VIRTQ_AVAIL_F_NO_INTERRUPT suppresses the interrupt');
  g.driver.setAvailFlags(0);
  g.driver.addOne(b, 8, true); g.driver.publish();
  serve(g);
  t.ok(g.device.shouldNotify());
  t.equal(VIRTQ_AVAIL_F_NO_INTERRUPT, 1);
});

t.test('EVENT_IDX: the device MUST ignore avail.flags and use used_event (virtio 1.2 §2.7.7.2)', async (t) => {
  const g = new MockGuest({ queueSize: 8, eventIdx: true });
  const b = g.alloc(8);
  const step = (n: number) => { for (let i = 0; i < n; i++) g.driver.addOne(b, 8, true); g.driver.publish(); serve(g); };
  step(1);
  t.ok(g.device.shouldNotify(), 'first decision after start is conservative');
  g.driver.setAvailFlags(VIRTQ_AVAIL_F_NO_INTERRUPT);
  g.driver.setUsedEvent(1);            // notify when used.idx passes 1 → 2
  step(1);                             // used 1 → 2
  t.ok(g.device.shouldNotify(), 'used_event crossed although NO_INTERRUPT is set');
  step(2);                             // used 2 → 4, used_event 1 is behind
  t.notOk(g.device.shouldNotify(), 'used_event not crossed');
  g.driver.setUsedEvent(6);
  step(2);                             // 4 → 6: event 6 not yet crossed (needs new > 6)
  t.notOk(g.device.shouldNotify());
  step(1);                             // 6 → 7
  t.ok(g.device.shouldNotify(), 'index reached used_event + 1');
  for (let i = 0; i < 7; i++) g.driver.popUsed();
});

t.test('EVENT_IDX: avail_event makes the driver kick exactly when needed (virtio 1.2 §2.7.10)', async (t) => {
  const g = new MockGuest({ queueSize: 8, eventIdx: true });
  const b = g.alloc(8);
  g.driver.addOne(b, 8, true); g.driver.publish();
  t.ok(g.driver.kickNeeded(), 'avail_event = 0 initially: the first entry kicks');
  g.driver.addOne(b, 8, true); g.driver.publish();
  t.notOk(g.driver.kickNeeded(), 'device has not consumed: avail_event still 0, no kick');
  serve(g);
  t.equal(g.driver.availEvent, 2, 'running dry sets avail_event to avail.idx');
  g.driver.addOne(b, 8, true); g.driver.publish();
  t.ok(g.driver.kickNeeded(), 'the next entry kicks');
  g.device.disableNotify();
  serve(g);
  t.equal(g.driver.availEvent, 2, 'notifications disabled: avail_event left behind');
  t.notOk(g.device.enableNotify(), 'nothing waiting');
  t.equal(g.driver.availEvent, 3);
});

t.test('vringNeedEvent matches the spec formula across wrap-around', async (t) => {
  t.ok(vringNeedEvent(0xffff, 0, 0xffff), 'crossing 65535 → 0');
  t.notOk(vringNeedEvent(0, 0, 0xffff), 'event 0 needs new > 0');
  t.ok(vringNeedEvent(0, 1, 0xfffe));
  t.notOk(vringNeedEvent(5, 5, 5), 'no movement, no event');
  t.ok(vringNeedEvent(5, 10, 0));
  t.notOk(vringNeedEvent(10, 10, 0));
});

t.test('dirty log marks used ring and written data (VHOST_F_LOG_ALL)', async (t) => {
  const g = new MockGuest({ queueSize: 8 });
  const log = g.enableDirtyLog();
  const isDirty = (gpa: number) => (log[Math.floor(gpa / 4096 / 8)] >> (Math.floor(gpa / 4096) % 8)) & 1;
  const data = g.alloc(0x3000, { align: 4096, region: 2 });
  g.driver.add([], [{ gpa: data, len: 0x3000 }]);
  g.driver.publish();
  log.fill(0);
  const ch = new DescriptorChain();
  t.equal(g.device.pop(ch), 1);
  t.equal(isDirty(g.layout.usedGpa), 0, 'popping alone writes nothing');
  ch.copyToWritable(0x1000, new Uint8Array(16));
  t.equal(isDirty(data), 0);
  t.equal(isDirty(data + 0x1000), 1, 'copyToWritable marks the page it wrote');
  ch.markWritableDirty(0x1ff0, 0x20);
  t.equal(isDirty(data + 0x2000), 1, 'markWritableDirty for direct (io_uring) writes');
  g.device.pushUsed(ch.head, 16);
  g.device.publishUsed();
  t.equal(isDirty(g.layout.usedGpa), 1, 'used ring marked');
  t.equal(g.memory.dirtyLogOverflow, 0);
});

t.test('ring layout validation', async (t) => {
  const g = new MockGuest({ queueSize: 8 });
  const L = g.layout;
  const mk = (over: object, eventIdx = false) => () => new SplitQueueDevice(g.memory, { ...L, ...over }, { eventIdx, indirect: true });
  for (const size of [0, 3, 65536, 32768 * 2, 1.5]) t.throws(mk({ size }), { code: 'bad-queue-size', fault: FAULT_BAD_QUEUE_SIZE }, `size ${size}`);
  t.throws(mk({ descGpa: L.descGpa + 8 }), { code: 'ring-misaligned', fault: FAULT_RING_MISALIGNED }, 'desc 16-byte alignment (virtio 1.2 §2.7)');
  t.throws(mk({ availGpa: L.availGpa + 1 }), { code: 'ring-misaligned' }, 'avail 2-byte alignment');
  t.throws(mk({ usedGpa: L.usedGpa + 2 }), { code: 'ring-misaligned' }, 'used 4-byte alignment');
  t.throws(mk({ usedGpa: g.unmappedGpa }), { code: 'unmapped', fault: FAULT_UNMAPPED });
  const span = g.regions[1].guestPhysAddr - 64;
  t.throws(mk({ descGpa: span }), { code: 'ring-not-contiguous', fault: FAULT_RING_NOT_CONTIGUOUS }, 'a ring part spanning two regions');
  // A region mapped at an odd offset in its buffer: GPA-aligned rings are misaligned in memory.
  const odd = new GuestMemory([{ guestPhysAddr: 0x100000, size: 0x20000, userAddr: 0, mmapOffset: 0, buffer: new ArrayBuffer(0x20001), bufferOffset: 1 }]);
  t.throws(() => new SplitQueueDevice(odd, { size: 8, descGpa: 0x100000, availGpa: 0x100080, usedGpa: 0x100100 }, { eventIdx: false, indirect: false }),
    { code: 'ring-misaligned' }, 'frontend-chosen mmap offset breaks alignment');
  t.doesNotThrow(mk({}, true), 'the mock layout is valid with EVENT_IDX');
});
