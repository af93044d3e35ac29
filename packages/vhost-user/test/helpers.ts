import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  VHOST_USER_SET_VRING_ADDR, VHOST_USER_SET_VRING_BASE, VHOST_USER_SET_VRING_CALL, VHOST_USER_SET_VRING_ENABLE,
  VHOST_USER_SET_VRING_KICK, VHOST_USER_SET_VRING_NUM, VhostUserBackend, VhostUserFrontend, vringState,
  type BackendOptions, type FrontendOptions, type FrontendQueue,
} from '../src/index.js';
import { EchoDevice, type EchoDeviceOptions } from '../src/testing/index.js';

/** A fresh socket path in a private temp dir. */
export function socketPath(name = 'vu.sock'): string {
  return join(mkdtempSync(join(tmpdir(), 'vhost-user-test-')), name);
}

/** Backend (server mode) with an EchoDevice; log lines collected. */
export function startBackend(devOpts: EchoDeviceOptions = {}, opts: BackendOptions = {}) {
  const path = socketPath();
  const device = new EchoDevice(devOpts);
  const logs: string[] = [];
  const backend = new VhostUserBackend(device, { log: (l) => logs.push(l), ...opts });
  backend.listen(path);
  return { path, device, backend, logs };
}

/** Connects a front-end and runs the standard bring-up. */
export async function connectAndNegotiate(path: string, want: Parameters<VhostUserFrontend['negotiate']>[0] = {},
  opts: FrontendOptions = {}): Promise<VhostUserFrontend> {
  const fe = await VhostUserFrontend.connect(path, opts);
  await fe.negotiate(want);
  return fe;
}

/** Waits until `cond` holds (polling), or throws after `ms`. */
export async function until(cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting for condition');
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Bytes 0..n-1 with a seed. */
export function pattern(n: number, seed = 1): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);
}

import { unixConnect } from '@vhost-ts/sys';
import { MessageConnection, type RawFrame } from '../src/index.js';

/** A raw front-end socket: sends arbitrary bytes/fds, collects reply frames and the close. */
export class RawClient {
  readonly frames: RawFrame[] = [];
  closed = false;
  closeError: Error | null = null;
  readonly conn: MessageConnection;
  constructor(path: string) {
    this.conn = new MessageConnection(unixConnect(path), 'frontend', true, {
      onFrame: (f) => { this.frames.push(f); },
      onClose: (e) => { this.closed = true; this.closeError = e; },
    }, { maxQueuedBytes: 64 << 20 });
  }
  send(bytes: Uint8Array, fds: readonly number[] = []): void {
    this.conn.send(bytes, fds);
  }
  close(): void {
    this.conn.close();
  }
}

/** Raw header + payload bytes. */
export function rawMessage(request: number, flags: number, size: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const b = Buffer.alloc(12 + payload.length);
  b.writeUInt32LE(request, 0);
  b.writeUInt32LE(flags, 4);
  b.writeUInt32LE(size, 8);
  b.set(payload, 12);
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/**
 * A "reconnected QEMU": connection `fe2` over `fe`'s guest memory re-announces ring 0 where the
 * guest left it (same addresses and eventfds as `q`), with `base` as SET_VRING_BASE.
 */
export async function reattachRing(fe2: VhostUserFrontend, fe: VhostUserFrontend, q: FrontendQueue, size: number, base: number): Promise<void> {
  await fe2.send(VHOST_USER_SET_VRING_NUM, vringState(0, size));
  await fe2.send(VHOST_USER_SET_VRING_BASE, vringState(0, base));
  await fe2.send(VHOST_USER_SET_VRING_ADDR, {
    kind: 'vring-addr', index: 0, flags: 0, descUserAddr: fe.mem.gpaToUva(q.layout.desc),
    usedUserAddr: fe.mem.gpaToUva(q.layout.used), availUserAddr: fe.mem.gpaToUva(q.layout.avail), logGuestAddr: 0,
  });
  await fe2.send(VHOST_USER_SET_VRING_CALL, { kind: 'vring-fd', index: 0, noFd: false }, [q.callFd]);
  await fe2.send(VHOST_USER_SET_VRING_KICK, { kind: 'vring-fd', index: 0, noFd: false }, [q.kickFd]);
  await fe2.send(VHOST_USER_SET_VRING_ENABLE, vringState(0, 1));
}
