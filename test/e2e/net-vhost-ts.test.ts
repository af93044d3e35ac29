/**
 * A Linux guest (QEMU, virtio-net-pci over vhost-user) on OUR vhost-user-net backend, bridged to
 * a tap that lives in a network namespace this test creates: the guest pings the namespace's
 * address, so ARP and ICMP cross both virtqueues, the device, the TAP backend and the kernel.
 * Runs with 1 and with 2 queue pairs (MQ + IFF_MULTI_QUEUE tap; QEMU then runs one vhost device
 * per pair on the same socket, each adding the same memory regions). Needs root for the tap.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { makeWorkDir } from './src/backends.js';
import { detectEnv, e2eRequired, e2eTest } from './src/env.js';
import { buildInitramfs, NET_MODULES } from './src/initramfs.js';
import { startNetCli } from './src/net-rig.js';
import { parseKeyValues, runGuest } from './src/qemu.js';

const PINGS = 5;

const script = `
ip link set eth0 up
ip addr add 10.0.0.2/24 dev eth0
echo "MAC=$(cat /sys/class/net/eth0/address)"
echo "QUEUES=$(ls /sys/class/net/eth0/queues | tr '\\n' ' ')"
ping -c ${PINGS} -i 0.2 -W 5 10.0.0.1
echo "PING.rc=$?"
ping -c 3 -s 4000 -W 5 10.0.0.1
echo "PINGBIG.rc=$?"
`;

// Two boots of up to 180 s each (e2eTest's default); tap's own default for a file is 120 s.
t.setTimeout(2 * 180_000 + 60_000);

const rootReason = process.getuid?.() === 0 ? null : 'needs root to create a tap and a network namespace';

for (const pairs of [1, 2]) {
  const name = `guest on vhost-user-net --tap (${pairs} queue pair${pairs > 1 ? 's' : ''}), ping into a netns`;
  if (rootReason !== null) {
    if (e2eRequired()) t.test(name, async (t) => { t.fail(`E2E=1 but ${rootReason}`); });
    else t.test(name, { skip: rootReason }, async () => {});
    continue;
  }
  t.test(name, (t) => e2eTest(t, name, { needs: ['qemu', 'kernel', 'busybox'] }, async (t) => {
    const env = detectEnv();
    const work = makeWorkDir('vte2e-net-');
    t.teardown(work.cleanup);
    const ip = (...a: string[]) => execFileSync('ip', a, { encoding: 'utf8' });
    const ns = `vte2e-net-${process.pid}-${pairs}`;
    const ifname = `vte${process.pid % 10000}q${pairs}`;
    const mac = '52:54:00:e2:e1:0' + pairs;
    const socket = join(work.dir, 'net.sock');
    const cli = await startNetCli(['--socket-path', socket, '--tap', ifname, '--queues', String(pairs), '--mac', mac], [socket]);
    t.teardown(async () => {
      await cli.stop();
      try { ip('netns', 'del', ns); } catch { /* gone */ }
    });
    ip('netns', 'add', ns);
    ip('link', 'set', ifname, 'netns', ns);
    ip('-n', ns, 'addr', 'add', '10.0.0.1/24', 'dev', ifname);
    ip('-n', ns, 'link', 'set', ifname, 'up');
    const initrd = buildInitramfs({ kernel: env.kernel!, busybox: env.busybox!, modules: NET_MODULES, script });
    const abort = new AbortController();
    cli.process.once('exit', () => abort.abort(new Error(`vhost-user-net exited:\n${cli.logs().slice(-2000)}`)));
    const r = await runGuest({ kernel: env.kernel!, initrd, smp: pairs, netDevs: [{ socket, mac, queuePairs: pairs }], signal: abort.signal });
    t.comment(`guest ran ${r.durationMs} ms`);
    t.equal(r.rc, 0, 'guest script completed', { output: r.output, backend: cli.logs().slice(-2000) });
    const kv = parseKeyValues(r.output);
    t.equal(kv.get('MAC'), mac, 'configured MAC (QEMU builds the config space; ours must agree)');
    if (pairs > 1) t.match(kv.get('QUEUES') ?? '', /rx-1/, 'guest sees 2 RX queues');
    t.equal(kv.get('PING.rc'), '0', 'ping answered through the tap', { output: r.output });
    t.match(r.output, new RegExp(`${PINGS} packets transmitted, ${PINGS} packets received`), 'no loss');
    t.equal(kv.get('PINGBIG.rc'), '0', '4000-byte pings (fragmented) answered', { output: r.output });
    const stats = JSON.parse(ip('-n', ns, '-j', '-s', 'link', 'show', ifname)) as { stats64: { rx: { packets: number }; tx: { packets: number } } }[];
    t.ok(stats[0].stats64.rx.packets >= PINGS, `netns side received ${stats[0].stats64.rx.packets}`);
    t.equal(await cli.stop(), 0, 'vhost-user-net exits 0 on SIGTERM');
    t.notOk(existsSync(socket), 'socket file removed');
  }));
}
