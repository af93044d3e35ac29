/**
 * Packed-ring inflight tracking (vhost-user.rst "Inflight I/O tracking", packed format): a
 * back-end killed at any step between popping a chain and committing its completion is
 * replaced by one that resubmits exactly the chains the guest has not seen answered, in pop
 * order, and resumes the ring where the guest expects it — even though the front-end's
 * SET_VRING_BASE is stale (QEMU keeps a packed ring's position from the previous start).
 *
 * The rig is a MockPackedGuest (driver + device over one packed ring) and an inflight region
 * that survives "crashes": a crash is simply dropping the device and tracker objects at some
 * point and building new ones over the same guest memory and region.
 */
import t from 'tap';
import { close, fstatSize } from '@vhost-ts/sys';
import {
  DescriptorChain, PackedQueueDriver, VIRTIO_F_RING_PACKED, type PackedQueueDevice, decodePackedVringBase, encodePackedIndex,
} from '@vhost-ts/virtqueue';
import { MockPackedGuest } from '@vhost-ts/virtqueue/testing';
import {
  PACKED_INFLIGHT_DESC_SIZE, PACKED_INFLIGHT_HEADER_SIZE, PackedInflightTracker, packedInflightQueueRegionSize,
  VhostUserFrontend, bit, inflightQueueRegionSize,
} from '../src/index.js';
import { connectAndNegotiate, pattern, reattachRing, startBackend, until } from './helpers.js';

interface Outstanding { tag: number; slots: number }

class Rig {
  readonly g: MockPackedGuest;
  readonly region: Uint8Array;
  tracker: PackedInflightTracker;
  device: PackedQueueDevice;
  readonly chain = new DescriptorChain();
  /** Ids the driver added and has not yet seen answered. */
  readonly outstanding = new Map<number, Outstanding>();
  /** Ids the driver saw answered, in order. */
  readonly answered: number[] = [];
  /** Per popped id: the used length the device will report. */
  private readonly lens = new Map<number, number>();
  private nextTag = 0x1000;

  constructor(readonly size: number, opts: { startSlot?: number; startWrap?: 0 | 1 } = {}) {
    this.g = new MockPackedGuest({ queueSize: size, indirect: true, eventIdx: false, ...opts });
    this.region = new Uint8Array(packedInflightQueueRegionSize(size));
    this.device = this.g.device;
    this.tracker = new PackedInflightTracker(this.region, this.device);
  }

  /** The driver adds a chain of `n` descriptors: one readable (a tag), n - 1 writable. */
  submit(n: number, indirect = false): number {
    const tag = this.nextTag++;
    const rd = this.g.alloc(8);
    const b = new Uint8Array(8);
    new DataView(b.buffer).setUint32(0, tag, true);
    this.g.write(rd, b);
    const wr = [];
    for (let i = 1; i < n; i++) wr.push({ gpa: this.g.alloc(8), len: 8 });
    const id = this.g.driver.add([{ gpa: rd, len: 8 }], wr, { indirect });
    if (id < 0) throw new Error('ring full');
    this.g.driver.publish();
    this.outstanding.set(id, { tag, slots: indirect ? 1 : n });
    return id;
  }

  /** The device pops one chain (and records it unless `track` is false); echoes the tag. */
  pop(track = true): number {
    const r = this.device.pop(this.chain);
    if (r !== 1) throw new Error(`pop returned ${r}`);
    const id = this.chain.head;
    if (track) this.tracker.begin(id);
    this.lens.set(id, this.echo());
    return id;
  }

  private echo(): number {
    const c = this.chain;
    const buf = new Uint8Array(8);
    c.copyFromReadable(0, buf);
    return c.writableBytes > 0 ? c.copyToWritable(0, buf) : 0;
  }

  /** pushUsed + end (the used descriptor is written, not yet visible). */
  complete(id: number): void {
    this.device.pushUsed(id, this.lens.get(id)!);
    this.tracker.end(id);
  }

  publish(): void { this.device.publishUsed(); }
  commit(): void { this.tracker.commit(); }
  flush(): void { this.publish(); this.commit(); }

  /**
   * The back-end dies here; a new one starts over the same region with `staleBase` as
   * SET_VRING_BASE (default: the ring's very first position, as QEMU sends after a crash when
   * the previous start was the first). Resubmitted chains are re-walked from the area and
   * recorded again; returns the resubmitted ids.
   */
  restart(staleBase = this.g.start): number[] {
    this.device = this.g.newDevice({ nextAvail: staleBase, nextUsed: staleBase });
    this.tracker = new PackedInflightTracker(this.region, this.device);
    if (!this.tracker.fresh) {
      this.device.nextAvail = this.tracker.resumeAvail;
      this.device.setUsedIdx(this.tracker.resumeUsed);
    }
    for (const id of this.tracker.resubmit) {
      const r = this.tracker.chainAt(id, this.chain);
      if (r !== 0) throw new Error(`chainAt(${id}) = ${r}`);
      const buf = new Uint8Array(4);
      this.chain.copyFromReadable(0, buf);
      const tag = new DataView(buf.buffer).getUint32(0, true);
      if (tag !== this.outstanding.get(id)?.tag) throw new Error(`resubmitted id ${id} carries tag ${tag}`);
      this.tracker.begin(id);
      this.lens.set(id, this.echo());
    }
    return [...this.tracker.resubmit];
  }

  /** The driver reaps every visible used descriptor (it throws on an id not in flight). */
  reap(): number[] {
    const got: number[] = [];
    for (let id; (id = this.g.driver.popUsed()) >= 0;) {
      const o = this.outstanding.get(id);
      if (o === undefined) throw new Error(`answered twice: ${id}`);
      this.outstanding.delete(id);
      got.push(id);
      this.answered.push(id);
    }
    return got;
  }

  /** Pops everything available, answers everything popped (in reverse), publishes. */
  runAll(inflight: number[]): void {
    while (this.device.availableCount() > 0) inflight.push(this.pop());
    for (const id of [...inflight].reverse()) this.complete(id);
    inflight.length = 0;
    this.flush();
  }
}

const slotsOf = (pos: number) => (pos & 0x7fff) + ((pos >>> 15) & 1) * 0x10000;

t.test('region size and layout: 32-byte header and entries, 64-byte regions', async (t) => {
  t.equal(PACKED_INFLIGHT_HEADER_SIZE, 32, 'QueueRegionPacked: 29 bytes of fields, desc[] 8-byte aligned');
  t.equal(PACKED_INFLIGHT_DESC_SIZE, 32, 'DescStatePacked: 32 bytes');
  // QEMU asks GET_INFLIGHT_FD with its queue-size (128 by default, 256 for vhost-user-blk in
  // newer machine types) and maps whatever mmap_size the back-end answers.
  t.equal(packedInflightQueueRegionSize(128), 4160);
  t.equal(packedInflightQueueRegionSize(256), 8256);
  t.equal(packedInflightQueueRegionSize(2), 128);
  for (const n of [1, 2, 3, 128, 256, 1024, 32768]) t.equal(packedInflightQueueRegionSize(n) % 64, 0, `${n}: multiple of 64`);
});

t.test('a blank region is initialised at the ring position: version, desc_num, free list', async (t) => {
  const rig = new Rig(8, { startSlot: 5, startWrap: 0 });
  const tr = rig.tracker;
  t.ok(tr.fresh);
  t.equal(tr.problem, null);
  t.same(tr.resubmit, []);
  const v = new DataView(rig.region.buffer);
  t.equal(v.getUint16(8, true), 1, 'version');
  t.equal(v.getUint16(10, true), 8, 'desc_num');
  t.equal(v.getUint16(12, true), 0, 'free_head');
  t.equal(v.getUint16(14, true), 0, 'old_free_head');
  t.equal(v.getUint16(16, true), 5, 'used_idx');
  t.equal(v.getUint16(18, true), 5, 'old_used_idx');
  t.equal(v.getUint8(20), 0, 'used_wrap_counter');
  t.equal(v.getUint8(21), 0, 'old_used_wrap_counter');
  for (let e = 0; e < 8; e++) t.equal(v.getUint16(32 + 32 * e + 2, true), e + 1, `entry ${e} links to ${e + 1}`);
});

t.test('begin records every descriptor of the chain; commit moves the old_* fields', async (t) => {
  const rig = new Rig(8);
  const id = rig.submit(3);
  rig.pop();
  const v = new DataView(rig.region.buffer);
  const h = 0;
  t.equal(v.getUint8(32 + 32 * h), 1, 'head inflight');
  t.equal(v.getUint16(32 + 32 * h + 6, true), 3, 'num');
  t.equal(v.getUint16(32 + 32 * h + 4, true), 2, 'last = the third entry');
  t.equal(v.getUint16(32 + 32 * 2 + 16, true), id, 'buffer id in the last entry');
  t.equal(v.getUint16(12, true), 3, 'free_head past the chain');
  t.equal(v.getUint16(14, true), 3, 'old_free_head: the pop is committed');
  for (let e = 0; e < 3; e++) {
    const w = rig.device.ringViews.desc;
    t.equal(v.getUint32(32 + 32 * e + 20, true), w[e * 4 + 2], `entry ${e} len copied`);
    t.equal(v.getUint32(32 + 32 * e + 24, true), w[e * 4], `entry ${e} addr copied`);
  }
  rig.complete(id);
  t.equal(v.getUint16(12, true), 0, 'free_head: the chain is back (batch open)');
  t.equal(v.getUint16(14, true), 3, 'old_free_head unchanged until commit');
  t.equal(v.getUint16(16, true), 3, 'used_idx advanced by the chain');
  t.equal(v.getUint16(18, true), 0, 'old_used_idx not yet');
  rig.flush();
  t.equal(v.getUint8(32), 0, 'inflight cleared');
  t.equal(v.getUint16(14, true), 0, 'old_free_head = free_head');
  t.equal(v.getUint16(18, true), 3, 'old_used_idx = used_idx');
  t.same(rig.reap(), [id]);
});

t.test('crash after pop: every popped chain is resubmitted in pop order, the ring resumes past them', async (t) => {
  const rig = new Rig(16);
  const ids = [rig.submit(1), rig.submit(2), rig.submit(3), rig.submit(2, true)];
  const popped = ids.map(() => rig.pop());
  t.same(popped, ids);
  const again = rig.restart();
  t.same(again, ids, 'resubmitted in pop order');
  t.equal(rig.tracker.resumeUsed, encodePackedIndex(0, 1), 'used position unchanged');
  t.equal(rig.tracker.resumeAvail, encodePackedIndex(1 + 2 + 3 + 1, 1), 'avail past the 7 slots in flight');
  // Answered out of order: the used descriptors must skip each chain's own slot count.
  for (const id of [ids[2], ids[0], ids[3], ids[1]]) rig.complete(id);
  rig.flush();
  t.same(rig.reap(), [ids[2], ids[0], ids[3], ids[1]], 'each answered once, in the order the device answered');
  const more = [rig.submit(2), rig.submit(1)];
  rig.runAll([]);
  t.same(rig.reap().sort(), more.sort(), 'the ring keeps working after the restart');
  t.equal(rig.outstanding.size, 0);
});

t.test('crash between pop and begin: the unrecorded chain is popped again from the ring', async (t) => {
  const rig = new Rig(8);
  const a = rig.submit(2), b = rig.submit(1), c = rig.submit(2);
  rig.pop(); rig.pop();
  rig.complete(b); rig.flush();            // b answered (its used descriptor lands on a's slot)
  rig.pop(false);                          // c popped, crash before begin
  t.same(rig.restart(), [a], 'only the recorded, unanswered chain');
  t.equal(rig.tracker.resumeAvail, encodePackedIndex(3, 1), 'avail at c again (used 1 + a 2)');
  const inflight = [a];
  rig.runAll(inflight);
  t.same(rig.reap().sort(), [a, b, c].sort(), 'b before the crash, a and c after, once each');
});

t.test('crash after completion, before publish: the batch is rolled back and resubmitted', async (t) => {
  const rig = new Rig(8);
  const ids = [rig.submit(2), rig.submit(1), rig.submit(3)];
  ids.forEach(() => rig.pop());
  rig.complete(ids[1]);
  rig.complete(ids[2]);
  // used_idx moved, old_used_idx did not, and the slot at old_used_idx still shows the
  // driver's available flags: nothing was published.
  t.same(rig.restart(), ids, 'all three again, in pop order');
  t.equal(rig.tracker.resumeUsed, encodePackedIndex(0, 1));
  t.equal(rig.tracker.resumeAvail, encodePackedIndex(6, 1));
  t.same(rig.reap(), [], 'the guest saw nothing before the restart');
  for (const id of ids) rig.complete(id);
  rig.flush();
  t.same(rig.reap(), ids);
});

t.test('crash after publish, before commit: the published batch is committed, not resubmitted', async (t) => {
  const rig = new Rig(8);
  const ids = [rig.submit(2), rig.submit(1), rig.submit(3)];
  ids.forEach(() => rig.pop());
  rig.complete(ids[2]);
  rig.complete(ids[0]);
  rig.publish();                           // crash before commit
  t.same(rig.restart(), [ids[1]], 'only the unanswered chain');
  t.equal(rig.tracker.resumeUsed, encodePackedIndex(5, 1), 'used past the published batch');
  t.equal(rig.tracker.resumeAvail, encodePackedIndex(6, 1));
  rig.complete(ids[1]);
  rig.flush();
  t.same(rig.reap(), [ids[2], ids[0], ids[1]], 'each answered exactly once');
});

t.test('crash after publish: the guest already reused the published slot for a new request', async (t) => {
  // vhost-user.rst compares the slot with the *available* flags of old_used_wrap_counter: a
  // slot the driver refilled on its next lap (AVAIL = !w, USED = w) also means "published".
  const rig = new Rig(4);
  const ids = [rig.submit(1), rig.submit(1), rig.submit(1), rig.submit(1)];
  ids.forEach(() => rig.pop());
  rig.complete(ids[0]);
  rig.publish();                           // crash before commit
  t.same(rig.reap(), [ids[0]]);
  const fresh = rig.submit(1);             // lands on slot 0 of the next lap
  t.same(rig.restart(), ids.slice(1), 'the three still in flight');
  t.equal(rig.tracker.resumeUsed, encodePackedIndex(1, 1));
  t.equal(rig.tracker.resumeAvail, encodePackedIndex(0, 0), 'avail wraps onto the refilled slot');
  const inflight = ids.slice(1);
  rig.runAll(inflight);
  t.same(rig.reap().sort(), [...ids.slice(1), fresh].sort());
});

t.test('pops while a completion batch is open (answers given at once) survive a crash either side of publish', async (t) => {
  for (const published of [false, true]) {
    const rig = new Rig(8);
    const a = rig.submit(2), b = rig.submit(1);
    rig.pop(); rig.pop();
    rig.complete(a);                      // batch open: a's entries are on the free list
    const c = rig.submit(3);
    rig.pop();                            // c's entries come from behind the open batch
    rig.complete(c);                      // and c is answered in the same batch
    const d = rig.submit(1);
    rig.pop();
    if (published) rig.publish();
    const again = rig.restart();
    if (published) {
      t.same(again, [b, d], 'published: a and c answered; b and d resubmitted in pop order');
      t.same(rig.reap(), [a, c]);
    } else {
      t.same(again, [a, b, c, d], 'unpublished: everything resubmitted in pop order');
      t.same(rig.reap(), []);
    }
    for (const id of again) rig.complete(id);
    rig.flush();
    rig.reap();
    t.equal(rig.outstanding.size, 0, `published=${published}: every request answered once`);
  }
});

t.test('crash in the middle of begin (entries written, old_free_head not moved): the pop is undone', async (t) => {
  const rig = new Rig(8);
  const a = rig.submit(1);
  rig.pop();
  const before = rig.region.slice();
  const b = rig.submit(3);
  rig.pop();
  // The state just before begin's last store: old_free_head still at the pre-pop value.
  new DataView(rig.region.buffer).setUint16(14, new DataView(before.buffer).getUint16(14, true), true);
  t.same(rig.restart(), [a], 'b is not recorded in flight');
  t.equal(rig.tracker.resumeAvail, encodePackedIndex(1, 1), 'b will be popped again from the ring');
  t.equal(new DataView(rig.region.buffer).getUint8(32 + 32 * 1), 0, "b's half-written head lost its inflight flag");
  rig.runAll([a]);
  t.same(rig.reap().sort(), [a, b].sort());
});

t.test('resubmission order survives repeated crashes (counters keep growing)', async (t) => {
  const rig = new Rig(16);
  const x = rig.submit(1), y = rig.submit(2), z = rig.submit(1);
  rig.pop(); rig.pop(); rig.pop();
  rig.complete(y); rig.flush();
  t.same(rig.restart(), [x, z]);
  const w = rig.submit(2);
  rig.pop();                              // popped by the second back-end
  t.same(rig.restart(), [x, z, w], 'second crash: the first generation first, then w');
  rig.runAll([x, z, w]);
  t.same(rig.reap().sort(), [x, y, z, w].sort(), 'y (published before the first crash) and the three resubmitted');
  t.equal(rig.outstanding.size, 0);
});

t.test('a clean restart (nothing in flight) only corrects a stale SET_VRING_BASE', async (t) => {
  const rig = new Rig(8);
  for (let round = 0; round < 5; round++) { rig.submit(3); rig.submit(2); rig.runAll([]); rig.reap(); }
  // 25 slots consumed: slot 1 of the fourth lap (wrap 0).
  t.same(rig.restart(), []);
  t.notOk(rig.tracker.fresh);
  t.equal(rig.tracker.resumeUsed, encodePackedIndex(1, 0));
  t.equal(rig.tracker.resumeAvail, encodePackedIndex(1, 0));
  const b = decodePackedVringBase(rig.device.vringBase);
  t.same([b.availIndex, b.availWrap, b.usedIndex, b.usedWrap], [1, 0, 1, 0], 'queue resumed there');
  const id = rig.submit(2);
  rig.runAll([]);
  t.same(rig.reap(), [id]);
});

t.test('randomised: crash at any step, many generations — every request answered exactly once', async (t) => {
  let seed = 12345;
  const rnd = (n: number) => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
  for (let run = 0; run < 60; run++) {
    const size = [4, 8, 16][rnd(3)];
    const rig = new Rig(size, { startSlot: rnd(size), startWrap: rnd(2) as 0 | 1 });
    let inflight: number[] = [];
    let pending: number[] = []; // pushed, not published
    for (let step = 0; step < 200; step++) {
      const op = rnd(10);
      if (op < 3) {
        const n = 1 + rnd(3);
        if (rig.g.driver.numFree >= n) rig.submit(n, rnd(4) === 0);
      } else if (op < 5) {
        if (rig.device.availableCount() > 0) inflight.push(rig.pop());
      } else if (op < 7) {
        if (inflight.length > 0) {
          const id = inflight.splice(rnd(inflight.length), 1)[0];
          rig.complete(id);
          pending.push(id);
        }
      } else if (op < 8) {
        rig.publish();
        if (rnd(3) !== 0) { rig.commit(); }
        pending = [];
      } else if (op < 9) {
        rig.reap();
      } else {
        // Crash now (maybe between publish and commit, maybe with a batch open).
        const base = rnd(2) === 0 ? rig.g.start : rig.device.vringBase;
        inflight = rig.restart(base);
        pending = [];
      }
    }
    // Finish: answer everything left and check nothing is lost or doubled.
    rig.restart();
    inflight = [...rig.tracker.resubmit];
    for (let guard = 0; guard < 50 && rig.outstanding.size > 0; guard++) {
      rig.runAll(inflight);
      rig.reap();
    }
    if (rig.outstanding.size !== 0) {
      t.fail(`run ${run}: ${rig.outstanding.size} requests never answered`);
      return;
    }
  }
  t.pass('60 runs × 200 steps');
});

t.test('hostile region: garbage never throws, resubmits unique ids, never more slots than the ring', async (t) => {
  let seed = 99;
  const rnd = (n: number) => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
  for (let run = 0; run < 300; run++) {
    const rig = new Rig(8);
    const v = new DataView(rig.region.buffer);
    for (let i = 0; i < rig.region.length; i++) if (rnd(3) === 0) rig.region[i] = rnd(256);
    v.setUint16(8, 1, true);
    v.setUint16(10, 8, true);
    // Make some entries look like plausible heads.
    for (let e = 0; e < 8; e++) {
      if (rnd(2) === 0) {
        rig.region[32 + 32 * e] = 1;
        v.setUint16(32 + 32 * e + 2, rnd(10), true);
        v.setUint16(32 + 32 * e + 6, rnd(4), true);
        v.setUint16(32 + 32 * e + 4, rnd(9), true);
      }
    }
    if (rnd(2) === 0) { v.setUint16(12, rnd(9), true); v.setUint16(14, rnd(9), true); v.setUint16(16, rnd(8), true); v.setUint16(18, rnd(8), true); v.setUint8(20, rnd(2)); v.setUint8(21, rnd(2)); }
    const device = rig.g.newDevice();
    let tr: PackedInflightTracker;
    try {
      tr = new PackedInflightTracker(rig.region, device);
    } catch (e) {
      t.fail(`run ${run}: constructor threw ${(e as Error).message}`);
      return;
    }
    const ids = tr.resubmit;
    if (new Set(ids).size !== ids.length || ids.some((id) => id < 0 || id >= 8)) { t.fail(`run ${run}: bad ids ${ids}`); return; }
    if (((slotsOf(tr.resumeAvail) - slotsOf(tr.resumeUsed)) & 0x1ffff) > 0x10000 + 8) { t.fail(`run ${run}: positions`); return; }
    for (const id of ids) tr.chainAt(id, rig.chain); // 0 or a fault, never a throw
    // A second recovery over the repaired area agrees with the first (idempotent).
    const tr2 = new PackedInflightTracker(rig.region, rig.g.newDevice());
    if (JSON.stringify(tr2.resubmit) !== JSON.stringify(ids)) { t.fail(`run ${run}: recovery not idempotent`); return; }
  }
  t.pass('300 scribbled regions');
});

t.test('a region of the wrong size or version is initialised again and says why', async (t) => {
  const rig = new Rig(8);
  const v = new DataView(rig.region.buffer);
  v.setUint16(10, 16, true);
  const tr = new PackedInflightTracker(rig.region, rig.g.newDevice());
  t.ok(tr.fresh);
  t.match(tr.problem, /desc_num 16/);
  t.equal(v.getUint16(10, true), 8);
  v.setUint16(8, 7, true);
  t.match(new PackedInflightTracker(rig.region, rig.g.newDevice()).problem, /version 7/);
  t.throws(() => new PackedInflightTracker(rig.region.subarray(0, 100), rig.g.newDevice()), RangeError, 'too small');
});

// --- Through the session: GET/SET_INFLIGHT_FD sizes and a restart over a real socket --------

t.test('GET_INFLIGHT_FD sizes the area by the ring format acked at that moment (QEMU queue sizes)', async (t) => {
  const b = startBackend({ numQueues: 2, features: bit(VIRTIO_F_RING_PACKED) });
  const fe = await connectAndNegotiate(b.path);
  const split = await fe.getInflightFd(2, 128);
  t.equal(split.mmapSize, 2 * inflightQueueRegionSize(128), 'split: 2 × 2112');
  close(split.fd);
  // QEMU's vhost_dev_prepare_inflight sends SET_FEATURES (with RING_PACKED) right before.
  await fe.setFeatures(fe.features | bit(VIRTIO_F_RING_PACKED));
  for (const qs of [128, 256]) {
    const packed = await fe.getInflightFd(2, qs);
    t.equal(packed.mmapSize, 2 * packedInflightQueueRegionSize(qs), `packed, queue-size ${qs}: 2 × ${packedInflightQueueRegionSize(qs)}`);
    t.equal(fstatSize(packed.fd), packed.mmapSize, 'the memfd has that size');
    close(packed.fd);
  }
  fe.close();
  await b.backend.close();
});

t.test('SET_INFLIGHT_FD: a split-sized area is refused once RING_PACKED is acked', async (t) => {
  const b = startBackend({ numQueues: 1, features: bit(VIRTIO_F_RING_PACKED) });
  const fe = await connectAndNegotiate(b.path);
  const split = await fe.getInflightFd(1, 128);
  await fe.setFeatures(fe.features | bit(VIRTIO_F_RING_PACKED));
  await t.rejects(fe.setInflightFd(split.fd, split.mmapSize, 1, 128), 'rejected (REPLY_ACK error)');
  close(split.fd);
  fe.close();
  await b.backend.close();
});

/** Re-announces ring 0 on a new connection as a reconnected QEMU does, SET_VRING_BASE `base`. */
t.test('session: a back-end dies holding packed requests; the next one resubmits them despite a stale SET_VRING_BASE', async (t) => {
  const size = 16;
  const first = startBackend({ numQueues: 1, features: bit(VIRTIO_F_RING_PACKED), hold: true });
  const fe = await connectAndNegotiate(first.path);
  await fe.setFeatures(fe.features | bit(VIRTIO_F_RING_PACKED));
  const inf = await fe.getInflightFd(1, size);
  await fe.setInflightFd(inf.fd, inf.mmapSize, 1, size);
  const q = await fe.setupQueue(0, size, { base: 0x8000 });
  const driver = new PackedQueueDriver(fe.mem.memory, { size, descGpa: q.layout.desc, driverGpa: q.layout.avail, deviceGpa: q.layout.used },
    { eventIdx: false, initRings: true });
  const add = (n: number, seed: number) => {
    const rd = fe.mem.alloc(32, 8), wrs: { gpa: number; len: number }[] = [];
    fe.mem.memory.writeFrom(rd, pattern(32, seed));
    for (let i = 1; i < n; i++) wrs.push({ gpa: fe.mem.alloc(16, 8), len: 16 });
    const id = driver.add([{ gpa: rd, len: 32 }], wrs);
    driver.publish();
    return { id, wrs, seed };
  };
  // An answered round first, so the used position moves away from the start.
  const warm = add(2, 1);
  q.kick();
  await until(() => first.device.queues.get(0)!.held.length === 1);
  first.device.queues.get(0)!.releaseAll();
  await until(() => driver.popUsed() === warm.id);
  // Three chains popped and held (in flight) when the back-end dies.
  const reqs = [add(3, 2), add(1, 3), add(2, 4)];
  q.kick();
  await until(() => first.device.queues.get(0)!.held.length === 3);
  await first.backend.close();

  const second = startBackend({ numQueues: 1, features: bit(VIRTIO_F_RING_PACKED) });
  const fe2 = await VhostUserFrontend.connect(second.path, { memory: fe.mem });
  await fe2.negotiate();
  await fe2.setFeatures(fe2.features | bit(VIRTIO_F_RING_PACKED));
  await fe2.setInflightFd(inf.fd, inf.mmapSize, 1, size);
  // QEMU 7.2 repeats the position of the previous start: slot 0, wrap 1.
  await reattachRing(fe2, fe, q, size, 0x8000);
  const got: number[] = [];
  await until(() => { for (let id; (id = driver.popUsed()) >= 0;) got.push(id); return got.length >= 3; });
  t.same(got.sort(), reqs.map((r) => r.id).sort(), 'the three held requests answered once each');
  for (const r of reqs) {
    // The echo of the readable pattern, as far as the writable buffers reach: the resubmitted
    // chain was walked from the area's copies with the right buffers.
    const echoed = new Uint8Array(16 * r.wrs.length);
    r.wrs.forEach((w, i) => fe.mem.memory.readIntoAt(w.gpa, echoed, 16 * i, 16));
    t.same(echoed, pattern(32, r.seed).subarray(0, echoed.length), `id ${r.id}: data echoed into its ${r.wrs.length} writable buffer(s)`);
  }
  t.equal(second.device.queues.get(0)!.stats.resubmitted, 3, 'resubmitted from the area');
  t.ok(second.logs.some((l) => /packed position 0x[0-9a-f]+ from the inflight area \(SET_VRING_BASE said 0x80008000\), 3 to resubmit/.test(l)),
    'position taken from the area, not the stale base');
  // The ring keeps working at the corrected position.
  const after = add(2, 9);
  q.kick();
  await until(() => driver.popUsed() === after.id);
  // warm: 2 slots; held: 3 + 1 + 2; after: 2 → both positions at slot 10, wrap 1.
  const b = decodePackedVringBase(await fe2.getVringBase(0));
  t.same([b.availIndex, b.availWrap, b.usedIndex, b.usedWrap], [10, 1, 10, 1], 'GET_VRING_BASE: avail and used after everything');
  close(inf.fd);
  fe2.close();
  fe.close();
  await second.backend.close();
});
