/**
 * Migration-time announcements with a real QEMU front-end: a Linux guest on one port of our
 * `vhost-user-net --switch`, its virtio-net device with `guest_announce=off` (a guest that cannot
 * announce itself) and `host_mtu=1400`. QEMU sends VHOST_USER_NET_SET_MTU 1400 when the driver
 * starts the device (our back-end offers PROTOCOL_F_MTU and accepts what its slots carry), and
 * on QMP `announce-self` — what QEMU runs after an incoming migration — VHOST_USER_SEND_RARP with
 * the guest's MAC. The second switch port, driven by our TypeScript front-end, must receive
 * that RARP broadcast from the guest's MAC, and the switch must have learned the MAC at the
 * guest's port (a unicast frame to it is forwarded, not flooded).
 */
import t from 'tap';
import { join } from 'node:path';
import { NetGuest } from '../../packages/devices-net/test/helpers/net-frontend.js';
import { makeWorkDir } from './src/backends.js';
import { detectEnv, e2eTest } from './src/env.js';
import { buildInitramfs, NET_MODULES } from './src/initramfs.js';
import { portMetric, startNetCli } from './src/net-rig.js';
import { qemuArgs } from './src/qemu.js';
import { startQemu } from './src/qemu-process.js';

const GUEST_MAC = '52:54:00:a1:b2:c3';
const HOST_MTU = 1400;
const ETH_P_RARP = 0x8035;

// eth0 stays down: the guest sends nothing itself (no IPv6 DAD or router solicitations), so
// only the RARP can teach the switch its MAC. The driver starts the device at probe anyway.
const SCRIPT = `
echo "MTU=$(cat /sys/class/net/eth0/mtu)"
echo READY
sleep 120
`;

t.setTimeout(240_000);

t.test('QEMU announce-self → SEND_RARP → RARP broadcast on the switch; host_mtu → NET_SET_MTU', (t) =>
  e2eTest(t, 'announce and MTU', { needs: ['qemu', 'kernel', 'busybox'], timeout: 180_000 }, async (t) => {
    const env = detectEnv();
    const work = makeWorkDir('vte2e-ann-');
    t.teardown(work.cleanup);
    const sockA = join(work.dir, 'a.sock');
    const sockB = join(work.dir, 'b.sock');
    const cli = await startNetCli(['--socket-path', sockA, '--socket-path', sockB, '--switch', '--mac', '02:00:00:00:0a:00'], [sockA, sockB]);
    t.teardown(() => cli.stop());
    const abort = new AbortController();
    cli.process.once('exit', () => abort.abort(new Error(`vhost-user-net exited:\n${cli.logs().slice(-2000)}`)));

    const observer = await NetGuest.open(sockB);
    t.teardown(() => observer.close());

    const initrd = buildInitramfs({ kernel: env.kernel!, busybox: env.busybox!, modules: NET_MODULES, script: SCRIPT });
    const argv = qemuArgs({
      kernel: env.kernel!, initrd,
      netDevs: [{ socket: sockA, mac: GUEST_MAC, deviceProps: `guest_announce=off,host_mtu=${HOST_MTU}` }],
    });
    const qemu = await startQemu('guest', env.qemu!, argv, join(work.dir, 'qmp.sock'));
    t.teardown(() => qemu.stop());
    const mtu = await qemu.waitConsole(/^MTU=(\d+)$/m, 150_000, abort.signal);
    await qemu.waitConsole(/^READY$/m, 10_000, abort.signal);
    t.equal(Number(mtu[1]), HOST_MTU, 'the guest sees host_mtu');
    // The driver probed: QEMU started vhost (NET_SET_MTU is part of that) before the console line.
    // The back-end's log arrives through a pipe, possibly after what the test saw elsewhere.
    const logged = async (re: RegExp): Promise<string> => {
      for (let i = 0; i < 100 && !re.test(cli.logs()); i++) await new Promise((r) => setTimeout(r, 50));
      return cli.logs();
    };
    t.match(await logged(new RegExp(`NET_SET_MTU ${HOST_MTU}\\b`)), new RegExp(`NET_SET_MTU ${HOST_MTU}\\b`), 'QEMU sent NET_SET_MTU and our back-end accepted it');
    t.notMatch(qemu.console(), /MTU not supported/, 'QEMU reports no refusal');

    const isRarp = (f: Uint8Array) => f.length >= 12 + 60 && ((f[24] << 8) | f[25]) === ETH_P_RARP;
    const SWITCH = ['vhost_net_switch_unicast_total', 'vhost_net_switch_flooded_total'];
    const switchCounts = async () => {
      const m = await cli.metrics({ also: SWITCH });
      return { unicast: m.get(SWITCH[0]) ?? 0, flooded: m.get(SWITCH[1]) ?? 0, rarp: m.get(portMetric('vhost_net_rarp_requests_total', sockA)) ?? 0 };
    };
    // A frame to the guest's MAC, from the observer (local experimental ethertype: ignored).
    const toGuest = new Uint8Array(12 + 60);
    toGuest.set(GUEST_MAC.split(':').map((h) => parseInt(h, 16)), 12);
    toGuest.set([0x02, 0, 0, 0, 0, 0x0b], 18);
    toGuest[24] = 0x88;
    toGuest[25] = 0xb5;
    /** Sends `toGuest` and waits until the switch counted it one way or the other. */
    const sendToGuest = async () => {
      const before = await switchCounts();
      observer.send(toGuest);
      for (let i = 0; i < 100; i++) {
        const now = await switchCounts();
        if (now.unicast + now.flooded > before.unicast + before.flooded) {
          return { unicast: now.unicast - before.unicast, flooded: now.flooded - before.flooded };
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error('the switch never counted the frame');
    };

    t.same(await sendToGuest(), { unicast: 0, flooded: 1 }, 'before the announcement the guest MAC is unknown: flooded');
    t.equal(observer.received.filter(isRarp).length, 0, 'no RARP before the announcement');
    // One round: a second RARP flooded while the unicast check below runs would be counted by it.
    await qemu.qmp.execute('announce-self', { initial: 50, max: 550, rounds: 1, step: 50 });
    t.ok(await observer.waitFor((fs) => fs.some(isRarp), 20_000), 'the other port received a RARP');
    const rarp = observer.received.find(isRarp)!;
    const mac = [...rarp.subarray(18, 24)].map((b) => b.toString(16).padStart(2, '0')).join(':');
    t.equal(mac, GUEST_MAC, 'from the guest MAC');
    t.same([...rarp.subarray(12, 18)], [0xff, 0xff, 0xff, 0xff, 0xff, 0xff], 'broadcast');
    t.match(await logged(new RegExp(`SEND_RARP: announcing ${GUEST_MAC}`)), new RegExp(`SEND_RARP: announcing ${GUEST_MAC}`), 'logged by the back-end');
    t.equal((await switchCounts()).rarp, 1, 'counted on the guest port');
    t.same(await sendToGuest(), { unicast: 1, flooded: 0 }, 'the switch learned the guest MAC from the RARP: known unicast');
  }));
