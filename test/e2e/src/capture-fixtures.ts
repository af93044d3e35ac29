/**
 * Captures QEMU's exact vhost-user message sequences as replay fixtures.
 *
 * For each case a real guest (QEMU, TCG, the e2e initramfs) brings a device up against OUR
 * back-end CLI, with the record proxy (`@vhost-ts/vhost-user` `startRecordProxy`) in between:
 *
 * ```
 *  QEMU ──▶ proxy.sock ══ record proxy (this process) ══▶ backend.sock (vhost-user-blk / -net CLI)
 * ```
 *
 * The guest script does real I/O (reads and writes on both blk queues; link up, traffic and a
 * driver rebind on net), so the sessions hold the whole life of a device: negotiation, config,
 * inflight area, memory table, ring set-up with kick/call fds, the stops of a device reset
 * (`GET_VRING_BASE`) and the stop at QEMU's exit.
 *
 * Usage (from the repository root; needs qemu-system-x86_64, a kernel and busybox):
 *   node --conditions=vhost-ts-source --import tsx test/e2e/src/capture-fixtures.ts [--out DIR] [case ...]
 * Cases: blk-mq2, net-1q, net-mq2 (default: all). Output: DIR/qemu-7.2-<case>.json (default DIR:
 * packages/vhost-user/test/fixtures). The replay test is packages/vhost-user/test/qemu-fixtures.test.ts.
 * @module
 */
import { spawn } from 'node:child_process';
import { mkdirSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { startRecordProxy, type FixtureEntry } from '@vhost-ts/vhost-user';
import { makeWorkDir, REPO_ROOT, startVhostTsBlk, type Backend } from './backends.js';
import { stopChild, track } from './children.js';
import { detectEnv } from './env.js';
import { BLK_MODULES, buildInitramfs, NET_MODULES } from './initramfs.js';
import { runGuest, type GuestOptions } from './qemu.js';

/** A captured fixture file: metadata plus the sessions (one per front-end connection). */
export interface CapturedFixture {
  /** Case name, e.g. `blk-mq2`. */
  readonly case: string;
  /** `qemu-system-x86_64 --version`, first line. */
  readonly qemu: string;
  /**
   * The back-end command line after `node --conditions=vhost-ts-source --import tsx`, relative
   * to the repository root; `$WORK` stands for the run's private directory.
   */
  readonly backend: readonly string[];
  /** Size of the blk image file (`$WORK/disk.img`, sparse zeros); absent for net. */
  readonly imageBytes?: number;
  /** The QEMU device options of the run. */
  readonly device: string;
  /** The shell script the guest ran. */
  readonly guestScript: string;
  readonly capturedAt: string;
  /** One message list per front-end connection, in wire order. */
  readonly sessions: FixtureEntry[][];
}

const BLK_SCRIPT = [
  'V=$(basename $(readlink /sys/block/vda/device))',
  'echo "features=$(cat /sys/block/vda/device/features)"',
  // I/O from each vCPU so both request queues carry requests
  'taskset 1 dd if=/dev/vda of=/dev/null bs=4096 count=4 iflag=direct status=none',
  'taskset 2 dd if=/dev/vda of=/dev/null bs=4096 count=4 skip=8 iflag=direct status=none',
  'taskset 1 dd if=/dev/zero of=/dev/vda bs=4096 count=2 seek=16 oflag=direct conv=notrunc status=none',
  'taskset 2 dd if=/dev/zero of=/dev/vda bs=4096 count=2 seek=32 oflag=direct conv=notrunc,fsync status=none',
  // device reset: QEMU stops every ring (GET_VRING_BASE), then renegotiates and restarts
  'echo $V > /sys/bus/virtio/drivers/virtio_blk/unbind',
  'echo $V > /sys/bus/virtio/drivers/virtio_blk/bind',
  'i=0; while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done',
  'dd if=/dev/vda of=/dev/null bs=4096 count=1 iflag=direct status=none; echo "reread=$?"',
  'true',
].join('\n');

const NET_SCRIPT = [
  'ip link set eth0 up',
  'ip addr add 10.0.0.2/24 dev eth0',
  'echo "queues=$(ls /sys/class/net/eth0/queues | tr \'\\n\' \' \')"',
  // the loopback back-end echoes every frame: ARP requests come back, pings go unanswered
  'ping -c 3 -i 0.2 -W 1 10.0.0.1 >/dev/null 2>&1',
  'ip link set eth0 down',
  'V=$(basename $(readlink /sys/class/net/eth0/device))',
  'echo $V > /sys/bus/virtio/drivers/virtio_net/unbind',
  'echo $V > /sys/bus/virtio/drivers/virtio_net/bind',
  'i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done',
  'ip link set eth0 up; echo "relink=$?"',
  'true',
].join('\n');

/** Size of the blk case's image. */
const BLK_IMAGE_BYTES = 16 << 20;

interface CaseSpec {
  readonly kind: 'blk' | 'net';
  readonly queues: number;
}

/** The cases this script captures. */
export const CASES: Readonly<Record<string, CaseSpec>> = {
  'blk-mq2': { kind: 'blk', queues: 2 },
  'net-1q': { kind: 'net', queues: 1 },
  'net-mq2': { kind: 'net', queues: 2 },
};

async function startNetCli(socket: string, pairs: number): Promise<Backend> {
  const cli = join(REPO_ROOT, 'packages/devices-net/src/cli.ts');
  const args = ['--conditions=vhost-ts-source', '--import', 'tsx', cli, '--socket-path', socket, '--loopback',
    '--queues', String(pairs), '--mac', '52:54:00:12:34:56'];
  const child = spawn(process.execPath, args, { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  track(child);
  let logs = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (logs += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => (logs += c));
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (logs.includes('listening on')) break;
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`vhost-user-net did not start:\n${logs}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  return {
    kind: 'vhost-ts', socket, argv: [process.execPath, ...args], process: child, logs: () => logs,
    exited: () => child.exitCode !== null || child.signalCode !== null, stop: () => stopChild(child),
  };
}

function qemuVersion(qemu: string): Promise<string> {
  return new Promise((resolve) => {
    const c = spawn(qemu, ['--version'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    c.once('close', () => resolve(out.split('\n')[0] ?? ''));
  });
}

/** Runs one capture and returns the fixture (throws when the guest or a back-end fails). */
export async function capture(name: string): Promise<CapturedFixture> {
  const spec = CASES[name];
  if (spec === undefined) throw new Error(`unknown case ${name} (${Object.keys(CASES).join(', ')})`);
  const env = detectEnv();
  if (env.qemu === null || env.kernel === null || env.busybox === null) throw new Error('needs qemu-system-x86_64, a kernel and busybox');
  const work = makeWorkDir('vtcap-');
  const backendSock = join(work.dir, 'backend.sock');
  const proxySock = join(work.dir, 'proxy.sock');
  let backend: Backend | null = null;
  const done: FixtureEntry[][] = [];
  const proxy = { current: null as ReturnType<typeof startRecordProxy> | null };
  try {
    let guest: GuestOptions;
    const kernel = env.kernel;
    if (spec.kind === 'blk') {
      const image = join(work.dir, 'disk.img');
      writeFileSync(image, '');
      truncateSync(image, BLK_IMAGE_BYTES);
      backend = await startVhostTsBlk({ image, socket: backendSock, numQueues: spec.queues });
      const initrd = buildInitramfs({ kernel, busybox: env.busybox, modules: BLK_MODULES, script: BLK_SCRIPT });
      guest = { kernel, initrd, smp: 2, blkDisks: [{ socket: proxySock, numQueues: spec.queues }] };
    } else {
      backend = await startNetCli(backendSock, spec.queues);
      const initrd = buildInitramfs({ kernel, busybox: env.busybox, modules: NET_MODULES, script: NET_SCRIPT });
      guest = { kernel, initrd, smp: spec.queues, netDevs: [{ socket: proxySock, mac: '52:54:00:12:34:56', queuePairs: spec.queues }] };
    }
    proxy.current = startRecordProxy(proxySock, backendSock, (s) => done.push(s));
    const r = await runGuest({ ...guest, timeoutMs: 120_000 });
    if (r.rc !== 0) throw new Error(`guest script failed (rc ${r.rc}):\n${r.output}`);
    // QEMU has exited: its side of every session is closed; give the proxy a moment to see it.
    const deadline = Date.now() + 5000;
    while (done.length < proxy.current.sessions.length && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
    const sessions = proxy.current.sessions.filter((s) => s.length > 0);
    const argv = backend.argv.map((a) => a.replace(work.dir, '$WORK').replace(`${REPO_ROOT}/`, ''));
    const device = r.argv.filter((a) => a.includes('vhost-user') || a.includes('virtio-net')).join(' ').replaceAll(work.dir, '$WORK');
    process.stderr.write(`capture ${name}: guest ${r.durationMs} ms, ${sessions.length} session(s), ` +
      `${sessions.map((s) => s.length).join('+')} messages\n${r.output}`);
    return {
      case: name, qemu: await qemuVersion(env.qemu), backend: argv.slice(argv.findIndex((a) => a.endsWith('cli.ts'))),
      ...(spec.kind === 'blk' ? { imageBytes: BLK_IMAGE_BYTES } : {}), device, guestScript: spec.kind === 'blk' ? BLK_SCRIPT : NET_SCRIPT, capturedAt: new Date().toISOString(), sessions,
    };
  } finally {
    proxy.current?.close();
    await backend?.stop();
    work.cleanup();
  }
}

async function main(argv: string[]): Promise<void> {
  let out = join(REPO_ROOT, 'packages/vhost-user/test/fixtures');
  const names: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--out') out = argv[++i] ?? out;
    else names.push(argv[i]);
  }
  mkdirSync(out, { recursive: true });
  for (const name of names.length > 0 ? names : Object.keys(CASES)) {
    const f = await capture(name);
    const file = join(out, `qemu-7.2-${name}.json`);
    writeFileSync(file, JSON.stringify(f, null, 1) + '\n');
    process.stderr.write(`wrote ${file}\n`);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main(process.argv.slice(2)).then(() => process.exit(0), (e: unknown) => {
    process.stderr.write(`capture-fixtures: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  });
}
