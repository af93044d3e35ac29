/**
 * The bare baseline: the same pop + push work as SplitQueueDevice for 1-descriptor chains, as
 * one flat function over typed arrays (no classes, no fault codes beyond the essential checks,
 * one region). It shows the ceiling the real classes are measured against.
 * @module
 */

/** State of the bare loop: the rings as typed arrays over one buffer. */
export interface BareRing {
  size: number;
  desc: Uint32Array;
  avail: Uint16Array;
  used16: Uint16Array;
  used32: Uint32Array;
  regionGpa: number;
  regionSize: number;
  segSlab: Int32Array;
  segOffset: Float64Array;
  segLen: Float64Array;
  segGpa: Float64Array;
  nextAvail: number;
  usedIdx: number;
}

/** Pops every available 1-descriptor chain and pushes it used; returns the count. */
export function bareServe(r: BareRing): number {
  const avail = r.avail, desc = r.desc, used32 = r.used32, mask = r.size - 1;
  const idx = Atomics.load(avail, 1);
  let next = r.nextAvail, used = r.usedIdx, n = 0;
  while (next !== idx) {
    const head = avail[2 + (next & mask)];
    next = (next + 1) & 0xffff;
    if (head >= r.size) return -1;
    const w = head << 2;
    const lo = desc[w], hi = desc[w + 1], len = desc[w + 2];
    const addr = hi * 0x100000000 + lo;
    const off = addr - r.regionGpa;
    if (off < 0 || off + len > r.regionSize) return -1;
    r.segSlab[0] = 0; r.segOffset[0] = off; r.segLen[0] = len; r.segGpa[0] = addr;
    const u = 1 + ((used & mask) << 1);
    used32[u] = head;
    used32[u + 1] = len;
    used = (used + 1) & 0xffff;
    n++;
  }
  r.nextAvail = next;
  r.usedIdx = used;
  Atomics.store(r.used16, 1, used);
  return n;
}
