import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import t from 'tap';
import {
  close, DISCONNECT, eventfd, eventfdRead, eventfdWrite, FdWatcher, openFile, READABLE, sendMsg, socketpair,
  SysError, WRITABLE,
} from '../src/index.js';
import { sleep, tempDir, throwsSys, waitFor } from './helpers.js';

t.test('fires READABLE on the Node loop, stop/start, close', async (t) => {
  const fd = eventfd();
  const seen: number[] = [];
  const w = new FdWatcher(fd, (events, err) => {
    t.equal(err, undefined, 'no error');
    seen.push(events);
    eventfdRead(fd); // level-triggered: drain or it fires again
  });
  t.equal(w.fd, fd);
  w.start(READABLE);
  await sleep(20);
  t.same(seen, [], 'nothing before a write');
  eventfdWrite(fd);
  t.ok(await waitFor(() => seen.length === 1), 'callback after a write');
  t.equal(seen[0]! & READABLE, READABLE, 'READABLE bit');
  w.stop();
  eventfdWrite(fd);
  await sleep(20);
  t.equal(seen.length, 1, 'stopped watcher does not fire');
  w.start(READABLE);
  t.ok(await waitFor(() => seen.length === 2), 'restarted watcher sees the pending count');
  w.close();
  w.close();
  throwsSys(t, () => w.start(READABLE), 'EBADF', 'uv_poll_start', 'start after close');
  eventfdWrite(fd);
  await sleep(20);
  t.equal(seen.length, 2, 'closed watcher does not fire');
  t.equal(eventfdRead(fd), 1, 'close() did not close the fd');
  close(fd);
});

t.test('WRITABLE and DISCONNECT on a socket', async (t) => {
  const [a, b] = socketpair();
  let events = 0;
  const w = new FdWatcher(a, (ev) => {
    events |= ev;
  });
  w.start(WRITABLE);
  t.ok(await waitFor(() => (events & WRITABLE) !== 0), 'empty socket is writable');
  w.stop();
  events = 0;
  w.start(READABLE | DISCONNECT);
  close(b);
  t.ok(await waitFor(() => (events & DISCONNECT) !== 0), 'peer close reported as DISCONNECT');
  w.close();
  close(a);
});

t.test('closing the fd through close() closes its watcher', async (t) => {
  const fd = eventfd();
  let calls = 0;
  const w = new FdWatcher(fd, () => calls++);
  w.start(READABLE);
  close(fd); // must not make libuv abort on the next loop iteration
  await sleep(20);
  throwsSys(t, () => w.start(READABLE), 'EBADF', 'uv_poll_start', 'the watcher is closed with its fd');
  w.close();
  const again = eventfd();
  const w2 = new FdWatcher(again, () => {
    calls++;
    eventfdRead(again);
  }); // same number may be reused: no EEXIST
  w2.start(READABLE);
  eventfdWrite(again);
  t.ok(await waitFor(() => calls >= 1), 'a new watcher on a reused fd number works');
  w2.close();
  close(again);
});

t.test('errors', (t) => {
  const dir = tempDir(t);
  const fd = eventfd();
  close(fd);
  throwsSys(t, () => new FdWatcher(fd, () => {}), 'EBADF', 'uv_poll_init', 'closed fd');
  throwsSys(t, () => new FdWatcher(-1, () => {}), 'EINVAL', 'uv_poll_init', 'negative fd');
  const live = eventfd();
  throwsSys(t, () => new FdWatcher(live, 'x' as unknown as () => void), 'EINVAL', 'uv_poll_init', 'callback');
  const w = new FdWatcher(live, () => {});
  throwsSys(t, () => new FdWatcher(live, () => {}), 'EEXIST', 'uv_poll_init', 'second watcher on one fd');
  throwsSys(t, () => w.start(0), 'EINVAL', 'uv_poll_start', 'no events');
  throwsSys(t, () => w.start(64), 'EINVAL', 'uv_poll_start', 'unknown event bits');
  w.close();
  close(live);
  const path = join(dir, 'plain');
  writeFileSync(path, 'x');
  const file = openFile(path);
  throwsSys(t, () => new FdWatcher(file, () => {}), 'EPERM', 'uv_poll_init', 'regular files cannot be polled');
  close(file);
  t.end();
});

t.test('a throwing callback becomes an uncaughtException, not a crash', async (t) => {
  const fd = eventfd();
  const boom = new Error('boom');
  let caught: unknown = null;
  const listeners = process.listeners('uncaughtException');
  process.removeAllListeners('uncaughtException');
  process.once('uncaughtException', (e) => {
    caught = e;
  });
  const w = new FdWatcher(fd, () => {
    eventfdRead(fd);
    throw boom;
  });
  w.start(READABLE);
  eventfdWrite(fd);
  const ok = await waitFor(() => caught !== null);
  for (const l of listeners) process.on('uncaughtException', l);
  t.ok(ok, 'uncaughtException raised');
  t.equal(caught, boom, 'with the thrown error');
  w.close();
  close(fd);
});

t.test('unref lets the loop idle', (t) => {
  const fd = eventfd();
  const w = new FdWatcher(fd, () => {});
  w.start(READABLE);
  w.unref();
  w.ref();
  w.close();
  close(fd);
  t.ok(new SysError('E', 1, 's') instanceof SysError);
  t.end();
});

t.test('errors in the sending path are typed', (t) => {
  const [a, b] = socketpair();
  close(b);
  throwsSys(t, () => sendMsg(a, new Uint8Array(1)), 'EPIPE', 'sendmsg', 'send to a closed peer');
  close(a);
  t.end();
});
