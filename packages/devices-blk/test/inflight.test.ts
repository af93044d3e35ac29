import type { InflightTracker, QueueContext } from '@vhost-ts/vhost-user';
import { MockGuest } from '@vhost-ts/virtqueue/testing';
import t from 'tap';
import { BlkDevice, MemoryImage, VIRTIO_BLK_S_OK } from '../src/index.js';
import { pattern, sameBytes } from './helpers.js';

/** Records the tracker calls the device makes. */
class RecordingTracker implements InflightTracker {
  readonly calls: string[] = [];
  constructor(readonly resubmit: readonly number[]) {}
  begin(head: number): void { this.calls.push(`begin ${head}`); }
  end(head: number): void { this.calls.push(`end ${head}`); }
  commit(): void { this.calls.push('commit'); }
}

function header(type: number, sector: number): Uint8Array {
  const h = new Uint8Array(16);
  const v = new DataView(h.buffer);
  v.setUint32(0, type, true);
  v.setUint32(8, sector, true);
  return h;
}

t.test('INFLIGHT_SHMFD: heads left in flight are executed on start, before new ones', async (t) => {
  const image = new MemoryImage(pattern(1 << 16, 1));
  const g = new MockGuest({ queueSize: 16 });
  const hdr = g.alloc(16);
  g.write(hdr, header(0, 4)); // IN, sector 4
  const buf = g.alloc(512);
  const st = g.alloc(1);
  // The old back-end popped this request (nextAvail moved past it) and died before completing.
  const head = g.driver.add([{ gpa: hdr, len: 16 }], [{ gpa: buf, len: 512 }, { gpa: st, len: 1 }]);
  g.driver.publish();
  const queue = g.newDevice({ nextAvail: 1 });
  const tracker = new RecordingTracker([head]);
  const dev = new BlkDevice({ image });
  dev.setFeatures(dev.features);
  let notifies = 0;
  const ctx: QueueContext = {
    index: 0, queue, memory: g.memory, inflight: tracker,
    notify: () => { notifies++; }, broken: (r) => { t.fail(r); },
  };
  const h = dev.startQueue(0, ctx);
  t.equal(g.driver.popUsed(), head, 'resubmitted request completed');
  t.equal(g.driver.lastLen, 513);
  t.equal(g.read(st, 1)[0], VIRTIO_BLK_S_OK);
  t.ok(sameBytes(g.read(buf, 512), image.bytes.subarray(2048, 2560)));
  t.same(tracker.calls, [`begin ${head}`, `end ${head}`, 'commit']);
  t.equal(notifies, 1);
  // New requests go through the tracker too: begin on pop, end on push, commit after publish.
  const hdr2 = g.alloc(16);
  g.write(hdr2, header(4, 0)); // FLUSH
  const st2 = g.alloc(1);
  const head2 = g.driver.add([{ gpa: hdr2, len: 16 }], [{ gpa: st2, len: 1 }]);
  g.driver.publish();
  h.onKick();
  t.equal(g.driver.popUsed(), head2);
  t.same(tracker.calls.slice(3), [`begin ${head2}`, `end ${head2}`, 'commit']);
  await h.stop();
});

t.test('INFLIGHT_SHMFD: a hostile resubmit list (head out of range) breaks the device, no throw', async (t) => {
  const g = new MockGuest({ queueSize: 16 });
  const dev = new BlkDevice({ image: new MemoryImage(1 << 16) });
  dev.setFeatures(dev.features);
  const reasons: string[] = [];
  const ctx: QueueContext = {
    index: 0, queue: g.device, memory: g.memory, inflight: new RecordingTracker([999]),
    notify: () => {}, broken: (r) => { reasons.push(r); },
  };
  const h = dev.startQueue(0, ctx);
  t.equal(reasons.length, 1);
  t.match(reasons[0], /inflight head 999/);
  await h.stop();
});
