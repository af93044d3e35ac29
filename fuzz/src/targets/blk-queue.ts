/**
 * Targets `blk-queue` and `blk-file`: the virtio-blk request parser and queue handler
 * (packages/devices-blk/src/blk-request.ts, blk-queue.ts) over a MockGuest, with the memory
 * engine (`blk-queue`, synchronous) or the file engine on a temporary file through io_uring
 * (`blk-file`: completions inside the submit call and later from the ring's eventfd), against
 * a reference model written from virtio 1.2 §5.2.6.
 *
 * Random batches of chains: request types (known, unknown, unnegotiated), sectors (in range,
 * at the end, past it, ≥ 2^32, ≥ 2^53), data lengths (whole sectors or not), header and data
 * split over descriptors, short headers, discard / write-zeroes segments (counts, flags, ranges),
 * status buffers of 0–2 bytes, indirect tables, and descriptor WRITE flags flipped after the
 * driver built the chain (split rings), all over split or packed rings. The model decides each request's fate from the buffer list alone:
 * - broken (a readable buffer after a writable one, or no writable byte): the queue stops,
 *   `broken()` is called, nothing from that chain on is completed;
 * - otherwise a status in the last writable byte and a used length; IN data equal to the model
 *   disk; OUT / discard / write-zeroes applied to the model disk, which must equal the image.
 * Guest memory outside what the device may write is byte-for-byte unchanged: readable buffers,
 * writable bytes past the used length (except the status), and every canary of the MockGuest.
 * @module
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import {
  BlkDevice, FileImage, MemoryImage, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP, encodeSerial,
} from '@vhost-ts/devices-blk';
import type { InflightTracker, QueueContext, QueueHandler } from '@vhost-ts/vhost-user';
import { MockGuest, MockPackedGuest } from '@vhost-ts/virtqueue/testing';
import type { FuzzTarget } from './target.js';

const CAP = 512; // sectors (256 KiB: room for requests above the file engine's 64 KiB per call)
const SERIAL = 'fuzz-serial-0123456789';
const MAX_DISCARD_SEG = 4;
const MAX_DISCARD_SECTORS = 16;

const TYPES = { in: 0, out: 1, flush: 4, getid: 8, discard: 11, wz: 13 } as const;

const sectorArb = fc.oneof(
  { weight: 3, arbitrary: fc.integer({ min: 0, max: CAP - 4 }) },
  fc.integer({ min: CAP - 4, max: CAP + 2 }),
  fc.constantFrom(CAP - 1, CAP, 2 ** 32, 2 ** 32 + 1, 2 ** 53 - 1, 2 ** 53, 2 ** 64 - 1),
);
const segArb = fc.record({
  sector: sectorArb,
  num: fc.oneof(fc.integer({ min: 0, max: 8 }), fc.constantFrom(MAX_DISCARD_SECTORS, MAX_DISCARD_SECTORS + 1, 0xffffffff)),
  flags: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 2, arbitrary: fc.constant(1) }, { weight: 1, arbitrary: fc.nat({ max: 0xffffffff }) }),
});

const reqArb = fc.record({
  kind: fc.constantFrom('in', 'out', 'flush', 'getid', 'discard', 'wz', 'unknown'),
  unknownType: fc.oneof(fc.constantFrom(2, 3, 10, 14, 0x80000000), fc.nat({ max: 0xffffffff })),
  sector: sectorArb,
  // Mostly small; sometimes more than INLINE_BYTES_PER_CALL, so the file engine hands a batch to
  // the kernel in several calls and reaps completions between them.
  sectors: fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 0, max: 4 }) }, { weight: 1, arbitrary: fc.integer({ min: 128, max: 160 }) }),
  extra: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 511 }) }),
  headerLen: fc.oneof({ weight: 8, arbitrary: fc.constant(16) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 15 }) }),
  headerCuts: fc.array(fc.integer({ min: 1, max: 15 }), { maxLength: 3 }),
  dataCuts: fc.array(fc.integer({ min: 1, max: 4000 }), { maxLength: 3 }),
  segs: fc.array(segArb, { minLength: 0, maxLength: MAX_DISCARD_SEG + 1 }),
  segExtra: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 15 }) }),
  idLen: fc.integer({ min: 0, max: 40 }),
  statusLen: fc.oneof({ weight: 12, arbitrary: fc.constant(1) }, { weight: 2, arbitrary: fc.constant(2) }, { weight: 1, arbitrary: fc.constant(0) }),
  indirect: fc.boolean(),
  flip: fc.option(fc.nat({ max: 12 }), { freq: 6 }),
  seed: fc.nat({ max: 255 }),
});
type Req = typeof reqArb extends fc.Arbitrary<infer T> ? T : never;

export const blkArb = fc.record({
  queueSize: fc.constantFrom(8, 16, 64),
  /** Packed ring (virtio 1.2 §2.8) instead of split; WRITE-flag flips are split-only. */
  packed: fc.boolean(),
  eventIdx: fc.boolean(),
  readOnly: fc.boolean(),
  ackDiscard: fc.boolean(),
  ackWriteZeroes: fc.boolean(),
  /** FLUSH not acked: the device is writethrough (the file engine syncs after every write). */
  writethrough: fc.boolean(),
  /**
   * File engine: the image opened with O_DIRECT (where the temporary directory's file system
   * takes it). MockGuest buffers sit at any address, so most requests are refused as misaligned
   * and go through the page cache, next to aligned ones that do not: both paths on one file.
   */
  direct: fc.boolean(),
  /**
   * File engine without O_DIRECT: reads and writes as plain syscalls on the queue's thread
   * (aio inline, as a tmpfs image gets) instead of through the ring.
   */
  inline: fc.boolean(),
  /**
   * Split rings: the queue starts as after a back-end restart (INFLIGHT_SHMFD) — the first this
   * many chains of the first batch were popped by the previous back-end and are handed over in
   * the inflight list, the queue's next avail index past them; the rest are new.
   */
  restartAfter: fc.option(fc.integer({ min: 1, max: 6 }), { freq: 3 }),
  batches: fc.array(fc.array(reqArb, { minLength: 1, maxLength: 6 }), { minLength: 1, maxLength: 5 }),
});

interface Buf { gpa: number; len: number; writable: boolean; content: Uint8Array }

function fail(msg: string): never {
  throw new Error(`blk-queue: ${msg}`);
}

/** Splits `total` at the cut points (pieces ≥ 1 byte). */
function split(total: number, cuts: number[]): number[] {
  const points = [...new Set(cuts.map((c) => c % (total + 1)))].filter((c) => c > 0 && c < total).sort((a, b) => a - b);
  const out: number[] = [];
  let prev = 0;
  for (const p of [...points, total]) { out.push(p - prev); prev = p; }
  return out.filter((n) => n > 0);
}

function bytes(len: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: len }, (_, i) => (i * 131 + seed * 7 + 1) & 0xff);
}

function u64le(b: Uint8Array, off: number, v: number): void {
  const d = new DataView(b.buffer, b.byteOffset);
  d.setUint32(off, v % 2 ** 32, true);
  d.setUint32(off + 4, Math.min(0xffffffff, Math.floor(v / 2 ** 32)), true);
}

/** The buffers of one request, before any flag flip. */
function buildBuffers(g: MockGuest | MockPackedGuest, r: Req): Buf[] {
  const type = r.kind === 'unknown' ? r.unknownType : TYPES[r.kind as keyof typeof TYPES];
  const hdr = new Uint8Array(16);
  const hv = new DataView(hdr.buffer);
  hv.setUint32(0, type >>> 0, true);
  hv.setUint32(4, r.seed, true); // reserved: ignored by devices
  u64le(hdr, 8, r.sector);
  const bufs: Buf[] = [];
  const put = (content: Uint8Array, writable: boolean, cuts: number[]) => {
    let at = 0;
    for (const n of split(content.length, cuts)) {
      const gpa = g.alloc(n);
      const piece = content.slice(at, at + n);
      g.write(gpa, piece);
      bufs.push({ gpa, len: n, writable, content: piece });
      at += n;
    }
  };
  put(hdr.subarray(0, r.headerLen), false, r.headerCuts);
  const dataLen = r.sectors * 512 + r.extra;
  if (r.kind === 'out') put(bytes(dataLen, r.seed), false, r.dataCuts);
  if (r.kind === 'discard' || r.kind === 'wz') {
    const segs = new Uint8Array(r.segs.length * 16 + r.segExtra);
    const sv = new DataView(segs.buffer);
    r.segs.forEach((s, i) => { u64le(segs, i * 16, s.sector); sv.setUint32(i * 16 + 8, s.num >>> 0, true); sv.setUint32(i * 16 + 12, s.flags >>> 0, true); });
    if (segs.length > 0) put(segs, false, r.dataCuts.slice(0, 1));
  }
  if (r.kind === 'in') put(new Uint8Array(dataLen).fill(0xee), true, r.dataCuts);
  if (r.kind === 'getid') put(new Uint8Array(r.idLen).fill(0xee), true, r.dataCuts);
  if (r.statusLen > 0) put(new Uint8Array(r.statusLen).fill(0xaa), true, []);
  return bufs;
}

interface Expect { broken: boolean; status: number; usedLen: number; data: Uint8Array | null }

function concat(list: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(list.reduce((a, b) => a + b.length, 0));
  let at = 0;
  for (const b of list) { out.set(b, at); at += b.length; }
  return out;
}

/**
 * The reference model (virtio 1.2 §5.2.6): outcome of one chain, applied to `disk`.
 * Independent of the parser: it looks only at the buffer list.
 */
export function model(bufs: Buf[], disk: Uint8Array, o: { readOnly: boolean; discard: boolean; writeZeroes: boolean; serial: Uint8Array }): Expect {
  let seenWritable = false;
  for (const b of bufs) {
    if (b.writable) seenWritable = true;
    else if (seenWritable) return { broken: true, status: -1, usedLen: 0, data: null }; // §2.7.4.2
  }
  const R = concat(bufs.filter((b) => !b.writable).map((b) => b.content));
  const W = bufs.filter((b) => b.writable).reduce((a, b) => a + b.len, 0);
  if (W === 0) return { broken: true, status: -1, usedLen: 0, data: null }; // no status byte
  // §2.7.8.2: used len = bytes written from the start of the writable part. The status byte
  // (the last writable byte) counts only when it directly follows the data written.
  const lenOf = (dataWritten: number): number => (dataWritten === W - 1 ? W : dataWritten);
  const err = (status: number): Expect => ({ broken: false, status, usedLen: lenOf(0), data: null });
  if (R.length < 16) return err(VIRTIO_BLK_S_IOERR);
  const v = new DataView(R.buffer);
  const type = v.getUint32(0, true);
  const sector = v.getUint32(8, true) + v.getUint32(12, true) * 2 ** 32; // may round above 2^53: still > CAP
  const inRange = (s: number, n: number) => s <= CAP && n <= CAP - s;
  switch (type) {
    case TYPES.in: {
      const len = W - 1;
      if (len % 512 !== 0 || !inRange(sector, len / 512)) return err(VIRTIO_BLK_S_IOERR);
      return { broken: false, status: VIRTIO_BLK_S_OK, usedLen: lenOf(len), data: disk.slice(sector * 512, sector * 512 + len) };
    }
    case TYPES.out: {
      if (o.readOnly) return err(VIRTIO_BLK_S_IOERR);
      const len = R.length - 16;
      if (len % 512 !== 0 || !inRange(sector, len / 512)) return err(VIRTIO_BLK_S_IOERR);
      disk.set(R.subarray(16), sector * 512);
      return err(VIRTIO_BLK_S_OK);
    }
    case TYPES.flush: return err(VIRTIO_BLK_S_OK);
    case TYPES.getid: {
      const n = Math.min(20, W - 1);
      return { broken: false, status: VIRTIO_BLK_S_OK, usedLen: lenOf(n), data: o.serial.slice(0, n) };
    }
    case TYPES.discard: case TYPES.wz: {
      const isDiscard = type === TYPES.discard;
      if (!(isDiscard ? o.discard : o.writeZeroes)) return err(VIRTIO_BLK_S_UNSUPP);
      if (o.readOnly) return err(VIRTIO_BLK_S_IOERR);
      const len = R.length - 16;
      if (len <= 0 || len % 16 !== 0 || len / 16 > MAX_DISCARD_SEG) return err(VIRTIO_BLK_S_IOERR);
      const ranges: [number, number][] = [];
      for (let i = 0; i < len / 16; i++) {
        const at = 16 + i * 16;
        const s = v.getUint32(at, true) + v.getUint32(at + 4, true) * 2 ** 32;
        const num = v.getUint32(at + 8, true);
        const flags = v.getUint32(at + 12, true);
        // Unknown flags, or UNMAP on a discard: UNSUPP (§5.2.6.2); too long or out of range: IOERR.
        if ((flags & ~1) !== 0 || (isDiscard && flags !== 0)) return err(VIRTIO_BLK_S_UNSUPP);
        if (num > MAX_DISCARD_SECTORS || !inRange(s, num)) return err(VIRTIO_BLK_S_IOERR);
        ranges.push([s, num]);
      }
      // Both engines zero both (the memory engine fills, the file engine punches or zeroes).
      for (const [s, num] of ranges) disk.fill(0, s * 512, (s + num) * 512);
      return err(VIRTIO_BLK_S_OK);
    }
    default: return err(VIRTIO_BLK_S_UNSUPP);
  }
}

/** Flips VIRTQ_DESC_F_WRITE on descriptor `k` of a direct chain; returns the flipped position or -1. */
function flipFlag(g: MockGuest, head: number, k: number, count: number): number {
  const desc = g.device.ringViews.desc;
  let i = head;
  const pos = k % count;
  for (let n = 0; n < pos; n++) i = desc[i * 4 + 3] >>> 16;
  desc[i * 4 + 3] ^= 2;
  return pos;
}

type Scenario = typeof blkArb extends fc.Arbitrary<infer T> ? T : never;

/** The image under test and how to read its bytes back. */
interface ImageUnderTest {
  image: MemoryImage | FileImage;
  bytes(): Uint8Array;
  close(): void;
  /**
   * Requests of one batch may run in any order (io_uring), as virtio allows for requests in
   * flight together: a batch then holds no two requests on the same sectors where one of them
   * changes the disk (a driver waits for a write before reading what it wrote).
   */
  concurrent: boolean;
}

/** Sector ranges a request may touch: [start, end) pairs, and whether it changes the disk. */
function touched(r: Req): { ranges: [number, number][]; writes: boolean } {
  switch (r.kind) {
    case 'in': return { ranges: [[r.sector, r.sector + r.sectors + 1]], writes: false };
    case 'out': return { ranges: [[r.sector, r.sector + r.sectors + 1]], writes: true };
    case 'discard': case 'wz': return { ranges: r.segs.map((g) => [g.sector, g.sector + g.num]), writes: true };
    default: return { ranges: [], writes: false };
  }
}

/** True when `r` and an earlier request of the batch touch a sector and one of them writes it. */
function conflicts(r: Req, earlier: Req[]): boolean {
  const a = touched(r);
  return earlier.some((e) => {
    const b = touched(e);
    if (!a.writes && !b.writes) return false;
    return a.ranges.some(([s0, e0]) => b.ranges.some(([s1, e1]) => s0 < e1 && s1 < e0));
  });
}

function memoryImage(base: Uint8Array): ImageUnderTest {
  const image = new MemoryImage(base.slice());
  return { image, bytes: () => image.bytes, close: () => {}, concurrent: false };
}

function fileImage(base: Uint8Array, readOnly: boolean, direct: boolean, inline: boolean): ImageUnderTest {
  const dir = mkdtempSync(join(tmpdir(), 'fuzz-blk-'));
  const path = join(dir, 'disk.img');
  try {
    writeFileSync(path, base);
    let image: FileImage;
    try {
      image = FileImage.open(path, { readOnly, direct, aio: inline && !direct ? 'inline' : 'io_uring' });
    } catch (e) {
      if (!direct) throw e;
      image = FileImage.open(path, { readOnly, aio: 'io_uring' }); // no O_DIRECT on this file system
    }
    return {
      image, bytes: () => new Uint8Array(readFileSync(path)), close: () => { image.close(); rmSync(dir, { recursive: true, force: true }); },
      concurrent: true,
    };
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

/** Completions of an asynchronous engine: how long a batch may take before it counts as lost. */
const SETTLE_MS = 5000;

export async function runBlkQueue(s: Scenario, engine: 'memory' | 'file' = 'memory'): Promise<void> {
  const gOpts = { queueSize: s.queueSize, eventIdx: s.eventIdx, heapBytes: 0x100000, indirectEntries: 16 };
  const g = s.packed ? new MockPackedGuest(gOpts) : new MockGuest(gOpts);
  const base = bytes(CAP * 512, 99);
  const under = engine === 'memory' ? memoryImage(base) : fileImage(base, s.readOnly, s.direct, s.inline);
  try {
    await runOn(s, g, under, base);
  } finally {
    under.close();
  }
}

async function runOn(s: Scenario, g: MockGuest | MockPackedGuest, under: ImageUnderTest, base: Uint8Array): Promise<void> {
  const image = under.image;
  const disk = base.slice();
  const device = new BlkDevice({
    image, readOnly: s.readOnly, queueSize: s.queueSize, serial: SERIAL,
    maxDiscardSeg: MAX_DISCARD_SEG, maxDiscardSectors: MAX_DISCARD_SECTORS,
  });
  let acked = device.features;
  if (!s.ackDiscard) acked &= ~(1n << BigInt(VIRTIO_BLK_F_DISCARD));
  if (!s.ackWriteZeroes) acked &= ~(1n << BigInt(VIRTIO_BLK_F_WRITE_ZEROES));
  if (s.writethrough) acked &= ~(1n << BigInt(VIRTIO_BLK_F_FLUSH));
  device.setFeatures(acked);
  if (device.writeback === s.writethrough) fail(`writeback ${device.writeback} with FLUSH ${s.writethrough ? 'not ' : ''}acked`);
  const opts = {
    readOnly: s.readOnly, discard: !s.readOnly && s.ackDiscard, writeZeroes: !s.readOnly && s.ackWriteZeroes, serial: encodeSerial(SERIAL),
  };
  const broken: string[] = [];
  let handler: QueueHandler | null = null;
  // Started once the first batch is in the ring (a restarted queue resubmits from it at start).
  const start = (resubmit: number[] | null): QueueHandler => {
    const tracker: InflightTracker | null = resubmit === null ? null : { resubmit, begin: () => {}, end: () => {}, commit: () => {} };
    const queue = resubmit === null ? g.device : (g as MockGuest).newDevice({ nextAvail: resubmit.length });
    const ctx: QueueContext = {
      index: 0, queue, memory: g.memory, inflight: tracker,
      notify: () => {}, broken: (reason) => { broken.push(reason); },
    };
    handler = device.startQueue(0, ctx);
    return handler;
  };
  try {
    await runBatches(s, g, under, disk, opts, broken, start);
  } finally {
    if (handler !== null) await (handler as QueueHandler).stop();
  }
}

type ModelOptions = Parameters<typeof model>[2];

async function runBatches(
  s: Scenario, g: MockGuest | MockPackedGuest, under: ImageUnderTest, disk: Uint8Array, opts: ModelOptions, broken: string[],
  start: (resubmit: number[] | null) => QueueHandler,
): Promise<void> {
  let queueBroken = false;
  let handler: QueueHandler | null = null;

  for (const batch of s.batches) {
    const sent: { head: number; bufs: Buf[]; exp: Expect }[] = [];
    const taken: Req[] = [];
    for (const r of batch) {
      if (under.concurrent && conflicts(r, taken)) continue;
      taken.push(r);
      const bufs = buildBuffers(g, r);
      const indirect = r.indirect && bufs.length <= 16;
      const head = g.driver.add(bufs.filter((b) => !b.writable), bufs.filter((b) => b.writable), { indirect });
      if (head < 0) break; // ring full: the rest of the batch waits for nothing
      if (r.flip !== null && !indirect && g instanceof MockGuest) {
        const pos = flipFlag(g, head, r.flip, bufs.length);
        bufs[pos] = { ...bufs[pos], writable: !bufs[pos].writable };
      }
      sent.push({ head, bufs, exp: { broken: false, status: 0, usedLen: 0, data: null } });
    }
    // The model runs in ring order; a broken chain stops the queue for everything after it.
    let brokeAt = -1;
    for (let i = 0; i < sent.length; i++) {
      sent[i].exp = model(sent[i].bufs, disk, opts);
      if (sent[i].exp.broken) { brokeAt = i; break; }
    }
    g.driver.publish();
    if (handler === null) {
      const k = s.restartAfter === null || s.packed ? 0 : Math.min(s.restartAfter, sent.length);
      try {
        handler = start(k === 0 ? null : sent.slice(0, k).map((c) => c.head));
      } catch (e) {
        fail(`startQueue threw ${String(e)}`);
      }
    }
    try {
      handler.onKick();
    } catch (e) {
      fail(`onKick threw ${String(e)}`);
    }
    const upTo = brokeAt < 0 ? sent.length : brokeAt;
    const used = new Map<number, number>();
    const collect = (): void => {
      for (let h = g.driver.popUsed(); h >= 0; h = g.driver.popUsed()) {
        if (used.has(h)) fail(`head ${h} completed twice`);
        used.set(h, g.driver.lastLen);
      }
    };
    collect();
    // An asynchronous engine completes on later turns of the event loop: wait for the batch,
    // then two more turns, so a completion that should not come has its chance to show.
    const deadline = Date.now() + SETTLE_MS;
    while (used.size < upTo && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, used.size === 0 ? 0 : 1));
      collect();
    }
    for (let i = 0; i < 2; i++) { await new Promise((r) => setImmediate(r)); collect(); }
    for (let i = 0; i < sent.length; i++) {
      const { head, bufs, exp } = sent[i];
      const got = used.get(head);
      if (i >= upTo) {
        if (got !== undefined) fail(`request ${i} after the broken chain was completed`);
        continue;
      }
      if (got === undefined) fail(`request ${i} (head ${head}) not completed`);
      if (got !== exp.usedLen) fail(`request ${i}: used len ${got}, model ${exp.usedLen}`);
      const wbufs = bufs.filter((b) => b.writable);
      const wr = concat(wbufs.map((b) => g.read(b.gpa, b.len)));
      const status = wr[wr.length - 1];
      if (status !== exp.status) fail(`request ${i}: status ${status}, model ${exp.status}`);
      const dataLen = exp.data?.length ?? 0;
      if (exp.data !== null && Buffer.compare(wr.subarray(0, dataLen), exp.data) !== 0) fail(`request ${i}: data differs from the model disk`);
      // Writable bytes past the used length (but the status) are untouched.
      const orig = concat(wbufs.map((b) => b.content));
      if (Buffer.compare(wr.subarray(dataLen, wr.length - 1), orig.subarray(dataLen, orig.length - 1)) !== 0) {
        fail(`request ${i}: device wrote past the used length`);
      }
      for (const b of bufs) {
        if (!b.writable && Buffer.compare(g.read(b.gpa, b.len), b.content) !== 0) fail(`request ${i}: a readable buffer was modified`);
      }
    }
    if (brokeAt >= 0) {
      if (broken.length === 0) fail(`chain ${brokeAt} should break the queue`);
      queueBroken = true;
    } else if (broken.length > 0) {
      fail(`queue broken unexpectedly: ${broken[0]}`);
    }
    if (Buffer.compare(under.bytes(), disk) !== 0) fail('image differs from the model disk');
    const bad = g.checkCanaries();
    if (bad.length > 0) fail(`canaries: ${bad[0]}`);
    if (queueBroken) break;
  }
}

export const blkQueue: FuzzTarget = {
  name: 'blk-queue',
  description: 'virtio-blk parser + queue over MockGuest/memory engine vs a reference disk model, flipped descriptor flags, canaries',
  testRuns: 250,
  property: () => fc.asyncProperty(blkArb, (s) => runBlkQueue(s, 'memory')),
};

export const blkFile: FuzzTarget = {
  name: 'blk-file',
  description: 'the same scenarios through the file engine (io_uring on a temporary file): completions inside the submit and from the eventfd, the file checked against the model disk',
  testRuns: 60,
  property: () => fc.asyncProperty(blkArb, (s) => runBlkQueue(s, 'file')),
};
