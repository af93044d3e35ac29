import t from 'tap';
import { LoopbackBackend } from '../src/loopback-backend.js';
import { SwitchBackend } from '../src/switch-backend.js';
import {
  VIRTIO_NET_CTRL_ANNOUNCE, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_VLAN,
  VIRTIO_NET_ERR, VIRTIO_NET_OK, VIRTIO_NET_S_ANNOUNCE,
} from '../src/constants.js';
import { formatMac } from '../src/mac-address.js';
import { NetRig, makeFrame } from './helpers/net-rig.js';

/** Sends a control command, returns the ack byte and the used length. */
function ctrl(rig: NetRig, cls: number, cmd: number, data: number[] = [], ackRoom = 1): { ack: number; len: number } {
  const index = rig.device.numQueues - 1;
  const q = rig.q(index);
  const cmdGpa = q.guest.alloc(2 + data.length);
  q.guest.write(cmdGpa, new Uint8Array([cls, cmd, ...data]));
  const ackGpa = q.guest.alloc(Math.max(ackRoom, 1));
  q.guest.write(ackGpa, new Uint8Array([0xee]));
  const lens = ackRoom > 0 ? [2 + data.length, ackRoom] : [2 + data.length];
  q.guest.driver.addChain(ackRoom > 0 ? [cmdGpa, ackGpa] : [cmdGpa], lens, lens.length, 1);
  q.guest.driver.publish();
  q.handler.onKick();
  const head = q.guest.driver.popUsed();
  if (head < 0) throw new Error('no ctrl completion');
  return { ack: q.guest.read(ackGpa, 1)[0], len: q.guest.driver.lastLen };
}

const le32 = (n: number) => [n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, n >>> 24];

t.test('MQ VQ_PAIRS_SET within 1..max_virtqueue_pairs (virtio 1.2 §5.1.6.5.5)', async (t) => {
  const rig = new NetRig({ backend: new LoopbackBackend(), queuePairs: 4 });
  t.equal(rig.device.numQueues, 9, '4 pairs + ctrl');
  t.equal(rig.device.activePairs, 4, 'all RX queues running, no cap yet');
  t.same(ctrl(rig, VIRTIO_NET_CTRL_MQ, 0, [2, 0]), { ack: VIRTIO_NET_OK, len: 1 });
  t.equal(rig.device.activePairs, 2);
  t.equal(ctrl(rig, VIRTIO_NET_CTRL_MQ, 0, [0, 0]).ack, VIRTIO_NET_ERR, '0 pairs rejected');
  t.equal(ctrl(rig, VIRTIO_NET_CTRL_MQ, 0, [5, 0]).ack, VIRTIO_NET_ERR, 'more than max rejected');
  t.equal(ctrl(rig, VIRTIO_NET_CTRL_MQ, 0, [1]).ack, VIRTIO_NET_ERR, 'short payload rejected');
  t.equal(rig.device.activePairs, 2, 'unchanged after rejects');
  // Loopback keeps the pair: a frame sent on pair 1 comes back on RX 1.
  rig.postRx(2, 2048, { pair: 1 });
  rig.send(makeFrame([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]), { pair: 1 });
  t.equal(rig.rxUsed(1).length, 1);
  // Nothing is queued on an RX queue beyond the active pairs: a frame a driver sends on pair 3
  // (disabled by the command above) comes back on pair 3 mod 2 = 1.
  rig.postRx(2, 2048, { pair: 3 });
  rig.send(makeFrame([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]), { pair: 3 });
  t.equal(rig.rxUsed(3).length, 0, 'RX 3 (inactive) stays empty');
  t.equal(rig.rxUsed(1).length, 1, 'delivered on an active pair');
});

t.test('announce: device sets VIRTIO_NET_S_ANNOUNCE, driver ack clears it (virtio 1.2 §5.1.6.5.4)', async (t) => {
  const rig = new NetRig({ backend: new LoopbackBackend() });
  let changes = 0;
  rig.device.onConfigChanged = () => { changes++; };
  t.equal(rig.device.announce(), true);
  t.equal(rig.device.config.status & VIRTIO_NET_S_ANNOUNCE, VIRTIO_NET_S_ANNOUNCE);
  t.equal(changes, 1, 'config change raised');
  t.equal(ctrl(rig, VIRTIO_NET_CTRL_ANNOUNCE, 0).ack, VIRTIO_NET_OK);
  t.equal(rig.device.config.status & VIRTIO_NET_S_ANNOUNCE, 0);
  t.equal(changes, 2);
  rig.device.setLinkUp(false);
  t.equal(rig.device.config.linkUp, false);
  t.equal(changes, 3);
});

t.test('RX mode and MAC filtering (virtio 1.2 §5.1.6.5.1-2)', async (t) => {
  const me = [2, 0, 0, 0, 0, 0x42];
  const rig = new NetRig({ backend: new LoopbackBackend(), mac: new Uint8Array(me) });
  rig.postRx(16, 2048);
  t.equal(ctrl(rig, VIRTIO_NET_CTRL_RX, 0, [0]).ack, VIRTIO_NET_OK, 'promisc off');
  rig.send(makeFrame([2, 0, 0, 0, 0, 0x99], me));
  t.equal(rig.rxUsed().length, 0, 'unicast to another MAC filtered');
  rig.send(makeFrame(me, me));
  t.equal(rig.rxUsed().length, 1, 'own MAC accepted');
  rig.send(makeFrame([0xff, 0xff, 0xff, 0xff, 0xff, 0xff], me));
  t.equal(rig.rxUsed().length, 1, 'broadcast accepted');
  const mcast = [0x01, 0x00, 0x5e, 0, 0, 1];
  rig.send(makeFrame(mcast, me));
  t.equal(rig.rxUsed().length, 0, 'multicast not in table filtered');
  // table: 1 unicast (…99), 1 multicast
  const table = [...le32(1), 2, 0, 0, 0, 0, 0x99, ...le32(1), ...mcast];
  t.equal(ctrl(rig, VIRTIO_NET_CTRL_MAC, 0, table).ack, VIRTIO_NET_OK);
  rig.send(makeFrame([2, 0, 0, 0, 0, 0x99], me));
  rig.send(makeFrame(mcast, me));
  t.equal(rig.rxUsed().length, 2, 'table entries accepted');
  t.equal(ctrl(rig, VIRTIO_NET_CTRL_MAC, 0, [...le32(5), 1, 2, 3]).ack, VIRTIO_NET_ERR, 'truncated table rejected');
  t.equal(ctrl(rig, VIRTIO_NET_CTRL_MAC, 0, [...le32(0xffffffff)]).ack, VIRTIO_NET_ERR, 'huge count rejected');
  t.equal(ctrl(rig, VIRTIO_NET_CTRL_MAC, 0, [...le32(0), ...le32(0), 7]).ack, VIRTIO_NET_ERR, 'trailing bytes rejected');
  t.equal(ctrl(rig, VIRTIO_NET_CTRL_RX, 1, [1]).ack, VIRTIO_NET_OK, 'allmulti on');
  rig.send(makeFrame([0x01, 0, 0x5e, 1, 2, 3], me));
  t.equal(rig.rxUsed().length, 1, 'any multicast with allmulti');
  t.equal(ctrl(rig, VIRTIO_NET_CTRL_RX, 4, [1]).ack, VIRTIO_NET_ERR, 'CTRL_RX_EXTRA commands not offered');
  t.equal(ctrl(rig, VIRTIO_NET_CTRL_MAC, 1, [2, 0, 0, 0, 0, 0x77]).ack, VIRTIO_NET_OK, 'MAC_ADDR_SET');
  t.equal(formatMac(rig.device.readConfig(0, 6)), '02:00:00:00:00:77', 'config space follows');
  rig.send(makeFrame([2, 0, 0, 0, 0, 0x77], me));
  t.equal(rig.rxUsed().length, 1, 'new MAC accepted');
  t.equal(rig.device.filter.filtered, 2, 'two frames refused by the filter');
});

t.test('VLAN add/del acked, bad commands rejected, malformed chains survive', async (t) => {
  const rig = new NetRig({ backend: new SwitchBackend() });
  t.equal(ctrl(rig, VIRTIO_NET_CTRL_VLAN, 0, [100, 0]).ack, VIRTIO_NET_OK);
  t.ok(rig.device.vlans.has(100));
  t.equal(ctrl(rig, VIRTIO_NET_CTRL_VLAN, 1, [100, 0]).ack, VIRTIO_NET_OK);
  t.notOk(rig.device.vlans.has(100));
  t.equal(ctrl(rig, VIRTIO_NET_CTRL_VLAN, 0, [0xff, 0xff]).ack, VIRTIO_NET_ERR, 'vid ≥ 4096');
  t.equal(ctrl(rig, 99, 0).ack, VIRTIO_NET_ERR, 'unknown class');
  t.equal(ctrl(rig, VIRTIO_NET_CTRL_MQ, 0, [1, 0]).ack, VIRTIO_NET_ERR, 'MQ not negotiated with 1 pair');
  t.equal(ctrl(rig, 5, 0, [0, 0, 0, 0, 0, 0, 0, 0]).ack, VIRTIO_NET_ERR, 'guest offloads not offered on the switch');
  const r = ctrl(rig, VIRTIO_NET_CTRL_RX, 0, [1], 0);
  t.equal(r.len, 0, 'no ack room: returned with len 0');
  // A command of one byte (no command field) with room for the ack: refused, not left unanswered.
  const q = rig.q(rig.device.numQueues - 1);
  const one = q.guest.alloc(1), ack = q.guest.alloc(1);
  q.guest.write(one, new Uint8Array([VIRTIO_NET_CTRL_RX]));
  q.guest.write(ack, new Uint8Array([0xee]));
  q.guest.driver.addChain([one, ack], [1, 1], 2, 1);
  q.guest.driver.publish();
  q.handler.onKick();
  t.ok(q.guest.driver.popUsed() >= 0, 'completed');
  t.equal(q.guest.driver.lastLen, 1, 'with the ack byte');
  t.equal(q.guest.read(ack, 1)[0], VIRTIO_NET_ERR, 'VIRTIO_NET_ERR');
  t.equal(rig.device.counters.ctrlErrors, 6);
  t.same(rig.q(rig.device.numQueues - 1).broken, []);
});
