/**
 * Recorded vhost-user sessions ("fixtures") and their replay.
 *
 * A fixture is a JSON list of messages in wire order. fds are described, not numbered, so a
 * replay can recreate equivalent ones: memfds of the recorded size (memory regions, logs,
 * inflight areas), fresh eventfds, socketpair ends.
 *
 * ```json
 * [{ "dir": "request", "request": "VHOST_USER_SET_MEM_TABLE", "id": 5, "flags": 9,
 *    "payload": "0100000000000000...", "fds": [{ "kind": "memfd", "size": 2097152 }] },
 *  { "dir": "reply", "request": "VHOST_USER_SET_MEM_TABLE", "id": 5, "flags": 5, "payload": "0000000000000000", "fds": [] }]
 * ```
 * @module
 */
import { readlinkSync } from 'node:fs';
import { close, eventfd, fstatSize, ftruncate, memfdCreate, socketpair, unixConnect } from '@vhost-ts/sys';
import type { RawFrame } from '../codec/framer.js';
import { frontendRequestName } from '../codec/schema.js';
import { ProtocolError } from '../errors.js';
import { MessageConnection } from '../transport/message-connection.js';

/** How an fd is recreated on replay. */
export type FixtureFd =
  | { kind: 'memfd'; size: number }
  | { kind: 'eventfd' }
  | { kind: 'socket' }
  | { kind: 'other'; target: string };

/** One recorded message. */
export interface FixtureEntry {
  /** `request`: front-end → back-end; `reply`: back-end → front-end. */
  dir: 'request' | 'reply';
  /** Spec name (informational). */
  request: string;
  id: number;
  flags: number;
  /** Payload bytes as hex. */
  payload: string;
  fds: FixtureFd[];
}

/** Describes an fd by what /proc says it is (for recording). */
export function describeFd(fd: number): FixtureFd {
  let target = '';
  try {
    target = readlinkSync(`/proc/self/fd/${fd}`);
  } catch { /* gone */ }
  if (target.includes('[eventfd]')) return { kind: 'eventfd' };
  if (target.startsWith('socket:')) return { kind: 'socket' };
  if (target.startsWith('/memfd:') || target.startsWith('/')) {
    try {
      return { kind: 'memfd', size: fstatSize(fd) };
    } catch { /* not sizable */ }
  }
  return { kind: 'other', target };
}

/** Builds a fixture entry from a frame. */
export function entryFromFrame(dir: FixtureEntry['dir'], f: RawFrame): FixtureEntry {
  return {
    dir, request: frontendRequestName(f.header.request), id: f.header.request, flags: f.header.flags,
    payload: Buffer.from(f.body).toString('hex'), fds: f.fds.map(describeFd),
  };
}

function encodeRaw(e: FixtureEntry): Uint8Array {
  const body = Buffer.from(e.payload, 'hex');
  const b = Buffer.alloc(12 + body.length);
  b.writeUInt32LE(e.id, 0);
  b.writeUInt32LE(e.flags, 4);
  b.writeUInt32LE(body.length, 8);
  body.copy(b, 12);
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/** What a replay observed. */
export interface ReplayResult {
  /** Replies received, in order (request id + payload hex). */
  replies: { id: number; payload: string; fds: number }[];
  /** Replies the fixture expected, in order. */
  expected: { id: number; payload: string }[];
  /** True when the back-end closed the connection before the end. */
  closedEarly: boolean;
}

/**
 * Replays the `request` entries of a fixture against a back-end at `path`, waiting for a
 * reply wherever the fixture has one, then closes. All fds created are closed at the end
 * (the peer ends of socketpairs and the eventfds are kept open until then).
 */
export async function replayFixture(path: string, entries: readonly FixtureEntry[], timeoutMs = 5000): Promise<ReplayResult> {
  const keep: number[] = [];
  const replies: ReplayResult['replies'] = [];
  let closed = false;
  let waiter: (() => void) | null = null;
  const conn = new MessageConnection(unixConnect(path), 'frontend', true, {
    onFrame: (f) => {
      replies.push({ id: f.header.request, payload: Buffer.from(f.body).toString('hex'), fds: f.fds.length });
      for (const fd of f.fds) close(fd);
      waiter?.();
    },
    onClose: () => { closed = true; waiter?.(); },
  });
  const wait = (n: number) => new Promise<void>((resolve, reject) => {
    if (replies.length >= n || closed) { resolve(); return; }
    const t = setTimeout(() => reject(new ProtocolError('TIMEOUT', `no reply #${n}`)), timeoutMs);
    waiter = () => { if (replies.length >= n || closed) { clearTimeout(t); waiter = null; resolve(); } };
  });
  const expected: ReplayResult['expected'] = [];
  try {
    for (let i = 0; i < entries.length && !closed; i++) {
      const e = entries[i];
      if (e.dir === 'reply') {
        expected.push({ id: e.id, payload: e.payload });
        await wait(expected.length);
        continue;
      }
      const fds: number[] = [];
      for (const d of e.fds) {
        if (d.kind === 'memfd') {
          const fd = memfdCreate('replay');
          ftruncate(fd, d.size);
          fds.push(fd);
        } else if (d.kind === 'socket') {
          const [a, b] = socketpair();
          keep.push(a);
          fds.push(b);
        } else {
          const fd = eventfd(0);
          keep.push(fd);
          fds.push(fd);
        }
      }
      conn.send(encodeRaw(e), fds);
      for (const fd of fds) if (!keep.includes(fd)) close(fd);
    }
  } finally {
    conn.close();
    for (const fd of keep) {
      try { close(fd); } catch { /* ignore */ }
    }
  }
  return { replies, expected, closedEarly: closed && replies.length < expected.length };
}
