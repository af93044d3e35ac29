import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import {
  close, fstatSize, ftruncate, MAX_MAPPING_LENGTH, memfdCreate, mmap, munmap, openFile, SysError,
} from '../src/index.js';
import { tempDir, throwsSys } from './helpers.js';

t.test('memfd + ftruncate + fstatSize', (t) => {
  const fd = memfdCreate('vts-test');
  t.ok(fd > 2, 'fd number');
  t.equal(fstatSize(fd), 0);
  ftruncate(fd, 65536);
  t.equal(fstatSize(fd), 65536);
  close(fd);
  throwsSys(t, () => ftruncate(fd, 4096), 'EBADF', 'ftruncate', 'ftruncate on closed fd');
  throwsSys(t, () => ftruncate(-1, 4096), 'EINVAL', 'ftruncate', 'negative fd');
  throwsSys(t, () => ftruncate(3, 2 ** 53), 'EINVAL', 'ftruncate', 'size >= 2^53');
  throwsSys(t, () => memfdCreate('a\0b'), 'EINVAL', 'memfd_create', 'NUL in name');
  t.end();
});

t.test('two mappings of one memfd see each other', (t) => {
  const fd = memfdCreate('vts-two');
  ftruncate(fd, 2 * 4096);
  const a = mmap(fd, 8192, 0);
  const b = mmap(fd, 8192, 0);
  const hi = mmap(fd, 4096, 4096); // second page only
  t.equal(a.byteLength, 8192);
  new Uint8Array(a).set([1, 2, 3], 4096);
  t.same([...new Uint8Array(b, 4096, 3)], [1, 2, 3], 'b sees writes through a');
  t.same([...new Uint8Array(hi, 0, 3)], [1, 2, 3], 'offset mapping sees the same page');
  new Uint32Array(hi)[1] = 0xdeadbeef;
  t.equal(new DataView(a).getUint32(4100, true), 0xdeadbeef, 'a sees writes through the offset mapping');
  munmap(a);
  munmap(b);
  munmap(hi);
  close(fd);
  t.end();
});

t.test('read-only mapping is private: local writes do not reach the file and do not crash', (t) => {
  const fd = memfdCreate('vts-ro');
  ftruncate(fd, 4096);
  const rw = mmap(fd, 4096, 0);
  const ro = mmap(fd, 4096, 0, false);
  new Uint8Array(rw)[0] = 7;
  t.equal(new Uint8Array(ro)[0], 7, 'ro mapping sees the shared contents');
  new Uint8Array(ro)[1] = 9; // must not SIGSEGV
  t.equal(new Uint8Array(rw)[1], 0, 'write through ro mapping stays private');
  munmap(rw);
  munmap(ro);
  close(fd);
  t.end();
});

t.test('munmap detaches the ArrayBuffer', (t) => {
  const fd = memfdCreate('vts-detach');
  ftruncate(fd, 4096);
  const buf = mmap(fd, 4096, 0);
  const view = new Uint8Array(buf);
  const dv = new DataView(buf, 16);
  view[0] = 5;
  munmap(buf);
  t.equal(buf.byteLength, 0, 'byteLength 0 after munmap');
  t.equal(view.length, 0, 'views become empty');
  t.equal(view[0], undefined, 'reads through a stale view give undefined (no segfault)');
  view[0] = 1; // ignored, no crash
  t.throws(() => dv.getUint8(0), TypeError, 'DataView access throws instead of faulting');
  throwsSys(t, () => munmap(buf), 'EINVAL', 'munmap', 'second munmap');
  throwsSys(t, () => munmap(new ArrayBuffer(8)), 'EINVAL', 'munmap', 'not a mapping');
  throwsSys(t, () => munmap({} as ArrayBuffer), 'EINVAL', 'munmap', 'not an ArrayBuffer');
  close(fd);
  t.end();
});

t.test('a dropped mapping is unmapped by the GC without harm', async (t) => {
  const fd = memfdCreate('vts-gc');
  ftruncate(fd, 1 << 20);
  for (let i = 0; i < 200; i++) new Uint8Array(mmap(fd, 1 << 20, 0))[i] = i;
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc) gc();
  await new Promise((r) => setImmediate(r));
  const again = mmap(fd, 1 << 20, 0);
  t.equal(new Uint8Array(again)[199], 199, 'data written through collected mappings is in the file');
  munmap(again);
  close(fd);
});

t.test('mmap errors', (t) => {
  const dir = tempDir(t);
  const fd = memfdCreate('vts-err');
  ftruncate(fd, 8192);
  throwsSys(t, () => mmap(fd, 0, 0), 'EINVAL', 'mmap', 'zero length');
  throwsSys(t, () => mmap(fd, 4096, 100), 'EINVAL', 'mmap', 'unaligned offset');
  throwsSys(t, () => mmap(fd, 4096 * 3, 0), 'EINVAL', 'mmap', 'past the end of the file (would SIGBUS)');
  throwsSys(t, () => mmap(fd, 4096, 8192), 'EINVAL', 'mmap', 'offset at end of file');
  throwsSys(t, () => mmap(fd, MAX_MAPPING_LENGTH + 1, 0), 'EINVAL', 'mmap', 'longer than an ArrayBuffer');
  throwsSys(t, () => mmap(fd, 1.5, 0), 'EINVAL', 'mmap', 'fractional length');
  throwsSys(t, () => mmap(fd, 4096, 0, 'yes' as unknown as boolean), 'EINVAL', 'mmap', 'writable not boolean');
  close(fd);
  throwsSys(t, () => mmap(fd, 4096, 0), 'EBADF', 'mmap', 'closed fd');
  const path = join(dir, 'ro.bin');
  writeFileSync(path, Buffer.alloc(4096, 1));
  const ro = openFile(path);
  throwsSys(t, () => mmap(ro, 4096, 0, true), 'EACCES', 'mmap', 'shared writable mapping of an O_RDONLY fd');
  const priv = mmap(ro, 4096, 0, false);
  t.equal(new Uint8Array(priv)[0], 1, 'private mapping of an O_RDONLY fd works');
  munmap(priv);
  close(ro);
  t.ok(new SysError('EX', 1, 'x') instanceof Error);
  t.end();
});

t.test('a file shrunk under its mapping: the touched pages read as zeros, the fault is counted and announced, the process lives', async (t) => {
  const { mappingFaults, onMappingFault, copyRanges: copy } = await import('../src/index.js');
  const fd = memfdCreate('shrink');
  ftruncate(fd, 4 * 4096);
  const buf = mmap(fd, 4 * 4096, 0);
  const bytes = new Uint8Array(buf);
  bytes.fill(7);
  t.equal(mappingFaults(buf), 0);
  let announced = 0;
  const off = onMappingFault(() => { announced++; });
  ftruncate(fd, 4096); // the frontend's move: pages 1..3 are gone
  t.equal(bytes[0], 7, 'the page still in the file is intact');
  t.equal(bytes[4096], 0, 'a page past the new end reads as zero (was SIGBUS)');
  bytes[2 * 4096 + 5] = 9; // a store into another one
  t.equal(bytes[2 * 4096 + 5], 9, 'and takes a store, privately');
  // Native code touching the third page (the copy path of the data plane).
  const src = new Uint8Array(64).fill(3);
  copy(bytes, src, new Float64Array([0, 3 * 4096, 64]), 1, false);
  t.equal(bytes[3 * 4096 + 63], 3, 'a native copy into a vanished page completes');
  t.equal(mappingFaults(buf), 3, 'three pages faulted, each once');
  await new Promise((r) => setTimeout(r, 20));
  t.ok(announced >= 1, `the event loop heard about it (${announced} call(s))`);
  off();
  t.equal(bytes[4096 + 100], 0, 'the replaced page stays readable');
  t.equal(mappingFaults(buf), 3, 'no new fault for a page already replaced');
  munmap(buf);
  t.equal(mappingFaults(buf), 0, 'an unmapped buffer has none');
  close(fd);
});
