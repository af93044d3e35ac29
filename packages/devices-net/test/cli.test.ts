import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseCliArgs } from '../src/cli-args.js';
import { NetError } from '../src/errors.js';
import { NetGuest } from './helpers/net-frontend.js';
import { makeFrame } from './helpers/net-rig.js';

const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli.ts');
const NODE_ARGS = ['--conditions=vhost-ts-source', '--import', 'tsx', CLI];
const dir = mkdtempSync(join(tmpdir(), 'vhost-net-cli-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('flag parsing', async (t) => {
  const o = parseCliArgs(['--socket-path', '/a', '--socket-path=/b', '--switch', '--mac', '02:00:00:00:00:01', '--mtu', '9000', '--queues', '2', '--client', '--log-level', 'warn']);
  t.same(o.socketPaths, ['/a', '/b']);
  t.same(o.backend, { kind: 'switch' });
  t.equal(o.mtu, 9000);
  t.equal(o.queuePairs, 2);
  t.equal(o.client, true);
  t.equal(o.logLevel, 'warn');
  t.same([...o.mac!], [2, 0, 0, 0, 0, 1]);
  t.same(parseCliArgs(['--socket-path', '/a', '--tap', 'vt0']).backend, { kind: 'tap', name: 'vt0' });
  t.equal(parseCliArgs(['--socket-path', '/a', '--loopback']).pollUs, 0, '--poll-us defaults to 0 (kick-driven)');
  t.equal(parseCliArgs(['--socket-path', '/a', '--loopback', '--poll-us', '50']).pollUs, 50);
  const bad: [string[], RegExp][] = [
    [['--loopback'], /--socket-path is required/],
    [['--socket-path', '/a'], /one of --tap/],
    [['--socket-path', '/a', '--switch', '--loopback'], /exactly one/],
    [['--socket-path', '/a', '--socket-path', '/b', '--tap', 'x'], /--tap serves one socket/],
    [['--socket-path', '/a', '--loopback', '--mtu', '10'], /--mtu must be in 68\.\.65535/],
    [['--socket-path', '/a', '--loopback', '--queues', 'x'], /--queues must be an integer/],
    [['--socket-path', '/a', '--loopback', '--mac', '01:00:00:00:00:00'], /multicast/],
    [['--socket-path', '/a', '--loopback', '--bogus'], /unknown flag "--bogus"/],
    [['--socket-path', '/a', '--socket-path', '/a', '--loopback'], /twice/],
    [['--socket-path'], /needs a path/],
    [['--socket-path', '/a', '--loopback', '--poll-us', '10001'], /--poll-us must be in 0\.\.10000/],
  ];
  for (const [argv, re] of bad) t.throws(() => parseCliArgs(argv), { code: 'usage', message: re }, argv.join(' '));
  t.throws(() => parseCliArgs(['--x']), NetError);
});

t.test('bad flags: exit 2 with one clear line', async (t) => {
  const r = spawnSync(process.execPath, [...NODE_ARGS, '--socket-path', join(dir, 'x.sock'), '--mtu', 'abc', '--loopback'], { encoding: 'utf8' });
  t.equal(r.status, 2);
  t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
  t.match(r.stderr, /^vhost-user-net: --mtu must be an integer/);
  const h = spawnSync(process.execPath, [...NODE_ARGS, '--help'], { encoding: 'utf8' });
  t.equal(h.status, 0);
  t.match(h.stdout, /usage: vhost-user-net/);
});

t.test('loopback CLI serves a front-end, SIGTERM removes the socket and exits 0', async (t) => {
  const sock = join(dir, 'cli.sock');
  const child = spawn(process.execPath, [...NODE_ARGS, '--socket-path', sock, '--loopback', '--mac', '02:11:22:33:44:55'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const g = await NetGuest.open(sock);
  const cfg = await g.fe.getConfig(0, 6);
  t.same([...cfg!], [2, 0x11, 0x22, 0x33, 0x44, 0x55]);
  g.send(makeFrame([2, 0, 0, 0, 0, 1], [2, 0x11, 0x22, 0x33, 0x44, 0x55], 80));
  t.ok(await g.waitFor((f) => f.length === 1), 'echoed through the CLI process');
  g.close();
  const end = Date.now() + 5000;
  while (!/front-end disconnected/.test(stderr) && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  child.kill('SIGTERM');
  t.equal(await exited, 0, 'exit 0 on SIGTERM');
  t.notOk(existsSync(sock), 'socket file removed');
  t.match(stderr, /listening on .*cli\.sock \(loopback, mac 02:11:22:33:44:55/);
  t.match(stderr, /vhost-user-net: .*cli\.sock: front-end connected\n/, 'a connection is logged at the default level');
  t.match(stderr, /vhost-user-net: .*cli\.sock: front-end disconnected/, 'and its end');
});
