// TAP backend against the real kernel: the tap is moved into a network namespace with an
// address; a front-end (the "guest") sends ICMP echo requests built here and must get the
// kernel's replies back through the tap → RX path. Needs root (CAP_NET_ADMIN) and iproute2.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startNetServer } from '../src/net-server.js';
import { NetGuest } from './helpers/net-frontend.js';
import { icmpEchoRequest, isEchoReply, parseMacText } from './helpers/packets.js';

const e2e = process.env.E2E === '1';
function prerequisite(): string | null {
  if (process.getuid?.() !== 0) return 'needs root (CAP_NET_ADMIN) to create a tap and a network namespace';
  if (!existsSync('/dev/net/tun')) return '/dev/net/tun is missing';
  try { execFileSync('ip', ['-V'], { stdio: 'ignore' }); } catch { return 'iproute2 (ip) is not installed'; }
  return null;
}
const missing = prerequisite();
if (missing !== null) {
  if (e2e) t.fail(`E2E=1 but ${missing}`);
  else t.skip(missing);
} else {
  const ip = (...args: string[]) => execFileSync('ip', args, { encoding: 'utf8' });
  const ns = `vhts-net-${process.pid}`;
  const ifname = `vhtap${process.pid % 100000}`;
  const dir = mkdtempSync(join(tmpdir(), 'vhost-net-tap-'));
  const HOST_IP = '10.77.0.1'; // inside our own namespace only
  const GUEST_IP = '10.77.0.2';
  const GUEST_MAC = '02:00:00:00:77:02';

  t.test('ICMP echo through a tap in a network namespace', async (t) => {
    const sock = join(dir, 'tap.sock');
    const server = startNetServer({ socketPaths: [sock], backend: { kind: 'tap', name: ifname }, log: () => {} });
    t.teardown(async () => {
      await server.close();
      try { ip('netns', 'del', ns); } catch { /* gone */ }
      rmSync(dir, { recursive: true, force: true });
    });
    ip('netns', 'add', ns);
    ip('link', 'set', ifname, 'netns', ns);
    ip('-n', ns, 'addr', 'add', `${HOST_IP}/24`, 'dev', ifname);
    ip('-n', ns, 'link', 'set', ifname, 'up');
    ip('-n', ns, 'neigh', 'replace', GUEST_IP, 'lladdr', GUEST_MAC, 'dev', ifname, 'nud', 'permanent');
    const info = JSON.parse(ip('-n', ns, '-j', 'link', 'show', ifname)) as { address: string }[];
    const tapMac = parseMacText(info[0].address);

    const g = await NetGuest.open(sock);
    t.teardown(() => g.close());
    const id = 0x4242;
    let replies = 0;
    for (let seq = 1; seq <= 5; seq++) {
      g.send(icmpEchoRequest(tapMac, parseMacText(GUEST_MAC), GUEST_IP, HOST_IP, id, seq));
      const ok = await g.waitFor((frames) => frames.some((f) => isEchoReply(f, HOST_IP, id, seq)), 3000);
      t.ok(ok, `echo reply ${seq} came back through the tap`);
      if (ok) replies++;
    }
    t.equal(replies, 5);
    // Checksum offload passes through: an echo request with NEEDS_CSUM and a zero ICMP
    // checksum is only answered if the kernel got our virtio_net_hdr (csum_start/offset).
    const partial = icmpEchoRequest(tapMac, parseMacText(GUEST_MAC), GUEST_IP, HOST_IP, id, 99);
    const icmp = 12 + 14 + 20;
    partial[icmp + 2] = 0;
    partial[icmp + 3] = 0;
    // Partial checksum convention: the field holds the folded pseudo-header sum — ICMP has none, so 0.
    partial[0] = 1; // VIRTIO_NET_HDR_F_NEEDS_CSUM
    partial[6] = 34; // csum_start: Ethernet + IPv4 header
    partial[8] = 2; // csum_offset: ICMP checksum field
    g.send(partial);
    t.ok(await g.waitFor((frames) => frames.some((f) => isEchoReply(f, HOST_IP, id, 99)), 3000),
      'NEEDS_CSUM frame completed by the kernel (offload header passed through the tap)');
    const c = server.devices[0].counters;
    t.ok(c.txFrames >= 5, `tx frames ${c.txFrames}`);
    t.ok(c.rxFrames >= 5, `rx frames ${c.rxFrames}`);
    t.equal(c.txMalformed, 0);
    // The kernel saw our frames: its RX counter on the tap moved.
    const stats = JSON.parse(ip('-n', ns, '-j', '-s', 'link', 'show', ifname)) as { stats64: { rx: { packets: number } } }[];
    t.ok(stats[0].stats64.rx.packets >= 5, `kernel rx packets ${stats[0].stats64.rx.packets}`);
  });
}
