/**
 * The virtio-net data path on packed rings, where RX and TX take runs of one-descriptor chains
 * with popDirect: RX gives back the end of a run it cannot use (a buffer too small for its
 * frame) and the general path takes over at that chain — on packed rings as on split ones, the
 * same buffers used in the same order with the same bytes.
 */
import t from 'tap';
import { VIRTIO_F_RING_PACKED } from '@vhost-ts/virtqueue';
import { LoopbackBackend } from '../src/loopback-backend.js';
import { bit, VIRTIO_NET_F_MRG_RXBUF } from '../src/constants.js';
import { NetRig, makeFrame } from './helpers/net-rig.js';

const A = [2, 0, 0, 0, 0, 0xa];
const B = [2, 0, 0, 0, 0, 0xb];

function run(packed: boolean) {
  const probe = new NetRig({ backend: new LoopbackBackend(), ctrlQueue: false });
  let acked = probe.device.features & ~bit(VIRTIO_NET_F_MRG_RXBUF);
  if (!packed) acked &= ~bit(VIRTIO_F_RING_PACKED);
  const rig = new NetRig({ backend: new LoopbackBackend(), ctrlQueue: false }, acked, 16, false, packed);
  // Five RX buffers, the middle one too small for a 100-byte frame with its header.
  for (const size of [2048, 2048, 40, 2048, 2048]) rig.postRx(1, size);
  const frames = [0, 1, 2, 3, 4].map((i) => makeFrame(B, A, 100, i * 16));
  // One TX burst of five frames, echoed by the loopback as one RX delivery.
  for (const f of frames) rig.send(f, { kick: false });
  rig.q(1).handler.onKick();
  return { rig, frames, tx: rig.txUsed(), rx: rig.rxUsed() };
}

for (const packed of [true, false]) {
  t.test(`${packed ? 'packed' : 'split'} rings: a too-small buffer mid-run`, async (t) => {
    const { rig, frames, tx, rx } = run(packed);
    t.equal(rig.q(0).guest.device.packed, packed, 'the ring format asked for');
    t.equal(tx.length, 5, 'every TX chain returned');
    t.same(rx.map((b) => b.length), [112, 112, 0, 112, 112], 'the small buffer returned empty, the others in order');
    t.same([...rx[0].subarray(12)], [...frames[0].subarray(12)]);
    t.same([...rx[1].subarray(12)], [...frames[1].subarray(12)]);
    t.same([...rx[3].subarray(12)], [...frames[3].subarray(12)], 'the frame after the small buffer went to the next one');
    t.same([...rx[4].subarray(12)], [...frames[4].subarray(12)]);
    t.equal(rig.device.counters.rxFrames, 4);
    t.equal(rig.device.counters.rxTooBig, 1, 'the frame that did not fit is dropped and counted');
    t.equal(rig.device.counters.txFrames, 5);
    for (const q of rig.queues.values()) {
      t.same(q.broken, []);
      q.guest.assertCanaries();
    }
  });
}
