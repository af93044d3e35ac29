// A guest-side helper over VhostUserFrontend: negotiates, sets up RX/TX rings of a vhost-user-net
// back-end, sends frames and collects received ones.
import { VhostUserFrontend, type FrontendQueue } from '@vhost-ts/vhost-user';

export const RX_BUF = 2048;

export class NetGuest {
  rx!: FrontendQueue;
  tx!: FrontendQueue;
  private readonly rxGpa = new Map<number, number>();
  readonly received: Uint8Array[] = [];

  private constructor(readonly fe: VhostUserFrontend) {}

  /** Connects, negotiates everything offered (minus `drop` bits), sets up pair 0 and posts RX buffers. */
  static async open(path: string, opts: { drop?: bigint; rxBuffers?: number; queueSize?: number } = {}): Promise<NetGuest> {
    const fe = await VhostUserFrontend.connect(path);
    const g = new NetGuest(fe);
    await fe.negotiate({ features: ~(opts.drop ?? 0n) });
    const size = opts.queueSize ?? 256;
    g.rx = await fe.setupQueue(0, size);
    g.tx = await fe.setupQueue(1, size);
    g.postRx(opts.rxBuffers ?? 64);
    g.rx.onCall = () => g.collect();
    return g;
  }

  postRx(n: number): void {
    for (let i = 0; i < n; i++) {
      const gpa = this.fe.mem.alloc(RX_BUF, 16);
      const head = this.rx.driver.addOne(gpa, RX_BUF, true);
      if (head < 0) throw new Error('rx ring full');
      this.rxGpa.set(head, gpa);
    }
    this.rx.driver.publish();
    if (this.rx.driver.kickNeeded()) this.rx.kick();
  }

  /** Moves used RX buffers into `received` (header included) and re-posts them. */
  collect(): void {
    const d = this.rx.driver;
    let head: number;
    let reposted = 0;
    while ((head = d.popUsed()) >= 0) {
      const gpa = this.rxGpa.get(head)!;
      const out = new Uint8Array(d.lastLen);
      this.fe.mem.memory.readInto(gpa, out);
      this.received.push(out);
      const h = d.addOne(gpa, RX_BUF, true);
      this.rxGpa.set(h, gpa);
      reposted++;
    }
    if (reposted > 0) {
      d.publish();
      if (d.kickNeeded()) this.rx.kick();
    }
  }

  /** Sends one frame (12-byte header + Ethernet frame). */
  send(frame: Uint8Array): void {
    const gpa = this.fe.mem.alloc(frame.length, 16);
    this.fe.mem.memory.writeFrom(gpa, frame);
    const d = this.tx.driver;
    while (d.popUsed() >= 0) { /* reclaim */ }
    if (d.addOne(gpa, frame.length, false) < 0) throw new Error('tx ring full');
    d.publish();
    if (d.kickNeeded()) this.tx.kick();
  }

  /** Waits until `pred` holds on what was received, polling the ring too. */
  async waitFor(pred: (frames: Uint8Array[]) => boolean, timeoutMs = 3000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      this.collect();
      if (pred(this.received)) return true;
      if (Date.now() > deadline) return false;
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  close(): void {
    this.fe.close();
  }
}
