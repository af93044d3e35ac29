/**
 * vhost-user-blk with `--direct` on a disk of 4 KiB logical blocks, end to end: a loop device
 * with `--sector-size 4096` stands for such a disk. The device advertises `blk_size` 4096 (from
 * sysfs), so the Linux guest makes vda a 4 KiB-sector disk and issues whole blocks, which
 * O_DIRECT on the host then takes. Checked: the guest's logical block size; O_DIRECT and
 * buffered pattern writes read back two ways; FLUSH; the disk holds exactly what was written.
 * Needs root and losetup besides QEMU (SKIPPED with the reason otherwise).
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { abortOnExit, findVhostTsBlkCli, makeWorkDir, startBlkBackend, type Backend } from './src/backends.js';
import { expectedImage, firstDifference, patternBytes, patternScript, sha256, SRC_SIZE, type PatternWrite } from './src/blk-checks.js';
import { detectEnv, e2eTest } from './src/env.js';
import { buildInitramfs } from './src/initramfs.js';
import { parseKeyValues, runGuest } from './src/qemu.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZE = 16 * MiB;

/** Whole 4 KiB blocks only (the guest could not issue anything else on such a disk). */
const PLAN: PatternWrite[] = [
  { offset: 0, length: 4 * KiB, srcOffset: 0, mode: 'direct' },
  { offset: 64 * KiB, length: 64 * KiB, srcOffset: 8 * KiB, mode: 'direct' },
  { offset: MiB + 4 * KiB, length: MiB, srcOffset: MiB, mode: 'direct' },
  { offset: 6 * MiB + 4 * KiB, length: 16 * KiB, srcOffset: 3 * MiB, mode: 'fsync' },
  { offset: SIZE - 64 * KiB, length: 64 * KiB, srcOffset: 3 * MiB + 256 * KiB, mode: 'direct' },
];

const env = detectEnv();

if (findVhostTsBlkCli() === null) {
  t.fail('vhost-user-blk CLI not found (packages/devices-blk/src/cli.ts or dist/cli.js)');
} else if (process.getuid?.() !== 0) {
  t.skip('SKIPPED: a 4 KiB-sector loop device needs root', () => {});
} else {
  t.test('--direct on a 4 KiB-sector disk: the guest sees 4 KiB blocks and its I/O lands', async (t) => {
    await e2eTest(t, 'guest run', { needs: ['qemu', 'kernel', 'busybox'], pendingReason: null }, async (t) => {
      const work = makeWorkDir();
      t.teardown(work.cleanup);
      const seed = `blk-4k-${Date.now()}`;
      t.comment(`pattern seed: ${seed}`);
      const backing = join(work.dir, 'disk4k.img');
      const srcImage = join(work.dir, 'src.img');
      const initial = patternBytes(`${seed}/img`, SIZE);
      const src = patternBytes(`${seed}/src`, SRC_SIZE);
      writeFileSync(backing, initial);
      writeFileSync(srcImage, src);
      let loop: string;
      try {
        loop = execFileSync('losetup', ['-f', '--show', '--sector-size', '4096', backing], { encoding: 'utf8' }).trim();
      } catch (e) {
        t.skip(`SKIPPED: losetup --sector-size 4096 failed here (${String(e).split('\n')[0]})`, () => {});
        return;
      }
      let detached = false;
      const detach = (): void => { if (!detached) { detached = true; execFileSync('losetup', ['-d', loop]); } };
      t.teardown(detach);
      t.equal(readFileSync(`/sys/block/${loop.replace('/dev/', '')}/queue/logical_block_size`, 'utf8').trim(), '4096', 'the host disk has 4 KiB logical blocks');

      const script = [
        'echo "L.lbs=$(cat /sys/block/vda/queue/logical_block_size)"',
        'echo "L.size=$(cat /sys/block/vda/size)"',
        'echo "write back" > /sys/block/vda/queue/write_cache',
        patternScript(PLAN, '/dev/vda', '/dev/vdb'),
        'dd if=/dev/zero of=/dev/vda count=0 conv=notrunc,fsync status=none; echo "L.flush_rc=$?"',
        'true',
      ].join('\n');
      const initrd = buildInitramfs({ kernel: env.kernel!, busybox: env.busybox!, script });
      const backends: Backend[] = [];
      t.teardown(async () => { await Promise.all(backends.map((b) => b.stop())); });
      const be = await startBlkBackend('vhost-ts', { image: loop, socket: join(work.dir, '4k.sock'), extraArgs: ['--direct'] });
      backends.push(be);
      const r = await runGuest({
        kernel: env.kernel!, initrd, blkDisks: [{ socket: be.socket }], rawDisks: [{ path: srcImage }], signal: abortOnExit(backends),
      }).catch((err: unknown) => {
        t.comment(`backend logs:\n${be.logs().slice(-3000)}`);
        throw err;
      });
      t.comment(`guest ran ${r.durationMs} ms`);
      const diag = { output: r.output, logs: be.logs().slice(-2000) };
      t.equal(r.rc, 0, 'guest script completed', diag);
      const kv = parseKeyValues(r.output);
      t.equal(kv.get('L.lbs'), '4096', 'the guest\'s vda has 4 KiB logical blocks (blk_size)');
      t.equal(kv.get('L.size'), String(SIZE / 512), 'capacity, still in 512-byte sectors');
      PLAN.forEach((w, i) => {
        const want = sha256(src.subarray(w.srcOffset, w.srcOffset + w.length));
        t.equal(kv.get(`W${i}.rc`), '0', `write ${i} (${w.mode} @${w.offset}+${w.length}) succeeded`);
        t.equal(kv.get(`W${i}.direct`), want, `write ${i}: O_DIRECT read-back matches`);
        t.equal(kv.get(`W${i}.cached`), want, `write ${i}: buffered read-back matches`);
      });
      t.equal(kv.get('L.flush_rc'), '0', 'FLUSH succeeded');
      t.match(be.logs(), /4096-byte blocks/, 'the back-end says which block size it serves');
      await be.stop();
      detach();
      t.equal(firstDifference(readFileSync(backing), expectedImage(initial, src, PLAN)), null, 'the disk holds exactly the guest\'s writes');
    });
  });
}
