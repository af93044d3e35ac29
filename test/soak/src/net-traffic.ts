/**
 * Sustained frames through the loopback net back-end over one session: RX kept stocked,
 * TX sent in bursts, every echo counted and its buffer reposted.
 * @module
 */
import type { FrontendQueue } from '@vhost-ts/vhost-user';
import { netFrame, openSession } from './sessions.js';

const RING = 256;
const RX_BUFS = 128;
const BURST = 32;

/** Counters of {@link netTraffic}. */
export interface NetCounters {
  sessions: number;
  framesSent: number;
  framesEchoed: number;
}

/** Runs one session that sends bursts until `endAt` (ms epoch), then stops the rings and disconnects. */
export async function netTraffic(socket: string, endAt: number, c: NetCounters): Promise<void> {
  const fe = await openSession(socket, [{ guestPhysAddr: 0x10_0000, size: 8 << 20 }]);
  try {
    c.sessions++;
    const rx = await fe.setupQueue(0, RING);
    const tx = await fe.setupQueue(1, RING);
    const bufOf = new Float64Array(RING);
    for (let i = 0; i < RX_BUFS; i++) {
      const gpa = fe.mem.alloc(2048, 64);
      bufOf[rx.driver.add([], [{ gpa, len: 2048 }])] = gpa;
    }
    rx.driver.publish();
    rx.kick();
    const frame = netFrame(0);
    const txBufs: number[] = [];
    for (let i = 0; i < BURST; i++) {
      const gpa = fe.mem.alloc(frame.length, 64);
      fe.mem.memory.writeFrom(gpa, frame);
      txBufs.push(gpa);
    }
    const reapRx = (): void => {
      let n = 0;
      for (let h = rx.driver.popUsed(); h >= 0; h = rx.driver.popUsed()) {
        c.framesEchoed++;
        bufOf[rx.driver.add([], [{ gpa: bufOf[h], len: 2048 }])] = bufOf[h];
        n++;
      }
      if (n > 0) {
        rx.driver.publish();
        if (rx.driver.kickNeeded()) rx.kick();
      }
    };
    const wait = (q: FrontendQueue) => Promise.race([q.waitCall(20), new Promise((r) => setTimeout(r, 5))]);
    while (Date.now() < endAt) {
      for (const gpa of txBufs) tx.driver.add([{ gpa, len: frame.length }], []);
      tx.driver.publish();
      if (tx.driver.kickNeeded()) tx.kick();
      let left = BURST;
      const deadline = Date.now() + 5000;
      while (left > 0) {
        for (let h = tx.driver.popUsed(); h >= 0; h = tx.driver.popUsed()) left--;
        reapRx();
        if (left === 0) break;
        if (Date.now() > deadline) throw new Error(`net: ${left} of ${BURST} frames not sent within 5 s`);
        await wait(tx);
      }
      c.framesSent += BURST;
      reapRx();
    }
    await new Promise((r) => setTimeout(r, 20));
    reapRx();
    await fe.getVringBase(0);
    await fe.getVringBase(1);
  } finally {
    fe.close();
  }
}
