import type { MockGuest } from '@vhost-ts/virtqueue/testing';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import t from 'tap';
import {
  BLK_BROKEN_CHANNEL, MemoryImage, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_GET_LIFETIME,
  VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_SECURE_ERASE, VIRTIO_BLK_T_WRITE_ZEROES,
} from '../src/index.js';
import { BlkRig, pattern, sameBytes, segments } from './helpers.js';

const SIZE = 1 << 20; // 2048 sectors
const CAP = SIZE / 512;

function rig(opts: { readOnly?: boolean; acked?: bigint; image?: MemoryImage } = {}) {
  const image = opts.image ?? new MemoryImage(pattern(SIZE, 7), { readOnly: opts.readOnly });
  return { image, r: new BlkRig({ image, serial: 'serial-0123456789-abcdef', maxDiscardSeg: 4, maxDiscardSectors: 1024 }, {}, opts.acked) };
}

t.test('IN reads image data into the writable buffers (virtio 1.2 §5.2.6)', async (t) => {
  const { image, r } = rig();
  const a = r.add({ type: VIRTIO_BLK_T_IN, sector: 3, inLen: 1024 });
  const b = r.add({ type: VIRTIO_BLK_T_IN, sector: 10, inLen: 1536, inSplit: [512, 1024] });
  r.kick();
  const used = r.collect();
  t.equal(used.get(a.head), 1025, 'used len = data + status');
  t.equal(used.get(b.head), 1537);
  t.equal(r.status(a), VIRTIO_BLK_S_OK);
  t.same(r.readIn(a), image.bytes.subarray(3 * 512, 3 * 512 + 1024));
  t.same(r.readIn(b), image.bytes.subarray(10 * 512, 10 * 512 + 1536));
  t.equal(r.notifies, 1, 'one notification for the batch');
  t.same(r.guest.checkCanaries(), []);
});

t.test('OUT writes the data after the header, used len 1', async (t) => {
  const { image, r } = rig();
  const data = pattern(2048, 99);
  const s = r.add({ type: VIRTIO_BLK_T_OUT, sector: 100, out: data });
  r.kick();
  t.equal(r.collect().get(s.head), 1);
  t.equal(r.status(s), VIRTIO_BLK_S_OK);
  t.same(image.bytes.subarray(100 * 512, 100 * 512 + 2048), data);
  t.equal(r.device.counters[0].bytesWritten, 2048);
});

t.test('header split across descriptors, and in an indirect table', async (t) => {
  const { image, r } = rig();
  const data = pattern(512, 5);
  const a = r.add({ type: VIRTIO_BLK_T_OUT, sector: 7, out: data, headerSplit: [1, 5, 6, 4] });
  const b = r.add({ type: VIRTIO_BLK_T_IN, sector: 7, inLen: 512, headerSplit: [8, 8], indirect: true });
  r.kick();
  const used = r.collect();
  t.equal(used.get(a.head), 1);
  t.equal(used.get(b.head), 513);
  t.same(image.bytes.subarray(7 * 512, 8 * 512), data);
  t.same(r.readIn(b), data);
});

t.test('FLUSH completes OK; sector field ignored', async (t) => {
  const { r } = rig();
  const s = r.add({ type: VIRTIO_BLK_T_FLUSH, sector: 12345 });
  r.kick();
  t.equal(r.collect().get(s.head), 1);
  t.equal(r.status(s), VIRTIO_BLK_S_OK);
  t.equal(r.device.counters[0].flushes, 1);
});

t.test('GET_ID writes the 20-byte serial, truncated to the buffer', async (t) => {
  const { r } = rig();
  const a = r.add({ type: VIRTIO_BLK_T_GET_ID, inLen: 20 });
  const b = r.add({ type: VIRTIO_BLK_T_GET_ID, inLen: 8 });
  const c = r.add({ type: VIRTIO_BLK_T_GET_ID, inLen: 0 });
  r.kick();
  const used = r.collect();
  t.equal(used.get(a.head), 21);
  t.equal(new TextDecoder().decode(r.readIn(a)), 'serial-0123456789-ab', 'cut at 20 bytes, no NUL');
  t.equal(used.get(b.head), 9);
  t.equal(new TextDecoder().decode(r.readIn(b)), 'serial-0');
  t.equal(used.get(c.head), 1);
  t.equal(r.status(c), VIRTIO_BLK_S_OK);
});

t.test('short serial is NUL-padded', async (t) => {
  const image = new MemoryImage(SIZE);
  const r = new BlkRig({ image, serial: 'abc' });
  const a = r.add({ type: VIRTIO_BLK_T_GET_ID, inLen: 20 });
  r.kick();
  r.collect();
  const id = r.readIn(a);
  t.same([...id.subarray(0, 4)], [0x61, 0x62, 0x63, 0]);
  t.ok(id.subarray(3).every((b) => b === 0));
});

t.test('status goes into the last writable byte', async (t) => {
  const { r } = rig();
  const s = r.add({ type: VIRTIO_BLK_T_FLUSH, statusLen: 4 });
  r.kick();
  r.collect();
  const bytes = r.guest.read(s.statusGpa - 3, 4);
  t.same([...bytes], [0xaa, 0xaa, 0xaa, VIRTIO_BLK_S_OK]);
});

t.test('range checks: capacity, overflow, sector alignment (IOERR)', async (t) => {
  const { image, r } = rig();
  const before = image.bytes.slice();
  const cases = [
    r.add({ type: VIRTIO_BLK_T_IN, sector: CAP, inLen: 512 }),
    r.add({ type: VIRTIO_BLK_T_IN, sector: CAP - 1, inLen: 1024 }),
    r.add({ type: VIRTIO_BLK_T_IN, sector: 2 ** 53 - 1, inLen: 512 }),
    r.add({ type: VIRTIO_BLK_T_OUT, sector: 2 ** 52, out: pattern(512, 1) }),
    r.add({ type: VIRTIO_BLK_T_IN, sector: 0, inLen: 100 }),
    r.add({ type: VIRTIO_BLK_T_OUT, sector: 0, out: pattern(513, 1) }),
  ];
  // A sector ≥ 2^53 (hi word ≥ 0x200000) — written raw.
  const huge = r.add({ type: VIRTIO_BLK_T_IN, sector: 0, inLen: 512 });
  r.kick();
  const used = r.collect();
  for (const s of cases) {
    t.equal(r.status(s), VIRTIO_BLK_S_IOERR, `head ${s.head} IOERR`);
    // §2.7.8.2: nothing written from the start of the writable part; the status byte, at the
    // end, does not count when a data buffer precedes it.
    t.equal(used.get(s.head), s.inGpas.length > 0 ? 0 : 1, 'nothing written');
  }
  t.equal(r.status(huge), VIRTIO_BLK_S_OK);
  t.ok(sameBytes(image.bytes, before), 'image untouched');
  const ok = r.add({ type: VIRTIO_BLK_T_IN, sector: CAP - 2, inLen: 1024 });
  r.kick();
  t.equal(r.collect().get(ok.head), 1025, 'a read ending exactly at capacity is fine');
  t.equal(r.device.counters[0].errors, cases.length);
});

t.test('sector with the top bits set (u64 ≥ 2^53) is IOERR, not a crash', async (t) => {
  const { r } = rig();
  const s = r.add({ type: VIRTIO_BLK_T_IN, sector: 0, inLen: 512 });
  // Patch the header's high word in guest memory: find the header descriptor (first of chain).
  const d = r.guest.memory;
  const descGpa = r.guest.layout.descGpa + s.head * 16;
  const hdrGpa = d.getU64(descGpa);
  d.setU32(hdrGpa + 12, 0xffffffff);
  r.kick();
  r.collect();
  t.equal(r.status(s), VIRTIO_BLK_S_IOERR);
});

t.test('unknown and not-offered types get UNSUPP', async (t) => {
  const { r } = rig();
  const list = [99, VIRTIO_BLK_T_GET_LIFETIME, VIRTIO_BLK_T_SECURE_ERASE, 0xffffffff].map((type) =>
    r.add({ type, inLen: 512 }));
  r.kick();
  const used = r.collect();
  for (const s of list) {
    t.equal(r.status(s), VIRTIO_BLK_S_UNSUPP);
    t.equal(used.get(s.head), 0, 'the 512-byte buffer before the status byte was not written: len 0');
  }
  t.equal(r.device.counters[0].unsupported, list.length);
  // With only the status byte writable, that byte is the written prefix.
  const bare = r.add({ type: 99 });
  r.kick();
  t.equal(r.collect().get(bare.head), 1);
});

t.test('header shorter than 16 bytes with a status byte → IOERR', async (t) => {
  const { r } = rig();
  const s = r.add({ type: VIRTIO_BLK_T_IN, inLen: 512, headerLen: 10 });
  const s2 = r.add({ type: VIRTIO_BLK_T_FLUSH, headerLen: 15, headerSplit: [7, 8] });
  r.kick();
  const used = r.collect();
  t.equal(r.status(s), VIRTIO_BLK_S_IOERR);
  t.equal(used.get(s.head), 0);
  t.equal(r.status(s2), VIRTIO_BLK_S_IOERR);
  t.equal(used.get(s2.head), 1);
  t.same(r.brokenReasons, []);
});

t.test('a chain without a writable status byte breaks the device, no crash', async (t) => {
  const { r } = rig();
  const good = r.add({ type: VIRTIO_BLK_T_FLUSH });
  r.add({ type: VIRTIO_BLK_T_OUT, out: pattern(512, 2), statusLen: 0 });
  r.kick();
  const used = r.collect();
  t.equal(used.get(good.head), 1, 'the request before it still completes');
  t.equal(r.brokenReasons.length, 1);
  t.match(r.brokenReasons[0], /status/);
  t.equal(r.device.counters[0].badChains, 1);
  // Further kicks do nothing (and do not throw).
  r.add({ type: VIRTIO_BLK_T_FLUSH });
  r.kick();
  t.equal(r.collect().size, 0);
});

t.test('queue fault (head out of range) breaks the device once', async (t) => {
  const { r } = rig();
  const events: unknown[] = [];
  const onEvent = (m: unknown) => { events.push(m); };
  subscribe(BLK_BROKEN_CHANNEL, onEvent);
  t.teardown(() => { unsubscribe(BLK_BROKEN_CHANNEL, onEvent); });
  r.guest.driver.pushAvailRaw(1000);
  r.kick();
  r.kick();
  t.equal(r.brokenReasons.length, 1);
  t.match(events, [{ queue: 0, reason: /head-out-of-range|head/ }], 'diagnostics_channel event');
  t.equal(r.device.counters[0].badChains, 1);
});

t.test('DISCARD and WRITE_ZEROES zero the ranges (virtio 1.2 §5.2.6.2)', async (t) => {
  const { image, r } = rig();
  const d = r.add({ type: VIRTIO_BLK_T_DISCARD, out: segments([{ sector: 0, num: 8 }, { sector: 100, num: 2 }]) });
  const z = r.add({ type: VIRTIO_BLK_T_WRITE_ZEROES, out: segments([{ sector: 200, num: 4 }]) });
  const zu = r.add({ type: VIRTIO_BLK_T_WRITE_ZEROES, out: segments([{ sector: 300, num: 4, flags: 1 }]) });
  const empty = r.add({ type: VIRTIO_BLK_T_DISCARD, out: segments([{ sector: 5, num: 0 }]) });
  r.kick();
  r.collect();
  for (const s of [d, z, zu, empty]) t.equal(r.status(s), VIRTIO_BLK_S_OK);
  const zero = (s: number, n: number) => image.bytes.subarray(s * 512, (s + n) * 512).every((b) => b === 0);
  t.ok(zero(0, 8) && zero(100, 2) && zero(200, 4) && zero(300, 4));
  t.notOk(zero(8, 1), 'neighbouring sector untouched');
  t.notOk(zero(5 + 8, 1));
});

t.test('DISCARD / WRITE_ZEROES malformed forms', async (t) => {
  const { image, r } = rig();
  const before = image.bytes.slice();
  const expect: [number, ReturnType<BlkRig['add']>][] = [
    [VIRTIO_BLK_S_UNSUPP, r.add({ type: VIRTIO_BLK_T_DISCARD, out: segments([{ sector: 0, num: 1, flags: 1 }]) })],
    [VIRTIO_BLK_S_UNSUPP, r.add({ type: VIRTIO_BLK_T_DISCARD, out: segments([{ sector: 0, num: 1, flags: 2 }]) })],
    [VIRTIO_BLK_S_UNSUPP, r.add({ type: VIRTIO_BLK_T_WRITE_ZEROES, out: segments([{ sector: 0, num: 1, flags: 4 }]) })],
    [VIRTIO_BLK_S_IOERR, r.add({ type: VIRTIO_BLK_T_DISCARD, out: segments([{ sector: 0, num: 1025 }]) })],
    [VIRTIO_BLK_S_IOERR, r.add({ type: VIRTIO_BLK_T_DISCARD, out: segments([0, 1, 2, 3, 4].map((i) => ({ sector: i, num: 1 }))) })],
    [VIRTIO_BLK_S_IOERR, r.add({ type: VIRTIO_BLK_T_WRITE_ZEROES, out: segments([{ sector: CAP - 1, num: 2 }]) })],
    [VIRTIO_BLK_S_IOERR, r.add({ type: VIRTIO_BLK_T_WRITE_ZEROES, out: segments([{ sector: 2 ** 53 - 1, num: 1 }]) })],
    [VIRTIO_BLK_S_IOERR, r.add({ type: VIRTIO_BLK_T_DISCARD, out: pattern(20, 1) })],
    [VIRTIO_BLK_S_IOERR, r.add({ type: VIRTIO_BLK_T_DISCARD })],
    // A later bad segment fails the whole request before anything is executed.
    [VIRTIO_BLK_S_IOERR, r.add({ type: VIRTIO_BLK_T_DISCARD, out: segments([{ sector: 0, num: 1 }, { sector: CAP, num: 1 }]) })],
  ];
  r.kick();
  r.collect();
  for (const [status, s] of expect) t.equal(r.status(s), status, `head ${s.head}`);
  t.ok(sameBytes(image.bytes, before), 'nothing discarded');
});

t.test('DISCARD / WRITE_ZEROES not negotiated → UNSUPP', async (t) => {
  const image = new MemoryImage(SIZE);
  const probe = new BlkRig({ image });
  const acked = probe.device.features & ~((1n << BigInt(VIRTIO_BLK_F_DISCARD)) | (1n << BigInt(VIRTIO_BLK_F_WRITE_ZEROES)));
  const r = new BlkRig({ image }, {}, acked);
  const a = r.add({ type: VIRTIO_BLK_T_DISCARD, out: segments([{ sector: 0, num: 1 }]) });
  const b = r.add({ type: VIRTIO_BLK_T_WRITE_ZEROES, out: segments([{ sector: 0, num: 1 }]) });
  r.kick();
  r.collect();
  t.equal(r.status(a), VIRTIO_BLK_S_UNSUPP);
  t.equal(r.status(b), VIRTIO_BLK_S_UNSUPP);
});

t.test('read-only: writes fail with IOERR and nothing is written (virtio 1.2 §5.2.6.2)', async (t) => {
  const { image, r } = rig({ readOnly: true });
  const before = image.bytes.slice();
  const w = r.add({ type: VIRTIO_BLK_T_OUT, sector: 0, out: pattern(512, 3) });
  const d = r.add({ type: VIRTIO_BLK_T_DISCARD, out: segments([{ sector: 0, num: 1 }]) });
  const rd = r.add({ type: VIRTIO_BLK_T_IN, sector: 0, inLen: 512 });
  r.kick();
  r.collect();
  t.equal(r.status(w), VIRTIO_BLK_S_IOERR);
  t.equal(r.status(d), VIRTIO_BLK_S_UNSUPP, 'discard is not offered on a read-only disk');
  t.equal(r.status(rd), VIRTIO_BLK_S_OK);
  t.ok(sameBytes(image.bytes, before), 'image untouched');
});

t.test('zero-length read/write complete OK with only a status', async (t) => {
  const { r } = rig();
  const a = r.add({ type: VIRTIO_BLK_T_IN, sector: 1 });
  const b = r.add({ type: VIRTIO_BLK_T_OUT, sector: 1 });
  r.kick();
  const used = r.collect();
  t.equal(used.get(a.head), 1);
  t.equal(used.get(b.head), 1);
  t.equal(r.status(a), VIRTIO_BLK_S_OK);
});

t.test('buffer spanning two memory regions is read and written whole', async (t) => {
  const { image, r } = rig();
  const g = r.guest as MockGuest;
  const gpa = g.spanningBuffer(1024);
  const hdrGpa = g.alloc(16);
  const hdr = new Uint8Array(16);
  new DataView(hdr.buffer).setUint32(8, 50, true);
  g.write(hdrGpa, hdr); // type IN = 0
  const st = g.alloc(1);
  const head = g.driver.add([{ gpa: hdrGpa, len: 16 }], [{ gpa, len: 1024 }, { gpa: st, len: 1 }]);
  r.kick();
  t.equal(r.collect().get(head), 1025);
  t.same(g.read(gpa, 1024), image.bytes.subarray(50 * 512, 52 * 512));
});

t.test('many requests in one kick: one notify; EVENT_IDX suppression counted', async (t) => {
  const image = new MemoryImage(SIZE);
  const r = new BlkRig({ image }, { eventIdx: true });
  for (let i = 0; i < 20; i++) r.add({ type: VIRTIO_BLK_T_IN, sector: i, inLen: 512 });
  r.kick();
  t.equal(r.collect().size, 20);
  t.equal(r.notifies, 1, 'one signal for the batch');
  // Two publishes (the first completion at once, the rest at the end): used_event asked for the
  // first only, so the second is suppressed.
  t.equal(r.device.counters[0].notificationsSuppressed, 1);
  // The driver leaves used_event behind: the next completion needs no notification.
  r.guest.driver.setUsedEvent(0);
  r.add({ type: VIRTIO_BLK_T_FLUSH });
  r.kick();
  t.equal(r.collect().size, 1);
  t.equal(r.notifies, 1);
  t.equal(r.device.counters[0].notificationsSuppressed, 2);
  t.equal(r.device.counters[0].kicks, 2);
});

t.test('used len counts only bytes written from the start of the writable part (virtio 1.2 §2.7.8.2)', async (t) => {
  // An independent C driver checked every byte: a failed 4 KiB read answered len 1 although the
  // one byte written was the status at offset 4096, and GET_ID into 40 bytes answered 21.
  const { r } = rig();
  const failedRead = r.add({ type: VIRTIO_BLK_T_IN, sector: CAP, inLen: 4096 });
  const id40 = r.add({ type: VIRTIO_BLK_T_GET_ID, inLen: 40 });
  const id20 = r.add({ type: VIRTIO_BLK_T_GET_ID, inLen: 20 });
  const bigStatus = r.add({ type: VIRTIO_BLK_T_FLUSH, statusLen: 64 });
  const read = r.add({ type: VIRTIO_BLK_T_IN, sector: 0, inLen: 1024 });
  r.kick();
  const used = r.collect();
  t.equal(used.get(failedRead.head), 0, 'failed read: nothing from the start');
  t.equal(used.get(id40.head), 20, 'GET_ID into 40 bytes: the 20 id bytes (the status sits at byte 40)');
  t.equal(used.get(id20.head), 21, 'GET_ID into exactly 20 bytes: id and the status right after it');
  t.equal(used.get(bigStatus.head), 0, 'a 64-byte status buffer: only its last byte is written');
  t.equal(used.get(read.head), 1025, 'a good read: data and status');
});
