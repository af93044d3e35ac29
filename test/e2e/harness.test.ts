/**
 * Proves the e2e harness itself, with qemu-storage-daemon (the reference vhost-user-blk
 * backend) behind the guest's disk: the initramfs format, module ordering, console parsing,
 * the timeout kill, and one real guest whose disk writes the host verifies byte for byte.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { abortOnExit, makeWorkDir, startQemuStorageDaemon } from './src/backends.js';
import { defaultPlan, expectedImage, firstDifference, patternBytes, patternScript, sha256, SRC_SIZE } from './src/blk-checks.js';
import { buildNewcCpio } from './src/cpio.js';
import { detectEnv, e2eTest, verdict, which, type E2eEnv } from './src/env.js';
import { BLK_MODULES, NET_MODULES, buildInitramfs, resolveModules } from './src/initramfs.js';
import { GuestError, parseConsole, parseKeyValues, runGuest } from './src/qemu.js';

t.test('newc writer output is read back by cpio(1)', (t) => e2eTest(t, 'cpio -t', { needs: ['cpio'] }, async (t) => {
  const archive = buildNewcCpio([
    { type: 'dir', path: 'd' },
    { type: 'file', path: 'd/f', data: Buffer.from('hello\n'), mode: 0o640 },
    { type: 'symlink', path: 'd/l', target: 'f' },
    { type: 'file', path: 'odd', data: Buffer.from('xyz') }, // length not a multiple of 4: padding
  ]);
  const listing = execFileSync('cpio', ['-itv', '--quiet'], { input: archive, encoding: 'utf8' });
  t.match(listing, /^drwxr-xr-x .* d$/m);
  t.match(listing, /^-rw-r----- .* 6 .* d\/f$/m);
  t.match(listing, /^lrwxrwxrwx .* d\/l -> f$/m);
  t.match(listing, /^-rw-r--r-- .* 3 .* odd$/m);
}));

t.test('console parsing finds the script output and rc between the markers', async (t) => {
  const text = 'SeaBIOS noise\r\n@@E2E-INSMOD-FAILED virtio_blk@@\r\n@@E2E-BEGIN@@\r\nA=1\r\nhello\r\n@@E2E-RESULT rc=3@@\r\n[ 9.1] reboot: Power down\r\n';
  const r = parseConsole(text);
  t.same(r, { rc: 3, output: 'A=1\nhello\n', insmodFailures: ['virtio_blk'] });
  t.equal(parseConsole('@@E2E-BEGIN@@\nno result yet\n'), null, 'no result marker: null');
  t.equal(parseConsole('@@E2E-RESULT rc=0@@\n'), null, 'result without begin marker: null');
  t.same([...parseKeyValues('A=1\nnot a pair\nB.c=x=y\nA=2\n')], [['A', '2'], ['B.c', 'x=y']]);
});

t.test('prerequisite rule: skip when missing, fail under E2E=1, pending always skips', async (t) => {
  const full: E2eEnv = { qemu: '/q', qemuStorageDaemon: '/qsd', busybox: '/bb', cpio: '/c', testpmd: '/t', kernel: { version: 'v', vmlinuz: '/k', modulesDir: '/m' } };
  const noQemu: E2eEnv = { ...full, qemu: null };
  t.same(verdict(['qemu', 'kernel'], { env: full, required: true }), { action: 'run' });
  const skip = verdict(['qemu'], { env: noQemu, required: false });
  t.equal(skip.action, 'skip');
  t.match((skip as { reason: string }).reason, /qemu-system-x86_64 not found/);
  const fail = verdict(['qemu'], { env: noQemu, required: true });
  t.equal(fail.action, 'fail');
  t.match((fail as { reason: string }).reason, /^E2E=1 .*qemu-system-x86_64/);
  t.same(verdict(['busybox'], { env: noQemu, required: true }), { action: 'run' }, 'only the needed tools count');
  t.same(verdict([], { env: full, required: true, pendingReason: 'not built yet' }), { action: 'skip', reason: 'not built yet' });
});

const env = detectEnv();

t.test('module resolution puts dependencies first', (t) => e2eTest(t, 'resolve', { needs: ['kernel'] }, async (t) => {
  const kernel = env.kernel!;
  for (const list of [BLK_MODULES, NET_MODULES]) {
    const order = resolveModules(kernel, list);
    const names = order.map((p) => p.replace(/^.*\//, '').replace(/\.ko.*$/, ''));
    const dep = readFileSync(join(kernel.modulesDir, 'modules.dep'), 'utf8');
    for (const [i, p] of order.entries()) {
      const line = dep.split('\n').find((l) => l.startsWith(`${p}:`)) ?? '';
      for (const d of line.split(':')[1]?.trim().split(/\s+/).filter(Boolean) ?? []) {
        t.ok(order.indexOf(d) >= 0 && order.indexOf(d) < i, `${p} after its dependency ${d}`);
      }
    }
    t.equal(new Set(names).size, names.length, 'no duplicates');
  }
  t.throws(() => resolveModules(kernel, ['no_such_module_e2e']), { code: 'MODULE_NOT_FOUND' });
}));

t.test('initramfs is cached and holds /init, /test.sh and the modules', (t) => e2eTest(t, 'build', { needs: ['kernel', 'busybox', 'cpio'] }, async (t) => {
  const cacheDir = makeWorkDir('vte2e-cache-');
  t.teardown(cacheDir.cleanup);
  const opts = { kernel: env.kernel!, busybox: env.busybox!, script: 'echo hi\n', cacheDir: cacheDir.dir };
  const t0 = Date.now();
  const a = buildInitramfs(opts);
  const cold = Date.now() - t0;
  t.ok(cold < 2000, `cold build took ${cold} ms (≤ 2 s)`);
  const b = buildInitramfs(opts);
  t.equal(a, b, 'same inputs: same cached file');
  t.not(buildInitramfs({ ...opts, script: 'echo other\n' }), a, 'different script: different image');
  const listing = execFileSync('cpio', ['-it', '--quiet'], { input: gunzipSync(readFileSync(a)), encoding: 'utf8' }).split('\n');
  for (const f of ['init', 'test.sh', 'bin/busybox', 'bin/sh', 'dev/console', 'modules.order', 'lib/modules/virtio_blk.ko']) {
    t.ok(listing.includes(f), `contains ${f}`);
  }
}));

t.test('compressed modules (.ko.xz, .ko.zst, .ko.gz) are decompressed into the image', (t) =>
  e2eTest(t, 'decompress', { needs: ['busybox', 'cpio'] }, async (t) => {
    const work = makeWorkDir('vte2e-mods-');
    t.teardown(work.cleanup);
    const modulesDir = join(work.dir, 'lib/modules/0.0-test');
    mkdirSync(join(modulesDir, 'kernel'), { recursive: true });
    // xz and zstd are only needed here (Debian 12 ships plain .ko); without them, fall back to gzip.
    const zst = which('zstd') !== null;
    const xz = which('xz') !== null;
    const payload = { a: Buffer.from('module a\n'), b: Buffer.from('module b depends on a\n'), c: Buffer.from('module c\n') };
    const bPath = zst ? 'kernel/b.ko.zst' : 'kernel/b.ko.gz';
    const cPath = xz ? 'kernel/c-x.ko.xz' : 'kernel/c-x.ko.gz';
    writeFileSync(join(modulesDir, 'kernel/a.ko'), payload.a);
    writeFileSync(join(modulesDir, bPath), zst ? execFileSync('zstd', ['-c', '-q'], { input: payload.b }) : gzipSync(payload.b));
    writeFileSync(join(modulesDir, cPath), xz ? execFileSync('xz', ['-c'], { input: payload.c }) : gzipSync(payload.c));
    writeFileSync(join(modulesDir, 'kernel/d.ko.gz'), gzipSync(Buffer.from('module d\n')));
    if (!zst || !xz) t.comment(`zstd ${zst ? 'present' : 'missing'}, xz ${xz ? 'present' : 'missing'}: gzip stands in`);
    writeFileSync(join(modulesDir, 'modules.dep'), `${cPath}: ${bPath} kernel/a.ko\n${bPath}: kernel/a.ko\nkernel/a.ko:\nkernel/d.ko.gz:\n`);
    writeFileSync(join(modulesDir, 'modules.builtin'), 'kernel/builtin_one.ko\n');
    const kernel = { version: '0.0-test', vmlinuz: '/nonexistent', modulesDir };
    t.same(resolveModules(kernel, ['c_x', 'builtin-one', 'd']), ['kernel/a.ko', bPath, cPath, 'kernel/d.ko.gz'], 'deps first, built-ins dropped, - and _ alike');
    const initrd = buildInitramfs({ kernel, busybox: env.busybox!, script: 'true\n', modules: ['c-x', 'd'], cacheDir: join(work.dir, 'cache'), compress: false });
    const out = join(work.dir, 'x');
    mkdirSync(out);
    execFileSync('cpio', ['-id', '--quiet', 'lib/modules/*', 'modules.order'], { input: readFileSync(initrd), cwd: out });
    t.same(readFileSync(join(out, 'lib/modules/a.ko')), payload.a);
    t.same(readFileSync(join(out, 'lib/modules/b.ko')), payload.b, `${bPath} decompressed`);
    t.same(readFileSync(join(out, 'lib/modules/c_x.ko')), payload.c, `${cPath} decompressed`);
    t.same(readFileSync(join(out, 'lib/modules/d.ko')), Buffer.from('module d\n'), '.ko.gz decompressed');
    t.equal(readFileSync(join(out, 'modules.order'), 'utf8'), 'a\nb\nc_x\nd\n', 'load order');
  }));

t.test('a guest that does not finish is killed at the timeout', async (t) => {
  await e2eTest(t, 'timeout', { needs: ['qemu', 'kernel', 'busybox'] }, async (t) => {
    const initrd = buildInitramfs({ kernel: env.kernel!, busybox: env.busybox!, script: 'sleep 1000\n' });
    const started = Date.now();
    await t.rejects(runGuest({ kernel: env.kernel!, initrd, timeoutMs: 2000 }), GuestError);
    const err = await runGuest({ kernel: env.kernel!, initrd, timeoutMs: 1500 }).catch((e: unknown) => e);
    t.equal((err as GuestError).code, 'TIMEOUT');
    t.ok(Date.now() - started < 10_000, 'both runs ended promptly');
  });
});

t.test('a backend that dies aborts the guest run at once', async (t) => {
  await e2eTest(t, 'abort', { needs: ['qemu', 'qemuStorageDaemon', 'kernel', 'busybox'] }, async (t) => {
    const work = makeWorkDir();
    t.teardown(work.cleanup);
    const image = join(work.dir, 'disk.img');
    writeFileSync(image, Buffer.alloc(1024 * 1024));
    const backend = await startQemuStorageDaemon({ image, socket: join(work.dir, 'blk.sock') });
    t.teardown(() => backend.stop());
    const initrd = buildInitramfs({ kernel: env.kernel!, busybox: env.busybox!, script: 'sleep 1000\n' });
    setTimeout(() => backend.process.kill('SIGKILL'), 1500);
    const started = Date.now();
    const err = await runGuest({ kernel: env.kernel!, initrd, blkDisks: [{ socket: backend.socket }], signal: abortOnExit([backend]) }).catch((e: unknown) => e);
    t.type(err, GuestError);
    t.equal((err as GuestError).code, 'ABORTED');
    t.match((err as GuestError).message, /qemu-storage-daemon backend on .* exited \(code null, signal SIGKILL\)/);
    t.ok(Date.now() - started < 8000, `aborted after ${Date.now() - started} ms, long before the 90 s timeout`);
  });
});

t.test('guest on qemu-storage-daemon: size, O_DIRECT pattern writes, host image check', async (t) => {
  await e2eTest(t, 'qsd guest', { needs: ['qemu', 'qemuStorageDaemon', 'kernel', 'busybox'] }, async (t) => {
    const work = makeWorkDir();
    t.teardown(work.cleanup);
    const seed = `harness-${Date.now()}`;
    t.comment(`pattern seed: ${seed}`);
    const imageSize = 20 * 1024 * 1024 + 3 * 512; // odd sector count on purpose
    const image = join(work.dir, 'disk.img');
    const srcPath = join(work.dir, 'src.img');
    const initial = patternBytes(`${seed}/initial`, imageSize);
    const src = patternBytes(`${seed}/src`, SRC_SIZE);
    writeFileSync(image, initial);
    writeFileSync(srcPath, src);
    const plan = defaultPlan(imageSize);

    const script = [
      'echo "SIZE=$(cat /sys/block/vda/size)"',
      'echo "SRC_SIZE=$(cat /sys/block/vdb/size)"',
      'echo "RO=$(cat /sys/block/vda/ro)"',
      patternScript(plan, '/dev/vda', '/dev/vdb'),
    ].join('\n');
    const initrd = buildInitramfs({ kernel: env.kernel!, busybox: env.busybox!, script });
    const backend = await startQemuStorageDaemon({ image, socket: join(work.dir, 'blk.sock') });
    t.teardown(() => backend.stop());

    const r = await runGuest({ kernel: env.kernel!, initrd, blkDisks: [{ socket: backend.socket }], rawDisks: [{ path: srcPath }], signal: abortOnExit([backend]) });
    t.comment(`guest ran ${r.durationMs} ms`);
    t.same(r.insmodFailures, [], 'all modules loaded');
    t.equal(r.rc, 0, 'script exit status', { output: r.output });
    const kv = parseKeyValues(r.output);
    t.equal(kv.get('SIZE'), String(imageSize / 512), '/sys/block/vda/size is the image size in sectors');
    t.equal(kv.get('SRC_SIZE'), String(SRC_SIZE / 512), 'vdb is the source disk');
    t.equal(kv.get('RO'), '0', 'writable');
    plan.forEach((w, i) => {
      const want = sha256(src.subarray(w.srcOffset, w.srcOffset + w.length));
      t.equal(kv.get(`W${i}.rc`), '0', `write ${i} (${w.mode} @${w.offset}+${w.length}) succeeded`);
      t.equal(kv.get(`W${i}.direct`), want, `write ${i}: O_DIRECT read-back matches`);
      t.equal(kv.get(`W${i}.cached`), want, `write ${i}: buffered read-back matches`);
    });
    await backend.stop();
    const diff = firstDifference(readFileSync(image), expectedImage(initial, src, plan));
    t.equal(diff, null, 'host image holds exactly the written patterns, nothing else changed');
  });
});
