/**
 * QEMU 7.2's own message sequences (captured from real guests, see fixtures/README.md), replayed
 * against our back-end CLIs: every reply must be what QEMU got — features, protocol features,
 * queue count, memory slots, config space, inflight area geometry, status, and the
 * GET_VRING_BASE indices (the replayer plays the guest, posting as many chains as QEMU's guest
 * had, so these come out exact). No QEMU is needed here.
 */
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_VERSION_1, type FixtureEntry } from '../src/index.js';
import { loadQemuFixture, replayDriven, type QemuFixture } from './qemu-replay.js';

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

// Request ids (vhost-user.rst).
const GET_FEATURES = 1, SET_FEATURES = 2, GET_PROTOCOL_FEATURES = 15, SET_PROTOCOL_FEATURES = 16,
  GET_QUEUE_NUM = 17, GET_CONFIG = 24, GET_INFLIGHT_FD = 31, GET_VRING_BASE = 11, GET_MAX_MEM_SLOTS = 36;

const hex64 = (h: string): bigint => Buffer.from(h, 'hex').readBigUInt64LE(0);

function isSocket(p: string): boolean {
  try { return statSync(p).isSocket(); } catch { return false; }
}

function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}

/** Starts the back-end the fixture was captured against, with the same flags. */
async function startBackend(f: QemuFixture, work: string): Promise<{ child: ChildProcess; socket: string; logs: () => string }> {
  const argv = f.backend.map((a) => a.replace('$WORK', work));
  if (f.imageBytes !== undefined) {
    const img = join(work, 'disk.img');
    writeFileSync(img, '');
    truncateSync(img, f.imageBytes);
  }
  const socket = argv[argv.indexOf('--socket-path') + 1];
  const child = spawn(process.execPath, ['--conditions=vhost-ts-source', '--import', 'tsx', ...argv], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let logs = '';
  child.stdout!.setEncoding('utf8').on('data', (c: string) => (logs += c));
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (logs += c));
  if (!(await until(() => isSocket(socket) || child.exitCode !== null, 30_000)) || child.exitCode !== null) {
    child.kill('SIGKILL');
    throw new Error(`back-end did not start: ${logs}`);
  }
  return { child, socket, logs: () => logs };
}

/** Reply payloads by request id, in order. */
function repliesOf(list: readonly { id: number; payload: string }[], id: number): string[] {
  return list.filter((r) => r.id === id).map((r) => r.payload);
}

function requestsOf(entries: readonly FixtureEntry[], id: number): string[] {
  return entries.filter((e) => e.dir === 'request' && e.id === id).map((e) => e.payload);
}

const CASES: { name: string; device: 'blk' | 'net'; queues: number }[] = [
  { name: 'blk-mq2', device: 'blk', queues: 2 },
  { name: 'net-1q', device: 'net', queues: 2 },
  { name: 'net-mq2', device: 'net', queues: 4 },
];

for (const c of CASES) {
  t.test(`QEMU 7.2 ${c.name}: replayed against our back-end, replies as QEMU saw them`, { timeout: 90_000 }, async (t) => {
    const f = loadQemuFixture(c.name);
    t.match(f.qemu, /QEMU emulator version 7\.2/, 'captured from QEMU 7.2');
    t.ok(f.sessions.length >= 1, 'at least one session');
    const work = mkdtempSync(join(tmpdir(), 'vu-qfix-'));
    t.teardown(() => rmSync(work, { recursive: true, force: true }));
    const be = await startBackend(f, work);
    t.teardown(() => {
      if (be.child.exitCode === null) be.child.kill('SIGKILL');
    });
    const pid = be.child.pid!;
    const baseline = fdCount(pid);
    for (const [si, entries] of f.sessions.entries()) {
      const names = entries.filter((e) => e.dir === 'request').map((e) => e.request);
      // The capture really covers a device's life (guards against a truncated fixture).
      for (const m of ['VHOST_USER_ADD_MEM_REG', 'VHOST_USER_SET_VRING_ADDR', 'VHOST_USER_SET_VRING_KICK', 'VHOST_USER_SET_VRING_CALL', 'VHOST_USER_GET_VRING_BASE']) {
        t.ok(names.includes(m), `session ${si} has ${m}`);
      }
      const r = await replayDriven(be.socket, entries, { device: c.device });
      t.notOk(r.closedEarly, `session ${si}: back-end took the whole session`, { logs: be.logs().slice(-2000) });
      t.same(r.replies.map((x) => x.id), r.expected.map((x) => x.id), `session ${si}: same reply sequence`);

      // Negotiation: our answers, and QEMU's acks must be within them.
      const feat = repliesOf(r.replies, GET_FEATURES);
      t.same(feat, repliesOf(r.expected, GET_FEATURES), 'GET_FEATURES as recorded');
      const offered = hex64(feat[0]);
      for (const acked of requestsOf(entries, SET_FEATURES).map(hex64)) {
        t.equal(acked & ~offered, 0n, `SET_FEATURES 0x${acked.toString(16)} within the offer`);
      }
      t.equal((offered >> BigInt(VIRTIO_F_VERSION_1)) & 1n, 1n, 'VERSION_1 offered');
      t.equal((offered >> BigInt(VHOST_USER_F_PROTOCOL_FEATURES)) & 1n, 1n, 'PROTOCOL_FEATURES offered');
      const proto = repliesOf(r.replies, GET_PROTOCOL_FEATURES);
      t.same(proto, repliesOf(r.expected, GET_PROTOCOL_FEATURES), 'GET_PROTOCOL_FEATURES as recorded');
      for (const acked of requestsOf(entries, SET_PROTOCOL_FEATURES).map(hex64)) {
        t.equal(acked & ~hex64(proto[0]), 0n, `SET_PROTOCOL_FEATURES 0x${acked.toString(16)} within the offer`);
      }
      const qn = repliesOf(r.replies, GET_QUEUE_NUM);
      t.same(qn, repliesOf(r.expected, GET_QUEUE_NUM), 'GET_QUEUE_NUM as recorded');
      t.ok(Number(hex64(qn[0])) >= (c.device === 'net' ? c.queues / 2 : c.queues), `queue count ${hex64(qn[0])} covers the device`);
      t.same(repliesOf(r.replies, GET_MAX_MEM_SLOTS), repliesOf(r.expected, GET_MAX_MEM_SLOTS), 'GET_MAX_MEM_SLOTS as recorded');

      // Device config and the inflight area (blk).
      const cfg = repliesOf(r.replies, GET_CONFIG);
      t.same(cfg, repliesOf(r.expected, GET_CONFIG), 'GET_CONFIG as recorded');
      if (c.device === 'blk') {
        const space = Buffer.from(cfg[0], 'hex').subarray(12);
        t.equal(Number(space.readBigUInt64LE(0)), f.imageBytes! / 512, 'config capacity = image sectors');
        t.equal(space.readUInt16LE(34), c.queues, 'config num_queues (virtio 1.2 §5.2.4)');
        const infl = repliesOf(r.replies, GET_INFLIGHT_FD);
        t.ok(infl.length >= 1, 'inflight area requested');
        t.same(infl, repliesOf(r.expected, GET_INFLIGHT_FD), 'GET_INFLIGHT_FD geometry (mmap_size, num_queues, queue_size) as recorded');
      }

      // Ring indices: the guest's work reproduced, so the stop indices are QEMU's.
      const bases = repliesOf(r.replies, GET_VRING_BASE);
      t.ok(bases.length >= 2, `${bases.length} GET_VRING_BASE replies`);
      t.same(bases, repliesOf(r.expected, GET_VRING_BASE), 'GET_VRING_BASE indices as recorded');
      const busy = [...r.driven.values()].reduce((a, b) => a + b, 0);
      t.ok(busy > 0, `replayer drove ${busy} chains over ${r.driven.size} rings`);

      // Everything else byte for byte (GET_STATUS, REPLY_ACKs, ...).
      const diff = r.replies.map((x, i) => ({ i, id: x.id, got: x.payload, want: r.expected[i]?.payload })).filter((d) => d.got !== d.want);
      t.same(diff, [], `session ${si}: every reply payload equals QEMU's`);

      t.ok(await until(() => fdCount(pid) === baseline, 3000), `back-end fd count back to ${baseline} after the session (now ${fdCount(pid)})`);
    }
    be.child.kill('SIGTERM');
    await until(() => be.child.exitCode !== null || be.child.signalCode !== null, 10_000);
    t.equal(be.child.exitCode, 0, 'back-end exits 0 on SIGTERM', { logs: be.logs().slice(-2000) });
  });
}
