/**
 * VHOST_USER_SEND_RARP and VHOST_USER_NET_SET_MTU on real sockets: the announcement leaves the
 * announcing port as a RARP broadcast from the guest's MAC (the other switch port receives it,
 * the switch learns the address there); NET_SET_MTU is
 * accepted up to what the backend's slots carry and shows in config space until a reset.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bit, VHOST_USER_PROTOCOL_F_MTU, VHOST_USER_PROTOCOL_F_RARP } from '@vhost-ts/vhost-user';
import { startNetServer } from '../src/net-server.js';
import type { SwitchBackend } from '../src/switch-backend.js';
import { buildRarpFrame, ETH_P_RARP, RARP_FRAME_SIZE } from '../src/rarp-frame.js';
import { CFG_MTU } from '../src/net-config.js';
import { NetGuest } from './helpers/net-frontend.js';
import { makeFrame } from './helpers/net-rig.js';

const dir = mkdtempSync(join(tmpdir(), 'vhost-net-announce-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const quiet = () => {};
const GUEST = Uint8Array.of(0x52, 0x54, 0x00, 0xab, 0xcd, 0xef);

t.test('RARP frame layout (RFC 903 request reverse, padded to 60 bytes)', async (t) => {
  const f = buildRarpFrame(GUEST);
  t.equal(f.length, RARP_FRAME_SIZE);
  t.same([...f.subarray(0, 6)], [0xff, 0xff, 0xff, 0xff, 0xff, 0xff], 'broadcast');
  t.same([...f.subarray(6, 12)], [...GUEST], 'from the guest');
  t.equal((f[12] << 8) | f[13], ETH_P_RARP);
  t.same([...f.subarray(14, 22)], [0, 1, 0x08, 0x00, 6, 4, 0, 3], 'Ethernet/IPv4, op 3');
  t.same([...f.subarray(22, 28)], [...GUEST], 'sender hardware address');
  t.same([...f.subarray(32, 38)], [...GUEST], 'target hardware address');
  t.ok(f.subarray(28, 32).every((b) => b === 0) && f.subarray(38).every((b) => b === 0), 'protocol addresses and padding 0');
  t.throws(() => buildRarpFrame(new Uint8Array(5)), RangeError);
});

t.test('switch: SEND_RARP on port A reaches port B as a broadcast, and the switch learns the MAC at A', async (t) => {
  const a = join(dir, 'a.sock');
  const b = join(dir, 'b.sock');
  const server = startNetServer({ socketPaths: [a, b], backend: { kind: 'switch' }, log: quiet });
  t.teardown(() => server.close());
  const ga = await NetGuest.open(a);
  const gb = await NetGuest.open(b);
  t.teardown(() => { ga.close(); gb.close(); });
  const offered = await ga.fe.getProtocolFeatures();
  t.ok(offered & bit(VHOST_USER_PROTOCOL_F_RARP), 'PROTOCOL_F_RARP offered');
  t.ok(offered & bit(VHOST_USER_PROTOCOL_F_MTU), 'PROTOCOL_F_MTU offered');

  await ga.fe.sendRarp(GUEST);
  t.ok(await gb.waitFor((f) => f.length === 1), 'port B received the announcement');
  const got = gb.received[0];
  t.equal(got.length, 12 + RARP_FRAME_SIZE);
  t.same([...got.subarray(12)], [...buildRarpFrame(GUEST)], 'the RARP frame, unchanged');
  t.equal(got[10], 1, 'num_buffers = 1');
  t.equal(server.devices[0].counters.rarpRequests, 1, 'counted on the announcing port');
  t.equal(server.devices[0].counters.txFrames, 0, 'not counted as a guest TX frame');
  t.match(server.metrics(), /vhost_net_rarp_requests_total\{port=".*a\.sock"\} 1/);
  t.equal(ga.received.length, 0, 'not sent back to the announcing port');

  // The switch learned GUEST at A: a unicast frame from B to it goes to A only, not flooded.
  const sw = server.backend as SwitchBackend;
  const before = sw.counters.flooded;
  gb.send(makeFrame([...GUEST], [2, 0, 0, 0, 0, 0x0b], 80));
  t.ok(await ga.waitFor((f) => f.length === 1), 'unicast to the announced MAC reaches A');
  t.equal(sw.counters.flooded, before, 'as known unicast');
});

t.test('NET_SET_MTU: accepted up to the slots, refused beyond, config follows until reset', async (t) => {
  const sock = join(dir, 'mtu.sock');
  const server = startNetServer({ socketPaths: [sock], backend: { kind: 'loopback' }, mtu: 4000, log: quiet });
  t.teardown(() => server.close());
  const g = await NetGuest.open(sock);
  const mtuOf = async () => {
    const c = await g.fe.getConfig(CFG_MTU, 2);
    return c![0] | (c![1] << 8);
  };
  t.equal(await mtuOf(), 4000, 'the configured MTU at first');
  await g.fe.setMtu(1400);
  t.equal(await mtuOf(), 1400, 'the front-end MTU in config space');
  await t.rejects(g.fe.setMtu(4001), { code: 'DEVICE_FAILED' }, 'one byte more than the slots carry');
  t.equal(server.devices[0].config.mtu, 1400, 'unchanged by the refusal');
  await g.fe.setMtu(4000);
  t.equal(server.devices[0].config.mtu, 4000, 'the slots carry 4000 + Ethernet/VLAN header');
  await g.fe.setMtu(1280);
  await g.fe.resetDevice();
  t.equal(server.devices[0].config.mtu, 4000, 'back to the configured MTU after RESET_DEVICE (was 1280)');
  g.close();
});
