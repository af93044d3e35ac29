import t from 'tap';
import {
  close, eventfd, eventfdRead, eventfdWrite, IORING_OP, IoUring, OP_STRIDE, openFdCount, recvMsg, sendMsg,
  socketpair,
} from '../src/index.js';

t.test('fd count returns to baseline after 1000 cycles', (t) => {
  // warm up lazily-opened fds (io_uring/eventfd paths, libuv internals)
  const warm = new IoUring(4);
  warm.close();
  const baseline = openFdCount();
  const buf = new Uint8Array(16);
  const ops = new Float64Array(OP_STRIDE);
  const out = new Float64Array(8);
  for (let i = 0; i < 1000; i++) {
    const [a, b] = socketpair();
    const e1 = eventfd();
    const e2 = eventfd();
    sendMsg(a, new Uint8Array([i & 0xff]), [e1, e2]);
    const r = recvMsg(b, buf)!;
    if (r.fds.length !== 2) throw new Error('fds not received');
    eventfdWrite(r.fds[0]!);
    if (eventfdRead(e1) !== 1) throw new Error('passed fd does not alias the original');
    const ring = new IoUring(2);
    ops.set([IORING_OP.FDATASYNC, e1, 0, i, 0, 0, 0, 0]);
    ring.submit(ops, 1, new Float64Array(0)); // completes with -EINVAL; left in flight on purpose
    if (i % 2 === 0) ring.reap(out);
    ring.close();
    for (const f of [...r.fds, e1, e2, a, b]) close(f);
  }
  t.equal(openFdCount(), baseline, 'no fd leaked');
  t.end();
});

t.test('openFdCount counts what we open', (t) => {
  const base = openFdCount();
  const [a, b] = socketpair();
  t.equal(openFdCount(), base + 2);
  close(a);
  close(b);
  t.equal(openFdCount(), base);
  t.end();
});
