// The file engine's inline mode (FileImageOptions.aio): reads and writes of a file on a memory
// file system run as plain syscalls on the queue's thread, because io_uring hands every one of
// them to a kernel worker there. Same results as the ring, completed inside the kick.
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, ftruncateSync, mkdtempSync, openSync, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import {
  BlkError, FileImage, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES, type FileEngine,
} from '../src/index.js';
import { MEMORY_FS_TYPES } from '../src/engines/file-engine.js';
import { BlkRig, MmapGuest, pattern, sameBytes, segments } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'blk-inline-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
// A memory file system for the auto-detection cases (Linux mounts one at /dev/shm).
const shm = existsSync('/dev/shm') && MEMORY_FS_TYPES.includes(statfsSync('/dev/shm').type)
  ? mkdtempSync('/dev/shm/blk-inline-') : null;
if (shm !== null) t.teardown(() => rmSync(shm, { recursive: true, force: true }));

function image(at: string, name: string, bytes: Uint8Array): string {
  const p = join(at, name);
  writeFileSync(p, bytes);
  return p;
}

type Inner = FileEngine & { submitCalls: number; asyncOps: number };
const engineOf = (r: BlkRig): Inner => (r.handler as unknown as { engine: Inner }).engine;

t.test('aio auto: inline exactly for regular files on tmpfs/ramfs without O_DIRECT', async (t) => {
  const here = image(dir, 'auto.img', new Uint8Array(4096));
  const onMemFs = MEMORY_FS_TYPES.includes(statfsSync(here).type);
  const a = FileImage.open(here);
  t.equal(a.inline, onMemFs, `${tmpdir()} is ${onMemFs ? '' : 'not '}a memory file system`);
  a.close();
  const forced = FileImage.open(here, { aio: 'inline' });
  t.equal(forced.inline, true, 'aio inline forces it');
  t.match(forced.description, /inline I\/O/, 'and the description says so');
  forced.close();
  t.throws(() => FileImage.open(here, { aio: 'inline', direct: true }), BlkError, 'inline with O_DIRECT is refused');
  t.throws(() => FileImage.open(here, { aio: 'threads' as never }), BlkError, 'unknown mode refused');
  if (shm === null) {
    t.comment('SKIPPED the /dev/shm cases: no memory file system mounted there');
    return;
  }
  const s = image(shm, 'auto.img', new Uint8Array(4096));
  const b = FileImage.open(s);
  t.equal(b.inline, true, 'a tmpfs file: inline');
  b.close();
  const c = FileImage.open(s, { aio: 'io_uring' });
  t.equal(c.inline, false, 'aio io_uring keeps the ring');
  c.close();
  // A block device node lives on devtmpfs, whose f_type is TMPFS_MAGIC too: not a regular file.
  if (process.getuid?.() !== 0) {
    t.comment('SKIPPED the block-device case: needs root (losetup)');
    return;
  }
  let dev: string;
  try {
    dev = execFileSync('losetup', ['-f', '--show', image(shm, 'loop.img', new Uint8Array(1 << 20))], { encoding: 'utf8' }).trim();
  } catch (e) {
    t.comment(`SKIPPED the block-device case: losetup failed (${String(e).split('\n')[0]})`);
    return;
  }
  try {
    t.equal(MEMORY_FS_TYPES.includes(statfsSync(dev).type), true, `${dev} is on devtmpfs (TMPFS_MAGIC)`);
    const d = FileImage.open(dev, { aio: 'auto' });
    t.equal(d.inline, false, 'a block device: the ring');
    d.close();
  } finally {
    execFileSync('losetup', ['-d', dev]);
  }
});

t.test('inline: write, scattered read back, flush, discard, write-zeroes — completed inside the kick, no ring op', async (t) => {
  const size = 1 << 20;
  const path = image(dir, 'rw.img', pattern(size, 3));
  const img = FileImage.open(path, { aio: 'inline' });
  t.teardown(() => img.close());
  const r = new BlkRig({ image: img });
  const engine = engineOf(r);
  t.equal(engine.inline, true);
  const data = pattern(8192, 42);
  const w1 = r.add({ type: VIRTIO_BLK_T_OUT, sector: 16, out: data.subarray(0, 4096) });
  const w2 = r.add({ type: VIRTIO_BLK_T_OUT, sector: 24, out: data.subarray(4096) });
  const fl = r.add({ type: VIRTIO_BLK_T_FLUSH });
  r.kick();
  const used = r.collect();
  t.equal(used.size, 3, 'all three answered inside the kick');
  for (const s of [w1, w2, fl]) t.equal(r.status(s), VIRTIO_BLK_S_OK);
  t.equal(engine.inlineCalls, 1, 'one native call for the batch');
  t.equal(engine.submitCalls, 0, 'nothing went to the ring');
  t.ok(sameBytes(readFileSync(path).subarray(16 * 512, 16 * 512 + 8192), data), 'data on the host file');

  const rd = r.add({ type: VIRTIO_BLK_T_IN, sector: 16, inLen: 8192, inSplit: [512, 1024, 6656] });
  r.kick();
  t.equal(r.collect().get(rd.head), 8193, 'used len: data + status');
  t.ok(sameBytes(r.readIn(rd), data), 'read back, scattered over three buffers');

  const d = r.add({ type: VIRTIO_BLK_T_DISCARD, out: segments([{ sector: 0, num: 16 }]) });
  const z = r.add({ type: VIRTIO_BLK_T_WRITE_ZEROES, out: segments([{ sector: 100, num: 8 }, { sector: 200, num: 8, flags: 1 }]) });
  r.kick();
  t.equal(r.collect().size, 2);
  t.equal(r.status(d), VIRTIO_BLK_S_OK);
  t.equal(r.status(z), VIRTIO_BLK_S_OK);
  const after = readFileSync(path);
  const zero = (s: number, n: number) => after.subarray(s * 512, (s + n) * 512).every((b) => b === 0);
  t.ok(zero(0, 16) && zero(100, 8) && zero(200, 8), 'discarded and zeroed ranges read zeros');
  t.notOk(zero(108, 1), 'neighbour intact');
  t.equal(after.length, size, 'size kept');
  t.equal(engine.submitCalls, 0, 'still nothing on the ring');
  t.equal(engine.offloaded, 0, 'nothing offloaded: the queue may busy-poll');
  await r.handler.stop();
  t.same(r.guest.checkCanaries(), []);
});

t.test('inline: writethrough syncs every write before it completes; large reads still go to kernel workers', async (t) => {
  const size = 4 << 20;
  const path = image(dir, 'wt.img', pattern(size, 5));
  const img = FileImage.open(path, { aio: 'inline' });
  t.teardown(() => img.close());
  const r = new BlkRig({ image: img }, new MmapGuest(8 << 20, 64));
  const engine = engineOf(r);
  r.device.writeConfig(32, Uint8Array.of(0));
  t.equal(r.device.writeback, false);
  const ring = (engine as unknown as { ring: { runInline: (...a: unknown[]) => number } }).ring;
  const run = ring.runInline.bind(ring);
  const ops: number[] = [];
  ring.runInline = (...a: unknown[]) => {
    const recs = a[0] as Float64Array;
    for (let i = 0; i < (a[1] as number); i++) ops.push(recs[i * 8]);
    return run(...a);
  };
  const w = r.add({ type: VIRTIO_BLK_T_OUT, sector: 8, out: pattern(4096, 9) });
  r.kick();
  t.equal(r.collect().size, 1);
  t.equal(r.status(w), VIRTIO_BLK_S_OK);
  t.same(ops, [7, 4], 'WRITE, then its FDATASYNC, both inline, before the answer');
  const big = r.add({ type: VIRTIO_BLK_T_IN, sector: 2048, inLen: 1 << 20 });
  const small = r.add({ type: VIRTIO_BLK_T_IN, sector: 0, inLen: 4096 });
  r.kick();
  t.equal(engine.asyncOps, 1, 'the 1 MiB read went to a kernel worker (IOSQE_ASYNC)');
  t.equal(engine.submitCalls, 1, 'through the ring');
  const used = await r.waitUsed(2);
  t.equal(used.get(big.head), (1 << 20) + 1);
  t.equal(used.get(small.head), 4097);
  const want = pattern(size, 5);
  t.ok(sameBytes(r.readIn(big), want.subarray(1 << 20, 2 << 20)), 'the large read');
  t.ok(sameBytes(r.readIn(small), want.subarray(0, 4096)), 'the small read (inline)');
  t.ok(sameBytes(readFileSync(path).subarray(4096, 8192), pattern(4096, 9)), 'the write on the host file');
  await r.handler.stop();
});

t.test('inline: a read past a shrunken file is IOERR; a refused batch fails its requests and the engine serves on', async (t) => {
  const path = image(dir, 'shrink.img', pattern(1 << 16, 4));
  const img = FileImage.open(path, { aio: 'inline' });
  t.teardown(() => img.close());
  const r = new BlkRig({ image: img });
  const engine = engineOf(r);
  const fd = openSync(path, 'r+');
  ftruncateSync(fd, 4096);
  closeSync(fd);
  const part = r.add({ type: VIRTIO_BLK_T_IN, sector: 6, inLen: 4096 }); // 1 KiB left in the file
  const past = r.add({ type: VIRTIO_BLK_T_IN, sector: 64, inLen: 512 });
  r.kick();
  const used = r.collect();
  t.equal(r.status(part), VIRTIO_BLK_S_IOERR, 'the short read ends as IOERR (the rest reads 0 bytes)');
  t.equal(used.get(part.head), 0, 'used len claims nothing');
  t.equal(r.status(past), VIRTIO_BLK_S_IOERR);

  const fe = engine as unknown as { ring: { setBuffer(i: number, b: ArrayBuffer | null): void }; generation: number; inflight: number };
  fe.ring.setBuffer(0, null); // as if the mapping vanished: the whole batch is refused
  const a = r.add({ type: VIRTIO_BLK_T_IN, sector: 0, inLen: 4096 });
  const b = r.add({ type: VIRTIO_BLK_T_OUT, sector: 0, out: pattern(512, 1) });
  r.kick();
  t.equal(r.collect().size, 2, 'both answered inside the kick');
  t.equal(r.status(a), VIRTIO_BLK_S_IOERR);
  t.equal(r.status(b), VIRTIO_BLK_S_IOERR);
  t.equal(fe.inflight, 0, 'nothing left in flight');
  fe.generation = -1; // a new memory table sets the buffers again
  const c = r.add({ type: VIRTIO_BLK_T_IN, sector: 0, inLen: 4096 });
  r.kick();
  t.equal(r.collect().size, 1);
  t.equal(r.status(c), VIRTIO_BLK_S_OK, 'served again');
  t.ok(sameBytes(r.readIn(c), pattern(1 << 16, 4).subarray(0, 4096)));
  await r.handler.stop();
});

t.test('inline and ring give the same bytes for a mixed random workload (tmpfs when there is one)', async (t) => {
  const at = shm ?? dir;
  const size = 1 << 20;
  const seed = pattern(size, 7);
  const paths = [image(at, 'mix-inline.img', seed), image(at, 'mix-ring.img', seed)];
  const rigs = paths.map((p, i) => {
    const img = FileImage.open(p, { aio: i === 0 ? 'inline' : 'io_uring' });
    t.teardown(() => img.close());
    return new BlkRig({ image: img }, new MmapGuest(16 << 20, 64));
  });
  t.equal(engineOf(rigs[0]).inline, true);
  t.equal(engineOf(rigs[1]).inline, false);
  let x = 12345;
  const rand = (n: number) => { x = (x * 1103515245 + 12345) & 0x7fffffff; return x % n; };
  for (let round = 0; round < 20; round++) {
    const specs = [];
    for (let i = 0; i < 8; i++) {
      const sectors = 1 + rand(64);
      const sector = rand(size / 512 - sectors);
      specs.push(rand(3) === 0
        ? { type: VIRTIO_BLK_T_IN, sector, inLen: sectors * 512 }
        : { type: VIRTIO_BLK_T_OUT, sector, out: pattern(sectors * 512, round * 8 + i) });
    }
    const results = [];
    for (const r of rigs) {
      const sent = specs.map((s) => r.add(s));
      r.kick();
      await r.waitUsed(sent.length);
      results.push(sent.map((s, i) => (specs[i].inLen !== undefined ? r.readIn(s) : new Uint8Array(0))));
      for (const s of sent) if (r.status(s) !== VIRTIO_BLK_S_OK) t.fail(`round ${round}: status ${r.status(s)}`);
    }
    for (let i = 0; i < specs.length; i++) {
      if (!sameBytes(results[0][i], results[1][i])) t.fail(`round ${round} request ${i}: reads differ`);
    }
  }
  t.ok(sameBytes(readFileSync(paths[0]), readFileSync(paths[1])), 'the two images are identical after 160 requests');
  for (const r of rigs) await r.handler.stop();
});

t.test('inline: an op answering EAGAIN goes to the ring once instead of spinning on the thread', async (t) => {
  const path = image(dir, 'again.img', pattern(1 << 16, 8));
  const img = FileImage.open(path, { aio: 'inline' });
  t.teardown(() => img.close());
  const r = new BlkRig({ image: img });
  const engine = engineOf(r) as Inner & { inlineToRing: number };
  const ring = (engine as unknown as { ring: { runInline: (ops: Float64Array, n: number, iovs: Float64Array, out: Float64Array) => number } }).ring;
  const run = ring.runInline.bind(ring);
  let calls = 0;
  ring.runInline = (ops, n, iovs, out) => {
    calls++;
    if (calls > 1) return run(ops, n, iovs, out);
    // The first call: every op "would block", as a file system that refuses to wait says.
    for (let i = 0; i < n; i++) { out[2 * i] = ops[i * 8 + 3]; out[2 * i + 1] = -11; }
    return n;
  };
  const a = r.add({ type: VIRTIO_BLK_T_IN, sector: 8, inLen: 4096 });
  const b = r.add({ type: VIRTIO_BLK_T_OUT, sector: 64, out: pattern(1024, 2) });
  r.kick();
  t.equal(engine.inlineToRing, 2, 'both ops moved to the ring');
  t.equal(engine.submitCalls, 1, 'in one submit');
  const used = await r.waitUsed(2);
  t.equal(r.status(a), VIRTIO_BLK_S_OK);
  t.equal(r.status(b), VIRTIO_BLK_S_OK);
  t.equal(used.get(a.head), 4097);
  t.ok(sameBytes(r.readIn(a), pattern(1 << 16, 8).subarray(4096, 8192)), 'the read, done by io_uring');
  t.ok(sameBytes(readFileSync(path).subarray(64 * 512, 64 * 512 + 1024), pattern(1024, 2)), 'the write, done by io_uring');
  const c = r.add({ type: VIRTIO_BLK_T_IN, sector: 0, inLen: 512 });
  r.kick();
  t.equal(r.collect().size, 1, 'the next request inline again, answered inside the kick');
  t.equal(r.status(c), VIRTIO_BLK_S_OK);
  await r.handler.stop();
});

t.test('write-zeroes on tmpfs: ZERO_RANGE refused once, holes punched straight away after that', async (t) => {
  if (shm === null) { t.comment('SKIPPED: no tmpfs at /dev/shm'); t.pass('skipped'); return; }
  const path = image(shm, 'wz.img', pattern(1 << 16, 9));
  const img = FileImage.open(path);
  t.teardown(() => img.close());
  const r = new BlkRig({ image: img });
  const engine = engineOf(r) as Inner & { noZeroRange: boolean };
  const ring = (engine as unknown as { ring: { runInline: (ops: Float64Array, n: number, iovs: Float64Array, out: Float64Array) => number } }).ring;
  const run = ring.runInline.bind(ring);
  const modes: number[] = [];
  ring.runInline = (ops, n, iovs, out) => {
    for (let i = 0; i < n; i++) if (ops[i * 8] === 5) modes.push(ops[i * 8 + 6]);
    return run(ops, n, iovs, out);
  };
  for (const sector of [8, 32]) {
    const z = r.add({ type: VIRTIO_BLK_T_WRITE_ZEROES, out: segments([{ sector, num: 8 }]) });
    r.kick();
    t.equal(r.collect().size, 1);
    t.equal(r.status(z), VIRTIO_BLK_S_OK);
  }
  t.same(modes, [0x11, 0x03, 0x03], 'ZERO_RANGE|KEEP_SIZE refused, then PUNCH_HOLE|KEEP_SIZE, and only PUNCH for the second');
  t.equal(engine.noZeroRange, true);
  const after = readFileSync(path);
  t.ok(after.subarray(8 * 512, 16 * 512).every((b) => b === 0) && after.subarray(32 * 512, 40 * 512).every((b) => b === 0), 'both ranges read zeros');
  t.notOk(after.subarray(16 * 512, 17 * 512).every((b) => b === 0), 'neighbour intact');
  await r.handler.stop();
});

t.test('inline: a large write goes to a kernel worker through the ring, small ones stay inline', async (t) => {
  const path = image(dir, 'bigw.img', new Uint8Array(2 << 20));
  const img = FileImage.open(path, { aio: 'inline' });
  t.teardown(() => img.close());
  const r = new BlkRig({ image: img }, new MmapGuest(8 << 20, 64));
  const engine = engineOf(r);
  const big = r.add({ type: VIRTIO_BLK_T_OUT, sector: 0, out: pattern(256 << 10, 4) });
  const small = r.add({ type: VIRTIO_BLK_T_OUT, sector: 2048, out: pattern(4096, 5) });
  r.kick();
  t.equal(engine.submitCalls, 1, 'the 256 KiB write went to the ring');
  t.equal(engine.inlineCalls, 1, 'the 4 KiB one ran inline');
  t.equal(engine.asyncOps, 0, 'unflagged: the kernel punts it to io-wq');
  await r.waitUsed(2);
  t.equal(r.status(big), VIRTIO_BLK_S_OK);
  t.equal(r.status(small), VIRTIO_BLK_S_OK);
  const host = readFileSync(path);
  t.ok(sameBytes(host.subarray(0, 256 << 10), pattern(256 << 10, 4)), 'large write on the host file');
  t.ok(sameBytes(host.subarray(2048 * 512, 2048 * 512 + 4096), pattern(4096, 5)), 'small write on the host file');
  t.equal(engine.offloaded, 0, 'nothing left on kernel threads');
  await r.handler.stop();
});
