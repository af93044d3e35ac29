// The RX fast path defers payload copies and header stores to the end of a burst (one native
// copy, then the headers). Whatever the burst length and header mode, every guest buffer must
// end up with exactly its frame's header (cleared or passed through, num_buffers = 1) and
// payload, and nothing outside the written bytes may change.
import t from 'tap';
import { FrameBatch } from '../src/frame-batch.js';
import { bit, VIRTIO_F_VERSION_1, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_MRG_RXBUF } from '../src/constants.js';
import type { NetBackend, NetBackendPort, NetPortSink } from '../src/net-backend.js';
import { readNetHeader, writeNetHeader } from '../src/net-header.js';
import { NetRig, makeFrame } from './helpers/net-rig.js';

/** A backend the test drives by hand: `inject` delivers a batch into RX pair 0. */
class InjectBackend implements NetBackend {
  readonly kind = 'loopback' as const;
  readonly slotSize = 12 + 1518;
  readonly maxPairs = 1;
  sink: NetPortSink | null = null;
  constructor(readonly offloadFeatures: bigint) {}
  connect(sink: NetPortSink): NetBackendPort {
    this.sink = sink;
    return { transmit() {}, onRxSpace() {}, setFeatures() {}, setActivePairs() {}, close() {} };
  }
  close(): void {}
  inject(frames: Uint8Array[]): void {
    const b = new FrameBatch(frames.length, this.slotSize);
    for (const f of frames) b.push(f);
    this.sink!.deliver(0, b, null, b.count);
  }
}

const A = [2, 0, 0, 0, 0, 0xa];
const B = [2, 0, 0, 0, 0, 0xb];

for (const offloads of [false, true]) {
  for (const mergeable of [false, true]) {
    t.test(`burst content: guest offloads ${offloads}, MRG_RXBUF ${mergeable}`, async (t) => {
      const backend = new InjectBackend(offloads ? bit(VIRTIO_NET_F_GUEST_CSUM) : 0n);
      const probe = new NetRig({ backend, ctrlQueue: false });
      let acked = probe.device.features;
      if (!mergeable) acked &= ~bit(VIRTIO_NET_F_MRG_RXBUF);
      const rig = new NetRig({ backend, ctrlQueue: false }, acked, 256);
      // Bursts below and above the size the device copies natively, and one past its plan.
      for (const burst of [1, 3, 4, 17, 64, 100]) {
        rig.postRx(burst, 2048);
        const frames: Uint8Array[] = [];
        for (let i = 0; i < burst; i++) {
          const f = makeFrame(B, A, 60 + ((i * 37) % 1400), i + burst);
          // A header the guest may see when offloads are on (csum fields), and junk num_buffers.
          writeNetHeader(f, 0, { flags: 1, csumStart: 14 + i, csumOffset: 16, numBuffers: 0x7777 });
          frames.push(f);
        }
        backend.inject(frames);
        const rx = rig.rxUsed();
        t.equal(rx.length, burst, `burst ${burst}: every frame delivered`);
        let bad = 0;
        for (let i = 0; i < rx.length; i++) {
          const f = frames[i];
          const h = readNetHeader(rx[i], 0);
          const want = offloads ? { flags: 1, csumStart: 14 + i, csumOffset: 16 } : { flags: 0, csumStart: 0, csumOffset: 0 };
          if (rx[i].length !== f.length || h.numBuffers !== 1 || h.flags !== want.flags || h.csumStart !== want.csumStart
            || h.csumOffset !== want.csumOffset || Buffer.compare(rx[i].subarray(12), f.subarray(12)) !== 0) bad++;
        }
        t.equal(bad, 0, `burst ${burst}: headers and payloads exact`);
      }
      for (const q of rig.queues.values()) q.guest.assertCanaries();
    });
  }
}

for (const legacy of [false, true]) {
  t.test(`a back-end frame shorter than an Ethernet header is dropped and counted (${legacy ? '10-byte header: general path' : 'direct path'})`, async (t) => {
    const backend = new InjectBackend(0n);
    const probe = new NetRig({ backend, ctrlQueue: false });
    const acked = legacy ? probe.device.features & ~bit(VIRTIO_NET_F_MRG_RXBUF) & ~bit(VIRTIO_F_VERSION_1) : undefined;
    const rig = new NetRig({ backend, ctrlQueue: false }, acked, 64);
    rig.postRx(2, 2048); // exactly the two good frames
    const good = makeFrame(B, A, 60, 1);
    // Runts first and in the middle of a burst.
    backend.inject([new Uint8Array(12 + 5), good, new Uint8Array(3), good]);
    const rx = rig.rxUsed();
    const hdr = legacy ? 10 : 12;
    t.equal(rx.length, 2, 'only the two good frames reach the guest');
    t.ok(rx.every((b) => Buffer.compare(b.subarray(hdr), good.subarray(12)) === 0), 'and they are intact');
    t.equal(rig.device.counters.rxDropped, 2, 'the runts are counted as dropped');
    // With no buffers posted, runts do not take hold-ring space.
    backend.inject([new Uint8Array(12 + 5), good]);
    t.equal(rig.device.counters.rxHeld, 1, 'only the good frame waits for a buffer');
    t.equal(rig.device.counters.rxDropped, 3);
    for (const q of rig.queues.values()) q.guest.assertCanaries();
  });
}
