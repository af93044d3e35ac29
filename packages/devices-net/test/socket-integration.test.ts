import t from 'tap';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startNetServer } from '../src/net-server.js';
import { parseMac } from '../src/mac-address.js';
import { bit, VIRTIO_NET_F_MRG_RXBUF } from '../src/constants.js';
import { NetGuest } from './helpers/net-frontend.js';
import { makeFrame } from './helpers/net-rig.js';

const dir = mkdtempSync(join(tmpdir(), 'vhost-net-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const quiet = () => {};

t.test('loopback over a real socket: frames echo back', async (t) => {
  const sock = join(dir, 'lo.sock');
  const server = startNetServer({ socketPaths: [sock], backend: { kind: 'loopback' }, mac: parseMac('02:00:00:00:01:00'), log: quiet });
  t.teardown(() => server.close());
  const g = await NetGuest.open(sock);
  t.teardown(() => g.close());
  const cfg = await g.fe.getConfig(0, 12);
  t.same([...cfg!.subarray(0, 6)], [2, 0, 0, 0, 1, 0], 'MAC via GET_CONFIG');
  for (let i = 0; i < 20; i++) g.send(makeFrame([2, 0, 0, 0, 0, 9], [2, 0, 0, 0, 1, 0], 60 + i, i));
  t.ok(await g.waitFor((f) => f.length === 20), 'all 20 frames echoed');
  t.equal(g.received[5].length, 12 + 65, 'lengths kept');
  t.equal(g.received[5][12 + 14], (5 + 26) & 0xff, 'payload kept');
  t.equal(g.received[5][10], 1, 'num_buffers = 1');
  const d = server.devices[0];
  t.equal(d.counters.txFrames, 20);
  t.equal(d.counters.rxFrames, 20);
  t.match(server.metrics(), /vhost_net_rx_frames_total\{port=".*lo\.sock"\} 20/);
  t.notMatch(server.metrics(), /vhost_net_switch_/, 'no switch metrics without a switch');
});

t.test('switch over real sockets: two front-ends exchange frames', async (t) => {
  const a = join(dir, 'a.sock');
  const b = join(dir, 'b.sock');
  const server = startNetServer({ socketPaths: [a, b], backend: { kind: 'switch' }, log: quiet });
  const ga = await NetGuest.open(a);
  const gb = await NetGuest.open(b, { drop: bit(VIRTIO_NET_F_MRG_RXBUF) });
  const MA = [2, 0, 0, 0, 0, 0xa];
  const MB = [2, 0, 0, 0, 0, 0xb];
  ga.send(makeFrame([0xff, 0xff, 0xff, 0xff, 0xff, 0xff], MA, 60));
  t.ok(await gb.waitFor((f) => f.length === 1), 'broadcast from A reaches B');
  gb.send(makeFrame(MA, MB, 100));
  t.ok(await ga.waitFor((f) => f.length === 1), 'unicast from B reaches A');
  t.same([...ga.received[0].subarray(12, 18)], MA);
  t.same([...ga.received[0].subarray(18, 24)], MB);
  for (let i = 0; i < 50; i++) ga.send(makeFrame(MB, MA, 200, i));
  t.ok(await gb.waitFor((f) => f.length === 51), '50 unicast frames A → B');
  t.equal(ga.received.length, 1, 'A got nothing back');
  // The switch's own counters are part of the metrics: 1 flooded broadcast, 1 + 50 unicast.
  const text = server.metrics();
  t.match(text, /^vhost_net_switch_flooded_total 1$/m, 'switch metrics: flooded');
  t.match(text, /^vhost_net_switch_unicast_total 51$/m, 'switch metrics: unicast');
  t.match(text, /^vhost_net_switch_mac_entries 2$/m, 'switch metrics: both MACs learned');
  t.match(text, /^# TYPE vhost_net_switch_mac_entries gauge$/m);
  t.match(text, /^vhost_net_switch_hairpin_dropped_total 0$/m);
  ga.close();
  gb.close();
  await server.close();
  t.notOk(existsSync(a), 'socket file removed on close');
});
