import { execFileSync } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { close, dup, fdatasync, fstatSize, fsync, openFdCount, openFile, OwnedFd } from '../src/index.js';
import { tempDir, throwsSys } from './helpers.js';

t.test('openFile / fstatSize / sync / close', (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'f.bin');
  throwsSys(t, () => openFile(path), 'ENOENT', 'open', 'missing file');
  const fd = openFile(path, { write: true, create: true, mode: 0o600 });
  t.equal(statSync(path).mode & 0o777, 0o600, 'mode applied');
  writeFileSync(path, Buffer.alloc(12345, 7));
  t.equal(fstatSize(fd), 12345, 'st_size');
  fdatasync(fd);
  fsync(fd);
  close(fd);
  throwsSys(t, () => close(fd), 'EBADF', 'close', 'double close');
  throwsSys(t, () => fdatasync(fd), 'EBADF', 'fdatasync', 'fdatasync closed');
  throwsSys(t, () => fsync(fd), 'EBADF', 'fsync', 'fsync closed');
  throwsSys(t, () => fstatSize(fd), 'EBADF', 'fstat', 'fstat closed');
  throwsSys(t, () => openFile(path, { mode: 0o10000 }), 'EINVAL', 'open', 'bad mode');
  throwsSys(t, () => openFile(path, { write: 1 as unknown as boolean }), 'EINVAL', 'open', 'write not boolean');
  throwsSys(t, () => openFile(42 as unknown as string), 'EINVAL', 'open', 'path not a string');
  throwsSys(t, () => openFile(join(dir, 'x\0y')), 'EINVAL', 'open', 'NUL in path');
  const ro = openFile(path);
  t.equal(fstatSize(ro), 12345, 'read-only open');
  close(ro);
  const direct = openFile(path, { direct: true });
  close(direct);
  t.pass('O_DIRECT open works on this filesystem');
  t.end();
});

t.test('dup', (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'd.bin');
  writeFileSync(path, 'hello');
  const fd = openFile(path);
  const d = dup(fd);
  t.ok(d > 2 && d !== fd, 'a new fd above stdio');
  close(fd);
  t.equal(fstatSize(d), 5, 'the duplicate still refers to the file');
  close(d);
  throwsSys(t, () => dup(d), 'EBADF', 'dup', 'dup closed');
  t.equal(readFileSync(path, 'utf8'), 'hello');
  t.end();
});

t.test('OwnedFd', (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'o.bin');
  writeFileSync(path, 'x');
  const base = openFdCount();
  {
    using owned = new OwnedFd(openFile(path));
    t.equal(openFdCount(), base + 1);
    t.notOk(owned.closed);
  }
  t.equal(openFdCount(), base, 'closed at scope end');
  const o = new OwnedFd(openFile(path));
  o.close();
  o.close();
  t.ok(o.closed, 'close is idempotent');
  t.equal(o.fd, -1);
  const r = new OwnedFd(openFile(path));
  const raw = r.release();
  r.close();
  t.equal(fstatSize(raw), 1, 'released fd stays open');
  close(raw);
  throwsSys(t, () => new OwnedFd(-3), 'EINVAL', 'OwnedFd');
  t.end();
});

t.test('fstatSize of a block device uses BLKGETSIZE64', (t) => {
  const dir = tempDir(t);
  const img = join(dir, 'blk.img');
  writeFileSync(img, '');
  execFileSync('truncate', ['-s', '3M', img]);
  let dev: string;
  try {
    dev = execFileSync('losetup', ['-f', '--show', img], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  } catch {
    t.skip('losetup not usable here');
    t.end();
    return;
  }
  try {
    const fd = openFile(dev);
    t.equal(statSync(dev).size, 0, 'stat() reports 0 for the device node');
    t.equal(fstatSize(fd), 3 * 1024 * 1024, 'fstatSize reports the device size');
    close(fd);
  } finally {
    execFileSync('losetup', ['-d', dev]);
  }
  t.end();
});
