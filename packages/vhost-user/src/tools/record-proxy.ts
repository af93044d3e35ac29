/**
 * record-proxy: sits between a vhost-user front-end (QEMU) and a back-end, forwards every
 * message unchanged (fds included) and records the session as a fixture (see
 * `frontend/fixture.ts`) for {@link replayFixture}.
 *
 * ```
 *  QEMU ──▶ --listen PATH ══ record-proxy ══▶ --backend PATH (our back-end, qemu-storage-daemon, ...)
 * ```
 * Usage:
 *   node --conditions=vhost-ts-source --import tsx packages/vhost-user/src/tools/record-proxy.ts \
 *     --listen /tmp/proxy.sock --backend /tmp/backend.sock --out session.json
 * Each front-end connection becomes one session; `--out` is rewritten with the list of
 * sessions (`FixtureEntry[][]`) whenever one ends. Traffic on the back-end channel
 * (SET_BACKEND_REQ_FD's socket) is passed through untouched and not recorded.
 * @module
 */
import { writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { FdWatcher, READABLE, close, unixAccept, unixConnect, unixListen } from '@vhost-ts/sys';
import type { RawFrame } from '../codec/framer.js';
import { entryFromFrame, type FixtureEntry } from '../frontend/fixture.js';
import { MessageConnection } from '../transport/message-connection.js';

function raw(f: RawFrame): Uint8Array {
  const b = Buffer.alloc(12 + f.body.length);
  b.writeUInt32LE(f.header.request, 0);
  b.writeUInt32LE(f.header.flags, 4);
  b.writeUInt32LE(f.header.size, 8);
  b.set(f.body, 12);
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/** A running proxy. */
export interface RecordProxy {
  /** Completed and in-progress sessions. */
  readonly sessions: FixtureEntry[][];
  close(): void;
}

/** Starts a proxy listening at `listenPath` that forwards to `backendPath`. */
export function startRecordProxy(listenPath: string, backendPath: string, onSessionEnd?: (s: FixtureEntry[]) => void): RecordProxy {
  const sessions: FixtureEntry[][] = [];
  const lfd = unixListen(listenPath);
  const open = new Set<MessageConnection>();
  const watcher = new FdWatcher(lfd, () => {
    const fd = unixAccept(lfd);
    if (fd < 0) return;
    let bfd: number;
    try {
      bfd = unixConnect(backendPath);
    } catch (e) {
      console.error(`record-proxy: cannot reach back-end: ${(e as Error).message}`);
      close(fd);
      return;
    }
    const log: FixtureEntry[] = [];
    sessions.push(log);
    let front: MessageConnection | null = null;
    let back: MessageConnection | null = null;
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      front?.close();
      back?.close();
      if (front !== null) open.delete(front);
      if (back !== null) open.delete(back);
      onSessionEnd?.(log);
    };
    front = new MessageConnection(fd, 'frontend', false, {
      onFrame: (f) => {
        log.push(entryFromFrame('request', f));
        back?.send(raw(f), f.fds);
        for (const x of f.fds) close(x);
      },
      onClose: end,
    });
    back = new MessageConnection(bfd, 'frontend', true, {
      onFrame: (f) => {
        log.push(entryFromFrame('reply', f));
        front?.send(raw(f), f.fds);
        for (const x of f.fds) close(x);
      },
      onClose: end,
    });
    open.add(front);
    open.add(back);
  });
  watcher.start(READABLE);
  return {
    sessions,
    close() {
      watcher.close();
      close(lfd);
      for (const c of open) c.close();
    },
  };
}

function main(argv: string[]): void {
  const arg = (name: string): string | undefined => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const listen = arg('--listen'), backend = arg('--backend'), out = arg('--out') ?? 'vhost-user-session.json';
  if (listen === undefined || backend === undefined) {
    console.error('usage: record-proxy --listen PATH --backend PATH [--out FILE]');
    process.exit(2);
  }
  const proxy = startRecordProxy(listen, backend, () => {
    writeFileSync(out, JSON.stringify(proxy.sessions, null, 1));
  });
  process.on('SIGTERM', () => { proxy.close(); process.exit(0); });
  process.on('SIGINT', () => { proxy.close(); process.exit(0); });
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) main(process.argv.slice(2));
