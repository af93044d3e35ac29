import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VhostUserBackend, VhostUserFrontend, type BackendOptions, type FrontendOptions } from '../src/index.js';
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
