import t from 'tap';
import { NetConfig, NET_CONFIG_SIZE } from '../src/net-config.js';
import { parseMac, formatMac, macKey, isGroupMac, randomMac } from '../src/mac-address.js';
import { NetError } from '../src/errors.js';

t.test('config space layout (virtio 1.2 §5.1.4)', async (t) => {
  const cfg = new NetConfig(parseMac('52:54:00:12:34:56'), 4, 9000);
  const b = cfg.read(0, NET_CONFIG_SIZE);
  t.same([...b.subarray(0, 6)], [0x52, 0x54, 0, 0x12, 0x34, 0x56], 'mac at 0');
  t.same([...b.subarray(6, 8)], [1, 0], 'status LINK_UP at 6');
  t.same([...b.subarray(8, 10)], [4, 0], 'max_virtqueue_pairs at 8');
  t.same([...b.subarray(10, 12)], [9000 & 0xff, 9000 >> 8], 'mtu at 10');
  t.same([...b.subarray(12, 16)], [0xff, 0xff, 0xff, 0xff], 'speed unknown at 12');
  t.equal(b[16], 0xff, 'duplex unknown at 16');
  t.same([...cfg.read(20, 8)], [0, 0, 0, 0, 0, 0, 0, 0], 'bytes past the image read as 0');
  t.same([...cfg.read(-2, 4)], [0, 0, 0x52, 0x54], 'negative offsets read as 0');
  t.equal(cfg.setLinkUp(false), true);
  t.equal(cfg.setLinkUp(false), false, 'no change reported');
  t.equal(cfg.status, 0);
  t.equal(cfg.setAnnounce(true), true);
  t.equal(cfg.status, 2);
  t.equal(cfg.write(0, new Uint8Array([1, 2, 3, 4, 5, 6]), false), false, 'VERSION_1 driver cannot write');
  t.equal(formatMac(cfg.mac), '52:54:00:12:34:56');
  t.equal(cfg.write(0, new Uint8Array([2, 2, 3, 4, 5, 6, 9, 9]), true), true, 'legacy driver writes mac only');
  t.equal(formatMac(cfg.mac), '02:02:03:04:05:06');
  t.equal(cfg.status, 2, 'status not writable');
  // What a driver write may touch (anything else is refused whole, vhost-user.rst SET_CONFIG).
  t.ok(cfg.writable(0, 6, true), 'legacy: the mac');
  t.ok(cfg.writable(2, 3, true), 'legacy: part of the mac');
  t.notOk(cfg.writable(0, 8, true), 'legacy: mac + status');
  t.notOk(cfg.writable(10, 2, true), 'legacy: mtu');
  t.notOk(cfg.writable(0, 6, false), 'VERSION_1: nothing');
  t.ok(cfg.writable(0, 0, false), 'an empty write touches nothing');
});

t.test('MAC helpers', async (t) => {
  t.throws(() => parseMac('zz:00:00:00:00:00'), NetError);
  t.throws(() => parseMac('01:00:5e:00:00:01'), { code: 'bad-mac' }, 'multicast refused');
  t.throws(() => parseMac('52:54:00:12:34'), { code: 'bad-mac' });
  const m = parseMac('ff:ff:ff:ff:ff:fe'.replace(/^ff/, 'fe'));
  t.equal(macKey(m, 0), 0xfeffffff_fffe);
  t.ok(isGroupMac(new Uint8Array([0xff]), 0));
  t.notOk(isGroupMac(m, 0));
  const r = randomMac();
  t.equal(r[0] & 3, 2, 'random MAC is locally administered unicast');
});
