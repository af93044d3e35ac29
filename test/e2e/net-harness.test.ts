/**
 * Proves the harness's vhost-user-net lines (`-netdev vhost-user` + `virtio-net-pci`,
 * `vectors=0` under TCG) with DPDK testpmd as the reference backend: the guest brings eth0 up
 * with the MAC we configured and pings an address that testpmd's `icmpecho` mode answers
 * (ARP + ICMP echo), so every reply crossed both virtqueues through the backend.
 */
import t from 'tap';
import { join } from 'node:path';
import { abortOnExit, makeWorkDir, startTestpmd } from './src/backends.js';
import { detectEnv, e2eTest } from './src/env.js';
import { buildInitramfs, NET_MODULES } from './src/initramfs.js';
import { parseKeyValues, runGuest } from './src/qemu.js';

const MAC = '52:54:00:e2:e0:01';
const PINGS = 5;

const script = `
ip link set eth0 up
ip addr add 10.0.0.2/24 dev eth0
echo "IFACES=$(ls /sys/class/net | tr '\\n' ' ')"
echo "MAC=$(cat /sys/class/net/eth0/address)"
echo "FEATURES=$(cat /sys/class/net/eth0/device/features)"
ping -c ${PINGS} -i 0.2 -W 5 10.0.0.1
echo "PING.rc=$?"
echo "RX=$(cat /sys/class/net/eth0/statistics/rx_packets)"
echo "TX=$(cat /sys/class/net/eth0/statistics/tx_packets)"
`;

t.test('guest on testpmd (vhost PMD, icmpecho): link, MAC, ping', (t) =>
  e2eTest(t, 'testpmd guest', { needs: ['qemu', 'kernel', 'busybox', 'testpmd'] }, async (t) => {
    const env = detectEnv();
    const work = makeWorkDir();
    t.teardown(work.cleanup);
    const initrd = buildInitramfs({ kernel: env.kernel!, busybox: env.busybox!, modules: NET_MODULES, script });
    const backend = await startTestpmd({ socket: join(work.dir, 'net.sock') });
    t.teardown(() => backend.stop());
    const r = await runGuest({ kernel: env.kernel!, initrd, netDevs: [{ socket: backend.socket, mac: MAC }], signal: abortOnExit([backend]) });
    t.comment(`guest ran ${r.durationMs} ms`);
    t.same(r.insmodFailures, [], 'all modules loaded');
    t.equal(r.rc, 0, 'guest script completed', { output: r.output, backend: backend.logs().slice(-2000) });
    const kv = parseKeyValues(r.output);
    t.match(kv.get('IFACES') ?? '', /\beth0\b/, 'virtio-net interface present');
    t.equal(kv.get('MAC'), MAC, 'configured MAC');
    t.equal((kv.get('FEATURES') ?? '')[32], '1', 'VIRTIO_F_VERSION_1 negotiated');
    t.equal(kv.get('PING.rc'), '0', 'ping answered', { output: r.output });
    t.match(r.output, new RegExp(`${PINGS} packets transmitted, ${PINGS} packets received`), 'no loss');
    t.ok(Number(kv.get('RX')) >= PINGS, `guest received ≥ ${PINGS} packets (${kv.get('RX')})`);
    t.ok(Number(kv.get('TX')) >= PINGS, `guest sent ≥ ${PINGS} packets (${kv.get('TX')})`);
  }));
