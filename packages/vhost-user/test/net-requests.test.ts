/**
 * VHOST_USER_SEND_RARP and VHOST_USER_NET_SET_MTU: offered only to a device that implements
 * them and asks for the bits; the MAC reaches the device in wire order; refusals and bad values
 * are failure acks on a connection that stays up (REPLY_ACK), and the messages are refused when
 * their bits were not negotiated.
 */
import t from 'tap';
import {
  bit, VHOST_USER_NET_SET_MTU, VHOST_USER_PROTOCOL_F_MTU, VHOST_USER_PROTOCOL_F_RARP, VHOST_USER_PROTOCOL_F_REPLY_ACK,
  VHOST_USER_SEND_RARP, VhostUserBackend, VHOST_USER_PROTOCOL_F_CONFIG,
} from '../src/index.js';
import { u64 } from '../src/codec/payloads.js';
import { EchoDevice } from '../src/testing/index.js';
import { connectAndNegotiate, socketPath, until } from './helpers.js';

const NET_BITS = bit(VHOST_USER_PROTOCOL_F_RARP) | bit(VHOST_USER_PROTOCOL_F_MTU);

/** An echo device with the two net hooks, recording what they got. */
const netDevice = (protocolFeatures: bigint) => new EchoDevice({ numQueues: 1, protocolFeatures, netRequests: {} });

function serve(device: EchoDevice) {
  const path = socketPath();
  const logs: string[] = [];
  const backend = new VhostUserBackend(device, { log: (l) => logs.push(l) });
  backend.listen(path);
  return { path, backend, logs };
}

t.test('offered only with the hooks and the device asking', async (t) => {
  const asks = bit(VHOST_USER_PROTOCOL_F_CONFIG) | NET_BITS;
  for (const [name, device, want] of [
    ['hooks, asked', netDevice(asks), NET_BITS],
    ['hooks, not asked', netDevice(bit(VHOST_USER_PROTOCOL_F_CONFIG)), 0n],
    ['asked, no hooks', new EchoDevice({ numQueues: 1, protocolFeatures: asks }), 0n],
  ] as const) {
    const { path, backend } = serve(device);
    const fe = await connectAndNegotiate(path);
    t.equal((await fe.getProtocolFeatures()) & NET_BITS, want, name);
    fe.close();
    await backend.close();
  }
});

t.test('SEND_RARP: the MAC in payload order reaches the device; group and zero MACs refused', async (t) => {
  const device = netDevice(NET_BITS);
  const { path, backend, logs } = serve(device);
  const fe = await connectAndNegotiate(path);
  t.ok(fe.protocol & bit(VHOST_USER_PROTOCOL_F_REPLY_ACK));
  await fe.sendRarp(Uint8Array.of(0x52, 0x54, 0x00, 0x12, 0x34, 0x56));
  t.same(device.rarps.map((m) => [...m]), [[0x52, 0x54, 0x00, 0x12, 0x34, 0x56]]);
  t.ok(logs.some((l) => l.includes('52:54:00:12:34:56')), 'logged with the address');
  // QEMU fills the u64 with memcpy of 6 bytes: bytes 6-7 are not part of the MAC.
  await fe.send(VHOST_USER_SEND_RARP, u64(0xabcd_0000_0000_0002n | (0x0an << 40n)));
  t.same([...device.rarps[1]], [0x02, 0, 0, 0, 0, 0x0a], 'bytes 6-7 ignored');
  await t.rejects(fe.sendRarp(Uint8Array.of(0x01, 0, 0x5e, 0, 0, 1)), { code: 'DEVICE_FAILED' }, 'multicast source refused');
  await t.rejects(fe.sendRarp(new Uint8Array(6)), { code: 'DEVICE_FAILED' }, 'zero MAC refused');
  t.equal(device.rarps.length, 2, 'refused requests never reach the device');
  t.ok(logs.some((l) => l.includes('01:00:5e:00:00:01 refused')), 'refusal logged');
  t.equal(await fe.getQueueNum(), 1n, 'connection kept');
  // As QEMU sends it: no NEED_REPLY. A refusal changes no state: still no close.
  await fe.request(VHOST_USER_SEND_RARP, u64(0x0100_0000_0001n));
  t.equal(await fe.getQueueNum(), 1n, 'connection kept without an ack asked');
  t.equal(device.rarps.length, 2);
  fe.close();
  await backend.close();
});

t.test('NET_SET_MTU: accepted, refused by the device, out of range', async (t) => {
  const device = netDevice(NET_BITS);
  const { path, backend, logs } = serve(device);
  const fe = await connectAndNegotiate(path);
  await fe.setMtu(1400);
  await t.rejects(fe.setMtu(9001), { code: 'DEVICE_FAILED' }, 'device refusal is a failure ack');
  t.ok(logs.some((l) => l.includes('NET_SET_MTU 9001 refused')));
  await t.rejects(fe.setMtu(67), { code: 'DEVICE_FAILED' }, 'below 68');
  await t.rejects(fe.send(VHOST_USER_NET_SET_MTU, u64(1n << 40n)), { code: 'DEVICE_FAILED' }, 'beyond 65535');
  t.same(device.mtus, [1400, 9001], 'only in-range values reach the device');
  t.equal(await fe.getQueueNum(), 1n, 'connection kept');
  fe.close();
  await backend.close();
});

t.test('not negotiated: refused (failure ack with REPLY_ACK, else the connection closes)', async (t) => {
  const device = netDevice(NET_BITS);
  const { path, backend } = serve(device);
  const fe = await connectAndNegotiate(path, { protocolFeatures: ~NET_BITS });
  await t.rejects(fe.sendRarp(Uint8Array.of(2, 0, 0, 0, 0, 1)), { code: 'DEVICE_FAILED' });
  await t.rejects(fe.setMtu(1500), { code: 'DEVICE_FAILED' });
  t.same(device.rarps, []);
  t.same(device.mtus, []);
  fe.close();
  const fe2 = await connectAndNegotiate(path, { protocolFeatures: ~(NET_BITS | bit(VHOST_USER_PROTOCOL_F_REPLY_ACK)) });
  await fe2.sendRarp(Uint8Array.of(2, 0, 0, 0, 0, 1));
  await until(() => fe2.closed);
  t.same(device.rarps, [], 'never reached the device');
  await backend.close();
});
