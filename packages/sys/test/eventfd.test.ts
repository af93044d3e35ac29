import t from 'tap';
import { close, eventfd, eventfdRead, eventfdWrite, socketpair, sendMsg } from '../src/index.js';
import { throwsSys } from './helpers.js';

t.test('counter semantics', (t) => {
  const fd = eventfd();
  t.equal(eventfdRead(fd), 0, 'empty counter reads 0 (EAGAIN)');
  eventfdWrite(fd);
  eventfdWrite(fd, 41);
  t.equal(eventfdRead(fd), 42, 'writes add up');
  t.equal(eventfdRead(fd), 0, 'read resets the counter');
  close(fd);
  const init = eventfd(7);
  t.equal(eventfdRead(init), 7, 'initial value');
  close(init);
  t.end();
});

t.test('large values and overflow', (t) => {
  const fd = eventfd();
  eventfdWrite(fd, 2 ** 53 - 1);
  t.equal(eventfdRead(fd), 2 ** 53 - 1, 'largest safe value round-trips');
  // The counter saturates at 2^64 - 2; the write that would pass it fails
  // with EAGAIN (non-blocking eventfd).
  let err: unknown = null;
  let writes = 0;
  try {
    for (; writes < 4096; writes++) eventfdWrite(fd, 2 ** 53 - 1);
  } catch (e) {
    err = e;
  }
  t.equal((err as { code?: string } | null)?.code, 'EAGAIN', 'overflowing write throws EAGAIN');
  t.equal(writes, 2048, 'after 2048 writes of 2^53-1 (2^64 - 2048 <= max 2^64 - 2)');
  t.ok(eventfdRead(fd) > 2 ** 63, 'huge counter is returned as an (inexact) Number');
  close(fd);
  t.end();
});

t.test('errors', (t) => {
  const fd = eventfd();
  close(fd);
  throwsSys(t, () => eventfdRead(fd), 'EBADF', 'read', 'read closed fd');
  throwsSys(t, () => eventfdWrite(fd), 'EBADF', 'write', 'write closed fd');
  throwsSys(t, () => eventfdWrite(3, 0), 'EINVAL', 'eventfd_write', 'value 0');
  throwsSys(t, () => eventfdWrite(3, 2 ** 53), 'EINVAL', 'eventfd_write', 'value 2^53');
  throwsSys(t, () => eventfd(-1), 'EINVAL', 'eventfd', 'negative initial');
  throwsSys(t, () => eventfd(2 ** 32), 'EINVAL', 'eventfd', 'initial over u32');
  throwsSys(t, () => eventfdRead(NaN), 'EINVAL', 'eventfd_read', 'NaN fd');
  const [a, b] = socketpair();
  sendMsg(a, new Uint8Array(3));
  throwsSys(t, () => eventfdRead(b), 'EINVAL', 'read', 'short read from a non-eventfd');
  close(a);
  close(b);
  t.end();
});
