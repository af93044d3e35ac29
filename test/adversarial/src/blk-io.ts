/**
 * Well-formed virtio-blk requests over a {@link RawRing}: what a correct guest does, used both
 * as the "normal I/O" check after every hostile case and to probe a ring after a case.
 * @module
 */
import type { AttackSession, RawRing } from './attack-session.js';
import type { GuestArena } from './guest-arena.js';
import {
  BLK_HEADER_BYTES, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
  blkHeader, pattern,
} from './blk-wire.js';

/** A request placed on a ring. */
export interface PlacedRequest {
  readonly head: number;
  /** GPA of the status byte. */
  readonly statusGpa: number;
  /** GPA of the device-writable data buffer (IN, GET_ID), or -1. */
  readonly dataGpa: number;
}

/**
 * Builds a well-formed request (header, optional OUT data, optional IN data of `inLen`,
 * status) in canary-guarded buffers, declares its writable buffers, and offers it.
 */
export function placeBlkRequest(r: RawRing, arena: GuestArena, header: Uint8Array,
  opts: { out?: Uint8Array; inLen?: number } = {}): PlacedRequest {
  const hdr = arena.alloc(BLK_HEADER_BYTES);
  arena.write(hdr, header);
  const bufs: { gpa: number; len: number; write?: boolean }[] = [{ gpa: hdr, len: BLK_HEADER_BYTES }];
  if (opts.out !== undefined) {
    const d = arena.alloc(opts.out.length, { align: 512 });
    arena.write(d, opts.out);
    bufs.push({ gpa: d, len: opts.out.length });
  }
  let dataGpa = -1;
  if (opts.inLen !== undefined) {
    dataGpa = arena.alloc(opts.inLen, { align: 512 });
    arena.allow(dataGpa, opts.inLen);
    bufs.push({ gpa: dataGpa, len: opts.inLen, write: true });
  }
  const statusGpa = arena.alloc(1);
  arena.allow(statusGpa, 1);
  bufs.push({ gpa: statusGpa, len: 1, write: true });
  const head = r.chain(bufs);
  r.offer(head);
  return { head, statusGpa, dataGpa };
}

/**
 * Submits one request, kicks, and waits for its used element.
 * @returns problems found (empty when the device answered it correctly).
 */
async function roundTrip(r: RawRing, arena: GuestArena, what: string, header: Uint8Array,
  opts: { out?: Uint8Array; inLen?: number }, expectLen: number): Promise<{ problems: string[]; req: PlacedRequest }> {
  const before = r.usedIdx();
  arena.clearAllowed();
  arena.allow(r.usedRange[0], r.usedRange[1] - r.usedRange[0]);
  const req = placeBlkRequest(r, arena, header, opts);
  // Snapshot once the driver's own writes are done: from here on only the device writes.
  arena.snapshot();
  r.kick();
  if (!(await r.waitUsed(before + 1))) return { problems: [`${what}: not completed within the timeout`], req };
  const e = r.usedElem(before);
  const problems: string[] = [];
  for (const w of arena.diff()) problems.push(`${what}: stray write at 0x${w.gpa.toString(16)}: ${w.before} → ${w.after}`);
  if (e.id !== req.head) problems.push(`${what}: used id ${e.id}, expected ${req.head}`);
  if (e.len !== expectLen) problems.push(`${what}: used len ${e.len}, expected ${expectLen}`);
  const status = arena.read(req.statusGpa, 1)[0];
  if (status !== VIRTIO_BLK_S_OK) problems.push(`${what}: status ${status}, expected OK`);
  return { problems, req };
}

/**
 * One read of sector 0 on `r`: the follow-up that proves a ring still works after a case.
 * @returns problems found.
 */
export async function blkProbe(r: RawRing, arena: GuestArena): Promise<string[]> {
  return (await roundTrip(r, arena, 'probe read', blkHeader(VIRTIO_BLK_T_IN, 0), { inLen: 512 }, 513)).problems;
}

/**
 * Normal I/O on ring `ring` of a fresh session: write a pattern, flush, read it back, GET_ID;
 * and nothing outside the offered writable buffers changed.
 * @returns problems found (empty = the device works).
 */
export async function blkNormalIo(s: AttackSession, ring: number, seed: number): Promise<string[]> {
  const r = s.ring(ring);
  const arena = s.arena;
  const sector = 8 + (seed % 64) * 2;
  const data = pattern(1024, seed);
  const problems: string[] = [];
  problems.push(...(await roundTrip(r, arena, 'write', blkHeader(VIRTIO_BLK_T_OUT, sector), { out: data }, 1)).problems);
  problems.push(...(await roundTrip(r, arena, 'flush', blkHeader(VIRTIO_BLK_T_FLUSH, 0), {}, 1)).problems);
  const rd = await roundTrip(r, arena, 'read', blkHeader(VIRTIO_BLK_T_IN, sector), { inLen: 1024 }, 1025);
  problems.push(...rd.problems);
  if (rd.problems.length === 0 && Buffer.compare(arena.read(rd.req.dataGpa, 1024), data) !== 0) {
    problems.push('read: data differs from what was written');
  }
  const id = await roundTrip(r, arena, 'get-id', blkHeader(VIRTIO_BLK_T_GET_ID, 0), { inLen: 20 }, 21);
  problems.push(...id.problems);
  for (const c of arena.brokenCanaries()) problems.push(`canary at 0x${c.toString(16)} overwritten`);
  return problems;
}
