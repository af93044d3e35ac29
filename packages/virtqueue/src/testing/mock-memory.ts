/**
 * MockGuestMemory — the memory half of the mock guests: plain ArrayBuffers as regions, ring
 * placement, a bump allocator with canary guards. MockGuest (split ring) and MockPackedGuest
 * (packed ring) add a driver and a device on top.
 *
 * Default memory map (chosen to exercise translation: GPA base ≠ 0, UVA ≠ GPA, two regions
 * adjacent in GPA but not in UVA, a gap):
 * ```
 *  GPA 0x0010_0000 ┌ region 0 ── rings, indirect tables, heap ──┐ UVA 0x7f00_0010_0000
 *  GPA 0x0010_0000+r0 ┌ region 1 ── heap (adjacent in GPA) ──────┐ UVA 0x7f80_0000_0000
 *                  … gap (unmapped) …
 *  GPA 0x0400_0000 ┌ region 2 ── heap ──────────────────────────┐ UVA 0x7e00_0000_0000
 * ```
 * Every region lives in its own ArrayBuffer surrounded by canary bytes; the allocator puts a
 * guard of canary bytes after every buffer. `checkCanaries()` reports any canary overwritten.
 * @module
 */
import { availRingBytes, descTableBytes, usedRingBytes } from '../constants.js';
import { GuestMemory, type MemoryRegion } from '../guest-memory.js';
import type { SplitQueueLayout } from '../ring-views.js';

/** One region of a mock guest. */
export interface MockRegionSpec {
  gpa: number;
  size: number;
  /** Frontend-virtual address; default gpa + 0x7f00_0000_0000. */
  uva?: number;
  /** Byte offset of the region inside its ArrayBuffer (after the leading canary); default 0. */
  misalign?: number;
}

/** Options of the mock guest memory (shared by MockGuest and MockPackedGuest). */
export interface MockMemoryOptions {
  /** Queue size (default 256). */
  queueSize?: number;
  /** EVENT_IDX negotiated (default false). */
  eventIdx?: boolean;
  /** INDIRECT_DESC negotiated (default true). */
  indirect?: boolean;
  /** Starting avail/used index (default 0; e.g. 65530 to exercise wrap-around). */
  startIndex?: number;
  /** Regions; the first one holds the rings and must be big enough. Default: see module doc. */
  regions?: MockRegionSpec[];
  /** Canary bytes on each side of a region (default 64). */
  canaryBytes?: number;
  /** Guard bytes after each allocation (default 16). */
  guardBytes?: number;
  /** Entries per head in the indirect area (default 16). */
  indirectEntries?: number;
  /** Heap bytes in regions 0 and 2 (default 256 KiB). */
  heapBytes?: number;
}

const CANARY_SEED = 0xa5;
/** Canary byte at position i of a canary run. */
const canaryByte = (i: number): number => (CANARY_SEED ^ (i * 7)) & 0xff;
/** Space kept free on each side of the region 0 / region 1 boundary for spanning buffers. */
export const SPAN_RESERVE = 0x1000;

interface Guard { buffer: Uint8Array; start: number; len: number; what: string; region: boolean }

/** Guest memory with room for one queue's rings (split or packed) and an allocator. */
export class MockGuestMemory {
  readonly memory: GuestMemory;
  readonly regions: MemoryRegion[];
  readonly layout: SplitQueueLayout;
  readonly queueSize: number;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
  readonly startIndex: number;
  /** GPA of the indirect table area (entriesPerHead × 16 bytes per head). */
  readonly indirectGpa: number;
  readonly indirectEntries: number;
  private readonly guards: Guard[];
  private readonly bump: number[];
  private readonly bumpEnd: number[];
  private readonly guardBytes: number;

  constructor(opts: MockMemoryOptions = {}) {
    const size = opts.queueSize ?? 256;
    const eventIdx = opts.eventIdx ?? false;
    const indirect = opts.indirect ?? true;
    const canary = opts.canaryBytes ?? 64;
    const indirectEntries = opts.indirectEntries ?? 16;
    const heap = opts.heapBytes ?? 0x40000;
    this.queueSize = size;
    this.eventIdx = eventIdx;
    this.indirect = indirect;
    this.startIndex = (opts.startIndex ?? 0) & 0xffff;
    this.indirectEntries = indirectEntries;
    this.guardBytes = opts.guardBytes ?? 16;
    this.guards = [];

    // Ring placement at the start of region 0.
    const descBytes = descTableBytes(size);
    const availOff = descBytes;
    const usedOff = align(availOff + availRingBytes(size, true), 4096);
    const indirectOff = align(usedOff + usedRingBytes(size, true), 4096);
    const heapOff = align(indirectOff + size * indirectEntries * 16, 4096);
    const specs = opts.regions ?? defaultRegions(heapOff + heap, heap);

    this.regions = specs.map((r, i) => {
      const misalign = r.misalign ?? 0;
      const buffer = new ArrayBuffer(r.size + 2 * canary + misalign);
      const bytes = new Uint8Array(buffer);
      this.addGuard(bytes, 0, canary + misalign, `region ${i} leading canary`, true);
      this.addGuard(bytes, canary + misalign + r.size, canary, `region ${i} trailing canary`, true);
      return {
        guestPhysAddr: r.gpa, size: r.size, userAddr: r.uva ?? r.gpa + 0x7f0000000000,
        mmapOffset: 0, buffer, bufferOffset: canary + misalign,
      };
    });
    this.memory = new GuestMemory(this.regions);

    const base = specs[0].gpa;
    this.layout = { size, descGpa: base, availGpa: base + availOff, usedGpa: base + usedOff };
    this.indirectGpa = base + indirectOff;
    this.bump = specs.map((r, i) => r.gpa + (i === 0 ? heapOff : 0) + (i === 1 ? SPAN_RESERVE : 0));
    this.bumpEnd = specs.map((r, i) => r.gpa + r.size - (i === 0 && specs.length > 1 ? SPAN_RESERVE : 0));
  }

  /**
   * Allocates `len` bytes of guest memory (16-byte aligned by default) followed by a canary
   * guard. `region` forces a region; otherwise the first with room.
   */
  alloc(len: number, opts: { align?: number; region?: number } = {}): number {
    const a = opts.align ?? 16;
    const order = opts.region !== undefined ? [opts.region] : this.bump.map((_, i) => i);
    for (const i of order) {
      const gpa = align(this.bump[i], a);
      if (gpa + len + this.guardBytes <= this.bumpEnd[i]) {
        this.bump[i] = gpa + len + this.guardBytes;
        const r = this.regions[i];
        const bytes = new Uint8Array(r.buffer);
        this.addGuard(bytes, r.bufferOffset + (gpa + len - r.guestPhysAddr), this.guardBytes, `guard after 0x${gpa.toString(16)}+${len}`);
        return gpa;
      }
    }
    throw new RangeError(`MockGuest.alloc(${len}): out of guest memory`);
  }

  /** GPA of a `len`-byte buffer that straddles the region 0 / region 1 boundary (≤ 2 × SPAN_RESERVE). */
  spanningBuffer(len: number): number {
    if (this.regions.length < 2 || len > 2 * SPAN_RESERVE) throw new RangeError('spanningBuffer: not available');
    return this.regions[1].guestPhysAddr - Math.floor(len / 2);
  }

  /** A guest-physical address in no region (inside the gap after region 1). */
  get unmappedGpa(): number {
    const r = this.regions[this.regions.length > 1 ? 1 : 0];
    return r.guestPhysAddr + r.size + 0x1000;
  }

  /** Writes bytes into guest memory (throws on an unmapped range). */
  write(gpa: number, bytes: Uint8Array): void {
    const r = this.memory.writeFrom(gpa, bytes);
    if (r < 0) throw new RangeError(`MockGuest.write: fault ${r} at 0x${gpa.toString(16)}`);
  }

  /** Reads bytes from guest memory (throws on an unmapped range). */
  read(gpa: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    const r = this.memory.readInto(gpa, out);
    if (r < 0) throw new RangeError(`MockGuest.read: fault ${r} at 0x${gpa.toString(16)}`);
    return out;
  }

  /** Turns dirty logging on with a bitmap covering all regions; returns the bitmap. */
  enableDirtyLog(): Uint8Array {
    let end = 0;
    for (const r of this.regions) end = Math.max(end, r.guestPhysAddr + r.size);
    const log = new Uint8Array(Math.ceil(end / 4096 / 8));
    this.memory.setDirtyLog(log);
    return log;
  }

  /**
   * Descriptions of every overwritten canary byte run (empty when all are intact).
   * `'regions'` checks only the canaries outside the regions (bytes no guest address reaches);
   * use it when a hostile guest may legitimately point buffers at allocation guards.
   */
  checkCanaries(scope: 'all' | 'regions' = 'all'): string[] {
    const bad: string[] = [];
    for (const g of this.guards) {
      if (scope === 'regions' && !g.region) continue;
      for (let i = 0; i < g.len; i++) {
        if (g.buffer[g.start + i] !== canaryByte(i)) {
          bad.push(`${g.what}: byte ${i} is 0x${g.buffer[g.start + i].toString(16)}`);
          break;
        }
      }
    }
    return bad;
  }

  /** Throws if any canary was overwritten. */
  assertCanaries(scope: 'all' | 'regions' = 'all'): void {
    const bad = this.checkCanaries(scope);
    if (bad.length > 0) throw new Error(`MockGuest canaries overwritten: ${bad.join('; ')}`);
  }

  private addGuard(buffer: Uint8Array, start: number, len: number, what: string, region = false): void {
    for (let i = 0; i < len; i++) buffer[start + i] = canaryByte(i);
    this.guards.push({ buffer, start, len, what, region });
  }
}

function align(v: number, a: number): number {
  return Math.ceil(v / a) * a;
}

function defaultRegions(r0: number, heap: number): MockRegionSpec[] {
  const base = 0x100000;
  const r0Size = align(r0 + SPAN_RESERVE, 0x10000);
  return [
    { gpa: base, size: r0Size, uva: 0x7f0000100000 },
    { gpa: base + r0Size, size: align(heap + SPAN_RESERVE, 0x10000), uva: 0x7f8000000000 },
    { gpa: 0x4000000, size: align(heap, 0x10000), uva: 0x7e0000000000 },
  ];
}
