/**
 * Replays a QEMU-captured fixture (see `test/e2e/src/capture-fixtures.ts`) against a back-end and
 * plays the guest's part as well, so that even the ring indices come out as QEMU saw them.
 *
 * fd substitution: each recorded memory region gets a memfd of the recorded size — regions that
 * came from one file in QEMU (same fd size, same `userspace_addr - mmap_offset`) share one memfd,
 * as the back-end must then see the same bytes through both; kick/call/err fds are fresh
 * eventfds kept open (the kick ones are written to drive the rings); the back-end channel is a
 * socketpair; `SET_INFLIGHT_FD` hands back the very fd the back-end returned from
 * `GET_INFLIGHT_FD`, as QEMU does.
 *
 * Guest emulation: the captured replies to `GET_VRING_BASE` say how many avail entries the
 * back-end had consumed on each ring when QEMU stopped it. Just before the first message that
 * stops a running ring (`GET_VRING_BASE`, `SET_VRING_ENABLE 0`, `SET_STATUS` dropping
 * DRIVER_OK) the replayer posts exactly that many chains into the rings — in the memfds it
 * handed over, at the addresses QEMU gave — kicks, and waits until the back-end has used them.
 * blk: 1-sector reads (header, data, status); net: RX buffers and TX frames per queue pair (the
 * loopback back-end echoes each TX frame into one RX buffer of the same pair).
 * @module
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { close, eventfd, eventfdWrite, memfdCreate, mmap, munmap, ftruncate, socketpair, unixConnect } from '@vhost-ts/sys';
import { GuestMemory, SplitQueueDriver, type MemoryRegion } from '@vhost-ts/virtqueue';
import { MessageConnection, type FixtureEntry } from '../src/index.js';

/** A fixture file written by the capture script. */
export interface QemuFixture {
  readonly case: string;
  readonly qemu: string;
  /** Back-end argv after `node --conditions=vhost-ts-source --import tsx`; `$WORK` = a private dir. */
  readonly backend: readonly string[];
  readonly imageBytes?: number;
  readonly device: string;
  readonly guestScript: string;
  readonly capturedAt: string;
  readonly sessions: FixtureEntry[][];
}

/** Directory of the fixture files. */
export const FIXTURE_DIR = join(dirname(fileURLToPath(import.meta.url)), 'fixtures');

/** Loads `fixtures/qemu-7.2-<name>.json`. */
export function loadQemuFixture(name: string): QemuFixture {
  return JSON.parse(readFileSync(join(FIXTURE_DIR, `qemu-7.2-${name}.json`), 'utf8')) as QemuFixture;
}

// Request ids (vhost-user.rst, "Front-end message types").
const SET_FEATURES = 2, SET_MEM_TABLE = 5, SET_VRING_NUM = 8, SET_VRING_ADDR = 9,
  SET_VRING_BASE = 10, GET_VRING_BASE = 11, SET_VRING_KICK = 12, SET_VRING_ENABLE = 18,
  GET_INFLIGHT_FD = 31, SET_INFLIGHT_FD = 32, ADD_MEM_REG = 37, REM_MEM_REG = 38, SET_STATUS = 39;
const DRIVER_OK = 4;
const VIRTIO_RING_F_EVENT_IDX = 29;
const VHOST_USER_VRING_NOFD_MASK = 0x100;

/** What a driven replay observed. */
export interface DrivenReplayResult {
  /** Replies received in order: request id, payload hex, number of fds. */
  readonly replies: { id: number; payload: string; fds: number }[];
  /** Replies recorded in the fixture, in order. */
  readonly expected: { id: number; payload: string }[];
  /** Chains the replayer completed per ring, over the whole session. */
  readonly driven: Map<number, number>;
  readonly closedEarly: boolean;
}

interface RingState {
  num: number;
  base: number;
  desc: number;
  avail: number;
  used: number;
  kickFd: number;
  started: boolean;
  enabled: boolean;
  driven: boolean;
  driver: SplitQueueDriver | null;
}

interface Region { gpa: number; size: number; uva: number; offset: number; fileKey: string }

const u64 = (b: Buffer, off: number): number => Number(b.readBigUInt64LE(off));

/** Chains each ring must complete in each of its start/stop episodes (from the GET_VRING_BASE replies). */
function episodeNeeds(entries: readonly FixtureEntry[]): Map<number, number[]> {
  const base = new Map<number, number>();
  const needs = new Map<number, number[]>();
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i];
    if (e.dir !== 'request') continue;
    const p = Buffer.from(e.payload, 'hex');
    if (e.id === SET_VRING_BASE) base.set(p.readUInt32LE(0), p.readUInt32LE(4));
    if (e.id !== GET_VRING_BASE) continue;
    const q = p.readUInt32LE(0);
    const reply = entries.slice(i + 1).find((r) => r.dir === 'reply' && r.id === GET_VRING_BASE);
    if (reply === undefined) continue;
    const got = Buffer.from(reply.payload, 'hex').readUInt32LE(4);
    const list = needs.get(q) ?? [];
    list.push((got - (base.get(q) ?? 0)) & 0xffff);
    needs.set(q, list);
  }
  return needs;
}

/** Options of {@link replayDriven}. */
export interface DrivenReplayOptions {
  readonly device: 'blk' | 'net';
  /** Per-reply wait and per-drive wait (default 10 s; the box may be loaded). */
  readonly timeoutMs?: number;
}

/**
 * Replays `entries` against the back-end listening at `path`, playing the guest as described in
 * the module comment. Every fd it creates or receives is closed before it returns.
 */
export async function replayDriven(path: string, entries: readonly FixtureEntry[], opts: DrivenReplayOptions): Promise<DrivenReplayResult> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const needs = episodeNeeds(entries);
  const episode = new Map<number, number>();
  const rings = new Map<number, RingState>();
  const ring = (q: number): RingState => {
    let r = rings.get(q);
    if (r === undefined) {
      r = { num: 0, base: 0, desc: 0, avail: 0, used: 0, kickFd: -1, started: false, enabled: false, driven: false, driver: null };
      rings.set(q, r);
    }
    return r;
  };
  const owned: number[] = [];
  const files = new Map<string, { fd: number; size: number; map: ArrayBuffer | null }>();
  let regions: Region[] = [];
  let features = 0n;
  let status = -1;
  let inflightFd = -1;
  const driven = new Map<number, number>();
  const replies: DrivenReplayResult['replies'] = [];
  const expected: DrivenReplayResult['expected'] = [];
  let closed = false;
  let waiter: (() => void) | null = null;

  const conn = new MessageConnection(unixConnect(path), 'frontend', true, {
    onFrame: (f) => {
      replies.push({ id: f.header.request, payload: Buffer.from(f.body).toString('hex'), fds: f.fds.length });
      if (f.header.request === GET_INFLIGHT_FD && f.fds.length === 1) {
        if (inflightFd >= 0) close(inflightFd);
        inflightFd = f.fds[0];
      } else {
        for (const fd of f.fds) close(fd);
      }
      waiter?.();
    },
    onClose: () => { closed = true; waiter?.(); },
  });
  const waitReplies = (n: number) => new Promise<void>((resolve, reject) => {
    if (replies.length >= n || closed) { resolve(); return; }
    const t = setTimeout(() => { waiter = null; reject(new Error(`no reply #${n} within ${timeoutMs} ms`)); }, timeoutMs);
    waiter = () => { if (replies.length >= n || closed) { clearTimeout(t); waiter = null; resolve(); } };
  });

  /** Guest memory over the memfds, as the regions currently stand. */
  const guestMemory = (): GuestMemory => {
    const list: MemoryRegion[] = regions.map((r) => {
      const file = files.get(r.fileKey)!;
      file.map ??= mmap(file.fd, file.size, 0);
      return { guestPhysAddr: r.gpa, size: r.size, userAddr: r.uva, mmapOffset: r.offset, buffer: file.map, bufferOffset: r.offset };
    });
    return new GuestMemory(list);
  };

  /** A scratch window of `perRing * count` bytes in the first region, clear of every ring. */
  const scratch = (mem: GuestMemory, bytes: number): number => {
    const busy: [number, number][] = [];
    for (const r of rings.values()) {
      if (r.num === 0) continue;
      for (const [uva, len] of [[r.desc, 16 * r.num], [r.avail, 6 + 2 * r.num], [r.used, 6 + 8 * r.num]]) {
        const g = mem.uvaToGpa(uva, len);
        if (g >= 0) busy.push([g, g + len]);
      }
    }
    const first = regions.reduce((a, b) => (a.size >= b.size ? a : b));
    for (let at = first.gpa + (1 << 20); at + bytes <= first.gpa + first.size; at += 1 << 20) {
      if (busy.every(([s, e]) => e <= at || s >= at + bytes)) return at;
    }
    throw new Error('no scratch window free of rings in guest memory');
  };

  const kick = (r: RingState) => eventfdWrite(r.kickFd, 1);

  const waitUsed = async (q: number, r: RingState, count: number): Promise<void> => {
    const end = Date.now() + timeoutMs;
    let got = 0;
    while (got < count) {
      while (r.driver!.usedCount() > 0) {
        r.driver!.popUsed();
        got++;
      }
      if (got >= count) break;
      if (Date.now() > end || closed) throw new Error(`ring ${q}: ${got} of ${count} chains used within ${timeoutMs} ms`);
      await new Promise((res) => setTimeout(res, 2));
    }
    driven.set(q, (driven.get(q) ?? 0) + count);
  };

  /** Posts each running ring's recorded work and waits until the back-end used it all. */
  const drive = async (): Promise<void> => {
    const todo: [number, RingState, number][] = [];
    for (const [q, r] of rings) {
      const n = needs.get(q)?.[episode.get(q) ?? 0] ?? 0;
      if (r.driven || !r.started || !r.enabled || r.driver === null || n === 0) continue;
      r.driven = true;
      todo.push([q, r, n]);
    }
    if (todo.length === 0) return;
    const mem = guestMemory();
    const area = scratch(mem, 8 << 20);
    if (opts.device === 'blk') {
      await Promise.all(todo.map(async ([q, r, n]) => {
        const base = area + q * (1 << 20);
        let left = n;
        while (left > 0) {
          const batch = Math.min(left, r.num);
          for (let i = 0; i < batch; i++) {
            const hdr = base + i * 16;
            mem.writeFrom(hdr, new Uint8Array(16)); // VIRTIO_BLK_T_IN, sector 0
            r.driver!.add([{ gpa: hdr, len: 16 }], [{ gpa: base + 0x10000 + i * 512, len: 512 }, { gpa: base + 0x8000 + i, len: 1 }]);
          }
          r.driver!.publish();
          kick(r);
          await waitUsed(q, r, batch);
          left -= batch;
        }
      }));
      return;
    }
    // net: RX buffers first, then as many TX frames as recorded; each echo fills one RX buffer.
    const hdrLen = 12; // VERSION_1 / MRG_RXBUF header (virtio 1.2 §5.1.6)
    const frame = new Uint8Array(hdrLen + 60);
    frame.fill(0xff, hdrLen, hdrLen + 6); // broadcast destination
    frame.set([0x52, 0x54, 0x00, 0x12, 0x34, 0x56], hdrLen + 6);
    frame.set([0x08, 0x06], hdrLen + 12);
    const rx = todo.filter(([q]) => q % 2 === 0);
    const tx = todo.filter(([q]) => q % 2 === 1);
    for (const [q, r, n] of rx) {
      if (n > r.num) throw new Error(`ring ${q}: ${n} RX buffers needed, more than the ring holds`);
      const base = area + q * (1 << 20);
      for (let i = 0; i < n; i++) r.driver!.add([], [{ gpa: base + i * 2048, len: 2048 }]);
      r.driver!.publish();
      kick(r);
    }
    for (const [q, r, n] of tx) {
      const pairRx = rx.find(([p]) => p === q - 1);
      if (pairRx !== undefined && pairRx[2] > n) throw new Error(`pair ${(q - 1) / 2}: RX ${pairRx[2]} > TX ${n}, the loopback cannot produce that`);
      const base = area + q * (1 << 20);
      let left = n;
      while (left > 0) {
        const batch = Math.min(left, r.num);
        for (let i = 0; i < batch; i++) {
          mem.writeFrom(base + i * 128, frame);
          r.driver!.add([{ gpa: base + i * 128, len: frame.length }], []);
        }
        r.driver!.publish();
        kick(r);
        await waitUsed(q, r, batch);
        left -= batch;
      }
    }
    await Promise.all(rx.map(([q, r, n]) => waitUsed(q, r, n)));
  };

  const isStopper = (e: FixtureEntry, p: Buffer): boolean =>
    e.id === GET_VRING_BASE ||
    (e.id === SET_VRING_ENABLE && p.readUInt32LE(4) === 0) ||
    (e.id === SET_STATUS && status >= 0 && (status & DRIVER_OK) !== 0 && (Number(p.readBigUInt64LE(0)) & DRIVER_OK) === 0);

  const regionFd = (gpa: number, size: number, uva: number, offset: number, fdSize: number): number => {
    const key = `${fdSize}:${uva - offset}`;
    let file = files.get(key);
    if (file === undefined) {
      const fd = memfdCreate('qemu-replay');
      ftruncate(fd, fdSize);
      file = { fd, size: fdSize, map: null };
      files.set(key, file);
    }
    if (!regions.some((r) => r.gpa === gpa && r.size === size)) regions.push({ gpa, size, uva, offset, fileKey: key });
    return file.fd;
  };

  try {
    for (const e of entries) {
      if (closed) break;
      if (e.dir === 'reply') {
        expected.push({ id: e.id, payload: e.payload });
        await waitReplies(expected.length);
        continue;
      }
      const p = Buffer.from(e.payload, 'hex');
      if (isStopper(e, p)) await drive();
      const fds: number[] = [];
      const transient: number[] = [];
      switch (e.id) {
        case SET_FEATURES: features = p.readBigUInt64LE(0); break;
        case SET_STATUS: status = Number(p.readBigUInt64LE(0)); break;
        case SET_VRING_NUM: ring(p.readUInt32LE(0)).num = p.readUInt32LE(4); break;
        case SET_VRING_BASE: ring(p.readUInt32LE(0)).base = p.readUInt32LE(4); break;
        case SET_VRING_ADDR: {
          const r = ring(p.readUInt32LE(0));
          r.desc = u64(p, 8); r.used = u64(p, 16); r.avail = u64(p, 24);
          break;
        }
        case SET_VRING_ENABLE: ring(p.readUInt32LE(0)).enabled = p.readUInt32LE(4) !== 0; break;
        case GET_VRING_BASE: {
          const q = p.readUInt32LE(0);
          const r = ring(q);
          r.started = false; r.driven = false; r.driver = null;
          episode.set(q, (episode.get(q) ?? 0) + 1);
          break;
        }
        case SET_MEM_TABLE: {
          regions = [];
          const n = p.readUInt32LE(0);
          for (let i = 0; i < n && i < e.fds.length; i++) {
            const o = 8 + i * 32;
            const d = e.fds[i];
            fds.push(regionFd(u64(p, o), u64(p, o + 8), u64(p, o + 16), u64(p, o + 24), d.kind === 'memfd' ? d.size : u64(p, o + 8) + u64(p, o + 24)));
          }
          break;
        }
        case ADD_MEM_REG: {
          const d = e.fds[0];
          fds.push(regionFd(u64(p, 8), u64(p, 16), u64(p, 24), u64(p, 32), d?.kind === 'memfd' ? d.size : u64(p, 16) + u64(p, 32)));
          break;
        }
        case REM_MEM_REG: {
          const gpa = u64(p, 8);
          const hit = regions.find((r) => r.gpa === gpa);
          regions = regions.filter((r) => r.gpa !== gpa);
          if (e.fds.length > 0) {
            const fd = memfdCreate('qemu-replay-rem');
            transient.push(fd);
            fds.push(hit !== undefined ? files.get(hit.fileKey)!.fd : fd);
          }
          break;
        }
        case SET_INFLIGHT_FD:
          if (inflightFd >= 0) {
            fds.push(inflightFd);
          } else if (e.fds[0]?.kind === 'memfd') {
            const fd = memfdCreate('qemu-replay-inflight');
            ftruncate(fd, e.fds[0].size);
            transient.push(fd);
            fds.push(fd);
          }
          break;
        default:
          break;
      }
      if (fds.length === 0) {
        for (const d of e.fds) {
          if (d.kind === 'socket') {
            const [a, b] = socketpair();
            owned.push(a);
            transient.push(b);
            fds.push(b);
          } else if (d.kind === 'memfd') {
            const fd = memfdCreate('qemu-replay');
            ftruncate(fd, d.size);
            transient.push(fd);
            fds.push(fd);
          } else {
            const fd = eventfd(0);
            owned.push(fd);
            fds.push(fd);
          }
        }
      }
      if (e.id === SET_VRING_KICK && (Number(p.readBigUInt64LE(0)) & VHOST_USER_VRING_NOFD_MASK) === 0 && fds.length === 1) {
        // The ring starts on this message: lay its indices down at the recorded base first.
        const q = Number(p.readBigUInt64LE(0)) & 0xff;
        const r = ring(q);
        r.kickFd = fds[0];
        r.started = true;
        r.driven = false;
        const mem = guestMemory();
        const layout = { size: r.num, descGpa: mem.uvaToGpa(r.desc, 16 * r.num), availGpa: mem.uvaToGpa(r.avail, 6 + 2 * r.num), usedGpa: mem.uvaToGpa(r.used, 6 + 8 * r.num) };
        r.driver = layout.descGpa < 0 || layout.availGpa < 0 || layout.usedGpa < 0 ? null
          : new SplitQueueDriver(mem, layout, { eventIdx: (features >> BigInt(VIRTIO_RING_F_EVENT_IDX) & 1n) === 1n, startIndex: r.base });
      }
      const raw = Buffer.alloc(12 + p.length);
      raw.writeUInt32LE(e.id, 0);
      raw.writeUInt32LE(e.flags, 4);
      raw.writeUInt32LE(p.length, 8);
      p.copy(raw, 12);
      conn.send(new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength), fds);
      for (const fd of transient) close(fd);
      if (e.id === SET_INFLIGHT_FD && inflightFd >= 0) {
        close(inflightFd);
        inflightFd = -1;
      }
    }
  } finally {
    conn.close();
    for (const fd of owned) close(fd);
    for (const f of files.values()) {
      if (f.map !== null) munmap(f.map);
      close(f.fd);
    }
    if (inflightFd >= 0) close(inflightFd);
  }
  return { replies, expected, driven, closedEarly: closed && replies.length < expected.length };
}
