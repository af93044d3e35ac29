import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { close as closeFd, unixAccept, unixListen } from '@vhost-ts/sys';
import { VhostUserFrontend } from '@vhost-ts/vhost-user';
import t from 'tap';
import { parseBlkArgs } from '../src/cli-args.js';

const CLI = join(dirname(fileURLToPath(import.meta.url)), '../src/cli.ts');
const dir = mkdtempSync(join(tmpdir(), 'blk-cli-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const image = join(dir, 'disk.img');
writeFileSync(image, new Uint8Array(1 << 20));

const MAIN = join(dirname(fileURLToPath(import.meta.url)), '../src/main.ts');

function start(args: string[], entry = CLI): { child: ChildProcess; done: Promise<{ code: number | null; stderr: string; stdout: string }> } {
  const child = spawn(process.execPath, ['--conditions=vhost-ts-source', '--import', 'tsx', entry, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '', stdout = '';
  child.stderr!.on('data', (d) => { stderr += d; });
  child.stdout!.on('data', (d) => { stdout += d; });
  const done = new Promise<{ code: number | null; stderr: string; stdout: string }>((resolve) => {
    child.on('close', (code) => resolve({ code, stderr, stdout }));
  });
  return { child, done };
}

async function waitFor(cond: () => boolean, ms = 10000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timeout');
    await new Promise((r) => setTimeout(r, 20));
  }
}

t.test('flag parsing (unit)', async (t) => {
  const ok = parseBlkArgs(['--socket-path', '/tmp/x.sock', '--blk-file', 'a.img', '--num-queues', '4', '--read-only', '--serial', 's1', '--direct', '--client', '--queue-size', '128', '--log-level', 'debug', '--poll-us', '50']);
  t.same(ok, { kind: 'ok', config: { socketPath: '/tmp/x.sock', blkFile: 'a.img', readOnly: true, numQueues: 4, queueSize: 128, serial: 's1', direct: true, aio: 'auto', client: true, logLevel: 'debug', pollUs: 50 } });
  const d = parseBlkArgs(['--socket-path', 's', '--blk-file', 'f']);
  t.match(d, { kind: 'ok', config: { numQueues: 1, queueSize: 1024, readOnly: false, serial: 'vhost-ts', logLevel: 'info', pollUs: 100 } });
  t.match(parseBlkArgs(['--socket-path', 's', '--blk-file', 'f', '--poll-us', '0']), { kind: 'ok', config: { pollUs: 0 } }, 'polling off');
  for (const aio of ['auto', 'io_uring', 'inline']) {
    t.match(parseBlkArgs(['--socket-path', 's', '--blk-file', 'f', '--aio', aio]), { kind: 'ok', config: { aio } }, `--aio ${aio}`);
  }
  for (const [args, re] of [
    [['--blk-file', 'f'], /missing --socket-path/],
    [['--socket-path', 's'], /missing --blk-file/],
    [['--socket-path', 's', '--blk-file', 'f', '--num-queues', '17'], /num-queues must be in 1\.\.16/],
    [['--socket-path', 's', '--blk-file', 'f', '--num-queues', '2x'], /must be an integer/],
    [['--socket-path', 's', '--blk-file', 'f', '--queue-size', '100'], /power of two/],
    [['--socket-path', 's', '--blk-file', 'f', '--serial', 'x'.repeat(21)], /20 bytes/],
    [['--socket-path', 's', '--blk-file', 'f', '--log-level', 'loud'], /log-level/],
    [['--socket-path', 's', '--blk-file', 'f', '--poll-us', '10001'], /poll-us must be in 0\.\.10000/],
    [['--socket-path', 's', '--blk-file', 'f', '--poll-us', '-1'], /poll-us/],
    [['--socket-path', 's', '--blk-file', 'f', '--bogus'], /bogus/],
    [['--socket-path', 's', '--blk-file', 'f', '--aio', 'threads'], /--aio must be auto, io_uring, inline, got 'threads'/],
    [['--socket-path', 's', '--blk-file', 'f', '--aio', 'inline', '--direct'], /--aio inline cannot be combined with --direct/],
    [['--socket-path', 's', '--blk-file', 'f', 'extra'], /extra|positional/i],
    [['--socket-path', 'x'.repeat(120), '--blk-file', 'f'], /too long/],
  ] as [string[], RegExp][]) {
    const r = parseBlkArgs(args);
    t.equal(r.kind, 'error', args.join(' '));
    if (r.kind === 'error') {
      t.match(r.message, re);
      t.notOk(r.message.includes('\n'), 'one line');
    }
  }
  t.same(parseBlkArgs(['-h']), { kind: 'help' });
});

t.test('bad flags: exit 2 with one line on stderr', async (t) => {
  const r = await start(['--socket-path', join(dir, 'a.sock'), '--blk-file', image, '--num-queues', '0']).done;
  t.equal(r.code, 2);
  t.equal(r.stderr.trim().split('\n').length, 1);
  t.match(r.stderr, /^vhost-user-blk: error: --num-queues must be in 1\.\.16/);
  const r2 = await start(['--what']).done;
  t.equal(r2.code, 2);
  t.equal(r2.stderr.trim().split('\n').length, 1);
});

t.test('missing image: exit 1, one line', async (t) => {
  const r = await start(['--socket-path', join(dir, 'b.sock'), '--blk-file', join(dir, 'nope.img')]).done;
  t.equal(r.code, 1);
  t.match(r.stderr, /^vhost-user-blk: error: .*nope\.img: no such file\n$/);
  t.notOk(existsSync(join(dir, 'b.sock')), 'no socket left behind');
});

t.test('socket in use by a live server; SIGTERM removes the socket and exits 0', async (t) => {
  const sock = join(dir, 'live.sock');
  const a = start(['--socket-path', sock, '--blk-file', image, '--log-level', 'debug']);
  await waitFor(() => existsSync(sock));
  const b = await start(['--socket-path', sock, '--blk-file', image]).done;
  t.equal(b.code, 1, 'second server refused');
  t.match(b.stderr, /socket path in use/);
  t.equal(b.stderr.trim().split('\n').length, 1);
  t.ok(existsSync(sock), 'the live server keeps its socket');
  a.child.kill('SIGTERM');
  const r = await a.done;
  t.equal(r.code, 0, 'clean exit');
  t.notOk(existsSync(sock), 'socket removed');
  t.match(r.stderr, /SIGTERM: draining/);
});

t.test('a stale socket file is replaced; --help prints usage', async (t) => {
  const sock = join(dir, 'stale.sock');
  closeFd(unixListen(sock)); // socket file left behind, nobody listening
  t.ok(existsSync(sock));
  const a = start(['--socket-path', sock, '--blk-file', image]);
  let err = '';
  a.child.stderr!.on('data', (d) => { err += d; });
  await waitFor(() => /serving/.test(err));
  a.child.kill('SIGINT');
  t.equal((await a.done).code, 0);
  t.notOk(existsSync(sock));
  const r = await start(['--help']).done;
  t.equal(r.code, 0);
  t.match(r.stdout, /--socket-path PATH/);
});

t.test('--client connects to a listening front-end and serves it', async (t) => {
  const sock = join(dir, 'client.sock');
  const listenFd = unixListen(sock);
  t.teardown(() => closeFd(listenFd));
  const a = start(['--socket-path', sock, '--blk-file', image, '--client', '--serial', 'cli-client']);
  let fd = -1;
  await waitFor(() => (fd = unixAccept(listenFd)) >= 0);
  const fe = new VhostUserFrontend(fd);
  await fe.negotiate();
  const cfg = await fe.getConfig(0, 8);
  t.equal(new DataView(cfg!.buffer, cfg!.byteOffset).getUint32(0, true), (1 << 20) / 512, 'capacity of the image');
  fe.close();
  a.child.kill('SIGTERM');
  const r = await a.done;
  t.equal(r.code, 0);
  t.ok(existsSync(sock), 'client mode never removes the front-end socket');
});

t.test('the guest\'s cache mode survives a back-end killed (SIGKILL) and one stopped cleanly', async (t) => {
  // QEMU does not send the guest's writeback choice again to the back-end that replaces a dead
  // one; it hands that back-end the inflight area, where the choice is kept.
  const sock = join(dir, 'wce.sock');
  const QUEUE = 128;
  const serve = async (): Promise<{ a: ReturnType<typeof start>; fe: VhostUserFrontend }> => {
    const a = start(['--socket-path', sock, '--blk-file', image]);
    let err = '';
    a.child.stderr!.on('data', (d) => { err += d; });
    await waitFor(() => /serving/.test(err));
    const fe = await VhostUserFrontend.connect(sock);
    await fe.negotiate();
    return { a, fe };
  };
  const one = await serve();
  const area = await one.fe.getInflightFd(1, QUEUE);
  t.teardown(() => closeFd(area.fd));
  await one.fe.setInflightFd(area.fd, area.mmapSize, 1, QUEUE);
  t.equal((await one.fe.getConfig(32, 1))![0], 1, 'writeback at first');
  await one.fe.setConfig(32, Uint8Array.of(0));
  t.equal((await one.fe.getConfig(32, 1))![0], 0, 'the guest chose writethrough');
  one.a.child.kill('SIGKILL');
  await one.a.done;
  one.fe.close();

  const two = await serve();
  t.equal((await two.fe.getConfig(32, 1))![0], 1, 'a new back-end starts at writeback');
  await two.fe.setInflightFd(area.fd, area.mmapSize, 1, QUEUE);
  t.equal((await two.fe.getConfig(32, 1))![0], 0, 'writethrough again once it has the area');
  two.fe.close();
  two.a.child.kill('SIGTERM');
  t.equal((await two.a.done).code, 0);

  const three = await serve();
  await three.fe.setInflightFd(area.fd, area.mmapSize, 1, QUEUE);
  t.equal((await three.fe.getConfig(32, 1))![0], 0, 'and after a clean stop of the one before');
  three.fe.close();
  three.a.child.kill('SIGTERM');
  t.equal((await three.a.done).code, 0);
});

t.test('npm start entry: prints the QEMU command line, flags override the defaults', async (t) => {
  const sock = join(dir, 'main', 'blk.sock');
  const a = start(['--socket-path', sock, '--blk-file', image, '--num-queues', '2'], MAIN);
  let out = '';
  a.child.stdout!.on('data', (d) => { out += d; });
  await waitFor(() => /Ctrl-C/.test(out));
  t.match(out, /-object memory-backend-memfd,id=mem0,size=1G,share=on/);
  t.match(out, new RegExp(`-chardev socket,id=blk0,path=${sock.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
  t.match(out, /-device vhost-user-blk-pci,chardev=blk0,num-queues=2/);
  t.ok(existsSync(sock), 'socket directory created and listening');
  a.child.kill('SIGINT');
  t.equal((await a.done).code, 0);
  t.notOk(existsSync(sock));
});
