/**
 * GuestArena — the attacker's view of its own guest memory, built to catch a device that
 * writes where it was not allowed to.
 *
 * ```
 *   region:  ░░░░░░░░░ background ░░░░░ [canary 32][ buffer ][canary 32] ░░░░ [canary][ buf ][canary] ░░░
 *   snapshot() ──▶ copy of every region          diff() ──▶ bytes that changed outside allow()ed ranges
 * ```
 * Every region starts filled with a position-dependent background pattern, so a stray write of
 * zeros (or of anything likely) shows up in the diff. Every buffer handed out by `alloc` sits
 * between two canaries with their own pattern. A case declares, with `allow`, the ranges the
 * device may legitimately write (the writable buffers it offered, the used ring); after the
 * case, `diff()` lists every changed byte outside them and `brokenCanaries()` every canary
 * that changed.
 * @module
 */
import type { FrontendMemory } from '@vhost-ts/vhost-user';

/** Bytes of canary on each side of a buffer. */
export const CANARY_BYTES = 32;

/** One changed byte outside the allowed ranges. */
export interface StrayWrite {
  readonly gpa: number;
  readonly before: number;
  readonly after: number;
}

interface Canary {
  readonly gpa: number;
  readonly bytes: Uint8Array;
}

/** Background pattern byte at offset `i` of region `r`: cheap, position-dependent, rarely 0. */
function background(r: number, i: number): number {
  return ((i * 131 + r * 17 + (i >>> 8) * 7) & 0xff) | 0x01;
}

/** Guest memory with canaries, a snapshot and a diff. */
export class GuestArena {
  readonly mem: FrontendMemory;
  private readonly views: Uint8Array[];
  private readonly canaries: Canary[] = [];
  private allowed: [number, number][] = [];
  private snap: Uint8Array[] | null = null;
  private canarySeed = 0x5a;

  /** Takes over `mem` before it is handed to a front-end: fills it with the background pattern. */
  constructor(mem: FrontendMemory) {
    this.mem = mem;
    this.views = mem.regions.map((r) => new Uint8Array(r.buffer));
    this.views.forEach((v, r) => {
      for (let i = 0; i < v.length; i++) v[i] = background(r, i);
    });
  }

  /**
   * Allocates `len` bytes (aligned to `align`) between two canaries, in `region` if given.
   * The buffer keeps the background pattern until the caller writes it.
   */
  alloc(len: number, opts: { align?: number; region?: number } = {}): number {
    const align = opts.align ?? 16;
    // Room for the leading canary, rounded so the buffer itself is aligned.
    const lead = Math.ceil(CANARY_BYTES / align) * align;
    const start = this.mem.alloc(lead + len + CANARY_BYTES, align, opts.region);
    const gpa = start + lead;
    this.placeCanary(gpa - CANARY_BYTES);
    this.placeCanary(gpa + len);
    return gpa;
  }

  private placeCanary(gpa: number): void {
    const bytes = new Uint8Array(CANARY_BYTES);
    for (let i = 0; i < CANARY_BYTES; i++) bytes[i] = (this.canarySeed + i * 29) & 0xff;
    this.canarySeed = (this.canarySeed + 0x3b) & 0xff;
    this.write(gpa, bytes);
    this.canaries.push({ gpa, bytes });
  }

  /** Writes guest bytes (the driver's own writes). */
  write(gpa: number, bytes: Uint8Array): void {
    const r = this.mem.memory.writeFrom(gpa, bytes);
    if (r !== bytes.length) throw new RangeError(`arena: write of ${bytes.length} bytes at 0x${gpa.toString(16)} failed (${r})`);
  }

  /** Reads guest bytes. */
  read(gpa: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    const r = this.mem.memory.readInto(gpa, out);
    if (r !== len) throw new RangeError(`arena: read of ${len} bytes at 0x${gpa.toString(16)} failed (${r})`);
    return out;
  }

  /** Declares `[gpa, gpa + len)` as writable by the device (until `clearAllowed()`). */
  allow(gpa: number, len: number): void {
    if (len > 0) this.allowed.push([gpa, gpa + len]);
  }

  /** Forgets every allowed range (a new case starts). */
  clearAllowed(): void {
    this.allowed = [];
  }

  /** Records the current contents of guest memory; `diff()` compares against it. */
  snapshot(): void {
    this.snap = this.views.map((v) => v.slice());
  }

  /** Byte ranges allowed right now (copies). */
  get allowedRanges(): [number, number][] {
    return this.allowed.map(([a, b]) => [a, b]);
  }

  private isAllowed(gpa: number): boolean {
    for (const [a, b] of this.allowed) if (gpa >= a && gpa < b) return true;
    return false;
  }

  /** Changed bytes outside the allowed ranges since `snapshot()` (at most `max` listed). */
  diff(max = 16): StrayWrite[] {
    if (this.snap === null) throw new Error('arena: diff() before snapshot()');
    const out: StrayWrite[] = [];
    for (let r = 0; r < this.views.length; r++) {
      const now = this.views[r], then = this.snap[r];
      const base = this.mem.regions[r].desc.guestPhysAddr;
      // Compare 4 KiB pages with Buffer.compare first: nearly all are untouched.
      for (let p = 0; p < now.length; p += 4096) {
        const end = Math.min(now.length, p + 4096);
        if (Buffer.compare(now.subarray(p, end), then.subarray(p, end)) === 0) continue;
        for (let i = p; i < end; i++) {
          if (now[i] === then[i] || this.isAllowed(base + i)) continue;
          out.push({ gpa: base + i, before: then[i], after: now[i] });
          if (out.length >= max) return out;
        }
      }
    }
    return out;
  }

  /** GPAs of canaries whose bytes changed (ever, not just since the snapshot). */
  brokenCanaries(): number[] {
    const bad: number[] = [];
    for (const c of this.canaries) {
      const now = this.read(c.gpa, CANARY_BYTES);
      if (Buffer.compare(now, c.bytes) !== 0) bad.push(c.gpa);
    }
    return bad;
  }

  /** Number of canaries placed. */
  get canaryCount(): number {
    return this.canaries.length;
  }
}
