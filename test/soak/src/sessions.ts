/**
 * One full vhost-user session per call, the way QEMU runs one (see the captured fixtures in
 * packages/vhost-user/test/fixtures): negotiation with every offered feature, the back-end
 * channel, memory by ADD_MEM_REG, config and the inflight area (blk), every ring set up with
 * kick/call/err eventfds, real I/O on each ring, the rings stopped with GET_VRING_BASE, then
 * the disconnect.
 * @module
 */
import { close } from '@vhost-ts/sys';
import {
  VhostUserFrontend, VHOST_USER_PROTOCOL_F_CONFIG, VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD, bit, type FrontendQueue,
} from '@vhost-ts/vhost-user';
import { BLK_QUEUES } from './backend-process.js';

const QUEUE_SIZE = 128;
const VIRTIO_BLK_T_IN = 0;
const VIRTIO_BLK_T_OUT = 1;
/** virtio-net header with VERSION_1 (virtio 1.2 §5.1.6). */
const NET_HDR = 12;

/** Waits until `head` comes back on `q`; returns the used length. */
export async function waitUsed(q: FrontendQueue, head: number, timeoutMs = 5000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const h = q.driver.popUsed();
    if (h === head) return q.driver.lastLen;
    if (h >= 0) throw new Error(`ring ${q.index}: unexpected used head ${h} (waiting for ${head})`);
    if (Date.now() > deadline) throw new Error(`ring ${q.index}: head ${head} not used within ${timeoutMs} ms`);
    await Promise.race([q.waitCall(50), new Promise((r) => setTimeout(r, 2))]);
  }
}

/** Connects and negotiates everything the back-end offers (split rings), memory by ADD_MEM_REG. */
export async function openSession(socket: string, regions = [{ guestPhysAddr: 0x10_0000, size: 4 << 20 }]): Promise<VhostUserFrontend> {
  const fe = await VhostUserFrontend.connect(socket, { regions, connectTimeoutMs: 10_000, timeoutMs: 10_000 });
  try {
    await fe.negotiate({ memSlots: true });
  } catch (e) {
    fe.close();
    throw e;
  }
  return fe;
}

/** A blk request on `q`: 16-byte header, `len` data bytes, status; resolves with the status. */
export async function blkRequest(fe: VhostUserFrontend, q: FrontendQueue, type: number, sector: number, len: number): Promise<number> {
  const hdr = fe.mem.alloc(16, 16);
  const data = fe.mem.alloc(len, 512);
  const status = fe.mem.alloc(1, 1);
  const h = new Uint8Array(16);
  const v = new DataView(h.buffer);
  v.setUint32(0, type, true);
  v.setBigUint64(8, BigInt(sector), true);
  fe.mem.memory.writeFrom(hdr, h);
  fe.mem.memory.writeFrom(status, Uint8Array.of(0xff));
  const head = type === VIRTIO_BLK_T_IN
    ? q.driver.add([{ gpa: hdr, len: 16 }], [{ gpa: data, len }, { gpa: status, len: 1 }])
    : q.driver.add([{ gpa: hdr, len: 16 }, { gpa: data, len }], [{ gpa: status, len: 1 }]);
  q.driver.publish();
  if (q.driver.kickNeeded()) q.kick();
  await waitUsed(q, head);
  const s = new Uint8Array(1);
  fe.mem.memory.readInto(status, s);
  return s[0];
}

/** One blk session: config, inflight area, {@link BLK_QUEUES} rings, a write and a read on each. */
export async function blkSession(socket: string, cycle: number): Promise<void> {
  const fe = await openSession(socket);
  let inflightFd = -1;
  try {
    if ((fe.protocol & bit(VHOST_USER_PROTOCOL_F_CONFIG)) !== 0n) {
      const cfg = await fe.getConfig(0, 60);
      if (cfg === null) throw new Error('GET_CONFIG refused');
    }
    if ((fe.protocol & bit(VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD)) !== 0n) {
      const inf = await fe.getInflightFd(BLK_QUEUES, QUEUE_SIZE);
      inflightFd = inf.fd;
      await fe.setInflightFd(inf.fd, inf.mmapSize, BLK_QUEUES, QUEUE_SIZE);
    }
    const queues: FrontendQueue[] = [];
    for (let i = 0; i < BLK_QUEUES; i++) queues.push(await fe.setupQueue(i, QUEUE_SIZE));
    for (const [i, q] of queues.entries()) {
      const sector = ((cycle * BLK_QUEUES + i) % 1024) * 8;
      const w = await blkRequest(fe, q, VIRTIO_BLK_T_OUT, sector, 4096);
      const r = await blkRequest(fe, q, VIRTIO_BLK_T_IN, sector, 4096);
      if (w !== 0 || r !== 0) throw new Error(`ring ${i}: status write ${w} read ${r}`);
    }
    for (let i = 0; i < BLK_QUEUES; i++) {
      const base = await fe.getVringBase(i);
      if (base !== 2) throw new Error(`ring ${i}: GET_VRING_BASE ${base}, expected 2`);
    }
  } finally {
    fe.close();
    if (inflightFd >= 0) close(inflightFd);
  }
}

/** A broadcast frame (virtio-net header + 60-byte Ethernet frame) tagged with `tag`. */
export function netFrame(tag: number): Uint8Array {
  const f = new Uint8Array(NET_HDR + 60);
  f.fill(0xff, NET_HDR, NET_HDR + 6);
  f.set([0x52, 0x54, 0x00, 0x50, 0xa4, 0x02], NET_HDR + 6);
  f.set([0x88, 0xb5], NET_HDR + 12); // local experimental ethertype
  new DataView(f.buffer).setUint32(NET_HDR + 14, tag >>> 0, true);
  return f;
}

/** One net session: RX and TX rings, one frame out and its loopback echo in, both rings stopped. */
export async function netSession(socket: string, cycle: number): Promise<void> {
  const fe = await openSession(socket);
  try {
    const rx = await fe.setupQueue(0, QUEUE_SIZE);
    const tx = await fe.setupQueue(1, QUEUE_SIZE);
    const rxBuf = fe.mem.alloc(2048, 64);
    const rxHead = rx.driver.add([], [{ gpa: rxBuf, len: 2048 }]);
    rx.driver.publish();
    if (rx.driver.kickNeeded()) rx.kick();
    const frame = netFrame(cycle);
    const txBuf = fe.mem.alloc(frame.length, 64);
    fe.mem.memory.writeFrom(txBuf, frame);
    const txHead = tx.driver.add([{ gpa: txBuf, len: frame.length }], []);
    tx.driver.publish();
    if (tx.driver.kickNeeded()) tx.kick();
    await waitUsed(tx, txHead);
    const len = await waitUsed(rx, rxHead);
    const got = new Uint8Array(len);
    fe.mem.memory.readInto(rxBuf, got);
    if (len < frame.length || new DataView(got.buffer).getUint32(NET_HDR + 14, true) !== cycle >>> 0) {
      throw new Error(`echo of frame ${cycle} wrong (len ${len})`);
    }
    if (await fe.getVringBase(0) !== 1 || await fe.getVringBase(1) !== 1) throw new Error('GET_VRING_BASE not 1 after one frame');
  } finally {
    fe.close();
  }
}
