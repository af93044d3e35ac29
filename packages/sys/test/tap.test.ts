import { execFileSync } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import t from 'tap';
import {
  close, tapOpen, tapSetOffload, tapSetVnetHdrSize, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN, TUN_F_UFO,
} from '../src/index.js';
import { throwsSys } from './helpers.js';

function tunUsable(): string | null {
  try {
    closeSync(openSync('/dev/net/tun', 'r+'));
  } catch (e) {
    return `/dev/net/tun not usable: ${(e as Error).message}`;
  }
  try {
    const probe = tapOpen('');
    close(probe.fd);
  } catch (e) {
    return `cannot create taps (needs CAP_NET_ADMIN): ${(e as Error).message}`;
  }
  return null;
}

const reason = tunUsable();
const name = `vtst${process.pid % 100000}`;

t.test('tap open and ioctls', { skip: reason ?? false }, (t) => {
  const tap = tapOpen(name);
  t.equal(tap.name, name, 'kernel kept our name');
  t.ok(tap.fd > 2);
  const link = execFileSync('ip', ['-d', 'link', 'show', name]).toString();
  t.match(link, /tun type tap/, 'it is a tap');
  t.match(link, /vnet_hdr on/, 'IFF_VNET_HDR set');
  t.notMatch(link, /multi_queue/, 'single queue');
  tapSetVnetHdrSize(tap.fd, 12);
  tapSetVnetHdrSize(tap.fd, 10);
  tapSetOffload(tap.fd, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN);
  tapSetOffload(tap.fd, 0);
  tapSetOffload(tap.fd, TUN_F_CSUM | TUN_F_UFO);
  throwsSys(t, () => tapSetOffload(tap.fd, 0x8000), 'EINVAL', 'ioctl(TUNSETOFFLOAD)', 'unknown offload bit');
  throwsSys(t, () => tapSetVnetHdrSize(tap.fd, 8), 'EINVAL', 'ioctl(TUNSETVNETHDRSZ)', 'header smaller than 10');
  close(tap.fd);
  throwsSys(t, () => tapSetVnetHdrSize(tap.fd, 12), 'EBADF', 'ioctl(TUNSETVNETHDRSZ)', 'closed fd');
  throwsSys(t, () => tapSetOffload(tap.fd, 0), 'EBADF', 'ioctl(TUNSETOFFLOAD)', 'closed fd');
  const [a] = [openSync('/dev/null', 'r')];
  throwsSys(t, () => tapSetOffload(a, 0), 'ENOTTY', 'ioctl(TUNSETOFFLOAD)', 'not a tap');
  closeSync(a);
  t.end();
});

t.test('multi-queue tap and kernel-chosen names', { skip: reason ?? false }, (t) => {
  const q0 = tapOpen(name, { multiQueue: true });
  const q1 = tapOpen(name, { multiQueue: true });
  t.equal(q1.name, name, 'second queue of the same interface');
  t.match(execFileSync('ip', ['-d', 'link', 'show', name]).toString(), /multi_queue/, 'IFF_MULTI_QUEUE set');
  throwsSys(t, () => tapOpen(name), 'EINVAL', 'ioctl(TUNSETIFF)', 'single-queue open of a multi-queue tap');
  close(q0.fd);
  close(q1.fd);
  const auto = tapOpen('');
  t.match(auto.name, /^tap\d+$/, 'empty name: kernel picks tapN');
  const pattern = tapOpen('vtsauto%d');
  t.match(pattern.name, /^vtsauto\d+$/, '%d is filled in');
  close(auto.fd);
  close(pattern.fd);
  t.end();
});

t.test('argument errors need no tun device', (t) => {
  throwsSys(t, () => tapOpen('x'.repeat(16)), 'EINVAL', 'ioctl(TUNSETIFF)', 'name over 15 bytes');
  throwsSys(t, () => tapOpen('a/b'), 'EINVAL', 'ioctl(TUNSETIFF)', 'slash in name');
  throwsSys(t, () => tapOpen(7 as unknown as string), 'EINVAL', 'ioctl(TUNSETIFF)', 'name not a string');
  throwsSys(t, () => tapOpen('ok', { multiQueue: 'yes' as unknown as boolean }), 'EINVAL', 'ioctl(TUNSETIFF)', 'option type');
  throwsSys(t, () => tapSetOffload(3, -1), 'EINVAL', 'ioctl(TUNSETOFFLOAD)', 'negative flags');
  throwsSys(t, () => tapSetVnetHdrSize(3, 1000), 'EINVAL', 'ioctl(TUNSETVNETHDRSZ)', 'huge header');
  t.end();
});
