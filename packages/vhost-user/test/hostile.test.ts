// Hostile front-end input, each case on a real Unix socket with real fds. After every case the
// back-end must be alive, the next connection must complete a normal session, and no fd may leak.
import { readFileSync } from 'node:fs';
import t, { type Test } from 'tap';
import { close, eventfd, ftruncate, memfdCreate, openFdCount, sendMsg, socketpair, unixConnect } from '@vhost-ts/sys';
import * as C from '../src/constants.js';
import { encodeMessage, u64, vringState, type Payload } from '../src/index.js';
import { RawClient, connectAndNegotiate, pattern, rawMessage, startBackend, until } from './helpers.js';

const { path, backend, logs } = startBackend({ numQueues: 2 });
const baseline = openFdCount();

async function normalSession(): Promise<void> {
  const fe = await connectAndNegotiate(path);
  await fe.setupQueue(0, 16);
  const got = await fe.roundTrip(0, pattern(33));
  fe.close();
  await until(() => backend.activeSession === null);
  await backend.idle();
  if (Buffer.compare(got, pattern(33)) !== 0) throw new Error('echo mismatch');
}

async function afterCase(t: Test, name: string): Promise<void> {
  await until(() => backend.activeSession === null, 3000);
  await backend.idle();
  t.equal(openFdCount(), baseline, `${name}: no fd leaked`);
  await normalSession();
  t.equal(openFdCount(), baseline, `${name}: normal session afterwards, no fd leaked`);
}

/** A raw client that already set a valid memory table (fds owned by the test). */
function memfd(size: number): number {
  const fd = memfdCreate('hostile');
  ftruncate(fd, size);
  return fd;
}

function region(gpa: number, size: number, uva: number, off = 0): Payload {
  return { kind: 'mem-region', region: { guestPhysAddr: gpa, size, userAddr: uva, mmapOffset: off } };
}

async function expectClosed(t: Test, c: RawClient, what: string): Promise<void> {
  await until(() => c.closed, 3000);
  t.ok(c.closed, `${what}: connection closed by the back-end`);
}

type Case = [string, (t: Test) => Promise<void>];

const cases: Case[] = [
  ['truncated header', async (t) => {
    const c = new RawClient(path);
    c.send(new Uint8Array([1, 0, 0, 0, 1]));
    await new Promise((r) => setTimeout(r, 20));
    c.close();
    t.pass('sent 5 bytes and closed');
  }],
  ['size larger than what is sent, then close', async (t) => {
    const c = new RawClient(path);
    c.send(rawMessage(C.VHOST_USER_SET_VRING_ADDR, 1, 40, new Uint8Array(10)));
    await new Promise((r) => setTimeout(r, 20));
    c.close();
    await until(() => logs.some((l) => l.includes('middle of a message')));
    t.pass('truncation logged');
  }],
  ['size wrong for the type', async (t) => {
    const c = new RawClient(path);
    c.send(rawMessage(C.VHOST_USER_SET_VRING_NUM, 1, 12, new Uint8Array(12)));
    await expectClosed(t, c, 'SET_VRING_NUM size 12');
  }],
  ['oversized payload', async (t) => {
    const c = new RawClient(path);
    c.send(rawMessage(999, 1, 1 << 30));
    await expectClosed(t, c, 'size 1 GiB');
  }],
  ['bad version', async (t) => {
    const c = new RawClient(path);
    c.send(rawMessage(C.VHOST_USER_GET_FEATURES, 2, 0));
    await expectClosed(t, c, 'version 2');
  }],
  ['unknown request with NEED_REPLY', async (t) => {
    const c = new RawClient(path);
    const fd = eventfd(0);
    c.send(rawMessage(999, 1 | C.VHOST_USER_NEED_REPLY_MASK, 16, new Uint8Array(16)), [fd]);
    close(fd);
    c.send(encodeMessage(C.VHOST_USER_GET_QUEUE_NUM, 0, { kind: 'none' }));
    await until(() => c.frames.length === 2);
    t.equal(c.frames[0].header.request, 999);
    t.equal(Buffer.from(c.frames[0].body).readBigUInt64LE(0), 1n, 'failure reply');
    t.equal(c.frames[1].header.request, C.VHOST_USER_GET_QUEUE_NUM, 'connection continues');
    t.notOk(c.closed);
    c.close();
  }],
  ['missing fd (SET_VRING_KICK without fd and without the polling flag)', async (t) => {
    const c = new RawClient(path);
    c.send(encodeMessage(C.VHOST_USER_SET_VRING_KICK, 0, { kind: 'vring-fd', index: 0, noFd: false }));
    await expectClosed(t, c, 'missing kick fd');
  }],
  ['SET_VRING_KICK with a socket whose peer is gone (readable forever, not an eventfd)', async (t) => {
    const c = new RawClient(path);
    const [a, b] = socketpair();
    close(b);
    c.send(encodeMessage(C.VHOST_USER_SET_VRING_KICK, 0, { kind: 'vring-fd', index: 0, noFd: false }), [a]);
    close(a);
    await expectClosed(t, c, 'a dead socket as kick fd');
    t.ok(logs.some((l) => /ring 0: kick: fd is not an eventfd \(socket:/.test(l)), 'the log names the fd kind');
  }],
  ['SET_VRING_CALL with a memfd (not an eventfd)', async (t) => {
    const c = new RawClient(path);
    const fd = memfd(4096);
    c.send(encodeMessage(C.VHOST_USER_SET_VRING_CALL, 0, { kind: 'vring-fd', index: 1, noFd: false }), [fd]);
    close(fd);
    await expectClosed(t, c, 'a memfd as call fd');
    t.ok(logs.some((l) => /ring 1: call: fd is not an eventfd \(\/memfd:/.test(l)), 'the log names the fd');
  }],
  ['front-end that closes with replies unread: the log names the reset, not a poll EBADF', async (t) => {
    const get = encodeMessage(C.VHOST_USER_GET_FEATURES, 0, { kind: 'none' });
    const four = Buffer.concat([get, get, get, get]);
    const from = logs.length;
    for (let i = 0; i < 12; i++) {
      const fd = unixConnect(path);
      sendMsg(fd, four);
      await new Promise((r) => setTimeout(r, i % 3));
      close(fd);
      await until(() => backend.activeSession === null, 3000);
    }
    const closes = logs.slice(from).filter((l) => /closing connection/.test(l));
    t.notOk(closes.some((l) => /EBADF/.test(l)), `no EBADF among ${closes.length} close reasons`);
    t.ok(closes.every((l) => /ECONNRESET|EPIPE/.test(l)), `each says reset or broken pipe: ${[...new Set(closes)].join('; ')}`);
  }],
  ['front-end shrinks the memfd behind a running ring (was: SIGBUS killed the process)', async (t) => {
    const fe = await connectAndNegotiate(path);
    const q = await fe.setupQueue(0, 16);
    t.same(await fe.roundTrip(0, pattern(20)), pattern(20), 'the ring works');
    let closed = false;
    fe.on('close', () => { closed = true; });
    for (const fd of (fe.mem as unknown as { fds: number[] }).fds) ftruncate(fd, 0);
    q.kick(); // the back-end reads the avail ring: a page that is gone
    await until(() => closed, 3000);
    t.ok(closed, 'the back-end ended the connection');
    t.ok(logs.some((l) => /closing connection: the front-end shrank the file behind its shared memory \(\d+ page/.test(l)),
      'and said why');
    fe.close();
  }],
  ['extra fds', async (t) => {
    const c = new RawClient(path);
    const fds = [eventfd(0), eventfd(0), eventfd(0)];
    c.send(encodeMessage(C.VHOST_USER_SET_FEATURES, 0, u64(0)), fds);
    fds.forEach((fd) => close(fd));
    await expectClosed(t, c, '3 fds on SET_FEATURES');
  }],
  ['SET_MEM_TABLE claiming 0 regions in a 1-region payload', async (t) => {
    const c = new RawClient(path);
    c.send(rawMessage(C.VHOST_USER_SET_MEM_TABLE, 1, 40, new Uint8Array(40)));
    await expectClosed(t, c, '0 regions in 40 bytes');
  }],
  ['SET_MEM_TABLE with 0 regions and a stray fd', async (t) => {
    const c = new RawClient(path);
    const fd = memfd(4096);
    c.send(rawMessage(C.VHOST_USER_SET_MEM_TABLE, 1, 8, new Uint8Array(8)), [fd]);
    close(fd);
    await expectClosed(t, c, 'an fd with an empty table');
  }],
  ['SET_MEM_TABLE with a sparse 8 TiB region: mapped over many event-loop turns; a connection gone mid-mapping leaves nothing mapped', async (t) => {
    const GiB = 2 ** 30;
    // Mappings of the test's memfds ("/memfd:hostile (deleted)").
    const mapCount = (): number => readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes('memfd:hostile')).length;
    const before = mapCount();
    const c = new RawClient(path);
    c.send(encodeMessage(C.VHOST_USER_SET_PROTOCOL_FEATURES, 0, u64(1n << BigInt(C.VHOST_USER_PROTOCOL_F_REPLY_ACK))));
    const a = memfd(8192 * GiB); // costs the front-end nothing
    let worst = 0;
    let last = performance.now();
    const tick = setInterval(() => { const now = performance.now(); worst = Math.max(worst, now - last); last = now; }, 1);
    c.send(encodeMessage(C.VHOST_USER_SET_MEM_TABLE, C.VHOST_USER_NEED_REPLY_MASK, { kind: 'memory', regions: [
      { guestPhysAddr: 0, size: 8192 * GiB, userAddr: 2 ** 46, mmapOffset: 0 },
    ] }), [a]);
    close(a);
    await until(() => c.frames.length === 1, 20_000);
    clearInterval(tick);
    t.equal(Buffer.from(c.frames[0].body).readBigUInt64LE(0), 0n, 'mapped and acked');
    t.ok(worst < 500, `the event loop was never held longer than ${worst.toFixed(0)} ms (was: the whole mapping, seconds)`);
    c.close();
    await until(() => backend.activeSession === null);
    await backend.idle();
    // The same, but the front-end leaves while the back-end maps.
    const c2 = new RawClient(path);
    const b = memfd(2048 * GiB);
    c2.send(encodeMessage(C.VHOST_USER_SET_MEM_TABLE, 0, { kind: 'memory', regions: [
      { guestPhysAddr: 0, size: 2048 * GiB, userAddr: 2 ** 46, mmapOffset: 0 },
    ] }), [b]);
    close(b);
    await until(() => mapCount() > before, 5000);
    const midway = mapCount();
    c2.close();
    await until(() => backend.activeSession === null, 20_000);
    await backend.idle();
    await new Promise((r) => setTimeout(r, 50));
    t.ok(midway > before, `the back-end was mapping when the front-end left (${midway - before} pieces)`);
    t.equal(mapCount(), before, 'no mapping left behind');
  }],
  ['SET_MEM_TABLE with too many regions', async (t) => {
    const c = new RawClient(path);
    const body = Buffer.alloc(8 + 9 * 32);
    body.writeUInt32LE(9, 0);
    const fds = Array.from({ length: 8 }, () => memfd(4096));
    c.send(rawMessage(C.VHOST_USER_SET_MEM_TABLE, 1, body.length, body), fds);
    fds.forEach((fd) => close(fd));
    await expectClosed(t, c, '9 regions');
  }],
  ['SET_MEM_TABLE with overlapping regions', async (t) => {
    const c = new RawClient(path);
    const a = memfd(0x10000), b = memfd(0x10000);
    c.send(encodeMessage(C.VHOST_USER_SET_MEM_TABLE, 0, { kind: 'memory', regions: [
      { guestPhysAddr: 0x10000, size: 0x10000, userAddr: 0x1000000, mmapOffset: 0 },
      { guestPhysAddr: 0x18000, size: 0x10000, userAddr: 0x2000000, mmapOffset: 0 },
    ] }), [a, b]);
    close(a); close(b);
    await expectClosed(t, c, 'overlap');
  }],
  ['SET_MEM_TABLE region larger than its fd (with REPLY_ACK: failure ack, session goes on)', async (t) => {
    const c = new RawClient(path);
    c.send(encodeMessage(C.VHOST_USER_SET_PROTOCOL_FEATURES, 0, u64(1n << BigInt(C.VHOST_USER_PROTOCOL_F_REPLY_ACK))));
    const a = memfd(0x1000);
    c.send(encodeMessage(C.VHOST_USER_SET_MEM_TABLE, C.VHOST_USER_NEED_REPLY_MASK, { kind: 'memory', regions: [
      { guestPhysAddr: 0x10000, size: 0x100000, userAddr: 0x1000000, mmapOffset: 0 },
    ] }), [a]);
    close(a);
    await until(() => c.frames.length === 1);
    t.equal(Buffer.from(c.frames[0].body).readBigUInt64LE(0), 1n, 'failure ack');
    t.notOk(c.closed, 'still connected');
    // and without REPLY_ACK the same thing closes the connection
    c.close();
    await until(() => backend.activeSession === null);
    await backend.idle();
    const c2 = new RawClient(path);
    const b = memfd(0x1000);
    c2.send(encodeMessage(C.VHOST_USER_SET_MEM_TABLE, 0, { kind: 'memory', regions: [
      { guestPhysAddr: 0, size: 0x2000, userAddr: 0x1000000, mmapOffset: 0x1000 },
    ] }), [b]);
    close(b);
    await expectClosed(t, c2, 'mmap_offset + size beyond the fd');
  }],
  ['SET_VRING_NUM 0, non-power-of-two, above 32768', async (t) => {
    for (const num of [0, 3, 65536]) {
      const c = new RawClient(path);
      c.send(encodeMessage(C.VHOST_USER_SET_VRING_NUM, 0, vringState(0, num)));
      await expectClosed(t, c, `num ${num}`);
      await until(() => backend.activeSession === null);
      await backend.idle();
    }
  }],
  ['SET_VRING_ADDR outside memory', async (t) => {
    const c = new RawClient(path);
    const a = memfd(0x10000);
    c.send(encodeMessage(C.VHOST_USER_SET_MEM_TABLE, 0, { kind: 'memory', regions: [
      { guestPhysAddr: 0x10000, size: 0x10000, userAddr: 0x1000000, mmapOffset: 0 }] }), [a]);
    close(a);
    c.send(encodeMessage(C.VHOST_USER_SET_VRING_NUM, 0, vringState(0, 16)));
    c.send(encodeMessage(C.VHOST_USER_SET_VRING_ADDR, 0, {
      kind: 'vring-addr', index: 0, flags: 0, descUserAddr: 0x100ff80, usedUserAddr: 0x1000000,
      availUserAddr: 0x1001000, logGuestAddr: 0,
    }));
    await expectClosed(t, c, 'descriptor table straddles the end of memory');
  }],
  ['ring index >= queue count', async (t) => {
    for (const req of [C.VHOST_USER_SET_VRING_NUM, C.VHOST_USER_GET_VRING_BASE, C.VHOST_USER_SET_VRING_ENABLE]) {
      const c = new RawClient(path);
      c.send(encodeMessage(req, 0, vringState(2, 16)));
      await expectClosed(t, c, `request ${req} on ring 2`);
      await until(() => backend.activeSession === null);
      await backend.idle();
    }
    const c = new RawClient(path);
    const fd = eventfd(0);
    c.send(encodeMessage(C.VHOST_USER_SET_VRING_CALL, 0, { kind: 'vring-fd', index: 200, noFd: false }), [fd]);
    close(fd);
    await expectClosed(t, c, 'SET_VRING_CALL on ring 200 (fd closed)');
  }],
  ['address >= 2^53', async (t) => {
    const c = new RawClient(path);
    const body = Buffer.alloc(40);
    body.writeBigUInt64LE(1n << 60n, 8);
    c.send(rawMessage(C.VHOST_USER_SET_VRING_ADDR, 1, 40, body));
    await expectClosed(t, c, 'huge address');
  }],
  ['address >= 2^53 with REPLY_ACK: that request refused, the connection kept', async (t) => {
    const fe = await connectAndNegotiate(path);
    t.ok(fe.protocol & (1n << BigInt(C.VHOST_USER_PROTOCOL_F_REPLY_ACK)), 'REPLY_ACK negotiated');
    await fe.send(C.VHOST_USER_SET_VRING_NUM, vringState(0, 16));
    for (const field of [8, 16, 24, 32]) {
      const body = Buffer.alloc(40);
      body.writeBigUInt64LE(1n << 53n, field);
      const reply = await fe.requestRaw(C.VHOST_USER_SET_VRING_ADDR,
        rawMessage(C.VHOST_USER_SET_VRING_ADDR, 1 | C.VHOST_USER_NEED_REPLY_MASK, 40, body));
      t.same(reply.payload, u64(1), `field at +${field}: failure ack`);
    }
    t.ok(logs.some((l) => /VHOST_USER_SET_VRING_ADDR rejected: .*>= 2\^53/.test(l)), 'refusal logged, request named');
    // The ring is still usable with a good address afterwards.
    await fe.setupQueue(0, 16);
    t.same(await fe.roundTrip(0, pattern(21)), pattern(21), 'the same ring then works');
    t.notOk(fe.closed, 'connection kept');
    fe.close();
  }],
  ['SET_MEM_TABLE while rings run, then disconnect mid-session', async (t) => {
    const fe = await connectAndNegotiate(path);
    await fe.setupQueue(0, 16);
    await fe.setupQueue(1, 16);
    t.same(await fe.roundTrip(1, pattern(7)), pattern(7));
    fe.close();
    t.pass('disconnected with two running rings');
  }],
  ['10 000 messages in a burst', async (t) => {
    const c = new RawClient(path);
    const one = encodeMessage(C.VHOST_USER_GET_FEATURES, 0, { kind: 'none' });
    const burst = new Uint8Array(one.length * 10_000);
    for (let i = 0; i < 10_000; i++) burst.set(one, i * one.length);
    c.send(burst);
    await until(() => c.frames.length === 10_000, 10_000);
    t.equal(c.frames.length, 10_000, '10 000 replies');
    t.notOk(c.closed);
    c.close();
  }],
  ['1 000 connect/disconnect cycles', async (t) => {
    const rss0 = process.memoryUsage().rss;
    const fd0 = openFdCount();
    const t0 = Date.now();
    // Spin on setImmediate rather than timers: each cycle is a few syscalls, not milliseconds.
    const spin = async (cond: () => boolean) => {
      const end = Date.now() + 2000;
      while (!cond() && Date.now() < end) await new Promise((r) => setImmediate(r));
    };
    for (let i = 0; i < 1000; i++) {
      const c = new RawClient(path);
      c.send(encodeMessage(C.VHOST_USER_GET_FEATURES, 0, { kind: 'none' }));
      await spin(() => c.frames.length === 1);
      c.close();
      await spin(() => backend.activeSession === null);
      await backend.idle();
    }
    t.equal(openFdCount(), fd0, 'fd count flat');
    const grow = process.memoryUsage().rss - rss0;
    t.ok(grow < 64 * 1024 * 1024, `RSS growth ${(grow / 1048576).toFixed(1)} MiB is small`);
    t.ok(Date.now() - t0 < 20_000, `took ${Date.now() - t0} ms`);
  }],
];

for (const [name, fn] of cases) {
  t.test(name, async (t) => {
    await fn(t);
    await afterCase(t, name);
  });
}

t.test('polling mode (SET_VRING_KICK with the no-fd flag) processes without kicks', async (t) => {
  const fe = await connectAndNegotiate(path);
  const q = await fe.setupQueue(0, 16);
  await fe.send(C.VHOST_USER_SET_VRING_KICK, { kind: 'vring-fd', index: 0, noFd: true });
  const a = fe.mem.alloc(8), b = fe.mem.alloc(8);
  q.driver.addChain([a, b], [8, 8], 2, 1);
  q.driver.publish(); // no kick
  await until(() => q.driver.usedCount() === 1);
  t.pass('completed by polling');
  fe.close();
  await afterCase(t, 'polling');
});

t.teardown(() => backend.close());
