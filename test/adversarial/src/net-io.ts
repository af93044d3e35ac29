/**
 * virtio-net from the guest's side, over {@link RawRing}s: the 12-byte header (virtio 1.2
 * §5.1.6), Ethernet frames, RX buffers, and the echo check against the loopback back-end.
 * @module
 */
import type { AttackSession, RawRing } from './attack-session.js';
import { pattern } from './blk-wire.js';

/** Queue indices of pair 0 (virtio 1.2 §5.1.2). */
export const RX = 0;
export const TX = 1;

/** struct virtio_net_hdr with VERSION_1: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers. */
export const NET_HDR_BYTES = 12;
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;

/** A header; everything 0 unless given. */
export function netHeader(opts: { flags?: number; gsoType?: number; gsoSize?: number } = {}): Uint8Array {
  const b = new Uint8Array(NET_HDR_BYTES);
  const v = new DataView(b.buffer);
  v.setUint8(0, opts.flags ?? 0);
  v.setUint8(1, opts.gsoType ?? 0);
  v.setUint16(4, opts.gsoSize ?? 0, true);
  return b;
}

/** A broadcast Ethernet frame of `len` bytes (local experimental ethertype 0x88b5). */
export function ethFrame(seed: number, len = 60): Uint8Array {
  const f = pattern(len, seed + 1000);
  f.fill(0xff, 0, 6);
  f.set([0x02, 0, 0, 0, 0, seed & 0xff], 6);
  f[12] = 0x88;
  f[13] = 0xb5;
  return f;
}

/** Joins byte arrays. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

/** The guest's net driver over one session: posts RX buffers, sends frames, checks echoes. */
export class NetGuest {
  readonly rx: RawRing;
  readonly tx: RawRing;
  /** RX buffers posted and not yet seen used: head → [gpa, len]. */
  private readonly posted = new Map<number, [number, number]>();

  constructor(readonly s: AttackSession) {
    this.rx = s.ring(RX);
    this.tx = s.ring(TX);
  }

  /** Posts one device-writable RX buffer of `len` bytes (declared writable) and kicks RX. */
  postRx(len = 2048): number {
    const gpa = this.s.arena.alloc(len);
    this.s.arena.allow(gpa, len);
    const head = this.rx.chain([{ gpa, len, write: true }]);
    this.posted.set(head, [gpa, len]);
    this.rx.offer(head);
    this.rx.kick();
    return head;
  }

  /** Places a TX chain, one device-readable descriptor per part (not kicked). */
  placeTx(...parts: Uint8Array[]): number {
    const bufs = parts.map((p) => {
      const gpa = this.s.arena.alloc(Math.max(1, p.length));
      this.s.arena.write(gpa, p);
      return { gpa, len: p.length };
    });
    const head = this.tx.chain(bufs);
    this.tx.offer(head);
    return head;
  }

  /**
   * Sends one good frame (posting an RX buffer first if none is outstanding) and checks that
   * the loopback echoes it, byte for byte, with nothing written outside the RX buffer.
   * @returns problems found (empty = the path works).
   */
  async echo(seed: number): Promise<string[]> {
    const a = this.s.arena;
    const problems: string[] = [];
    const rxBefore = this.rx.usedIdx(), txBefore = this.tx.usedIdx();
    a.clearAllowed();
    if (this.posted.size === 0) this.postRx();
    for (const [gpa, len] of this.posted.values()) a.allow(gpa, len);
    const frame = ethFrame(seed);
    const txHead = this.placeTx(netHeader(), frame);
    this.s.snapshot();
    this.tx.kick();
    if (!(await this.tx.waitUsed(txBefore + 1))) problems.push('echo: TX chain not returned');
    else {
      const e = this.tx.usedElem(txBefore);
      if (e.id !== txHead || e.len !== 0) problems.push(`echo: TX used {id ${e.id}, len ${e.len}}, expected {${txHead}, 0}`);
    }
    if (!(await this.rx.waitUsed(rxBefore + 1))) problems.push('echo: frame not received');
    else {
      const e = this.rx.usedElem(rxBefore);
      const buf = this.posted.get(e.id);
      if (buf === undefined) problems.push(`echo: RX used id ${e.id} was not a posted buffer`);
      else {
        this.posted.delete(e.id);
        if (e.len !== NET_HDR_BYTES + frame.length) problems.push(`echo: RX used len ${e.len}, expected ${NET_HDR_BYTES + frame.length}`);
        const got = a.read(buf[0], NET_HDR_BYTES + frame.length);
        if (Buffer.compare(got.subarray(NET_HDR_BYTES), frame) !== 0) problems.push('echo: received frame differs from the one sent');
        if (got.subarray(0, 10).some((x) => x !== 0)) problems.push('echo: RX header fields not zero (no offloads negotiated)');
      }
    }
    for (const w of a.diff()) problems.push(`echo: stray write at 0x${w.gpa.toString(16)}: ${w.before} → ${w.after}`);
    for (const c of a.brokenCanaries()) problems.push(`echo: canary at 0x${c.toString(16)} overwritten`);
    return problems;
  }
}
