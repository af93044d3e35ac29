// O_DIRECT on a disk with 4 KiB logical blocks: the device advertises them in blk_size (a loop
// device with --sector-size 4096 stands in for such a disk; root and losetup needed).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { BlkDevice, FileImage, NullImage, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT } from '../src/index.js';
import { DEFAULT_LOGICAL_BLOCK_SIZE, logicalBlockSizeOf } from '../src/engines/logical-block-size.js';
import { BlkRig, MmapGuest, pattern, sameBytes } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'blk-lbs-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('where sysfs has no answer, 512; a file on a disk gets the disk\'s size', async (t) => {
  const shm = join('/dev/shm', `vhost-ts-lbs-${process.pid}`);
  writeFileSync(shm, new Uint8Array(4096));
  t.teardown(() => rmSync(shm, { force: true }));
  t.equal(logicalBlockSizeOf(shm), DEFAULT_LOGICAL_BLOCK_SIZE, 'tmpfs');
  t.equal(logicalBlockSizeOf(join(dir, 'missing')), DEFAULT_LOGICAL_BLOCK_SIZE, 'no such file');
  const onDisk = join(dir, 'f.img');
  writeFileSync(onDisk, new Uint8Array(4096));
  const v = logicalBlockSizeOf(onDisk);
  t.ok(v >= 512 && (v & (v - 1)) === 0, `a power of two ≥ 512 (${v})`);
  t.equal(new BlkDevice({ image: new NullImage(1 << 20) }).readConfig(20, 4)[1], 2, 'null image: blk_size 512');
});

/** A loop device over a file of `bytes`, with `sectorSize` logical blocks, or null (skipped). */
function loopDevice(t: Test, bytes: Uint8Array, sectorSize: number): string | null {
  if (process.getuid?.() !== 0) { t.skip('SKIPPED: needs root (losetup)'); return null; }
  const backing = join(dir, `loop-${sectorSize}.img`);
  writeFileSync(backing, bytes);
  let dev: string;
  try {
    dev = execFileSync('losetup', ['-f', '--show', '--sector-size', String(sectorSize), backing], { encoding: 'utf8' }).trim();
  } catch (e) {
    t.skip(`SKIPPED: losetup --sector-size unavailable here (${String(e).split('\n')[0]})`);
    return null;
  }
  t.teardown(() => { try { execFileSync('losetup', ['-d', dev]); } catch { /* already gone */ } });
  return dev;
}

t.test('O_DIRECT on a 4 KiB-sector device: blk_size 4096, whole blocks served, a 512-byte read IOERR', async (t) => {
  const size = 4 << 20;
  const want = pattern(size, 23);
  const dev = loopDevice(t, want, 4096);
  if (dev === null) return;
  const image = FileImage.open(dev, { direct: true });
  t.teardown(() => image.close());
  t.equal(image.logicalBlockSize, 4096);
  t.match(image.description, /4096-byte blocks/);
  const r = new BlkRig({ image }, new MmapGuest(4 << 20));
  const cfg = new DataView(r.device.readConfig(0, 60).buffer);
  t.equal(cfg.getUint32(20, true), 4096, 'blk_size');
  t.equal(cfg.getUint8(24), 0, 'physical_block_exp: one logical block per 4 KiB physical');
  const buffered = FileImage.open(dev);
  t.equal(buffered.logicalBlockSize, 512, 'without O_DIRECT the page cache takes 512-byte sectors');
  buffered.close();
  const w = r.add({ type: VIRTIO_BLK_T_OUT, sector: 16, out: pattern(8192, 24) });
  const rd = r.add({ type: VIRTIO_BLK_T_IN, sector: 64, inLen: 4096 });
  const odd = r.add({ type: VIRTIO_BLK_T_IN, sector: 9, inLen: 4096, misalign: 8 }); // bounced, then EINVAL
  const small = r.add({ type: VIRTIO_BLK_T_IN, sector: 1, inLen: 512 });
  r.kick();
  await r.waitUsed(4);
  t.equal(r.status(w), VIRTIO_BLK_S_OK, '8 KiB write at a block boundary');
  t.equal(r.status(rd), VIRTIO_BLK_S_OK);
  t.ok(sameBytes(r.readIn(rd), want.subarray(64 * 512, 64 * 512 + 4096)), 'read of a whole block');
  t.equal(r.status(odd), VIRTIO_BLK_S_IOERR, 'a range off the blocks cannot be served direct, bounced or not');
  t.equal(r.status(small), VIRTIO_BLK_S_IOERR, 'nor a 512-byte read');
  const back = r.add({ type: VIRTIO_BLK_T_IN, sector: 16, inLen: 8192, misalign: 4 });
  r.kick();
  await r.waitUsed(1);
  t.ok(sameBytes(r.readIn(back), pattern(8192, 24)), 'the write reads back (through the bounce chunks)');
  await r.handler.stop();
});
