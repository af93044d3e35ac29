// Property: whatever chains a guest posts (any length, split anywhere, with or without RX
// buffers), the loopback device never throws, never breaks, never writes outside the buffers,
// and accounts for every frame: TX chains = frames forwarded + malformed; frames forwarded =
// delivered + dropped + still held.
import t from 'tap';
import fc from 'fast-check';
import { LoopbackBackend } from '../src/loopback-backend.js';
import { bit, VIRTIO_NET_F_MRG_RXBUF } from '../src/constants.js';
import { NetRig } from './helpers/net-rig.js';

const op = fc.oneof(
  fc.record({ kind: fc.constant('tx' as const), len: fc.integer({ min: 0, max: 1700 }), pieces: fc.integer({ min: 1, max: 4 }), flags: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('rx' as const), count: fc.integer({ min: 1, max: 6 }), size: fc.integer({ min: 1, max: 1600 }) }),
);

t.test('loopback datapath accounts for every frame and stays inside guest buffers', async (t) => {
  fc.assert(fc.property(fc.array(op, { minLength: 1, maxLength: 40 }), fc.boolean(), (ops, mergeable) => {
    const backend = new LoopbackBackend();
    const probe = new NetRig({ backend, ctrlQueue: false });
    const acked = mergeable ? probe.device.features : probe.device.features & ~bit(VIRTIO_NET_F_MRG_RXBUF);
    const rig = new NetRig({ backend, ctrlQueue: false }, acked, 128);
    let sent = 0;
    let posted = 0;
    for (const o of ops) {
      if (o.kind === 'tx') {
        const f = new Uint8Array(o.len);
        if (o.len > 0) f[0] = o.flags & 1; // sometimes NEEDS_CSUM, which is not negotiated
        if (o.len > 1) f[1] = o.flags & 0x80 ? 1 : 0; // sometimes a GSO type
        for (let i = 12; i < o.len; i++) f[i] = i & 0xff;
        rig.send(f, { pieces: o.pieces });
        sent++;
      } else if (posted + o.count <= 128) {
        rig.postRx(o.count, o.size, { kick: true });
        posted += o.count;
      }
      rig.rxUsed();
      rig.txUsed();
    }
    const c = rig.device.counters;
    const held = (rig.device as unknown as { rx: { held: number }[] }).rx[0].held;
    if (c.txFrames + c.txMalformed !== sent) throw new Error(`tx: ${c.txFrames} + ${c.txMalformed} != ${sent}`);
    const filtered = rig.device.filter.filtered;
    if (c.rxFrames + c.rxDropped + held + filtered !== c.txFrames) {
      throw new Error(`rx: ${c.rxFrames} + ${c.rxDropped} + ${held} held != ${c.txFrames}`);
    }
    for (const q of rig.queues.values()) {
      q.guest.assertCanaries();
      if (q.broken.length > 0) throw new Error(`broken: ${q.broken.join()}`);
    }
  }), { numRuns: 150, seed: 42 });
  t.pass('property held for 150 runs');
});
