// regression (fuzz vu-session, seed 1): a kick or back-end channel fd that epoll refuses (a
// memfd: uv_poll_init fails with EPERM) made handle() throw a SysError when the ring started.
// It is now a typed INVALID_ARGUMENT on the request that carried the fd, ackable, and the fd
// is closed.
import t from 'tap';
import { memfdCreate, openFdCount } from '@vhost-ts/sys';
import * as C from '../src/constants.js';
import { BackendSession, MessageFramer, ProtocolError, encodeMessage, type Payload } from '../src/index.js';
import { EchoDevice } from '../src/testing/index.js';

function harness() {
  const replies: Uint8Array[] = [];
  const session = new BackendSession({ device: new EchoDevice(), send: (b) => { replies.push(b.slice()); }, log: () => {} });
  const framer = new MessageFramer('frontend', false);
  const send = (request: number, flags: number, payload: Payload, fds: number[] = []) => {
    const [frame] = framer.feed(encodeMessage(request, flags, payload), fds);
    return session.handle(frame);
  };
  return { session, replies, send };
}

const bit = (n: number) => 1n << BigInt(n);
const ackValue = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset + 12, 8).readBigUInt64LE(0);

t.test('SET_VRING_KICK with a memfd: failure ack when asked, fd closed', async (t) => {
  const before = openFdCount();
  const h = harness();
  await h.send(C.VHOST_USER_SET_FEATURES, 0, { kind: 'u64', value: bit(C.VHOST_USER_F_PROTOCOL_FEATURES) });
  await h.send(C.VHOST_USER_SET_PROTOCOL_FEATURES, 0, { kind: 'u64', value: bit(C.VHOST_USER_PROTOCOL_F_REPLY_ACK) });
  t.doesNotThrow(() => h.send(C.VHOST_USER_SET_VRING_KICK, C.VHOST_USER_NEED_REPLY_MASK,
    { kind: 'vring-fd', index: 0, noFd: false }, [memfdCreate('kick')]));
  t.equal(h.replies.length, 1, 'one reply');
  t.equal(ackValue(h.replies[0]), 1n, 'failure ack');
  await h.session.close();
  t.equal(openFdCount(), before, 'memfd closed');
});

t.test('SET_VRING_KICK with a memfd and no ack asked: typed error closes the connection', async (t) => {
  const before = openFdCount();
  const h = harness();
  try {
    await h.send(C.VHOST_USER_SET_VRING_KICK, 0, { kind: 'vring-fd', index: 0, noFd: false }, [memfdCreate('kick')]);
    t.fail('accepted');
  } catch (e) {
    t.ok(e instanceof ProtocolError, 'ProtocolError');
    t.equal((e as ProtocolError).code, 'INVALID_ARGUMENT');
  }
  await h.session.close();
  t.equal(openFdCount(), before, 'memfd closed');
});

t.test('SET_BACKEND_REQ_FD with a memfd: failure ack, fd closed', async (t) => {
  const before = openFdCount();
  const h = harness();
  await h.send(C.VHOST_USER_SET_FEATURES, 0, { kind: 'u64', value: bit(C.VHOST_USER_F_PROTOCOL_FEATURES) });
  await h.send(C.VHOST_USER_SET_PROTOCOL_FEATURES, 0,
    { kind: 'u64', value: bit(C.VHOST_USER_PROTOCOL_F_REPLY_ACK) | bit(C.VHOST_USER_PROTOCOL_F_BACKEND_REQ) });
  await h.send(C.VHOST_USER_SET_BACKEND_REQ_FD, C.VHOST_USER_NEED_REPLY_MASK, { kind: 'none' }, [memfdCreate('chan')]);
  t.equal(h.replies.length, 1);
  t.equal(ackValue(h.replies[0]), 1n, 'failure ack');
  await h.session.close();
  t.equal(openFdCount(), before, 'memfd closed');
});

t.test('SET_LOG_BASE / SET_INFLIGHT_FD with an fd that cannot be mapped: failure ack naming the request, fd closed', async (t) => {
  const { mkdtempSync, openSync, rmSync, writeFileSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { tmpdir } = await import('node:os');
  const dir = mkdtempSync(join(tmpdir(), 'vts-ro-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'ro');
  writeFileSync(file, Buffer.alloc(65536));
  const before = openFdCount();
  const logs: string[] = [];
  const replies: Uint8Array[] = [];
  const session = new BackendSession({ device: new EchoDevice(), send: (b) => { replies.push(b.slice()); }, log: (l) => { logs.push(l); } });
  const framer = new MessageFramer('frontend', false);
  const send = (request: number, flags: number, payload: Payload, fds: number[] = []) => {
    const [frame] = framer.feed(encodeMessage(request, flags, payload), fds);
    return session.handle(frame);
  };
  await send(C.VHOST_USER_SET_FEATURES, 0, { kind: 'u64', value: bit(C.VHOST_USER_F_PROTOCOL_FEATURES) });
  await send(C.VHOST_USER_SET_PROTOCOL_FEATURES, 0, {
    kind: 'u64',
    value: bit(C.VHOST_USER_PROTOCOL_F_REPLY_ACK) | bit(C.VHOST_USER_PROTOCOL_F_LOG_SHMFD) | bit(C.VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD),
  });
  // Read-only: a shared writable mapping is refused (EACCES).
  await send(C.VHOST_USER_SET_LOG_BASE, C.VHOST_USER_NEED_REPLY_MASK, { kind: 'log', mmapSize: 4096, mmapOffset: 0 }, [openSync(file, 'r')]);
  t.equal(replies.length, 1, 'one reply');
  t.equal(ackValue(replies[0]), 1n, 'failure ack, connection kept');
  t.ok(logs.some((l) => /SET_LOG_BASE: area of 4096 bytes cannot be mapped/.test(l)), 'the log names the request');
  await send(C.VHOST_USER_SET_INFLIGHT_FD, C.VHOST_USER_NEED_REPLY_MASK,
    { kind: 'inflight', mmapSize: 65536, mmapOffset: 0, numQueues: 1, queueSize: 16 }, [openSync(file, 'r')]);
  t.equal(replies.length, 2);
  t.equal(ackValue(replies[1]), 1n, 'failure ack');
  t.ok(logs.some((l) => /SET_INFLIGHT_FD: area of 65536 bytes cannot be mapped/.test(l)), 'the log names the request');
  await session.close();
  t.equal(openFdCount(), before, 'fds closed');
});
