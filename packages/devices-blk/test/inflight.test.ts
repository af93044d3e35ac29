import { mkdtempSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { InflightTracker, QueueContext } from '@vhost-ts/vhost-user';
import { SplitQueueDevice } from '@vhost-ts/virtqueue';
import { MockGuest } from '@vhost-ts/virtqueue/testing';
import t from 'tap';
import { BlkDevice, FileImage, MemoryImage, VIRTIO_BLK_S_OK } from '../src/index.js';
import { MmapGuest, pattern, sameBytes } from './helpers.js';

/** statfs f_type of tmpfs. */
const TMPFS_MAGIC = 0x01021994;

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

t.test('INFLIGHT_SHMFD: completions inside the resubmit batch do not start the queue under it', async (t) => {
  // Page-cache reads complete inside io_uring_enter and the file engine reaps them between its
  // calls (every 64 KiB): the queue must not pop and submit new requests from inside that
  // batch — its batch array is the one being submitted. That needs reads served inside the
  // call: a disk file system's page cache (tmpfs reads go to kernel workers).
  const base = [tmpdir(), '/var/tmp'].find((d) => { try { return statfsSync(d).type !== TMPFS_MAGIC; } catch { return false; } });
  if (base === undefined) {
    t.comment('no disk-backed temporary directory: the reads would not complete inside the call');
    t.pass('skipped');
    return;
  }
  const dir = mkdtempSync(join(base, 'blk-inflight-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const size = 2 << 20;
  const path = join(dir, 'disk.img');
  writeFileSync(path, pattern(size, 5));
  const image = FileImage.open(path);
  t.teardown(() => image.close());
  const g = new MmapGuest(8 << 20, 64);
  const reqs: { head: number; buf: number; st: number; sector: number }[] = [];
  for (let i = 0; i < 9; i++) {
    const hdr = g.alloc(16);
    const sector = i * 128;
    g.write(hdr, header(0, sector)); // IN, 64 KiB
    const buf = g.alloc(65536, { align: 4096 });
    const st = g.alloc(1);
    g.write(st, new Uint8Array([0xff]));
    const head = g.driver.add([{ gpa: hdr, len: 16 }], [{ gpa: buf, len: 65536 }, { gpa: st, len: 1 }]);
    reqs.push({ head, buf, st, sector });
  }
  g.driver.publish();
  // The old back-end popped the first six and died; the last three are new.
  const queue = new SplitQueueDevice(g.memory, g.layout, { eventIdx: false, indirect: true, nextAvail: 6 });
  const tracker = new RecordingTracker(reqs.slice(0, 6).map((r) => r.head));
  // A polling queue starts a pass from its engine's completions (the path that re-entered).
  const dev = new BlkDevice({ image, pollUs: 100 });
  dev.setFeatures(dev.features);
  const ctx: QueueContext = {
    index: 0, queue, memory: g.memory, inflight: tracker,
    notify: () => {}, broken: (r) => { t.fail(r); },
  };
  const h = dev.startQueue(0, ctx);
  h.onKick();
  const seen = new Map<number, number>();
  const deadline = Date.now() + 5000;
  while (seen.size < 9 && Date.now() < deadline) {
    const head = g.driver.popUsed();
    if (head < 0) { await new Promise((r) => setTimeout(r, 1)); continue; }
    seen.set(head, (seen.get(head) ?? 0) + 1);
  }
  t.equal(seen.size, 9, 'every request completed');
  t.ok([...seen.values()].every((n) => n === 1), 'each once');
  const want = pattern(size, 5);
  let bad = 0;
  for (const r of reqs) {
    if (g.read(r.st, 1)[0] !== VIRTIO_BLK_S_OK) bad++;
    else if (!sameBytes(g.read(r.buf, 65536), want.subarray(r.sector * 512, r.sector * 512 + 65536))) bad++;
  }
  t.equal(bad, 0, 'every read has its status and its own bytes');
  const begins = tracker.calls.filter((c) => c.startsWith('begin'));
  t.same(begins.slice(0, 6), reqs.slice(0, 6).map((r) => `begin ${r.head}`), 'the resubmitted heads first, in order');
  await h.stop();
});
