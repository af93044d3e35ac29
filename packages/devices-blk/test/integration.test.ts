/**
 * The device over a real vhost-user socket: our front-end ↔ our back-end ↔ BlkDevice ↔ file
 * engine (io_uring) on a temp file, with host-side checks of the file.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VhostUserBackend, VhostUserFrontend, type FrontendQueue } from '@vhost-ts/vhost-user';
import t from 'tap';
import {
  BlkDevice, FileImage, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
} from '../src/index.js';
import { pattern, sameBytes, segments } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'blk-int-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

interface Done { status: number; len: number; data: Uint8Array }

/** Submits one request on `q` and waits for its used element. */
async function request(fe: VhostUserFrontend, q: FrontendQueue, type: number, sector: number,
  opts: { out?: Uint8Array; inLen?: number } = {}): Promise<Done> {
  const mem = fe.mem.memory;
  const hdr = fe.mem.alloc(16, 16);
  const h = new Uint8Array(16);
  const v = new DataView(h.buffer);
  v.setUint32(0, type, true);
  v.setUint32(8, sector, true);
  mem.writeFrom(hdr, h);
  const readable = [{ gpa: hdr, len: 16 }];
  if (opts.out !== undefined) {
    const g = fe.mem.alloc(opts.out.length, 512);
    mem.writeFrom(g, opts.out);
    readable.push({ gpa: g, len: opts.out.length });
  }
  const writable = [];
  const inLen = opts.inLen ?? 0;
  const inGpa = inLen > 0 ? fe.mem.alloc(inLen, 512) : -1;
  if (inLen > 0) writable.push({ gpa: inGpa, len: inLen });
  const st = fe.mem.alloc(1, 1);
  mem.writeFrom(st, Uint8Array.of(0xff));
  writable.push({ gpa: st, len: 1 });
  const head = q.driver.add(readable, writable);
  q.driver.publish();
  if (q.driver.kickNeeded()) q.kick();
  const deadline = Date.now() + 5000;
  for (;;) {
    const got = q.driver.popUsed();
    if (got === head) break;
    if (got >= 0) throw new Error(`unexpected head ${got}`);
    if (Date.now() > deadline) throw new Error('request timed out');
    await Promise.race([q.waitCall(50), new Promise((r) => setTimeout(r, 5))]);
  }
  const data = new Uint8Array(inLen);
  if (inLen > 0) mem.readInto(inGpa, data);
  const s = new Uint8Array(1);
  mem.readInto(st, s);
  return { status: s[0], len: q.driver.lastLen, data };
}

t.test('front-end ↔ back-end ↔ virtio-blk over a socket, file engine', async (t) => {
  const size = 4 << 20;
  const path = join(dir, 'disk.img');
  writeFileSync(path, pattern(size, 21));
  const image = FileImage.open(path);
  const device = new BlkDevice({ image, numQueues: 2, serial: 'int-test' });
  const logs: string[] = [];
  const backend = new VhostUserBackend(device, { log: (l) => logs.push(l) });
  const sock = join(dir, 'blk.sock');
  backend.listen(sock);
  const fe = await VhostUserFrontend.connect(sock, {
    regions: [{ guestPhysAddr: 0x100000, size: 0x200000 }, { guestPhysAddr: 0x100000000, size: 0x200000 }],
  });
  t.teardown(async () => {
    fe.close();
    await backend.close();
    image.close();
  });
  await fe.negotiate();
  t.equal(Number(await fe.getQueueNum()), 2, 'GET_QUEUE_NUM');
  const cfg = await fe.getConfig(0, 60);
  t.ok(cfg !== null);
  const cv = new DataView(cfg!.buffer, cfg!.byteOffset);
  t.equal(cv.getUint32(0, true), size / 512, 'capacity over GET_CONFIG');
  t.equal(cv.getUint16(34, true), 2, 'num_queues');

  const q0 = await fe.setupQueue(0, 64, { regionIndex: 0 });
  const q1 = await fe.setupQueue(1, 64, { regionIndex: 1 });

  const data = pattern(16384, 5);
  let r = await request(fe, q0, VIRTIO_BLK_T_OUT, 64, { out: data });
  t.equal(r.status, VIRTIO_BLK_S_OK, 'write OK');
  t.equal(r.len, 1);
  r = await request(fe, q1, VIRTIO_BLK_T_IN, 64, { inLen: 16384 });
  t.equal(r.status, VIRTIO_BLK_S_OK, 'read on the other queue');
  t.equal(r.len, 16385);
  t.ok(sameBytes(r.data, data), 'read back what was written');
  r = await request(fe, q0, VIRTIO_BLK_T_FLUSH, 0);
  t.equal(r.status, VIRTIO_BLK_S_OK, 'flush');
  t.ok(sameBytes(readFileSync(path).subarray(64 * 512, 64 * 512 + 16384), data), 'on the host file after flush');

  r = await request(fe, q0, VIRTIO_BLK_T_DISCARD, 0, { out: segments([{ sector: 1024, num: 64 }]) });
  t.equal(r.status, VIRTIO_BLK_S_OK, 'discard');
  r = await request(fe, q1, VIRTIO_BLK_T_WRITE_ZEROES, 0, { out: segments([{ sector: 2048, num: 16 }]) });
  t.equal(r.status, VIRTIO_BLK_S_OK, 'write zeroes');
  const host = readFileSync(path);
  t.ok(host.subarray(1024 * 512, 1088 * 512).every((b) => b === 0), 'discarded range reads zeros on the host');
  t.ok(host.subarray(2048 * 512, 2064 * 512).every((b) => b === 0), 'zeroed range');
  t.equal(host[2064 * 512], pattern(size, 21)[2064 * 512], 'next sector intact');
  t.equal(host.length, size, 'file size unchanged');

  r = await request(fe, q1, VIRTIO_BLK_T_GET_ID, 0, { inLen: 20 });
  t.equal(new TextDecoder().decode(r.data.subarray(0, 8)), 'int-test');

  // A read-only field is refused (failure ack), the connection kept.
  const capacity = await fe.getConfig(0, 8);
  await t.rejects(fe.setConfig(0, Uint8Array.of(5, 0, 0, 0, 0, 0, 0, 0)), { code: 'DEVICE_FAILED' }, 'SET_CONFIG of capacity refused');
  t.same(await fe.getConfig(0, 8), capacity, 'capacity unchanged');
  await t.rejects(fe.setConfig(32, Uint8Array.of(0, 0)), { code: 'DEVICE_FAILED' }, 'writeback plus a read-only byte refused');
  t.equal(device.writeback, true, 'and not applied in part');
  // CONFIG_WCE: the guest switches to writethrough through SET_CONFIG.
  await fe.setConfig(32, Uint8Array.of(0));
  t.equal((await fe.getConfig(32, 1))![0], 0, 'writeback byte now 0');
  t.equal(device.writeback, false);
  r = await request(fe, q0, VIRTIO_BLK_T_OUT, 8, { out: data.subarray(0, 4096) });
  t.equal(r.status, VIRTIO_BLK_S_OK, 'writethrough write');

  const stats = device.stats();
  t.equal(stats[0].requests, 4);
  t.equal(stats[1].requests, 3);
  t.equal(stats[0].bytesWritten, 16384 + 4096);
  t.equal(stats[1].bytesRead, 16384);

  // GET_VRING_BASE stops the rings (drains), returning the next avail index.
  t.equal(await fe.getVringBase(0), 4);
  t.equal(await fe.getVringBase(1), 3);
  t.same(logs.filter((l) => /broken|fault/i.test(l)), [], 'no device faults logged');
});
