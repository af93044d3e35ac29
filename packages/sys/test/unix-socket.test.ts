import { spawn } from 'node:child_process';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import {
  close, eventfd, eventfdRead, eventfdWrite, FdWatcher, openFdCount, READABLE, recvMsg, sendMsg, socketpair,
  unixAccept, unixConnect, unixListen,
} from '../src/index.js';
import { tempDir, throwsSys, waitFor } from './helpers.js';

t.test('socketpair: data, EAGAIN, EOF', (t) => {
  const [a, b] = socketpair();
  const buf = new Uint8Array(64);
  t.equal(recvMsg(b, buf), null, 'nothing pending: null (EAGAIN)');
  t.equal(sendMsg(a, new Uint8Array([1, 2, 3])), 3, 'bytes sent');
  const r = recvMsg(b, buf);
  t.same(r, { bytes: 3, fds: [] });
  t.same([...buf.subarray(0, 3)], [1, 2, 3], 'payload');
  // subarray views send/receive only their window
  const big = new Uint8Array(16).fill(9);
  t.equal(sendMsg(a, big.subarray(4, 6)), 2);
  const win = new Uint8Array(16);
  t.equal(recvMsg(b, win.subarray(8))?.bytes, 2);
  t.same([...win.subarray(8, 10)], [9, 9], 'received into the view window');
  t.equal(win[0], 0, 'outside the window untouched');
  close(a);
  t.same(recvMsg(b, buf), { bytes: 0, fds: [] }, 'peer closed: bytes 0 (EOF)');
  close(b);
  throwsSys(t, () => recvMsg(b, buf), 'EBADF', 'recvmsg', 'closed fd');
  throwsSys(t, () => sendMsg(b, buf), 'EBADF', 'sendmsg', 'closed fd');
  t.end();
});

t.test('socketpair: sendMsg returns -1 when the socket is full', (t) => {
  const [a, b] = socketpair();
  const chunk = new Uint8Array(65536);
  let n = 0;
  let last = 0;
  for (; n < 10000; n++) {
    last = sendMsg(a, chunk);
    if (last === -1) break;
  }
  t.equal(last, -1, `EAGAIN reported as -1 after ${n} writes`);
  close(a);
  close(b);
  t.end();
});

t.test('passing an eventfd across a socketpair', (t) => {
  const [a, b] = socketpair();
  const efd = eventfd();
  t.equal(sendMsg(a, new Uint8Array([0x55]), [efd]), 1);
  const buf = new Uint8Array(8);
  const r = recvMsg(b, buf);
  t.ok(r !== null);
  t.equal(r!.bytes, 1);
  t.equal(r!.fds.length, 1, 'one fd received');
  const got = r!.fds[0]!;
  t.not(got, efd, 'a new fd number');
  eventfdWrite(got, 5);
  t.equal(eventfdRead(efd), 5, 'write to the received fd is seen on the original');
  // eight fds at once (the vhost-user maximum)
  const many = Array.from({ length: 8 }, () => eventfd());
  sendMsg(a, new Uint8Array([1, 2]), many);
  const r8 = recvMsg(b, buf)!;
  t.equal(r8.fds.length, 8, 'eight fds');
  for (let i = 0; i < 8; i++) {
    eventfdWrite(r8.fds[i]!, i + 1);
    t.equal(eventfdRead(many[i]!), i + 1, `fd ${i} maps to the right eventfd`);
    close(r8.fds[i]!);
    close(many[i]!);
  }
  close(got);
  close(efd);
  close(a);
  close(b);
  t.end();
});

t.test('sendMsg argument errors', (t) => {
  const [a, b] = socketpair();
  const e = eventfd();
  throwsSys(t, () => sendMsg(a, new Uint8Array(1), Array(9).fill(e)), 'EINVAL', 'sendmsg', 'nine fds');
  throwsSys(t, () => sendMsg(a, new Uint8Array(0), [e]), 'EINVAL', 'sendmsg', 'fds without data');
  throwsSys(t, () => sendMsg(a, new Uint8Array(1), [-1]), 'EINVAL', 'sendmsg', 'negative fd');
  throwsSys(t, () => sendMsg(a, [1] as unknown as Uint8Array), 'EINVAL', 'sendmsg', 'data not a Uint8Array');
  throwsSys(t, () => sendMsg(a, new Uint8Array(1), [999999]), 'EBADF', 'sendmsg', 'fd that is not open');
  throwsSys(t, () => recvMsg(b, new Uint8Array(0)), 'EINVAL', 'recvmsg', 'empty buffer');
  t.equal(recvMsg(b, new Uint8Array(4)), null, 'the failed sends sent nothing');
  close(e);
  close(a);
  close(b);
  t.end();
});

t.test('a message with more than 8 fds: received fds are closed, EMSGSIZE', async (t) => {
  const [a, b] = socketpair();
  const base = openFdCount();
  // Python sends 10 fds in one SCM_RIGHTS message on fd 3 (our socket `a`).
  const py = spawn('python3', ['-c', 'import socket,os; s=socket.socket(fileno=3); socket.send_fds(s,[b"x"],[0,1,2,0,1,2,0,1,2,0])'], {
    stdio: ['ignore', 'inherit', 'inherit', a],
  });
  const code = await new Promise<number | null>((r) => py.on('exit', r));
  if (code !== 0) {
    t.skip('python3 with socket.send_fds not available');
  } else {
    const before = openFdCount();
    throwsSys(t, () => recvMsg(b, new Uint8Array(8)), 'EMSGSIZE', 'recvmsg', 'truncated control data');
    t.equal(openFdCount(), before, 'the fds that did arrive were closed');
  }
  close(a);
  close(b);
  t.equal(openFdCount(), base - 2, 'no leak');
});

t.test('listen / accept / connect with fd passing', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'vu.sock');
  const lfd = unixListen(path);
  t.ok(existsSync(path), 'socket file created');
  t.equal(unixAccept(lfd), -1, 'nothing to accept: -1');
  const c = unixConnect(path);
  let ready = false;
  const w = new FdWatcher(lfd, () => {
    ready = true;
  });
  w.start(READABLE);
  t.ok(await waitFor(() => ready), 'listen fd readable on connect');
  w.close();
  const s = unixAccept(lfd);
  t.ok(s >= 0, 'accepted');
  t.equal(recvMsg(s, new Uint8Array(4)), null, 'accepted socket is non-blocking');
  t.equal(recvMsg(c, new Uint8Array(4)), null, 'connected socket is non-blocking');
  const efd = eventfd();
  sendMsg(c, new TextEncoder().encode('hi'), [efd]);
  const buf = new Uint8Array(16);
  const r = recvMsg(s, buf)!;
  t.equal(new TextDecoder().decode(buf.subarray(0, r.bytes)), 'hi');
  eventfdWrite(r.fds[0]!, 3);
  t.equal(eventfdRead(efd), 3, 'fd passed through listen/accept/connect works');
  for (const f of [r.fds[0]!, efd, c, s, lfd]) close(f);
});

t.test('stale socket replacement and address errors', (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'stale.sock');
  const first = unixListen(path);
  throwsSys(t, () => unixListen(path), 'EADDRINUSE', 'bind', 'live listener is not replaced');
  close(first); // leaves the socket file behind: stale
  t.ok(existsSync(path), 'stale file remains');
  throwsSys(t, () => unixConnect(path), 'ECONNREFUSED', 'connect', 'connect to a stale socket');
  const second = unixListen(path, 4);
  const c = unixConnect(path);
  t.ok(c >= 0, 'the replacement listens');
  close(c);
  close(second);
  const plain = join(dir, 'plain-file');
  writeFileSync(plain, 'keep me');
  throwsSys(t, () => unixListen(plain), 'EADDRINUSE', 'bind', 'a regular file is never replaced');
  throwsSys(t, () => unixConnect(join(dir, 'missing.sock')), 'ENOENT', 'connect', 'missing path');
  throwsSys(t, () => unixListen(join(dir, 'x'.repeat(120))), 'ENAMETOOLONG', 'bind', 'path too long');
  throwsSys(t, () => unixConnect(''), 'EINVAL', 'connect', 'empty path');
  throwsSys(t, () => unixListen(path, 0), 'EINVAL', 'listen', 'backlog 0');
  throwsSys(t, () => unixListen(join(dir, 'no-such-dir', 's.sock')), 'ENOENT', 'bind', 'missing directory');
  throwsSys(t, () => unixAccept(999999), 'EBADF', 'accept4', 'accept on a bad fd');
  const [a, b] = socketpair();
  throwsSys(t, () => unixAccept(a), 'EINVAL', 'accept4', 'accept on a non-listening socket');
  close(a);
  close(b);
  t.end();
});

t.test('the socket path appears only once the socket listens (a client that sees it can connect)', async (t) => {
  const dir = tempDir(t);
  const ROUNDS = 500;
  // The child spins on the path's existence and connects the moment it sees it; between bind()
  // and listen() a file without a listener would answer ECONNREFUSED.
  const sys = new URL('../src/index.ts', import.meta.url).href;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', `
    import { existsSync } from 'node:fs';
    import { join } from 'node:path';
    import { close, unixConnect } from ${JSON.stringify(sys)};
    const dir = process.argv[1];
    const out = (l) => new Promise((r) => process.stdout.write(l + '\\n', r));
    for (let i = 0; i < ${ROUNDS}; i++) {
      const p = join(dir, 's' + i + '.sock');
      await out('ready ' + i);
      while (!existsSync(p)) { /* spin */ }
      try { close(unixConnect(p)); await out('ok ' + i); } catch (e) { await out('err ' + i + ' ' + e.code); }
    }
  `, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
  const results: string[] = [];
  let buf = '';
  let listening: number | null = null;
  await new Promise<void>((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code) => { if (results.length < ROUNDS) reject(new Error(`client exited (${code}) after ${results.length} rounds`)); });
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const [what, n] = line.split(' ');
        if (what === 'ready') {
          try {
            listening = unixListen(join(dir, `s${n}.sock`));
          } catch (e) {
            child.kill();
            reject(e as Error);
            return;
          }
        } else {
          results.push(line);
          if (listening !== null) close(listening);
          listening = null;
          if (results.length === ROUNDS) resolve();
        }
      }
    });
  });
  child.kill();
  const refused = results.filter((r) => r.startsWith('err'));
  t.equal(results.length, ROUNDS, `${ROUNDS} rounds`);
  t.same(refused, [], 'no client saw the path before it could connect');
  t.same(readdirSync(dir).filter((n) => !/^s\d+\.sock$/.test(n)), [], 'no private names left behind');
  // A path with no room for the private name is bound directly and still works.
  const long = join(dir, 'x'.repeat(Math.max(1, 100 - dir.length)));
  const lfd = unixListen(long);
  const c = unixConnect(long);
  t.ok(c >= 0, `a ${Buffer.byteLength(long)}-byte path listens`);
  close(c);
  close(lfd);
});
