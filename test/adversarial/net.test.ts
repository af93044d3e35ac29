/**
 * Adversarial guest vs the `vhost-user-net --loopback` process: malformed TX frames (truncated
 * or missing virtio_net_hdr, runts, oversize, offloads never negotiated) must be dropped and
 * counted with the next good frame still echoed; RX buffers the device cannot use must come
 * back empty; ring faults on either queue must break that ring (error eventfd + NEEDS_RESET).
 * Never a crash, a hang, or a write outside the buffers the guest offered.
 */
import t, { type Test } from 'tap';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '@vhost-ts/virtqueue';
import { AttackSession } from './src/attack-session.js';
import { BackendProcess } from './src/backend-process.js';
import {
  NET_HDR_BYTES, NetGuest, RX, TX, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, concat, ethFrame, netHeader,
} from './src/net-io.js';
import { runCase, type Expectation } from './src/run-case.js';

const QUEUE_SIZE = 16;
const GAP = 0x30_0000;          // between FrontendMemory's two regions
const REGION0_END = 0x20_0000;
const W = VIRTQ_DESC_F_WRITE, N = VIRTQ_DESC_F_NEXT, I = VIRTQ_DESC_F_INDIRECT;

interface NetCase {
  readonly name: string;
  /** Ring whose outcome is checked. */
  readonly ring: number;
  /** Counter that must move by exactly one (none for a broken ring). */
  readonly counter?: string;
  /** Builds the case (nothing kicked but RX posts); returns the expectation. */
  build(g: NetGuest): Expectation;
  /** Default: kick `ring`. RX cases kick TX (a good frame was placed). */
  readonly triggerTx?: boolean;
}

const MALFORMED = 'vhost_net_tx_malformed_total';
const RX_DROPPED = 'vhost_net_rx_dropped_total';
const broken: Expectation = { kind: 'broken' };
const dropped = (head: number): Expectation => ({ kind: 'returned', head, usedLen: 0 });

/** TX: an RX buffer is posted first so a frame the device wrongly forwarded would show up. */
function tx(name: string, build: (g: NetGuest) => Expectation, counter: string | null = MALFORMED): NetCase {
  return { name, ring: TX, counter: counter ?? undefined, build: (g) => { g.postRx(); return build(g); } };
}

/** RX: the case posts its RX buffer(s), then a good frame is sent to make the device use them. */
function rx(name: string, build: (g: NetGuest) => Expectation, counter?: string): NetCase {
  return {
    name, ring: RX, counter, triggerTx: true,
    build: (g) => { const e = build(g); g.placeTx(netHeader(), ethFrame(7)); return e; },
  };
}

/** A raw TX descriptor chain at fresh indices: [addr, len, flags, nextOffset]. */
function rawTx(g: NetGuest, descs: readonly [number, number, number, number][]): number {
  const first = g.tx.takeDescs(descs.length);
  descs.forEach(([addr, len, flags, next], k) => g.tx.desc(first + k, addr, len, flags, first + next));
  g.tx.offer(first);
  return first;
}

const CASES: NetCase[] = [
  // --- frames the device drops (chain returned with len 0, counted) -------------------------------
  tx('TX chain of 6 bytes (shorter than the 12-byte virtio_net_hdr)', (g) => dropped(g.placeTx(netHeader().subarray(0, 6)))),
  tx('TX header split 4 + 4 bytes (8 in total)', (g) => dropped(g.placeTx(netHeader().subarray(0, 4), netHeader().subarray(0, 4)))),
  tx('TX chain of 1 byte', (g) => dropped(g.placeTx(new Uint8Array(1)))),
  tx('TX chain of exactly the header, no frame', (g) => dropped(g.placeTx(netHeader()))),
  tx('TX header + 10-byte runt frame', (g) => dropped(g.placeTx(netHeader(), ethFrame(1).subarray(0, 10)))),
  tx('TX header split across 12 one-byte descriptors, frame truncated to 13 bytes',
    (g) => dropped(g.placeTx(...Array.from(netHeader(), (b) => Uint8Array.of(b)), ethFrame(2).subarray(0, 13)))),
  tx('TX chain with a zero-length descriptor only', (g) => dropped(g.placeTx(new Uint8Array(0)))),
  tx('TX chain that is device-writable only (no readable byte)', (g) => {
    const gpa = g.s.arena.alloc(72);
    // Not declared writable: a TX chain is never written (virtio 1.2 §5.1.6.2).
    const head = g.tx.chain([{ gpa, len: 72, write: true }]);
    g.tx.offer(head);
    return dropped(head);
  }),
  tx('TX frame with gso_type TCPV4 though no offload was negotiated',
    (g) => dropped(g.placeTx(netHeader({ gsoType: VIRTIO_NET_HDR_GSO_TCPV4, gsoSize: 1400, flags: VIRTIO_NET_HDR_F_NEEDS_CSUM }), ethFrame(3)))),
  tx('TX frame with NEEDS_CSUM though VIRTIO_NET_F_CSUM was not negotiated',
    (g) => dropped(g.placeTx(netHeader({ flags: VIRTIO_NET_HDR_F_NEEDS_CSUM }), ethFrame(4)))),
  tx('TX frame longer than the largest frame (9000 bytes at MTU 1500)',
    (g) => dropped(g.placeTx(concat(netHeader(), ethFrame(5, 9000))))),

  // --- RX buffers the device cannot use: returned empty, the frame dropped --------------------------
  rx('RX buffer that is device-readable only', (g) => {
    const gpa = g.s.arena.alloc(2048);
    const head = g.rx.chain([{ gpa, len: 2048 }]);
    g.rx.offer(head);
    return dropped(head);
  }, RX_DROPPED),
  rx('RX buffer shorter than the virtio_net_hdr (8 bytes)', (g) => {
    const gpa = g.s.arena.alloc(8);
    const head = g.rx.chain([{ gpa, len: 8, write: true }]);
    g.rx.offer(head);
    return dropped(head);
  }, RX_DROPPED),

  // --- ring faults: that ring is broken ---------------------------------------------------------------
  tx('TX descriptor address outside every region', (g) => { rawTx(g, [[GAP, 72, 0, 0]]); return broken; }, null),
  tx('TX descriptor addr + len overflowing 64 bits', (g) => {
    const head = g.tx.takeDescs(1);
    g.tx.descWords(head, 0xffffffc0, 0xffffffff, 128, 0, 0);
    g.tx.offer(head);
    return broken;
  }, null),
  tx('TX descriptor len crossing the end of region 0', (g) => { rawTx(g, [[REGION0_END - 40, 80, 0, 0]]); return broken; }, null),
  tx('TX head index = queue size', (g) => { g.tx.offer(QUEUE_SIZE); return broken; }, null),
  tx('TX chain loop', (g) => {
    const hdr = g.s.arena.alloc(NET_HDR_BYTES);
    rawTx(g, [[hdr, NET_HDR_BYTES, N, 1], [hdr, NET_HDR_BYTES, N, 0]]);
    return broken;
  }, null),
  tx('TX next index = queue size', (g) => {
    const head = g.tx.takeDescs(1);
    g.tx.desc(head, g.s.arena.alloc(NET_HDR_BYTES), NET_HDR_BYTES, N, QUEUE_SIZE);
    g.tx.offer(head);
    return broken;
  }, null),
  tx('TX avail index jumping by queue size + 1', (g) => {
    const head = g.placeTx(netHeader(), ethFrame(6));
    for (let k = 0; k < QUEUE_SIZE; k++) g.tx.offer(head);
    return broken;
  }, null),
  tx('TX indirect descriptor with NEXT set', (g) => {
    const table = g.s.arena.alloc(32);
    rawTx(g, [[table, 32, I | N, 1], [g.s.arena.alloc(NET_HDR_BYTES), NET_HDR_BYTES, 0, 0]]);
    return broken;
  }, null),
  tx('TX readable descriptor after a writable one', (g) => {
    rawTx(g, [[g.s.arena.alloc(16), 16, W | N, 1], [g.s.arena.alloc(72), 72, 0, 0]]);
    return broken;
  }, null),
  tx('TX indirect table longer than the queue (17 entries; virtio 1.2 §2.7.5.3.1)', (g) => {
    const frame = concat(netHeader(), ethFrame(8, 56)); // 68 bytes = 17 × 4
    const bytes = new Uint8Array(17 * 16);
    const v = new DataView(bytes.buffer);
    for (let k = 0; k < 17; k++) {
      const gpa = g.s.arena.alloc(4);
      g.s.arena.write(gpa, frame.subarray(4 * k, 4 * k + 4));
      v.setBigUint64(16 * k, BigInt(gpa), true);
      v.setUint32(16 * k + 8, 4, true);
      v.setUint16(16 * k + 12, k < 16 ? N : 0, true);
      v.setUint16(16 * k + 14, k + 1, true);
    }
    const table = g.s.arena.alloc(bytes.length);
    g.s.arena.write(table, bytes);
    rawTx(g, [[table, bytes.length, I, 0]]);
    return broken;
  }, null),
  tx('TX nested indirect table', (g) => {
    const inner = g.s.arena.alloc(16);
    const outer = g.s.arena.alloc(16);
    const v = new DataView(new ArrayBuffer(16));
    v.setBigUint64(0, BigInt(inner), true);
    v.setUint32(8, 16, true);
    v.setUint16(12, I, true);
    g.s.arena.write(outer, new Uint8Array(v.buffer));
    rawTx(g, [[outer, 16, I, 0]]);
    return broken;
  }, null),
  rx('RX buffer crossing the end of region 0', (g) => {
    const head = g.rx.takeDescs(1);
    g.rx.desc(head, REGION0_END - 1024, 2048, W, 0);
    g.rx.offer(head);
    return broken;
  }),
  rx('RX buffer address outside every region', (g) => {
    const head = g.rx.takeDescs(1);
    g.rx.desc(head, GAP, 2048, W, 0);
    g.rx.offer(head);
    return broken;
  }),
  rx('RX head index = queue size', (g) => { g.rx.offer(QUEUE_SIZE); return broken; }),
];

const backend = await BackendProcess.startNetLoopback();
t.teardown(() => backend.stop());
let seed = 1;

async function freshConnectionWorks(tt: Test): Promise<void> {
  const s = await AttackSession.open(backend.socket, { queues: [RX, TX], queueSize: QUEUE_SIZE });
  try {
    tt.same(await new NetGuest(s).echo(seed++), [], 'a fresh connection echoes a good frame');
  } finally {
    s.close();
  }
}

// Read inside a subtest, not by a top-level await between subtests: with t.teardown in use, tap
// ends the root test as soon as it is idle, and the cases below would then be refused.
let counters = new Map<string, number>();

t.test('baseline: a good frame is echoed on a fresh connection', async (tt) => {
  await freshConnectionWorks(tt);
  tt.ok(backend.alive, 'back-end alive');
  counters = await backend.counters();
});


for (const c of CASES) {
  t.test(c.name, async (tt) => {
    const s = await AttackSession.open(backend.socket, { queues: [RX, TX], queueSize: QUEUE_SIZE });
    try {
      const g = new NetGuest(s);
      const expect = c.build(g);
      const ring = s.ring(c.ring);
      const { problems, observed } = await runCase(s, expect, {
        ring: c.ring,
        trigger: c.triggerTx === true ? () => g.tx.kick() : undefined,
        probe: async () => {
          const out: string[] = [];
          // A dropped TX frame must not have been forwarded: nothing arrived on RX.
          if (c.ring === TX && g.rx.usedIdx() !== 0) out.push('the dropped frame was delivered on RX');
          out.push(...(await g.echo(seed++)));
          return out;
        },
        poke: () => {
          if (c.ring === RX) { ring.recycleDescs(); g.postRx(); }
          g.tx.recycleDescs();
          g.placeTx(netHeader(), ethFrame(9));
          g.tx.kick();
        },
      });
      tt.same(problems, [], `${expect.kind}: ${observed}`);
    } finally {
      s.close();
    }
    tt.ok(backend.alive, `back-end alive (${backend.alive ? 'running' : backend.exitDescription})`);
    await freshConnectionWorks(tt);
    // One counter dump per case (a good echo moves neither counter checked here).
    const now = await backend.counters();
    if (c.counter !== undefined) {
      tt.equal((now.get(c.counter) ?? 0) - (counters.get(c.counter) ?? 0), 1, `counted once in ${c.counter}`);
    }
    counters = now;
  });
}

t.test('back-end alive at the end', async (tt) => {
  tt.ok(backend.alive, 'back-end alive');
  tt.equal(backend.logs().includes('Uncaught'), false, 'no uncaught exception in the logs');
});
