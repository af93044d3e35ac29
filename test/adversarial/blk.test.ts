/**
 * Adversarial guest vs the `vhost-user-blk` process: every malformed ring or request below is
 * sent on its own connection over the real socket; the device must answer it with a virtio
 * status or declare the ring broken (error eventfd + NEEDS_RESET), never crash, hang, or touch
 * guest memory it was not given; and the next connection must do normal I/O.
 */
import t, { type Test } from 'tap';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '@vhost-ts/virtqueue';
import { AttackSession, type RawRing } from './src/attack-session.js';
import { BackendProcess } from './src/backend-process.js';
import { blkNormalIo, blkProbe, placeBlkRequest } from './src/blk-io.js';
import {
  BLK_HEADER_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES, VIRTIO_RING_F_INDIRECT_DESC, blkHeader, blkRange, pattern,
} from './src/blk-wire.js';
import type { GuestArena } from './src/guest-arena.js';
import { runCase, type Expectation } from './src/run-case.js';

const QUEUE_SIZE = 16;
const CAPACITY_SECTORS = 2048; // 1 MiB image
const R = 0; // the request queue under attack
const W = VIRTQ_DESC_F_WRITE, N = VIRTQ_DESC_F_NEXT, I = VIRTQ_DESC_F_INDIRECT;
// FrontendMemory's default layout: region 0 = [1 MiB, 2 MiB), region 1 = [4 GiB, 4 GiB + 2 MiB).
const REGION0_END = 0x20_0000;
const REGION1_END = 0x1_0020_0000;
const GAP = 0x30_0000;

/** What a case builder gets. */
interface Ctx {
  readonly r: RawRing;
  readonly a: GuestArena;
  /** 16-byte header in a canary-guarded, device-readable buffer. */
  hdr(type: number, sector: bigint | number): number;
  /** Device-readable buffer holding `bytes` (or `len` background bytes). */
  rbuf(len: number, bytes?: Uint8Array): number;
  /** Device-writable buffer the device may legitimately write. */
  wbuf(len: number): number;
}

interface BlkCase {
  readonly name: string;
  /** Mask applied to the offered features (default: all). */
  readonly features?: bigint;
  /** Writes descriptors and avail entries (never kicks); returns what the device must do. */
  build(c: Ctx): Expectation;
}

const broken: Expectation = { kind: 'broken' };
const ioerr = (head: number, statusGpa: number): Expectation =>
  ({ kind: 'status', head, statusGpa, status: VIRTIO_BLK_S_IOERR, usedLen: 1 });
/**
 * IOERR for a chain whose writable part holds data buffers before the status byte: nothing was
 * written from the start of the writable part, so used len is 0 (virtio 1.2 §2.7.8.2).
 */
const ioerrAfterData = (head: number, statusGpa: number): Expectation =>
  ({ kind: 'status', head, statusGpa, status: VIRTIO_BLK_S_IOERR, usedLen: 0 });

/** A read request of `len` data bytes at `sector`: header, data, status — all well formed. */
function readReq(c: Ctx, sector: bigint | number, len: number): { head: number; status: number } {
  const status = c.wbuf(1);
  const head = c.r.chain([{ gpa: c.hdr(VIRTIO_BLK_T_IN, sector), len: BLK_HEADER_BYTES },
    { gpa: c.wbuf(len), len, write: true }, { gpa: status, len: 1, write: true }]);
  c.r.offer(head);
  return { head, status };
}

/** A chain of raw descriptors at fresh indices: [addr, len, flags, nextOffset] (next relative to the first). */
function rawChain(c: Ctx, descs: readonly [number, number, number, number][]): number {
  const first = c.r.takeDescs(descs.length);
  descs.forEach(([addr, len, flags, next], k) => c.r.desc(first + k, addr, len, flags, first + next));
  return first;
}

/** Header + status around one data descriptor the case chooses (an IN request). */
function withData(c: Ctx, addr: number, len: number, flags = W): number {
  const head = rawChain(c, [
    [c.hdr(VIRTIO_BLK_T_IN, 0), BLK_HEADER_BYTES, N, 1],
    [addr, len, flags | N, 2],
    [c.wbuf(1), 1, W, 0],
  ]);
  c.r.offer(head);
  return head;
}

/** An indirect descriptor (table at `table`, `len` bytes, extra `flags`) as a one-descriptor chain. */
function viaIndirect(c: Ctx, table: number, len: number, flags = 0): number {
  const head = c.r.takeDescs(1);
  c.r.desc(head, table, len, I | flags, 0);
  c.r.offer(head);
  return head;
}

/** Writes an indirect table of entries [addr, len, flags, next] into a guarded buffer. */
function table(c: Ctx, entries: readonly [number, number, number, number][], extraBytes = 0): number {
  const bytes = new Uint8Array(entries.length * 16 + extraBytes);
  const v = new DataView(bytes.buffer);
  entries.forEach(([addr, len, flags, next], k) => {
    v.setBigUint64(k * 16, BigInt(addr), true);
    v.setUint32(k * 16 + 8, len, true);
    v.setUint16(k * 16 + 12, flags, true);
    v.setUint16(k * 16 + 14, next, true);
  });
  return c.rbuf(bytes.length, bytes);
}

/** A well-formed read as indirect table entries. */
function readEntries(c: Ctx): [number, number, number, number][] {
  return [[c.hdr(VIRTIO_BLK_T_IN, 0), BLK_HEADER_BYTES, N, 1], [c.wbuf(512), 512, W | N, 2], [c.wbuf(1), 1, W, 0]];
}

const CASES: BlkCase[] = [
  // --- request-level faults: answered with a status, the ring keeps working ---------------------
  {
    name: 'blk header in a device-writable descriptor → IOERR',
    build(c) {
      const hdr = c.wbuf(BLK_HEADER_BYTES);
      c.a.write(hdr, blkHeader(VIRTIO_BLK_T_IN, 0));
      const status = c.wbuf(1);
      const head = c.r.chain([{ gpa: hdr, len: BLK_HEADER_BYTES, write: true },
        { gpa: c.wbuf(512), len: 512, write: true }, { gpa: status, len: 1, write: true }]);
      c.r.offer(head);
      return ioerrAfterData(head, status);
    },
  },
  {
    name: 'header shorter than 16 bytes → IOERR',
    build(c) {
      const hdr = c.rbuf(8, blkHeader(VIRTIO_BLK_T_IN, 0).subarray(0, 8));
      const status = c.wbuf(1);
      const head = c.r.chain([{ gpa: hdr, len: 8 }, { gpa: c.wbuf(512), len: 512, write: true }, { gpa: status, len: 1, write: true }]);
      c.r.offer(head);
      return ioerrAfterData(head, status);
    },
  },
  {
    name: 'sector past capacity → IOERR',
    build(c) { const q = readReq(c, CAPACITY_SECTORS, 512); return ioerrAfterData(q.head, q.status); },
  },
  {
    name: 'sector range ending past capacity → IOERR',
    build(c) { const q = readReq(c, CAPACITY_SECTORS - 1, 1024); return ioerrAfterData(q.head, q.status); },
  },
  {
    name: 'sector 2^64 - 1 (offset overflows 64 bits) → IOERR',
    build(c) { const q = readReq(c, (1n << 64n) - 1n, 512); return ioerrAfterData(q.head, q.status); },
  },
  {
    name: 'write at sector 2^55 (sector × 512 wraps to 0) → IOERR',
    build(c) {
      const status = c.wbuf(1);
      const head = c.r.chain([{ gpa: c.hdr(VIRTIO_BLK_T_OUT, 1n << 55n), len: BLK_HEADER_BYTES },
        { gpa: c.rbuf(512, pattern(512, 99)), len: 512 }, { gpa: status, len: 1, write: true }]);
      c.r.offer(head);
      return ioerr(head, status);
    },
  },
  {
    name: 'read data not a multiple of 512 → IOERR',
    build(c) { const q = readReq(c, 0, 100); return ioerrAfterData(q.head, q.status); },
  },
  {
    name: 'write data not a multiple of 512 → IOERR',
    build(c) {
      const status = c.wbuf(1);
      const head = c.r.chain([{ gpa: c.hdr(VIRTIO_BLK_T_OUT, 0), len: BLK_HEADER_BYTES },
        { gpa: c.rbuf(700, pattern(700, 7)), len: 700 }, { gpa: status, len: 1, write: true }]);
      c.r.offer(head);
      return ioerr(head, status);
    },
  },
  {
    name: 'zero-length status after a data buffer → IOERR in the last writable byte',
    build(c) {
      // virtio 1.2 §5.2.6: the status is the last device-writable byte; a zero-length
      // descriptor has none, so the data buffer's last byte is it (and 511 data bytes are not
      // whole sectors).
      const data = c.wbuf(512);
      const head = c.r.chain([{ gpa: c.hdr(VIRTIO_BLK_T_IN, 0), len: BLK_HEADER_BYTES },
        { gpa: data, len: 512, write: true }, { gpa: c.wbuf(1), len: 0, write: true }]);
      c.r.offer(head);
      return ioerrAfterData(head, data + 511);
    },
  },
  {
    name: 'unknown request type → UNSUPP',
    build(c) {
      const status = c.wbuf(1);
      const head = c.r.chain([{ gpa: c.hdr(0xdead, 0), len: BLK_HEADER_BYTES }, { gpa: status, len: 1, write: true }]);
      c.r.offer(head);
      return { kind: 'status', head, statusGpa: status, status: VIRTIO_BLK_S_UNSUPP, usedLen: 1 };
    },
  },
  {
    name: 'discard with the UNMAP flag → UNSUPP',
    build(c) {
      const status = c.wbuf(1);
      const head = c.r.chain([{ gpa: c.hdr(VIRTIO_BLK_T_DISCARD, 0), len: BLK_HEADER_BYTES },
        { gpa: c.rbuf(16, blkRange(0, 8, 1)), len: 16 }, { gpa: status, len: 1, write: true }]);
      c.r.offer(head);
      return { kind: 'status', head, statusGpa: status, status: VIRTIO_BLK_S_UNSUPP, usedLen: 1 };
    },
  },
  {
    name: 'write-zeroes range past capacity → IOERR',
    build(c) {
      const status = c.wbuf(1);
      const head = c.r.chain([{ gpa: c.hdr(VIRTIO_BLK_T_WRITE_ZEROES, 0), len: BLK_HEADER_BYTES },
        { gpa: c.rbuf(16, blkRange(CAPACITY_SECTORS - 4, 8, 0)), len: 16 }, { gpa: status, len: 1, write: true }]);
      c.r.offer(head);
      return ioerr(head, status);
    },
  },
  {
    name: 'discard ranges not a multiple of 16 bytes → IOERR',
    build(c) {
      const status = c.wbuf(1);
      const head = c.r.chain([{ gpa: c.hdr(VIRTIO_BLK_T_DISCARD, 0), len: BLK_HEADER_BYTES },
        { gpa: c.rbuf(20, new Uint8Array(20)), len: 20 }, { gpa: status, len: 1, write: true }]);
      c.r.offer(head);
      return ioerr(head, status);
    },
  },

  {
    name: 'more data segments than seg_max (300 × 512 bytes, indirect) → IOERR',
    build(c) {
      const status = c.wbuf(1);
      const e: [number, number, number, number][] = [[c.hdr(VIRTIO_BLK_T_IN, 0), BLK_HEADER_BYTES, N, 1]];
      for (let k = 0; k < 300; k++) e.push([c.wbuf(512), 512, W | N, k + 2]);
      e.push([status, 1, W, 0]);
      const head = viaIndirect(c, table(c, e), e.length * 16);
      return ioerrAfterData(head, status);
    },
  },
  {
    name: 'a 1 GiB read (1024 aliased 1 MiB buffers) → IOERR, nothing written',
    build(c) {
      const status = c.wbuf(1);
      const big = c.a.alloc(0x10_0000, { region: 1 }); // not declared writable: IOERR writes no data
      const e: [number, number, number, number][] = [[c.hdr(VIRTIO_BLK_T_IN, 0), BLK_HEADER_BYTES, N, 1]];
      for (let k = 0; k < 1022; k++) e.push([big, 0x10_0000, W | N, k + 2]);
      e.push([status, 1, W, 0]);
      const head = viaIndirect(c, table(c, e), e.length * 16);
      return ioerrAfterData(head, status);
    },
  },
  {
    name: 'header split over 16 one-byte descriptors (legal) → read OK',
    build(c) {
      const h = blkHeader(VIRTIO_BLK_T_IN, 0);
      const status = c.wbuf(1);
      const e: [number, number, number, number][] = [];
      for (let k = 0; k < BLK_HEADER_BYTES; k++) e.push([c.rbuf(1, h.subarray(k, k + 1)), 1, N, k + 1]);
      e.push([c.wbuf(512), 512, W | N, BLK_HEADER_BYTES + 1]);
      e.push([status, 1, W, 0]);
      const head = viaIndirect(c, table(c, e), e.length * 16);
      return { kind: 'status', head, statusGpa: status, status: VIRTIO_BLK_S_OK, usedLen: 513 };
    },
  },
  {
    name: 'garbage in avail.flags and used_event (notification fields) → read OK',
    build(c) {
      const q = readReq(c, 0, 512);
      c.a.write(c.r.availGpa, Uint8Array.of(0xff, 0xff));                  // avail.flags
      c.a.write(c.r.availGpa + 4 + 2 * QUEUE_SIZE, Uint8Array.of(0x34, 0x92)); // used_event
      return { kind: 'status', head: q.head, statusGpa: q.status, status: VIRTIO_BLK_S_OK, usedLen: 513 };
    },
  },

  // --- chains the device cannot answer: the ring is broken ---------------------------------------
  {
    name: 'status in a device-readable descriptor after writable data (readable after writable)',
    build(c) {
      const head = c.r.chain([{ gpa: c.hdr(VIRTIO_BLK_T_IN, 0), len: BLK_HEADER_BYTES },
        { gpa: c.wbuf(512), len: 512, write: true }, { gpa: c.rbuf(1), len: 1 }]);
      c.r.offer(head);
      return broken;
    },
  },
  {
    name: 'status in a device-readable descriptor (write request, no writable byte)',
    build(c) {
      const head = c.r.chain([{ gpa: c.hdr(VIRTIO_BLK_T_OUT, 0), len: BLK_HEADER_BYTES },
        { gpa: c.rbuf(512, pattern(512, 3)), len: 512 }, { gpa: c.rbuf(1), len: 1 }]);
      c.r.offer(head);
      return broken;
    },
  },
  {
    name: 'zero-length status and no other writable byte',
    build(c) {
      const head = c.r.chain([{ gpa: c.hdr(VIRTIO_BLK_T_IN, 0), len: BLK_HEADER_BYTES }, { gpa: c.wbuf(1), len: 0, write: true }]);
      c.r.offer(head);
      return broken;
    },
  },
  { name: 'descriptor address in the gap between regions', build(c) { withData(c, GAP, 512); return broken; } },
  { name: 'descriptor address below the first region', build(c) { withData(c, 0x1000, 512); return broken; } },
  { name: 'descriptor address ≥ 2^53', build(c) { withData(c, 2 ** 60, 512); return broken; } },
  {
    name: 'descriptor addr + len overflowing 64 bits',
    build(c) {
      const head = c.r.takeDescs(3);
      c.r.desc(head, c.hdr(VIRTIO_BLK_T_IN, 0), BLK_HEADER_BYTES, N, head + 1);
      // addr = 2^64 - 256, len 512: the end wraps to 256.
      c.r.descWords(head + 1, 0xffffff00, 0xffffffff, 512, W | N, head + 2);
      c.r.desc(head + 2, c.wbuf(1), 1, W, 0);
      c.r.offer(head);
      return broken;
    },
  },
  { name: 'len crossing the end of region 0 (into the gap)', build(c) { withData(c, REGION0_END - 256, 512); return broken; } },
  { name: 'len crossing the end of the last region', build(c) { withData(c, REGION1_END - 256, 512); return broken; } },
  { name: 'len 0xffffffff from a valid address', build(c) { withData(c, c.wbuf(512), 0xffffffff); return broken; } },
  {
    name: 'chain loop (a → b → a)',
    build(c) {
      const head = rawChain(c, [[c.hdr(VIRTIO_BLK_T_IN, 0), BLK_HEADER_BYTES, N, 1], [c.wbuf(512), 512, W | N, 0]]);
      c.r.offer(head);
      return broken;
    },
  },
  {
    name: 'descriptor chained to itself',
    build(c) { const head = rawChain(c, [[c.wbuf(512), 512, W | N, 0]]); c.r.offer(head); return broken; },
  },
  {
    name: 'chain longer than the queue (all descriptors, then back to the first)',
    build(c) {
      const first = c.r.takeDescs(QUEUE_SIZE);
      c.r.desc(first, c.hdr(VIRTIO_BLK_T_IN, 0), BLK_HEADER_BYTES, N, first + 1);
      for (let k = 1; k < QUEUE_SIZE; k++) c.r.desc(first + k, c.wbuf(512), 512, W | N, (first + k + 1) % QUEUE_SIZE);
      c.r.offer(first);
      return broken;
    },
  },
  {
    name: 'next index = queue size',
    build(c) {
      const head = rawChain(c, [[c.hdr(VIRTIO_BLK_T_IN, 0), BLK_HEADER_BYTES, N, 0]]);
      c.r.desc(head, c.hdr(VIRTIO_BLK_T_IN, 0), BLK_HEADER_BYTES, N, QUEUE_SIZE);
      c.r.offer(head);
      return broken;
    },
  },
  {
    name: 'next index 0xffff',
    build(c) {
      const head = c.r.takeDescs(1);
      c.r.desc(head, c.hdr(VIRTIO_BLK_T_IN, 0), BLK_HEADER_BYTES, N, 0xffff);
      c.r.offer(head);
      return broken;
    },
  },
  { name: 'head index = queue size in the avail ring', build(c) { c.r.offer(QUEUE_SIZE); return broken; } },
  { name: 'head index 0xffff in the avail ring', build(c) { c.r.offer(0xffff); return broken; } },
  {
    name: 'avail index jumping by queue size + 1',
    build(c) {
      // One valid chain, offered queue size + 1 times: only the index jump is wrong.
      const q = readReq(c, 0, 512);
      for (let k = 0; k < QUEUE_SIZE; k++) c.r.offer(q.head);
      return broken;
    },
  },
  {
    name: 'avail index jumping backwards (0 → 0xffff)',
    build(c) { readReq(c, 0, 512); c.r.setAvailIdx(0xffff); return broken; },
  },
  { name: 'indirect table that is empty (len 0)', build(c) { viaIndirect(c, table(c, readEntries(c)), 0); return broken; } },
  {
    name: 'indirect table not a multiple of 16 bytes',
    build(c) { viaIndirect(c, table(c, readEntries(c), 8), 3 * 16 + 8); return broken; },
  },
  {
    name: 'nested indirect table',
    build(c) {
      const inner = table(c, readEntries(c));
      viaIndirect(c, table(c, [[inner, 48, I, 0]]), 16);
      return broken;
    },
  },
  {
    name: 'indirect descriptor with NEXT set',
    build(c) {
      const t = table(c, readEntries(c));
      const head = rawChain(c, [[t, 48, I | N, 1], [c.wbuf(1), 1, W, 0]]);
      c.r.offer(head);
      return broken;
    },
  },
  { name: 'indirect table outside guest memory', build(c) { viaIndirect(c, GAP, 48); return broken; } },
  { name: 'indirect table crossing the end of region 0', build(c) { viaIndirect(c, REGION0_END - 32, 48); return broken; } },
  {
    name: 'indirect entry with next beyond the table',
    build(c) {
      const e = readEntries(c);
      e[1] = [e[1][0], e[1][1], e[1][2], 3];
      viaIndirect(c, table(c, e), 48);
      return broken;
    },
  },
  {
    name: 'indirect table loop',
    build(c) {
      const e = readEntries(c);
      e[2] = [e[2][0], e[2][1], W | N, 1];
      viaIndirect(c, table(c, e), 48);
      return broken;
    },
  },
  {
    name: 'indirect table larger than 1024 entries',
    build(c) {
      const e: [number, number, number, number][] = [];
      const hdr = c.hdr(VIRTIO_BLK_T_IN, 0), data = c.wbuf(512);
      for (let k = 0; k < 1025; k++) e.push(k === 0 ? [hdr, BLK_HEADER_BYTES, N, 1] : [data, 512, W | (k < 1024 ? N : 0), k + 1]);
      viaIndirect(c, table(c, e), 1025 * 16);
      return broken;
    },
  },
  {
    name: 'a good read, then a chain loop, then a good read, in one kick',
    build(c) {
      // The first read was accepted before the fault: it completes; nothing after the fault does.
      const first = readReq(c, 0, 512);
      const loop = c.r.takeDescs(1);
      c.r.desc(loop, c.a.alloc(512), 512, W | N, loop); // not declared writable
      c.r.offer(loop);
      const third = c.r.chain([{ gpa: c.hdr(VIRTIO_BLK_T_IN, 0), len: BLK_HEADER_BYTES },
        { gpa: c.a.alloc(512), len: 512, write: true }, { gpa: c.a.alloc(1), len: 1, write: true }]);
      c.r.offer(third);
      return { kind: 'broken', completes: [{ head: first.head, usedLen: 513, statusGpa: first.status, status: VIRTIO_BLK_S_OK }] };
    },
  },
  {
    name: 'the same head offered twice while in flight (both executed, nothing else touched)',
    build(c) {
      // A driver bug, not a malformed chain: the device cannot tell it from two requests, and
      // (like QEMU's and libvhost-user's) executes it twice into the same, offered, buffers.
      const q = readReq(c, 0, 512);
      c.r.offer(q.head);
      return { kind: 'status', head: q.head, statusGpa: q.status, status: VIRTIO_BLK_S_OK, usedLen: 513, times: 2 };
    },
  },
  {
    name: 'indirect descriptor when INDIRECT_DESC was not negotiated',
    features: ~(1n << BigInt(VIRTIO_RING_F_INDIRECT_DESC)),
    build(c) { viaIndirect(c, table(c, readEntries(c)), 48); return broken; },
  },
];

const backend = await BackendProcess.startBlk({ imageBytes: CAPACITY_SECTORS * 512, queueSize: 256, extraArgs: ['--num-queues', '2'] });
t.teardown(() => backend.stop());
let seed = 1;

function ctxFor(s: AttackSession): Ctx {
  const a = s.arena;
  const rbuf = (len: number, bytes?: Uint8Array): number => {
    const g = a.alloc(len);
    if (bytes !== undefined) a.write(g, bytes);
    return g;
  };
  return {
    r: s.ring(R), a,
    hdr: (type, sector) => rbuf(BLK_HEADER_BYTES, blkHeader(type, sector)),
    rbuf,
    wbuf: (len) => { const g = a.alloc(len); a.allow(g, len); return g; },
  };
}

/** A fresh connection after a case: normal I/O must work, and the process must be alive. */
async function freshConnectionWorks(tt: Test): Promise<void> {
  const s = await AttackSession.open(backend.socket, { queues: [R], queueSize: QUEUE_SIZE });
  try {
    tt.same(await blkNormalIo(s, R, seed++), [], 'a fresh connection does normal I/O (write, flush, read back, get-id)');
  } finally {
    s.close();
  }
}

// Read inside a subtest, not by a top-level await between subtests: with t.teardown in use, tap
// ends the root test as soon as it is idle, and the cases below would then be refused.
let counters = new Map<string, number>();

t.test('baseline: normal I/O on a fresh connection', async (tt) => {
  await freshConnectionWorks(tt);
  tt.ok(backend.alive, 'back-end alive');
  counters = await backend.counters();
});

/** The counter a case's outcome must bump by exactly one. */
function counterOf(e: Expectation): string {
  if (e.kind === 'broken') return 'vhost_blk_bad_chains_total';
  if (e.kind === 'status' && e.status === VIRTIO_BLK_S_OK) return 'vhost_blk_requests_total';
  return e.kind === 'status' && e.status === VIRTIO_BLK_S_UNSUPP ? 'vhost_blk_unsupported_total' : 'vhost_blk_errors_total';
}


for (const c of CASES) {
  t.test(c.name, async (tt) => {
    const s = await AttackSession.open(backend.socket, { queues: [R], queueSize: QUEUE_SIZE, features: c.features });
    let expect: Expectation;
    try {
      tt.ok(s.hasStatus, 'STATUS protocol feature negotiated (NEEDS_RESET is observable)');
      const ctx = ctxFor(s);
      expect = c.build(ctx);
      const { problems, observed } = await runCase(s, expect, {
        ring: R,
        probe: () => blkProbe(ctx.r, s.arena),
        poke: () => { ctx.r.recycleDescs(); placeBlkRequest(ctx.r, s.arena, blkHeader(VIRTIO_BLK_T_IN, 0), { inLen: 512 }); ctx.r.kick(); },
      });
      tt.same(problems, [], `${expect.kind}: ${observed}`);
    } finally {
      s.close();
    }
    tt.ok(backend.alive, `back-end alive (${backend.alive ? 'running' : backend.exitDescription})`);
    await freshConnectionWorks(tt);
    // One counter dump per case (the fresh connection's 4 good requests only move requests_total).
    const now = await backend.counters();
    const name = counterOf(expect);
    const want = expect.kind === 'status' && expect.status === VIRTIO_BLK_S_OK ? (expect.times ?? 1) + 1 /* probe */ + 4 : 1;
    tt.equal((now.get(name) ?? 0) - (counters.get(name) ?? 0), want, `counted ${want === 1 ? 'once' : `${want} times`} in ${name}`);
    counters = now;
  });
}

t.test('a fault on queue 0 leaves queue 1 working (one device break, one notification)', async (tt) => {
  const s = await AttackSession.open(backend.socket, { queues: [0, 1], queueSize: QUEUE_SIZE });
  try {
    const r0 = s.ring(0);
    r0.offer(QUEUE_SIZE); // head out of range
    r0.kick();
    tt.ok(await r0.waitErr(5000), 'queue 0: error eventfd signalled');
    tt.ok(await s.needsReset(), 'NEEDS_RESET');
    tt.same(await blkNormalIo(s, 1, seed++), [], 'queue 1 still does normal I/O');
    tt.notOk(s.ring(1).errSignaled(), 'queue 1 not broken');
    tt.equal(s.configChanges, 1, 'one CONFIG_CHANGE_MSG');
  } finally {
    s.close();
  }
  tt.ok(backend.alive, 'back-end alive');
});

t.test('back-end alive at the end', async (tt) => {
  tt.ok(backend.alive, 'back-end alive');
  tt.equal(backend.logs().includes('Uncaught'), false, 'no uncaught exception in the logs');
});
