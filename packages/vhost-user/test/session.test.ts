import t from 'tap';
import { openFdCount } from '@vhost-ts/sys';
import {
  bit, VIRTIO_RING_F_EVENT_IDX, VHOST_USER_F_PROTOCOL_FEATURES, VHOST_USER_PROTOCOL_F_REPLY_ACK,
  VHOST_USER_BACKEND_CONFIG_CHANGE_MSG, VHOST_F_LOG_ALL, VIRTIO_CONFIG_S_DRIVER_OK, VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS,
  VHOST_USER_PROTOCOL_F_MQ, VHOST_USER_PROTOCOL_F_CONFIG, VHOST_USER_PROTOCOL_F_LOG_SHMFD,
  VHOST_USER_PROTOCOL_F_SHARED_OBJECT, VHOST_USER_PROTOCOL_F_DEVICE_STATE, VIRTIO_F_VERSION_1,
  VHOST_USER_SET_VRING_NUM, VHOST_USER_ADD_MEM_REG, vringState, VhostUserFrontend,
} from '../src/index.js';
import { connectAndNegotiate, pattern, reattachRing, startBackend, until } from './helpers.js';

t.test('full session: negotiation, two queues, echo, EVENT_IDX on and off', async (t) => {
  for (const eventIdx of [true, false]) {
    const { path, backend, device } = startBackend({ numQueues: 2 });
    const fe = await connectAndNegotiate(path, { features: eventIdx ? ~0n : ~bit(VIRTIO_RING_F_EVENT_IDX) });
    t.equal(await fe.getQueueNum(), 2n);
    t.equal((fe.features & bit(VIRTIO_RING_F_EVENT_IDX)) !== 0n, eventIdx, 'EVENT_IDX as asked');
    t.ok(fe.features & bit(VIRTIO_F_VERSION_1), 'VERSION_1');
    const offered = await fe.getProtocolFeatures();
    t.ok(offered & bit(VHOST_USER_PROTOCOL_F_MQ), 'MQ offered');
    t.ok(offered & bit(VHOST_USER_PROTOCOL_F_LOG_SHMFD), 'LOG_SHMFD offered');
    t.notOk(offered & bit(VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS), 'INBAND not offered unless the device asks');
    t.notOk(offered & bit(VHOST_USER_PROTOCOL_F_SHARED_OBJECT), 'SHARED_OBJECT not offered');
    t.notOk(offered & bit(VHOST_USER_PROTOCOL_F_DEVICE_STATE), 'DEVICE_STATE not offered');
    await fe.setupQueue(0, 64, { regionIndex: 0 });
    await fe.setupQueue(1, 128, { regionIndex: 1 });
    await until(() => device.queues.size === 2);
    for (let i = 0; i < 20; i++) {
      const data = pattern(100 + i, i);
      t.same(await fe.roundTrip(i % 2, data), data, `echo ${i} (eventIdx ${eventIdx})`);
    }
    t.ok(fe.queues.get(0)!.calls > 0, 'call eventfd signalled');
    t.equal(device.queues.get(0)!.stats.requests + device.queues.get(1)!.stats.requests, 20);
    // GET_VRING_BASE stops the ring and reports the next avail index
    t.equal(await fe.getVringBase(0), 10);
    t.equal(await fe.getVringBase(1), 10);
    fe.close();
    await backend.close();
  }
});

t.test('without PROTOCOL_FEATURES, rings are enabled by SET_FEATURES', async (t) => {
  const { path, backend } = startBackend({ numQueues: 1 });
  const fe = await connectAndNegotiate(path, { features: ~bit(VHOST_USER_F_PROTOCOL_FEATURES) });
  t.equal(fe.protocol, 0n);
  await fe.setupQueue(0, 32);
  t.same(await fe.roundTrip(0, pattern(10)), pattern(10));
  fe.close();
  await backend.close();
});

t.test('disabled ring: kicks wait for SET_VRING_ENABLE', async (t) => {
  const { path, backend, device } = startBackend({ numQueues: 1 });
  const fe = await connectAndNegotiate(path);
  const q = await fe.setupQueue(0, 32, { enable: false });
  const inGpa = fe.mem.alloc(4), outGpa = fe.mem.alloc(4);
  q.driver.addChain([inGpa, outGpa], [4, 4], 2, 1);
  q.driver.publish();
  q.kick();
  await new Promise((r) => setTimeout(r, 30));
  t.equal(q.driver.usedCount(), 0, 'nothing processed while disabled');
  await fe.setVringEnable(0, true);
  await until(() => q.driver.usedCount() === 1);
  t.equal(device.queues.get(0)!.stats.requests, 1);
  fe.close();
  await backend.close();
});

t.test('GET_VRING_BASE waits for in-flight requests', async (t) => {
  const { path, backend, device } = startBackend({ numQueues: 1, delayMs: 40 });
  const fe = await connectAndNegotiate(path);
  const q = await fe.setupQueue(0, 32);
  for (let i = 0; i < 3; i++) {
    const a = fe.mem.alloc(8), b = fe.mem.alloc(8);
    q.driver.addChain([a, b], [8, 8], 2, 1);
  }
  q.driver.publish();
  q.kick();
  await until(() => device.queues.get(0)?.stats.requests === 3);
  t.equal(q.driver.usedCount(), 0, 'still in flight');
  const t0 = Date.now();
  t.equal(await fe.getVringBase(0), 3);
  t.ok(Date.now() - t0 >= 20, 'reply came after the delayed completions');
  t.equal(q.driver.usedCount(), 3, 'all completed before the reply');
  fe.close();
  await backend.close();
});

t.test('config read/write, CONFIG_CHANGE_MSG, REPLY_ACK failures, status', async (t) => {
  const { path, backend, device } = startBackend({ numQueues: 1 });
  const fe = await connectAndNegotiate(path);
  t.ok(fe.protocol & bit(VHOST_USER_PROTOCOL_F_REPLY_ACK));
  t.same(await fe.getConfig(2, 4), Uint8Array.of(2, 3, 4, 5));
  t.same(await fe.getConfig(250, 6), new Uint8Array(6), 'beyond the device config reads 0');
  t.equal(await fe.getConfig(250, 7), null, 'offset+size > 256: error reply (empty payload)');
  await fe.setConfig(0, Uint8Array.of(9, 9));
  t.same(device.config.subarray(0, 2), Uint8Array.of(9, 9));
  await t.rejects(fe.setConfig(15, Uint8Array.of(1, 2)), { code: 'DEVICE_FAILED' }, 'device refused: ack 1');
  await t.rejects(fe.setConfig(0, Uint8Array.of(1), 7), { code: 'DEVICE_FAILED' }, 'bad flags: ack 1');
  // a semantic error with REPLY_ACK: failure ack, connection stays
  await t.rejects(fe.send(VHOST_USER_SET_VRING_NUM, vringState(0, 3)), { code: 'DEVICE_FAILED' });
  await t.rejects(fe.send(VHOST_USER_SET_VRING_NUM, vringState(5, 64)), { code: 'DEVICE_FAILED' });
  t.equal(await fe.getQueueNum(), 1n, 'still connected');
  device.changeConfig(1, Uint8Array.of(42));
  await until(() => fe.backendRequests.length === 1);
  t.equal(fe.backendRequests[0].request, VHOST_USER_BACKEND_CONFIG_CHANGE_MSG);
  t.same(await fe.getConfig(1, 1), Uint8Array.of(42));
  await fe.setStatus(VIRTIO_CONFIG_S_DRIVER_OK);
  t.equal(await fe.getStatus(), BigInt(VIRTIO_CONFIG_S_DRIVER_OK));
  fe.close();
  await backend.close();
});

t.test('read-only config: SET_CONFIG fails, CONFIG not negotiated: GET_CONFIG error', async (t) => {
  const { path, backend } = startBackend({ numQueues: 1, readOnlyConfig: true });
  const fe = await connectAndNegotiate(path);
  await t.rejects(fe.setConfig(0, Uint8Array.of(1)), { code: 'DEVICE_FAILED' });
  fe.close();
  await backend.close();
  const b2 = startBackend({ numQueues: 1 });
  const fe2 = await connectAndNegotiate(b2.path, { protocolFeatures: ~bit(VHOST_USER_PROTOCOL_F_CONFIG) });
  t.equal(await fe2.getConfig(0, 4), null);
  fe2.close();
  await b2.backend.close();
});

t.test('device marks a queue broken: NEEDS_RESET in status, VRING_ERR signalled', async (t) => {
  const { path, backend, logs } = startBackend({ numQueues: 1 });
  const fe = await connectAndNegotiate(path);
  const q = await fe.setupQueue(0, 16);
  // a head out of range breaks the queue
  q.driver.pushAvailRaw(999);
  q.driver.publish();
  q.kick();
  const { FdWatcher, READABLE, eventfdRead } = await import('@vhost-ts/sys');
  const errSeen = await new Promise<boolean>((resolve) => {
    const w = new FdWatcher(q.errFd, () => { eventfdRead(q.errFd); w.close(); resolve(true); });
    w.start(READABLE);
    setTimeout(() => { w.close(); resolve(false); }, 2000);
  });
  t.ok(errSeen, 'VRING_ERR eventfd signalled');
  t.ok((await fe.getStatus()) & 0x40n, 'NEEDS_RESET');
  t.ok(logs.some((l) => l.includes('broken')), 'logged');
  t.equal(logs.filter((l) => l.includes('broken')).length, 1, 'logged once');
  t.equal(fe.backendRequests.length, 0, 'no CONFIG_CHANGE_MSG before DRIVER_OK');
  fe.close();
  await backend.close();
});

t.test('virtio 1.2 §2.1.2.1: NEEDS_RESET after DRIVER_OK sends one CONFIG_CHANGE_MSG per device break', async (t) => {
  const { path, backend } = startBackend({ numQueues: 2 });
  const fe = await connectAndNegotiate(path);
  t.ok(fe.protocol & bit(VHOST_USER_PROTOCOL_F_CONFIG), 'CONFIG negotiated');
  await fe.setStatus(VIRTIO_CONFIG_S_DRIVER_OK);
  const q0 = await fe.setupQueue(0, 16);
  const q1 = await fe.setupQueue(1, 16);
  q0.driver.pushAvailRaw(999);
  q0.driver.publish();
  q0.kick();
  await until(() => fe.backendRequests.length === 1);
  t.equal(fe.backendRequests[0].request, VHOST_USER_BACKEND_CONFIG_CHANGE_MSG, 'configuration change notification');
  t.ok((await fe.getStatus()) & 0x40n, 'GET_STATUS then reports NEEDS_RESET');
  // A second ring breaking: the device was already NEEDS_RESET, no second notification.
  q1.driver.pushAvailRaw(999);
  q1.driver.publish();
  q1.kick();
  await new Promise((r) => setTimeout(r, 50));
  t.equal(fe.backendRequests.length, 1, 'one notification per device break');
  // A reset (status 0) clears NEEDS_RESET; a new break after DRIVER_OK notifies again.
  await fe.setStatus(0);
  t.equal(await fe.getStatus(), 0n, 'NEEDS_RESET cleared by status 0');
  fe.close();
  await backend.close();
});

t.test('dirty log: bits set for used-ring and data writes', async (t) => {
  const { path, backend } = startBackend({ numQueues: 1 });
  const fe = await connectAndNegotiate(path);
  const q = await fe.setupQueue(0, 16, { regionIndex: 1 });
  // log must cover GPA up to 4 GiB + 2 MiB: pages/8 bytes
  const pages = (0x1_0000_0000 + 0x20_0000) / 4096;
  const { log, unmap } = await fe.setLogBase(Math.ceil(pages / 8));
  await fe.setFeatures(fe.features | bit(VHOST_F_LOG_ALL));
  const outGpa = fe.mem.alloc(4096 * 2, 4096, 1);
  const inGpa = fe.mem.alloc(64, 8, 1);
  fe.mem.memory.writeFrom(inGpa, pattern(64));
  q.driver.addChain([inGpa, outGpa], [64, 64], 2, 1);
  q.driver.publish();
  q.kick();
  await until(() => q.driver.usedCount() === 1);
  const isDirty = (gpa: number) => (log[Math.floor(gpa / 4096 / 8)] & (1 << (Math.floor(gpa / 4096) % 8))) !== 0;
  t.ok(isDirty(outGpa), 'data page dirty');
  t.ok(isDirty(q.layout.used), 'used ring page dirty');
  t.notOk(isDirty(outGpa + 4096), 'untouched page clean');
  t.notOk(isDirty(0x10_0000), 'region 0 clean');
  unmap();
  fe.close();
  await backend.close();
});

t.test('dirty log switched on while a ring runs (QEMU migration order): marks counted and logged', async (t) => {
  const { path, backend, logs } = startBackend({ numQueues: 1 });
  // Like QEMU: LOG_ALL is not acked at start, only when migration begins.
  const fe = await connectAndNegotiate(path, { features: ~bit(VHOST_F_LOG_ALL) });
  const q = await fe.setupQueue(0, 16, { regionIndex: 1 });
  t.same(await fe.roundTrip(0, pattern(32)), pattern(32), 'ring runs before migration');
  t.notOk(logs.some((l) => l.includes('dirty')), 'nothing about dirty logging before SET_LOG_BASE');
  // QEMU's vhost_dev_set_log: SET_LOG_BASE, then SET_FEATURES | LOG_ALL, rings keep running.
  const pages = (0x1_0000_0000 + 0x20_0000) / 4096;
  const { log, unmap } = await fe.setLogBase(Math.ceil(pages / 8));
  t.ok(logs.some((l) => /dirty log base set \(\d+ bytes/.test(l)), 'SET_LOG_BASE logged');
  t.notOk(logs.some((l) => l.includes('dirty logging on')), 'a log base alone does not turn logging on');
  await fe.setFeatures(fe.features | bit(VHOST_F_LOG_ALL));
  t.equal(logs.filter((l) => l.includes('dirty logging on (VHOST_F_LOG_ALL)')).length, 1, 'LOG_ALL logged once');
  const outGpa = fe.mem.alloc(4096, 4096, 1);
  const inGpa = fe.mem.alloc(64, 8, 1);
  fe.mem.memory.writeFrom(inGpa, pattern(64));
  q.driver.addChain([inGpa, outGpa], [64, 64], 2, 1);
  q.driver.publish();
  q.kick();
  await until(() => q.driver.usedCount() >= 1);
  const isDirty = (gpa: number) => (log[Math.floor(gpa / 4096 / 8)] & (1 << (Math.floor(gpa / 4096) % 8))) !== 0;
  t.ok(isDirty(outGpa), 'data written on the running ring is logged');
  t.ok(isDirty(q.layout.used), 'used ring logged');
  // The switch-over: GET_VRING_BASE stops the ring with logging still on.
  await fe.getVringBase(0);
  const stopLine = logs.find((l) => l.includes('ring 0 stopped with dirty logging on'));
  const marks = Number(/\((\d+) dirty page marks\)/.exec(stopLine ?? '')?.[1] ?? 0);
  t.ok(marks >= 2, `ring stop reports the marks so far (${stopLine})`);
  await fe.setFeatures(fe.features & ~bit(VHOST_F_LOG_ALL));
  t.ok(logs.some((l) => l === `vhost-user: dirty logging off after ${marks} dirty page marks`), 'LOG_ALL off logged with the same count');
  unmap();
  fe.close();
  await backend.close();
});

t.test('memory slots: ADD_MEM_REG / REM_MEM_REG, rings keep running across table changes', async (t) => {
  const { path, backend } = startBackend({ numQueues: 1 });
  const fe = await connectAndNegotiate(path, { memSlots: true });
  t.equal(await fe.getMaxMemSlots(), 32n);
  await fe.setupQueue(0, 16, { regionIndex: 0 });
  t.same(await fe.roundTrip(0, pattern(30)), pattern(30));
  await fe.remMemReg(1);
  await t.rejects(fe.remMemReg(1), { code: 'DEVICE_FAILED' }, 'removing twice fails');
  await fe.addMemReg(1);
  // QEMU's multiqueue vhost-user-net adds the same regions once per queue pair: counted.
  await fe.addMemReg(1);
  await fe.remMemReg(1);
  t.same(await fe.roundTrip(0, pattern(40, 3)), pattern(40, 3), 'a twice-added region survives one REM_MEM_REG');
  await fe.remMemReg(1);
  await t.rejects(fe.remMemReg(1), { code: 'DEVICE_FAILED' }, 'the second REM_MEM_REG removed it');
  await fe.addMemReg(1);
  const r1 = (fe as unknown as { mem: { regions: { desc: { guestPhysAddr: number; size: number; userAddr: number; mmapOffset: number }; fd: number }[] } }).mem.regions[1];
  const shifted = { ...r1.desc, guestPhysAddr: r1.desc.guestPhysAddr + 4096, userAddr: r1.desc.userAddr + 4096, size: 4096 };
  await t.rejects((fe as unknown as { send(req: number, p: unknown, fds: number[]): Promise<void> })
    .send(VHOST_USER_ADD_MEM_REG, { kind: 'mem-region', region: shifted }, [r1.fd]), { code: 'DEVICE_FAILED' },
    'a different region overlapping an existing one is refused');
  t.same(await fe.roundTrip(0, pattern(40, 3)), pattern(40, 3), 'ring still works');
  await fe.setMemTable();
  t.same(await fe.roundTrip(0, pattern(50, 4)), pattern(50, 4), 'after SET_MEM_TABLE re-point');
  fe.close();
  await backend.close();
});

t.test('memory table changes that take a ring\'s memory away for a while: the ring resumes once it is back', async (t) => {
  type Raw = { send(req: number, p: unknown, fds?: number[]): Promise<void> };
  type Mem = { descs: { guestPhysAddr: number; size: number; userAddr: number; mmapOffset: number }[]; fds: number[] };
  const { VHOST_USER_SET_MEM_TABLE, VHOST_USER_SET_VRING_ADDR } = await import('../src/index.js');
  const { path, backend, logs } = startBackend({ numQueues: 1 });
  const fe = await connectAndNegotiate(path, { memSlots: true });
  const raw = fe as unknown as Raw;
  const mem = fe.mem as unknown as Mem;
  const q = await fe.setupQueue(0, 16, { regionIndex: 0 });
  t.same(await fe.roundTrip(0, pattern(30)), pattern(30));

  // QEMU updates a changed region by removing it and adding it back (CONFIGURE_MEM_SLOTS);
  // a request kicked in between is served once the region is back.
  await fe.remMemReg(0);
  t.ok(logs.some((l) => /ring 0 waits for its memory/.test(l)), 'the wait is logged');
  const a = fe.mem.alloc(8, 8, 1), b = fe.mem.alloc(8, 8, 1);
  fe.mem.memory.writeFrom(a, pattern(8, 5));
  q.driver.addChain([a, b], [8, 8], 2, 1);
  q.driver.publish();
  q.kick();
  await new Promise((r) => setTimeout(r, 20));
  t.equal(q.driver.usedCount(), 0, 'nothing served while the ring has no memory');
  await fe.addMemReg(0);
  await until(() => q.driver.usedCount() === 1);
  t.ok(logs.some((l) => /ring 0 resumed on the new memory table/.test(l)));
  q.driver.popUsed();
  const got = new Uint8Array(8);
  fe.mem.memory.readInto(b, got);
  t.same(got, pattern(8, 5), 'the kick made while it waited was served');
  t.same(await fe.roundTrip(0, pattern(40, 2)), pattern(40, 2), 'and the ring goes on');

  // The same with SET_MEM_TABLE: a table without the ring's region, then the full one.
  await raw.send(VHOST_USER_SET_MEM_TABLE, { kind: 'memory', regions: [mem.descs[1]] }, [mem.fds[1]]);
  await fe.setMemTable();
  t.same(await fe.roundTrip(0, pattern(50, 3)), pattern(50, 3), 'after a table that left the ring out');
  // An empty table (0 regions: the kernel's vhost, libvhost-user and DPDK accept it) is acked;
  // the ring waits for the next table as above.
  await raw.send(VHOST_USER_SET_MEM_TABLE, { kind: 'memory', regions: [] }, []);
  t.equal(backend.activeSession !== null, true, 'an empty table keeps the connection');
  await fe.setMemTable();
  t.same(await fe.roundTrip(0, pattern(52, 6)), pattern(52, 6), 'after an empty table');

  // The front-end moves its mappings (same memory, user addresses 4 GiB up), then re-points the
  // ring at the new addresses: the ring resumes on SET_VRING_ADDR.
  const shift = 2 ** 32;
  await raw.send(VHOST_USER_SET_MEM_TABLE, { kind: 'memory', regions: mem.descs.map((d) => ({ ...d, userAddr: d.userAddr + shift })) }, mem.fds);
  const gp = q.layout;
  await raw.send(VHOST_USER_SET_VRING_ADDR, {
    kind: 'vring-addr', index: 0, flags: 0, descUserAddr: fe.mem.gpaToUva(gp.desc) + shift,
    usedUserAddr: fe.mem.gpaToUva(gp.used) + shift, availUserAddr: fe.mem.gpaToUva(gp.avail) + shift, logGuestAddr: gp.used,
  });
  t.same(await fe.roundTrip(0, pattern(60, 4)), pattern(60, 4), 'after the addresses moved with the table');

  // A ring the front-end stops (GET_VRING_BASE) while it waits stays stopped when memory returns.
  const shifted = mem.descs.map((x) => ({ ...x, userAddr: x.userAddr + shift }));
  await raw.send(VHOST_USER_SET_MEM_TABLE, { kind: 'memory', regions: [shifted[1]] }, [mem.fds[1]]);
  await fe.getVringBase(0);
  await raw.send(VHOST_USER_SET_MEM_TABLE, { kind: 'memory', regions: shifted }, mem.fds);
  const c = fe.mem.alloc(8, 8, 1), d = fe.mem.alloc(8, 8, 1);
  q.driver.addChain([c, d], [8, 8], 2, 1);
  q.driver.publish();
  q.kick();
  await new Promise((r) => setTimeout(r, 20));
  t.equal(q.driver.usedCount(), 0, 'a stopped ring does not come back with the memory');
  fe.close();
  await backend.close();
});

t.test('reconnect: server accepts the next front-end; client mode reconnects', async (t) => {
  const before = openFdCount();
  const { path, backend, device } = startBackend({ numQueues: 1 });
  for (let i = 0; i < 3; i++) {
    const fe = await connectAndNegotiate(path);
    await fe.setupQueue(0, 16);
    t.same(await fe.roundTrip(0, pattern(20, i)), pattern(20, i), `session ${i}`);
    fe.close();
    await until(() => backend.sessions === i + 1 && backend.activeSession === null);
  }
  t.ok(device.resets >= 3, 'device reset after each session');
  await backend.close();
  t.equal(openFdCount(), before, 'no fd leaked');

  // client mode: the front-end listens
  const { unixListen, unixAccept, FdWatcher, READABLE, close } = await import('@vhost-ts/sys');
  const { socketPath } = await import('./helpers.js');
  const { VhostUserBackend } = await import('../src/index.js');
  const { EchoDevice } = await import('../src/testing/index.js');
  const p2 = socketPath();
  const lfd = unixListen(p2);
  const accepted: VhostUserFrontend[] = [];
  const w = new FdWatcher(lfd, () => {
    const fd = unixAccept(lfd);
    if (fd >= 0) accepted.push(new VhostUserFrontend(fd));
  });
  w.start(READABLE);
  const cb = new VhostUserBackend(new EchoDevice({ numQueues: 1 }), { log: () => {} });
  cb.connect(p2, { minDelayMs: 10 });
  await until(() => accepted.length === 1);
  await accepted[0].negotiate();
  await accepted[0].setupQueue(0, 16);
  t.same(await accepted[0].roundTrip(0, pattern(12)), pattern(12), 'client-mode session');
  accepted[0].close();
  await until(() => accepted.length === 2, 3000);
  await accepted[1].negotiate();
  await accepted[1].setupQueue(0, 16);
  t.same(await accepted[1].roundTrip(0, pattern(13)), pattern(13), 'after reconnect');
  accepted[1].close();
  await cb.close();
  w.close();
  close(lfd);
});

t.test('inflight fd round trip: requests in flight at a crash are resubmitted', async (t) => {
  const first = startBackend({ numQueues: 1, hold: true });
  const fe = await connectAndNegotiate(first.path);
  const inf = await fe.getInflightFd(1, 16);
  await fe.setInflightFd(inf.fd, inf.mmapSize, 1, 16);
  const q = await fe.setupQueue(0, 16);
  const outs: number[] = [];
  for (let i = 0; i < 3; i++) {
    const a = fe.mem.alloc(8), b = fe.mem.alloc(8);
    fe.mem.memory.writeFrom(a, pattern(8, i + 10));
    outs.push(b);
    q.driver.addChain([a, b], [8, 8], 2, 1);
  }
  q.driver.publish();
  q.kick();
  await until(() => first.device.queues.get(0)?.stats.requests === 3);
  // back-end dies with 3 requests popped, none completed
  await first.backend.close();
  t.equal(q.driver.usedCount(), 0);

  const second = startBackend({ numQueues: 1 });
  // a "restarted" front-end connection over the same guest memory
  const fe2 = await VhostUserFrontend.connect(second.path, { memory: fe.mem });
  await fe2.negotiate();
  await fe2.setInflightFd(inf.fd, inf.mmapSize, 1, 16);
  // restart the ring where the guest left it: base = used.idx (0), same addresses
  await reattachRing(fe2, fe, q, 16, 0);
  await until(() => q.driver.usedCount() === 3);
  t.equal(second.device.queues.get(0)!.stats.resubmitted, 3, 'three resubmitted');
  for (let i = 0; i < 3; i++) {
    const got = new Uint8Array(8);
    fe.mem.memory.readInto(outs[i], got);
    t.same(got, pattern(8, i + 10), `request ${i} echoed after resubmission`);
  }
  t.equal(await fe2.getVringBase(0), 3, 'next avail after the resubmitted ones');
  const { close } = await import('@vhost-ts/sys');
  close(inf.fd);
  fe2.close();
  fe.close();
  await second.backend.close();
});

t.test('a front-end that restarts a used split ring from base 0 (no inflight area): resumed at used.idx', async (t) => {
  // DPDK virtio-user in server mode keeps its rings when the back-end reconnects and sends
  // SET_VRING_BASE 0; without this, its next avail.idx looked like a jump and broke the ring.
  const first = startBackend({ numQueues: 1 });
  const fe = await connectAndNegotiate(first.path);
  const q = await fe.setupQueue(0, 16);
  for (let i = 0; i < 21; i++) t.same(await fe.roundTrip(0, pattern(8, i)), pattern(8, i), `request ${i}`);
  await first.backend.close();
  // The back-end comes back (a new one here); the front-end reconnects with its rings as they are.
  const { path, backend, logs } = startBackend({ numQueues: 1 });
  const fe2 = await VhostUserFrontend.connect(path, { memory: fe.mem });
  await fe2.negotiate();
  await reattachRing(fe2, fe, q, 16, 0);
  const a = fe.mem.alloc(8), b = fe.mem.alloc(8);
  fe.mem.memory.writeFrom(a, pattern(8, 99));
  q.driver.addChain([a, b], [8, 8], 2, 1);
  q.driver.publish();
  q.kick();
  await until(() => q.driver.usedCount() === 1);
  const got = new Uint8Array(8);
  fe.mem.memory.readInto(b, got);
  t.same(got, pattern(8, 99), 'the next request is served, not the ring broken');
  t.ok(logs.some((l) => /ring 0: SET_VRING_BASE 0 but used\.idx is 21: resuming at used\.idx/.test(l)), 'logged');
  t.equal(await fe2.getVringBase(0), 22, 'the position went on from used.idx');
  fe2.close();
  fe.close();
  await backend.close();
});

t.test('the back-end\'s own ring restart (a memory table change) keeps its position, even with chains never completed', async (t) => {
  // The resume-at-used.idx rule is for a base the front-end sent; a restart from the back-end's
  // own stop must not rewind over chains a handler still holds (a stop that gave up on them).
  const { path, backend, device, logs } = startBackend({ numQueues: 1, hold: true });
  const fe = await connectAndNegotiate(path);
  const q = await fe.setupQueue(0, 16);
  for (let i = 0; i < 3; i++) q.driver.addChain([fe.mem.alloc(8), fe.mem.alloc(8)], [8, 8], 2, 1);
  q.driver.publish();
  q.kick();
  await until(() => device.queues.get(0)?.stats.requests === 3);
  await fe.setMemTable(); // same memory: the ring is stopped and started again by the back-end
  await new Promise((r) => setTimeout(r, 30));
  t.equal(device.stopped, 1, 'the ring was restarted');
  t.equal(device.queues.get(0)!.stats.requests, 0, 'the restarted handler popped nothing again');
  t.notOk(logs.some((l) => /resuming at used\.idx/.test(l)), 'the rule did not fire');
  t.equal(await fe.getVringBase(0), 3, 'position kept');
  fe.close();
  await backend.close();
});

t.test('SET_VRING_NUM: split sizes are powers of two, packed rings take any size, both up to the device maximum', async (t) => {
  const RING_PACKED = 34;
  const { path, backend, logs } = startBackend({ numQueues: 1, features: bit(RING_PACKED), maxQueueSize: 1024 });
  const fe = await connectAndNegotiate(path);
  t.ok(fe.protocol & bit(VHOST_USER_PROTOCOL_F_REPLY_ACK), 'acks asked');
  await t.rejects(fe.send(VHOST_USER_SET_VRING_NUM, vringState(0, 100)), { code: 'DEVICE_FAILED' }, 'split: 100 refused');
  t.ok(logs.some((l) => /ring 0: size 100 refused \(split rings: a power of two; this device takes at most 1024\)/.test(l)), 'says why');
  await fe.setFeatures(fe.features | bit(RING_PACKED));
  await fe.send(VHOST_USER_SET_VRING_NUM, vringState(0, 100));
  t.pass('packed: 100 accepted (virtio 1.2 §2.8)');
  await t.rejects(fe.send(VHOST_USER_SET_VRING_NUM, vringState(0, 4096)), { code: 'DEVICE_FAILED' }, 'above the device maximum');
  t.ok(logs.some((l) => /size 4096 refused \(this device takes at most 1024\)/.test(l)), 'the limit named, not "not a power of two"');
  await t.rejects(fe.send(VHOST_USER_SET_VRING_NUM, vringState(0, 0)), { code: 'DEVICE_FAILED' }, 'size 0');
  fe.close();
  await backend.close();
});

t.test('message trace: one line per request and per outcome, only when asked', async (t) => {
  const trace: string[] = [];
  const { path, backend } = startBackend({ numQueues: 1 }, { trace: (l) => trace.push(l) });
  const fe = await connectAndNegotiate(path);
  await fe.setupQueue(0, 32);
  t.same(await fe.roundTrip(0, pattern(8)), pattern(8));
  t.ok(trace.some((l) => /^vhost-user: <- VHOST_USER_GET_FEATURES flags 0x1 size 0 fds 0$/.test(l)), 'GET_FEATURES traced');
  t.ok(trace.some((l) => /^vhost-user: -> VHOST_USER_GET_FEATURES replied$/.test(l)), 'its reply traced');
  t.ok(trace.some((l) => /<- VHOST_USER_SET_MEM_TABLE .* fds [1-8]$/.test(l)), 'SET_MEM_TABLE with its fds');
  t.ok(trace.some((l) => /<- VHOST_USER_SET_VRING_KICK .* fds 1$/.test(l)), 'SET_VRING_KICK with its fd');
  fe.close();
  await backend.close();
  const quiet = startBackend({ numQueues: 1 });
  const fe2 = await connectAndNegotiate(quiet.path);
  t.notOk(quiet.logs.some((l) => l.includes('<- VHOST_USER')), 'no trace in the log without the option');
  fe2.close();
  await quiet.backend.close();
});
