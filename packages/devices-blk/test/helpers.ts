/**
 * Test helpers: a MockGuest driving a BlkDevice queue through a fake QueueContext.
 */
import type { QueueContext, QueueHandler } from '@vhost-ts/vhost-user';
import { ftruncate, memfdCreate, mmap, close as closeFd } from '@vhost-ts/sys';
import { GuestMemory, SplitQueueDevice, SplitQueueDriver, type SplitQueueLayout } from '@vhost-ts/virtqueue';
import { MockGuest, type MockGuestOptions } from '@vhost-ts/virtqueue/testing';
import { BlkDevice, type BlkDeviceOptions } from '../src/index.js';

export interface ReqSpec {
  type: number;
  sector?: number;
  reserved?: number;
  /** Device-readable payload after the header (OUT data, discard segments). */
  out?: Uint8Array;
  /** Device-writable bytes before the status (IN data, GET_ID). */
  inLen?: number;
  /** Split the 16-byte header over descriptors of these sizes (default [16]). */
  headerSplit?: number[];
  /** Split the writable data over buffers of these sizes. */
  inSplit?: number[];
  /** Data buffers start this many bytes past a 512-byte boundary (default 0: aligned). */
  misalign?: number;
  /** Bytes of the status buffer (0 = no status buffer; default 1). */
  statusLen?: number;
  /** Put the whole chain in an indirect table. */
  indirect?: boolean;
  /** Truncate the header to this many bytes. */
  headerLen?: number;
}

export interface Sent {
  head: number;
  statusGpa: number;
  inGpas: { gpa: number; len: number }[];
}

/** What BlkRig needs of a guest. */
export interface GuestLike {
  readonly memory: GuestMemory;
  readonly layout: SplitQueueLayout;
  readonly driver: SplitQueueDriver;
  readonly device: SplitQueueDevice;
  alloc(len: number, opts?: { align?: number }): number;
  write(gpa: number, bytes: Uint8Array): void;
  read(gpa: number, len: number): Uint8Array;
  checkCanaries(): string[];
}

/**
 * A guest whose memory is one page-aligned shared mapping (memfd), as QEMU's is: needed where
 * the host address alignment matters (O_DIRECT).
 */
export class MmapGuest implements GuestLike {
  readonly memory: GuestMemory;
  readonly layout: SplitQueueLayout;
  readonly driver: SplitQueueDriver;
  readonly device: SplitQueueDevice;
  private bump: number;
  private readonly end: number;

  constructor(size = 1 << 21, queueSize = 64) {
    const fd = memfdCreate('blk-test-guest');
    ftruncate(fd, size);
    const buffer = mmap(fd, size, 0);
    closeFd(fd);
    const base = 0x100000;
    this.memory = new GuestMemory([{ guestPhysAddr: base, size, userAddr: 0x7f0000000000, mmapOffset: 0, buffer, bufferOffset: 0 }]);
    this.layout = { size: queueSize, descGpa: base, availGpa: base + 16 * queueSize, usedGpa: base + 0x4000 };
    const indirectGpa = base + 0x8000;
    this.driver = new SplitQueueDriver(this.memory, this.layout, { eventIdx: false, indirectArea: { gpa: indirectGpa, entriesPerHead: 32 } });
    this.device = new SplitQueueDevice(this.memory, this.layout, { eventIdx: false, indirect: true });
    this.bump = indirectGpa + queueSize * 32 * 16;
    this.end = base + size;
  }

  alloc(len: number, opts: { align?: number } = {}): number {
    const a = opts.align ?? 16;
    const gpa = Math.ceil(this.bump / a) * a;
    if (gpa + len > this.end) throw new RangeError('MmapGuest: out of memory');
    this.bump = gpa + len;
    return gpa;
  }

  write(gpa: number, bytes: Uint8Array): void {
    if (this.memory.writeFrom(gpa, bytes) < 0) throw new RangeError('MmapGuest.write');
  }

  read(gpa: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    if (this.memory.readInto(gpa, out) < 0) throw new RangeError('MmapGuest.read');
    return out;
  }

  checkCanaries(): string[] {
    return [];
  }
}

/** A device + one started queue on a mock guest. */
export class BlkRig {
  readonly guest: GuestLike;
  readonly device: BlkDevice;
  readonly handler: QueueHandler;
  notifies = 0;
  brokenReasons: string[] = [];
  readonly ctx: QueueContext;

  /** `devOpts` may be the device of another rig: this one then starts another of its queues. */
  constructor(devOpts: BlkDeviceOptions | BlkDevice, guestOpts: MockGuestOptions | GuestLike = {}, acked?: bigint, queueIndex = 0) {
    this.guest = guestOpts instanceof MmapGuest ? guestOpts
      : new MockGuest({ queueSize: 64, heapBytes: 0x100000, indirectEntries: 32, ...(guestOpts as MockGuestOptions) });
    if (devOpts instanceof BlkDevice) {
      this.device = devOpts;
    } else {
      this.device = new BlkDevice(devOpts);
      this.device.setFeatures(acked ?? this.device.features);
    }
    this.ctx = {
      index: queueIndex,
      queue: this.guest.device,
      memory: this.guest.memory,
      notify: () => { this.notifies++; },
      broken: (reason: string) => { this.brokenReasons.push(reason); },
      inflight: null,
    };
    this.handler = this.device.startQueue(queueIndex, this.ctx);
  }

  /** Builds a request chain (not published). */
  add(spec: ReqSpec): Sent {
    const g = this.guest;
    const hdr = new Uint8Array(16);
    const v = new DataView(hdr.buffer);
    v.setUint32(0, spec.type, true);
    v.setUint32(4, spec.reserved ?? 0, true);
    const sector = spec.sector ?? 0;
    v.setUint32(8, sector % 0x100000000, true);
    v.setUint32(12, Math.floor(sector / 0x100000000), true);
    const headerBytes = hdr.subarray(0, spec.headerLen ?? 16);
    const readable: { gpa: number; len: number }[] = [];
    const split = spec.headerSplit ?? [headerBytes.length];
    let at = 0;
    for (const n of split) {
      if (n === 0) continue;
      const gpa = g.alloc(n);
      g.write(gpa, headerBytes.subarray(at, at + n));
      readable.push({ gpa, len: n });
      at += n;
    }
    if (spec.out !== undefined && spec.out.length > 0) {
      const gpa = g.alloc(spec.out.length + (spec.misalign ?? 0), { align: 512 }) + (spec.misalign ?? 0);
      g.write(gpa, spec.out);
      readable.push({ gpa, len: spec.out.length });
    }
    const writable: { gpa: number; len: number }[] = [];
    const inGpas: { gpa: number; len: number }[] = [];
    const inLen = spec.inLen ?? 0;
    if (inLen > 0) {
      const parts = spec.inSplit ?? [inLen];
      for (const n of parts) {
        const gpa = g.alloc(n + (spec.misalign ?? 0), { align: 512 }) + (spec.misalign ?? 0);
        g.write(gpa, new Uint8Array(n).fill(0xee));
        writable.push({ gpa, len: n });
        inGpas.push({ gpa, len: n });
      }
    }
    const statusLen = spec.statusLen ?? 1;
    let statusGpa = -1;
    if (statusLen > 0) {
      const gpa = g.alloc(statusLen);
      g.write(gpa, new Uint8Array(statusLen).fill(0xaa));
      writable.push({ gpa, len: statusLen });
      statusGpa = gpa + statusLen - 1;
    }
    const head = g.driver.add(readable, writable, { indirect: spec.indirect === true });
    if (head < 0) throw new Error('queue full');
    return { head, statusGpa, inGpas };
  }

  /** Publishes and kicks. */
  kick(): void {
    this.guest.driver.publish();
    this.handler.onKick();
  }

  /** Used elements collected so far, head → len. */
  collect(): Map<number, number> {
    const out = new Map<number, number>();
    for (;;) {
      const head = this.guest.driver.popUsed();
      if (head < 0) return out;
      out.set(head, this.guest.driver.lastLen);
    }
  }

  /** Waits until `n` used elements are available (async engines). */
  async waitUsed(n: number, timeoutMs = 5000): Promise<Map<number, number>> {
    const out = new Map<number, number>();
    const end = Date.now() + timeoutMs;
    while (out.size < n) {
      for (const [h, l] of this.collect()) out.set(h, l);
      if (out.size >= n) break;
      if (Date.now() > end) throw new Error(`timed out waiting for ${n} used elements (got ${out.size})`);
      await new Promise((r) => setTimeout(r, 2));
    }
    return out;
  }

  status(s: Sent): number {
    return this.guest.read(s.statusGpa, 1)[0];
  }

  readIn(s: Sent): Uint8Array {
    const total = s.inGpas.reduce((a, b) => a + b.len, 0);
    const out = new Uint8Array(total);
    let at = 0;
    for (const p of s.inGpas) { out.set(this.guest.read(p.gpa, p.len), at); at += p.len; }
    return out;
  }
}

/** 16-byte discard / write-zeroes segments. */
export function segments(list: { sector: number; num: number; flags?: number }[]): Uint8Array {
  const out = new Uint8Array(list.length * 16);
  const v = new DataView(out.buffer);
  list.forEach((s, i) => {
    v.setUint32(i * 16, s.sector % 0x100000000, true);
    v.setUint32(i * 16 + 4, Math.floor(s.sector / 0x100000000), true);
    v.setUint32(i * 16 + 8, s.num, true);
    v.setUint32(i * 16 + 12, s.flags ?? 0, true);
  });
  return out;
}

/** Deterministic pattern bytes. */
export function pattern(len: number, seed: number): Uint8Array {
  const out = new Uint8Array(len);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/** Fast byte equality (t.same is slow on large arrays). */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}
