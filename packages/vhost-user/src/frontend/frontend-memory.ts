/**
 * Guest memory as a front-end (QEMU role) owns it: several memfd-backed regions, with a
 * guest-physical base that is not zero and front-end virtual addresses (UVA) distinct from the
 * GPAs, so a back-end that confuses the two address spaces fails visibly.
 * @module
 */
import { close, ftruncate, memfdCreate, mmap, munmap } from '@vhost-ts/sys';
import { GuestMemory, type MemoryRegion } from '@vhost-ts/virtqueue';
import type { MemoryRegionDesc } from '../codec/payloads.js';

/** One region to allocate. */
export interface FrontendRegionSpec {
  guestPhysAddr: number;
  size: number;
}

/** One allocated region. */
export interface FrontendRegion {
  readonly desc: MemoryRegionDesc;
  readonly fd: number;
  readonly buffer: ArrayBuffer;
}

/** Default layout: 1 MiB at GPA 1 MiB and 2 MiB at GPA 4 GiB. */
export const DEFAULT_REGIONS: readonly FrontendRegionSpec[] = [
  { guestPhysAddr: 0x10_0000, size: 0x10_0000 },
  { guestPhysAddr: 0x1_0000_0000, size: 0x20_0000 },
];

/** UVA of the first region; later regions follow with a 1 GiB gap. */
const UVA_BASE = 0x7f00_0000_0000;

/** memfd-backed guest memory with a bump allocator. */
export class FrontendMemory {
  readonly regions: FrontendRegion[] = [];
  readonly memory: GuestMemory;
  private readonly next: number[];

  constructor(specs: readonly FrontendRegionSpec[] = DEFAULT_REGIONS) {
    let uva = UVA_BASE;
    try {
      for (const s of specs) {
        const fd = memfdCreate('vhost-user-frontend-ram');
        ftruncate(fd, s.size);
        const buffer = mmap(fd, s.size, 0, true);
        this.regions.push({ desc: { guestPhysAddr: s.guestPhysAddr, size: s.size, userAddr: uva, mmapOffset: 0 }, fd, buffer });
        uva += s.size + 0x4000_0000;
      }
    } catch (e) {
      this.close();
      throw e;
    }
    this.memory = new GuestMemory(this.regions.map((r): MemoryRegion => ({ ...r.desc, buffer: r.buffer, bufferOffset: 0 })));
    this.next = this.regions.map((r) => r.desc.guestPhysAddr);
  }

  /** Region descriptors for SET_MEM_TABLE. */
  get descs(): MemoryRegionDesc[] {
    return this.regions.map((r) => r.desc);
  }

  /** The fds, in region order. */
  get fds(): number[] {
    return this.regions.map((r) => r.fd);
  }

  /**
   * Allocates `size` bytes aligned to `align` in region `regionIndex` (or the first region
   * with room). Returns the GPA.
   */
  alloc(size: number, align = 16, regionIndex?: number): number {
    const order = regionIndex === undefined ? this.regions.map((_, i) => i) : [regionIndex];
    for (const i of order) {
      const r = this.regions[i].desc;
      const at = Math.ceil(this.next[i] / align) * align;
      if (at + size <= r.guestPhysAddr + r.size) {
        this.next[i] = at + size;
        return at;
      }
    }
    throw new RangeError(`frontend memory: no room for ${size} bytes`);
  }

  /** Front-end virtual address of a GPA. */
  gpaToUva(gpa: number): number {
    for (const r of this.regions) {
      const d = r.desc;
      if (gpa >= d.guestPhysAddr && gpa < d.guestPhysAddr + d.size) return d.userAddr + (gpa - d.guestPhysAddr);
    }
    throw new RangeError(`gpa 0x${gpa.toString(16)} is not mapped`);
  }

  /** Unmaps and closes everything. */
  close(): void {
    for (const r of this.regions) {
      try { munmap(r.buffer); } catch { /* ignore */ }
      try { close(r.fd); } catch { /* ignore */ }
    }
    this.regions.length = 0;
  }
}
