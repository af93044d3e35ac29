import { closeSync, openSync, readFileSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import t from 'tap';
import {
  close, eventfdRead, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, FdWatcher, ftruncate,
  IORING_OP, IOSQE_ASYNC, IoUring, memfdCreate, mmap, munmap, OP_STRIDE, openFile, READABLE, sendMsg, socketpair,
} from '../src/index.js';
import { tempDir, throwsSys } from './helpers.js';

const EBADF = 9;

/** Waits, on the Node loop, for `n` completions signalled through the ring's eventfd. */
function completions(ring: IoUring, n: number): Promise<Map<number, number>> {
  const out = new Float64Array(64);
  const got = new Map<number, number>();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      w.close();
      reject(new Error(`timed out with ${got.size}/${n} completions`));
    }, 5000);
    const drain = (): void => {
      eventfdRead(ring.eventFd);
      for (let c = ring.reap(out); c > 0; c = ring.reap(out)) {
        for (let i = 0; i < c; i++) got.set(out[2 * i]!, out[2 * i + 1]!);
      }
      if (got.size >= n) {
        clearTimeout(timer);
        w.close();
        resolve(got);
      }
    };
    const w = new FdWatcher(ring.eventFd, drain);
    w.start(READABLE);
    drain(); // some may already be there
  });
}

/** Writes one op record at slot `i`. */
function op(ops: Float64Array, i: number, rec: number[]): void {
  ops.set(rec, i * OP_STRIDE);
}

function guestMemory(size: number): { fd: number; buf: ArrayBuffer } {
  const fd = memfdCreate('vts-ring');
  ftruncate(fd, size);
  return { fd, buf: mmap(fd, size, 0) };
}

t.test('writev from a memfd mapping into a file, readv back', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'disk.img');
  const file = openFile(path, { write: true, create: true });
  const mem = guestMemory(1 << 16);
  const bytes = new Uint8Array(mem.buf);
  for (let i = 0; i < 8192; i++) bytes[i] = (i * 7 + 3) & 0xff;
  const ring = new IoUring(8);
  t.equal(ring.entries, 8);
  t.ok(ring.eventFd > 2, 'registered eventfd');
  ring.setBuffer(0, mem.buf);
  const ops = new Float64Array(4 * OP_STRIDE);
  // three segments, scattered in memory, written contiguously at offset 4096
  const iovs = new Float64Array([0, 0, 1000, 0, 1000, 3096, 0, 4096, 4096]);
  op(ops, 0, [IORING_OP.WRITEV, file, 4096, 11, 0, 3, 0, 0]);
  t.equal(ring.submit(ops, 1, iovs), 1, 'one op submitted');
  t.equal(ring.inflight, 1);
  const w = await completions(ring, 1);
  t.equal(w.get(11), 8192, 'writev completed with the byte count');
  t.equal(ring.inflight, 0);
  const disk = readFileSync(path);
  t.same(disk.subarray(4096, 4096 + 8192), Buffer.from(bytes.subarray(0, 8192)), 'file holds the data');
  // read it back into another part of the mapping, two segments
  const back = new Float64Array([0, 32768, 5000, 0, 40000, 3192]);
  op(ops, 0, [IORING_OP.READV, file, 4096, 12, 0, 2, 0, 0]);
  ring.submit(ops, 1, back);
  const r = await completions(ring, 1);
  t.equal(r.get(12), 8192, 'readv byte count');
  t.same(bytes.subarray(32768, 32768 + 5000), bytes.subarray(0, 5000), 'first segment equal');
  t.same(bytes.subarray(40000, 40000 + 3192), bytes.subarray(5000, 8192), 'second segment equal');
  ring.close();
  munmap(mem.buf);
  close(mem.fd);
  close(file);
});

t.test('READ / WRITE with one triple; Uint8Array windows as buffers', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'rw.img');
  const file = openFile(path, { write: true, create: true });
  const backing = new ArrayBuffer(8192);
  const win = new Uint8Array(backing, 4096, 4096); // buffer 1 = second half of `backing`
  win.fill(0xab, 0, 100);
  const ring = new IoUring(4);
  ring.setBuffer(1, win);
  const ops = new Float64Array(2 * OP_STRIDE);
  op(ops, 0, [IORING_OP.WRITE, file, 0, 1, 0, 1, 0, 0]);
  ring.submit(ops, 1, new Float64Array([1, 0, 100]));
  t.equal((await completions(ring, 1)).get(1), 100);
  t.same(readFileSync(path), Buffer.alloc(100, 0xab), 'written from the window, not from offset 0 of backing');
  op(ops, 0, [IORING_OP.READ, file, 50, 2, 0, 1, 0, 0]);
  ring.submit(ops, 1, new Float64Array([1, 1000, 50]));
  t.equal((await completions(ring, 1)).get(2), 50);
  t.equal(new Uint8Array(backing)[4096 + 1000], 0xab, 'read landed inside the window');
  throwsSys(
    t,
    () => ring.submit(ops, 1, new Float64Array([1, 4000, 200])),
    'EINVAL',
    'io_uring_submit',
    'range beyond the window end is rejected even though backing is larger',
  );
  op(ops, 0, [IORING_OP.READ, file, 0, 3, 0, 2, 0, 0]);
  throwsSys(t, () => ring.submit(ops, 1, new Float64Array(6)), 'EINVAL', 'io_uring_submit', 'READ with two iovecs');
  ring.close();
  close(file);
});

t.test('IOSQE_ASYNC on reads and writes: same results through a kernel worker', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'async.img');
  writeFileSync(path, Buffer.alloc(1 << 20, 0x5a));
  const file = openFile(path, { write: true });
  const mem = guestMemory(1 << 20);
  const ring = new IoUring(4);
  ring.setBuffer(0, mem.buf);
  const ops = new Float64Array(2 * OP_STRIDE);
  op(ops, 0, [IORING_OP.READ, file, 0, 1, 0, 1, IOSQE_ASYNC, 0]);
  op(ops, 1, [IORING_OP.READV, file, 4096, 2, 1, 1, IOSQE_ASYNC, 0]);
  t.equal(ring.submit(ops, 2, new Float64Array([0, 0, 1 << 19, 0, 1 << 19, 1 << 19])), 2);
  const got = await completions(ring, 2);
  t.equal(got.get(1), 1 << 19);
  t.equal(got.get(2), 1 << 19);
  t.ok(new Uint8Array(mem.buf).every((b) => b === 0x5a), 'both halves read');
  new Uint8Array(mem.buf).fill(0x33, 0, 4096);
  op(ops, 0, [IORING_OP.WRITE, file, 8192, 3, 0, 1, IOSQE_ASYNC, 0]);
  ring.submit(ops, 1, new Float64Array([0, 0, 4096]));
  t.equal((await completions(ring, 1)).get(3), 4096);
  t.ok(readFileSync(path).subarray(8192, 12288).every((b) => b === 0x33), 'written');
  ring.close();
  close(mem.fd);
  close(file);
});

t.test('a batch of many ops in one submit; SQ full returns what fit', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'batch.img');
  const file = openFile(path, { write: true, create: true });
  const mem = new Uint8Array(64 * 512);
  for (let i = 0; i < 64; i++) mem.fill(i + 1, i * 512, (i + 1) * 512);
  const ring = new IoUring(32);
  ring.setBuffer(0, mem.buffer);
  const ops = new Float64Array(64 * OP_STRIDE);
  const iovs = new Float64Array(64 * 3);
  for (let i = 0; i < 64; i++) {
    iovs.set([0, i * 512, 512], i * 3);
    op(ops, i, [IORING_OP.WRITEV, file, (63 - i) * 512, 1000 + i, i, 1, 0, 0]);
  }
  const first = ring.submit(ops, 64, iovs);
  t.equal(first, 32, 'only a full SQ worth (32) submitted');
  const done1 = await completions(ring, 32);
  t.equal(done1.size, 32);
  // the remaining 32 records: pass a subarray starting at record 32
  const second = ring.submit(ops.subarray(32 * OP_STRIDE), 32, iovs);
  t.equal(second, 32, 'the rest fits after reaping');
  const done2 = await completions(ring, 32);
  const all = new Map([...done1, ...done2]);
  t.equal(all.size, 64, '64 completions');
  t.ok([...all.values()].every((res) => res === 512), 'all wrote 512 bytes');
  const disk = readFileSync(path);
  for (let i = 0; i < 64; i++) t.equal(disk[(63 - i) * 512], i + 1, `block ${i} at its offset`);
  ring.close();
  close(file);
});

t.test('fdatasync, fsync and fallocate', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'falloc.img');
  writeFileSync(path, Buffer.alloc(65536, 0x5a));
  const file = openFile(path, { write: true });
  const ring = new IoUring(8);
  const ops = new Float64Array(8 * OP_STRIDE);
  const none = new Float64Array(0);
  op(ops, 0, [IORING_OP.FDATASYNC, file, 0, 1, 0, 0, 0, 0]);
  op(ops, 1, [IORING_OP.FSYNC, file, 0, 2, 0, 0, 0, 0]);
  op(ops, 2, [IORING_OP.FALLOCATE, file, 4096, 3, 0, 0, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 8192]);
  op(ops, 3, [IORING_OP.FALLOCATE, file, 32768, 4, 0, 0, FALLOC_FL_ZERO_RANGE, 4096]);
  op(ops, 4, [IORING_OP.FALLOCATE, file, 65536, 5, 0, 0, FALLOC_FL_ZERO_RANGE, 4096]); // extends the file
  t.equal(ring.submit(ops, 5, none), 5);
  const res = await completions(ring, 5);
  for (let u = 1; u <= 5; u++) t.equal(res.get(u), 0, `op ${u} succeeded`);
  const disk = readFileSync(path);
  t.equal(disk.length, 65536 + 4096, 'ZERO_RANGE without KEEP_SIZE extended the file');
  t.ok(disk.subarray(4096, 12288).every((b) => b === 0), 'punched hole reads as zeros');
  t.equal(disk[4095], 0x5a, 'byte before the hole kept');
  t.equal(disk[12288], 0x5a, 'byte after the hole kept');
  t.ok(disk.subarray(32768, 36864).every((b) => b === 0), 'zeroed range');
  t.equal(disk[36864], 0x5a, 'after the zeroed range kept');
  t.ok(statSync(path).blocks * 512 < 65536 + 4096, 'the hole freed blocks');
  // a negative result is delivered as -errno, not thrown
  op(ops, 0, [IORING_OP.FDATASYNC, 999999, 0, 9, 0, 0, 0, 0]);
  ring.submit(ops, 1, none);
  t.equal((await completions(ring, 1)).get(9), -EBADF, 'bad fd completes with -EBADF');
  ring.close();
  close(file);
});

t.test('bad records and iovec triples are rejected and nothing is submitted', async (t) => {
  const mem = guestMemory(8192);
  const ring = new IoUring(8);
  ring.setBuffer(0, mem.buf);
  const dir = tempDir(t);
  const path = join(dir, 'bad.img');
  const file = openFile(path, { write: true, create: true });
  const ops = new Float64Array(2 * OP_STRIDE);
  const good = [IORING_OP.WRITEV, file, 0, 1, 0, 1, 0, 0];
  const bad = (rec: number[] | null, iovs: number[], what: string): void => {
    op(ops, 0, good);
    op(ops, 1, rec ?? good);
    throwsSys(t, () => ring.submit(ops, 2, new Float64Array(iovs)), 'EINVAL', 'io_uring_submit', what);
    t.equal(ring.inflight, 0, `${what}: nothing in flight`);
  };
  const ok = [0, 0, 16];
  bad([IORING_OP.WRITEV, file, 0, 2, 1, 1, 0, 0], [...ok, 0, 8000, 500], 'triple past the buffer end');
  bad([IORING_OP.WRITEV, file, 0, 2, 1, 1, 0, 0], [...ok, 5, 0, 16], 'buffer index not set');
  bad([IORING_OP.WRITEV, file, 0, 2, 1, 1, 0, 0], [...ok, 1024, 0, 16], 'buffer index out of table');
  bad([IORING_OP.WRITEV, file, 0, 2, 1, 1, 0, 0], [...ok, 0, -1, 16], 'negative offset');
  bad([IORING_OP.WRITEV, file, 0, 2, 1, 1, 0, 0], [...ok, 0, NaN, 16], 'NaN offset');
  bad([IORING_OP.WRITEV, file, 0, 2, 1, 1, 0, 0], [...ok, 0, 0.5, 16], 'fractional offset');
  bad([IORING_OP.WRITEV, file, 0, 2, 1, 2, 0, 0], [...ok, ...ok], 'iov range past the iovs array');
  bad([IORING_OP.WRITEV, file, 0, 2, 0, 0, 0, 0], ok, 'zero iovecs');
  bad([IORING_OP.WRITEV, file, 0, 2, 0, 1025, 0, 0], ok, 'more than 1024 iovecs');
  bad([0, file, 0, 2, 0, 1, 0, 0], ok, 'opcode 0');
  bad([99, file, 0, 2, 0, 1, 0, 0], ok, 'unknown opcode');
  bad([IORING_OP.WRITEV, -1, 0, 2, 0, 1, 0, 0], ok, 'negative fd');
  bad([IORING_OP.WRITEV, file, 2 ** 53, 2, 0, 1, 0, 0], ok, 'offset 2^53');
  bad([IORING_OP.WRITEV, file, 0, 2 ** 40, 0, 1, 0, 0], ok, 'userData 2^40 (the internal tag)');
  bad([IORING_OP.WRITEV, file, 0, 1.5, 0, 1, 0, 0], ok, 'fractional userData');
  bad([IORING_OP.WRITEV, file, 0, 2, 0, 1, 1, 0], ok, 'read/write flag other than IOSQE_ASYNC (IOSQE_FIXED_FILE)');
  bad([IORING_OP.WRITEV, file, 0, 2, 0, 1, IOSQE_ASYNC | 4, 0], ok, 'IOSQE_ASYNC with IOSQE_IO_LINK');
  bad([IORING_OP.WRITEV, file, 0, 2, 0, 1, 256, 0], ok, 'flags beyond a byte');
  bad([IORING_OP.FALLOCATE, file, 0, 2, 0, 0, 0, 0], ok, 'fallocate length 0');
  bad([IORING_OP.FALLOCATE, file, 0, 2, 0, 0, 0x100, 10], ok, 'fallocate mode out of range');
  throwsSys(t, () => ring.submit(ops, 3, new Float64Array(3)), 'EINVAL', 'io_uring_submit', 'count beyond ops');
  throwsSys(t, () => ring.submit([] as unknown as Float64Array, 0, new Float64Array(3)), 'EINVAL', 'io_uring_submit', 'ops not Float64Array');
  throwsSys(t, () => ring.reap(new Float64Array(1)), 'EINVAL', 'io_uring_reap', 'reap buffer too small');
  throwsSys(t, () => ring.setBuffer(1024, null), 'EINVAL', 'io_uring_setbuffer', 'index 1024');
  throwsSys(t, () => ring.setBuffer(0, new Uint16Array(4) as unknown as Uint8Array), 'EINVAL', 'io_uring_setbuffer', 'Uint16Array');
  throwsSys(t, () => ring.setBuffer(0, new SharedArrayBuffer(8) as unknown as ArrayBuffer), 'EINVAL', 'io_uring_setbuffer', 'SharedArrayBuffer');
  // a munmapped (detached) buffer has length 0: every non-empty triple fails
  munmap(mem.buf);
  op(ops, 0, good);
  throwsSys(t, () => ring.submit(ops, 1, new Float64Array(ok)), 'EINVAL', 'io_uring_submit', 'detached buffer');
  ring.setBuffer(0, null);
  throwsSys(t, () => ring.submit(ops, 1, new Float64Array(ok)), 'EINVAL', 'io_uring_submit', 'cleared buffer');
  // and nothing was ever written
  t.equal(ring.reap(new Float64Array(8)), 0, 'no completions from rejected batches');
  t.equal(statSync(path).size, 0, 'file untouched');
  ring.close();
  close(mem.fd);
  close(file);
});

t.test('CQ overflow backlog is reaped (IORING_FEAT_NODROP)', async (t) => {
  const dir = tempDir(t);
  const file = openFile(join(dir, 'ovf.img'), { write: true, create: true });
  const ring = new IoUring(4); // CQ has 8 entries
  const ops = new Float64Array(4 * OP_STRIDE);
  let ud = 0;
  for (let round = 0; round < 6; round++) {
    for (let i = 0; i < 4; i++) op(ops, i, [IORING_OP.FDATASYNC, file, 0, ud++, 0, 0, 0, 0]);
    t.equal(ring.submit(ops, 4, new Float64Array(0)), 4, `round ${round} submitted`);
    // let this round complete before the next, so the unreaped CQ overflows
    await new Promise((r) => setTimeout(r, 20));
  }
  await new Promise((r) => setTimeout(r, 50));
  const out = new Float64Array(2 * 64);
  const seen = new Set<number>();
  const first = ring.reap(out);
  t.equal(first, 24, 'one reap call drains the ring and the overflow backlog');
  for (let i = 0; i < first; i++) {
    seen.add(out[2 * i]!);
    t.equal(out[2 * i + 1], 0, 'res 0');
  }
  t.equal(seen.size, 24, 'all 24 completions delivered although the CQ holds 8');
  t.equal(ring.inflight, 0);
  ring.close();
  close(file);
});

t.test('lifecycle and constructor errors', async (t) => {
  throwsSys(t, () => new IoUring(3), 'EINVAL', 'io_uring_setup', 'not a power of two');
  throwsSys(t, () => new IoUring(0), 'EINVAL', 'io_uring_setup', 'zero');
  throwsSys(t, () => new IoUring(8192), 'EINVAL', 'io_uring_setup', 'over 4096');
  const ring = new IoUring(4096);
  t.equal(ring.entries, 4096);
  const efd = ring.eventFd;
  ring.close();
  ring.close();
  throwsSys(t, () => eventfdRead(efd), 'EBADF', 'read', 'eventfd closed with the ring');
  throwsSys(t, () => ring.submit(new Float64Array(8), 0, new Float64Array(0)), 'EBADF', 'io_uring_submit', 'submit after close');
  throwsSys(t, () => ring.reap(new Float64Array(2)), 'EBADF', 'io_uring_reap', 'reap after close');
  throwsSys(t, () => ring.setBuffer(0, null), 'EBADF', 'io_uring_setbuffer', 'setBuffer after close');
  // close with a request in flight: drained, then closed
  const dir = tempDir(t);
  const path = join(dir, 'inflight.img');
  const fd = openSync(path, 'w');
  writeSync(fd, Buffer.alloc(1 << 20, 1));
  closeSync(fd);
  const file = openFile(path);
  const r2 = new IoUring(8);
  const buf = new ArrayBuffer(1 << 20);
  r2.setBuffer(0, buf);
  const ops = new Float64Array(OP_STRIDE);
  op(ops, 0, [IORING_OP.READV, file, 0, 1, 0, 1, 0, 0]);
  r2.submit(ops, 1, new Float64Array([0, 0, 1 << 20]));
  r2.close();
  t.equal(r2.inflight, 0, 'nothing left in flight after close');
  close(file);
});

t.test('buffers stay alive while requests are in flight; close() cancels pending ones', async (t) => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const [a, b] = socketpair();
  const ring = new IoUring(4);
  let collected = false;
  const registry = new FinalizationRegistry(() => {
    collected = true;
  });
  (() => {
    const buf = new ArrayBuffer(1 << 16);
    registry.register(buf, 'buf');
    ring.setBuffer(0, buf);
  })();
  const ops = new Float64Array(OP_STRIDE);
  op(ops, 0, [IORING_OP.READ, b, 0, 77, 0, 1, 0, 0]); // waits: nothing written to the socket yet
  t.equal(ring.submit(ops, 1, new Float64Array([0, 0, 100])), 1);
  ring.setBuffer(0, null); // the kernel still holds the address
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 10));
  }
  t.notOk(collected, 'cleared buffer is not collected while its read is in flight');
  sendMsg(a, new Uint8Array([1, 2, 3]));
  const res = await completions(ring, 1);
  t.equal(res.get(77), 3, 'read completed');
  for (let i = 0; i < 5 && !collected; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 10));
  }
  t.ok(collected, 'released once the ring is idle');

  // close() with a read that would never complete: cancelled, not a 2 s wait
  ring.setBuffer(1, new ArrayBuffer(64));
  op(ops, 0, [IORING_OP.READ, b, 0, 78, 0, 1, 0, 0]);
  ring.submit(ops, 1, new Float64Array([1, 0, 64]));
  const start = Date.now();
  ring.close();
  t.ok(Date.now() - start < 1000, `close() returned after ${Date.now() - start} ms`);
  t.equal(ring.inflight, 0);
  close(a);
  close(b);
});

t.test('completionsReady: sees a posted completion without consuming it, false once reaped or closed', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'ready.img');
  writeFileSync(path, Buffer.alloc(4096, 1));
  const file = openFile(path, { write: true });
  const ring = new IoUring(8);
  const ops = new Float64Array(8 * OP_STRIDE);
  const none = new Float64Array(0);
  t.equal(ring.completionsReady(), false, 'an empty ring');
  op(ops, 0, [IORING_OP.FDATASYNC, file, 0, 7, 0, 0, 0, 0]);
  t.equal(ring.submit(ops, 1, none), 1);
  const deadline = Date.now() + 5000;
  while (!ring.completionsReady() && Date.now() < deadline) await new Promise((r) => setImmediate(r));
  t.equal(ring.completionsReady(), true, 'the fdatasync completion is posted');
  t.equal(ring.completionsReady(), true, 'looking again does not consume it');
  const out = new Float64Array(16);
  t.equal(ring.reap(out), 1, 'reap still finds it');
  t.same([out[0], out[1]], [7, 0]);
  t.equal(ring.completionsReady(), false, 'nothing left after the reap');
  ring.close();
  t.equal(ring.completionsReady(), false, 'a closed ring has none');
  close(file);
});

t.test('runInline: the same records on the calling thread, results as reap gives them', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'inline.img');
  writeFileSync(path, Buffer.alloc(65536, 0x5a));
  const file = openFile(path, { write: true });
  const mem = guestMemory(1 << 16);
  const bytes = new Uint8Array(mem.buf);
  for (let i = 0; i < 8192; i++) bytes[i] = (i * 13 + 1) & 0xff;
  const ring = new IoUring(4);
  ring.setBuffer(0, mem.buf);
  const ops = new Float64Array(8 * OP_STRIDE);
  const out = new Float64Array(16);
  // three segments written contiguously, one plain write, a read back in two segments, a sync,
  // a punched hole, an op on a bad fd, and a read at the end of the file (0 bytes)
  const iovs = new Float64Array([0, 0, 1000, 0, 1000, 3096, 0, 4096, 4096, 0, 100, 50, 0, 32768, 5000, 0, 40000, 3192, 0, 50000, 512]);
  op(ops, 0, [IORING_OP.WRITEV, file, 4096, 11, 0, 3, 0, 0]);
  op(ops, 1, [IORING_OP.WRITE, file, 0, 12, 3, 1, IOSQE_ASYNC, 0]);
  op(ops, 2, [IORING_OP.READV, file, 4096, 13, 4, 2, 0, 0]);
  op(ops, 3, [IORING_OP.FDATASYNC, file, 0, 14, 0, 0, 0, 0]);
  op(ops, 4, [IORING_OP.FALLOCATE, file, 16384, 15, 0, 0, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096]);
  op(ops, 5, [IORING_OP.FSYNC, 999999, 0, 16, 0, 0, 0, 0]);
  op(ops, 6, [IORING_OP.READ, file, 65536, 17, 6, 1, 0, 0]);
  t.equal(ring.runInline(ops, 7, iovs, out), 7, 'seven ops run');
  t.same(Array.from(out.subarray(0, 14)), [11, 8192, 12, 50, 13, 8192, 14, 0, 15, 0, 16, -EBADF, 17, 0], '[userData, res] pairs in order');
  t.equal(ring.inflight, 0, 'nothing went to the ring');
  t.equal(ring.reap(new Float64Array(8)), 0, 'and nothing completes there');
  const disk = readFileSync(path);
  t.same(disk.subarray(4096, 4096 + 8192), Buffer.from(bytes.subarray(0, 8192)), 'writev data in the file');
  t.same(disk.subarray(0, 50), Buffer.from(bytes.subarray(100, 150)), 'write data in the file');
  t.same(bytes.subarray(32768, 32768 + 5000), bytes.subarray(0, 5000), 'readv first segment');
  t.same(bytes.subarray(40000, 40000 + 3192), bytes.subarray(5000, 8192), 'readv second segment');
  t.ok(disk.subarray(16384, 20480).every((b) => b === 0), 'punched range reads as zeros');
  // validation is submit's: a bad record anywhere runs nothing
  const before = Buffer.from(readFileSync(path).subarray(0, 50));
  bytes.fill(0xee, 100, 150);
  op(ops, 0, [IORING_OP.WRITE, file, 0, 21, 1, 1, 0, 0]);
  op(ops, 1, [IORING_OP.WRITE, file, 0, 22, 2, 1, 0, 0]);
  throwsSys(t, () => ring.runInline(ops, 2, new Float64Array([0, 0, 16, 0, 100, 50, 0, 65530, 16]), out), 'EINVAL', 'io_uring_run_inline', 'triple past the buffer end');
  throwsSys(t, () => ring.runInline(ops, 2, new Float64Array([0, 0, 16, 0, 100, 50]), out), 'EINVAL', 'io_uring_run_inline', 'iovec index past the array');
  t.same(readFileSync(path).subarray(0, 50), before, 'the valid first record of a refused batch did not run');
  throwsSys(t, () => ring.runInline(ops, 2, iovs, new Float64Array(3)), 'EINVAL', 'io_uring_run_inline', 'out too small');
  // `out` overlapping the iovec triples: op 0's result turns op 1's triple into one naming
  // buffer 5000 after the batch check; op 1 fails alone instead of using a stale iovec.
  const shared = new Float64Array(16);
  shared.set([0, 100, 50, 0, 100, 50]);
  op(ops, 0, [IORING_OP.WRITE, file, 0, 5000, 0, 1, 0, 0]);
  op(ops, 1, [IORING_OP.WRITE, file, 512, 31, 1, 1, 0, 0]);
  t.equal(ring.runInline(ops, 2, shared, shared.subarray(3)), 2);
  t.same([shared[3], shared[4], shared[5], shared[6]], [5000, 50, 31, -22], 'op 0 wrote 50 bytes; op 1 failed with EINVAL');
  // `out` overlapping the op records: op 0's result (userData 0, 50 bytes) overwrites op 1's
  // opcode and fd after the batch check.
  const recs = new Float64Array(2 * OP_STRIDE);
  op(recs, 0, [IORING_OP.WRITE, file, 0, 0, 0, 1, 0, 0]);
  op(recs, 1, [IORING_OP.WRITE, file, 0, 32, 0, 1, 0, 0]);
  const over = new Float64Array(recs.buffer, OP_STRIDE * 8, 4);
  t.equal(ring.runInline(recs, 2, new Float64Array([0, 100, 50]), over), 2);
  t.same(Array.from(over), [0, 50, 32, -22], 'a record changed by an earlier result fails alone');
  ring.close();
  throwsSys(t, () => ring.runInline(ops, 1, iovs, out), 'EBADF', 'io_uring_run_inline', 'closed ring');
  munmap(mem.buf);
  close(mem.fd);
  close(file);
});
