/**
 * TCP through our vhost-user-net TAP backend with the offloads on: a Linux guest (QEMU,
 * virtio-net-pci over vhost-user) negotiates CSUM, GUEST_CSUM, HOST/GUEST TSO4/TSO6 and
 * MRG_RXBUF; the tap (IFF_VNET_HDR, TUNSETOFFLOAD) lives in a network namespace where a small
 * Node peer (src/tcp-peer.ts) listens. The guest's busybox `nc` sends 10 MiB to the peer and
 * receives 10 MiB from it; SHA-256 is compared at both ends. The back-end's counters (average
 * frame size above the MTU) prove GSO super-frames crossed the device in both directions —
 * guest TX (HOST_TSO) and guest RX (GUEST_TSO, spread over several buffers with MRG_RXBUF).
 * MTU-sized pings (1472-byte payload = a 1500-byte IP packet) are checked too.
 * Needs root for the tap and the namespace.
 */
import t from 'tap';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { makeWorkDir } from './src/backends.js';
import { detectEnv, e2eRequired, e2eTest } from './src/env.js';
import { buildInitramfs, NET_MODULES } from './src/initramfs.js';
import { NetNamespace, portMetric, startNetCli, startTcpPeer } from './src/net-rig.js';
import { parseKeyValues, runGuest } from './src/qemu.js';

const MIB = 1 << 20;
const SIZE_MIB = 10;
const HOST_IP = '10.0.0.1';
const GUEST_IP = '10.0.0.2';
const HOST_IP6 = 'fd00:e2e::1';
const GUEST_IP6 = 'fd00:e2e::2';
const SINK_PORT = 5001;
const SOURCE_PORT = 5002;
const MTU = 1500;
/** An Ethernet frame of a full-MTU packet; anything above on average is a GSO super-frame. */
const MAX_PLAIN_FRAME = MTU + 14;

/** virtio 1.2 §5.1.3 feature bits the guest must have negotiated (index in the sysfs string). */
const WANTED_FEATURES: Record<string, number> = {
  VIRTIO_NET_F_CSUM: 0, VIRTIO_NET_F_GUEST_CSUM: 1, VIRTIO_NET_F_GUEST_TSO4: 7, VIRTIO_NET_F_GUEST_TSO6: 8,
  VIRTIO_NET_F_HOST_TSO4: 11, VIRTIO_NET_F_HOST_TSO6: 12, VIRTIO_F_VERSION_1: 32,
};
const VIRTIO_NET_F_MRG_RXBUF = 15;
const VIRTIO_F_RING_PACKED = 34;

/** One guest configuration; each costs a boot. */
interface Variant {
  readonly label: string;
  /** Extra virtio-net-pci properties. */
  readonly deviceProps: string;
  readonly mergeable: boolean;
  readonly packed: boolean;
  /** IP version of the TCP transfers: 4 exercises TSO4 / GSO_TCPV4, 6 TSO6 / GSO_TCPV6. */
  readonly ipVersion: 4 | 6;
  /** Queue pairs (VIRTIO_NET_F_MQ, a multi-queue tap) and as many vCPUs. */
  readonly pairs: number;
}

const VARIANTS: readonly Variant[] = [
  // The Linux default: split rings, mergeable RX buffers (a 64 KiB GSO frame spans many buffers).
  { label: 'split rings, MRG_RXBUF, TCP over IPv4', deviceProps: '', mergeable: true, packed: false, ipVersion: 4, pairs: 1 },
  // Without MRG_RXBUF Linux posts "big packet" chains (a page per descriptor, ~64 KiB each) and
  // every GSO frame must fit one chain; on packed rings (virtio 1.2 §2.8), TCP over IPv6, with
  // 2 queue pairs (offloads set on both tap queues) and 2 vCPUs.
  { label: 'packed rings, no MRG_RXBUF, TCP over IPv6, 2 queue pairs', deviceProps: 'mrg_rxbuf=off,packed=on', mergeable: false, packed: true, ipVersion: 6, pairs: 2 },
];

/** The guest's script; `peer` is the host address the TCP transfers use. */
function script(v: Variant): string {
  const peer = v.ipVersion === 6 ? HOST_IP6 : HOST_IP;
  // Times are centiseconds from /proc/uptime (busybox date has whole seconds only). The IPv6
  // address skips duplicate address detection (busybox ip has no "nodad") so it works at once.
  return `
cs() { read up _ < /proc/uptime; echo "\${up%.*}\${up#*.}"; }
echo 0 > /proc/sys/net/ipv6/conf/eth0/accept_dad
ip link set eth0 up
ip addr add ${GUEST_IP}/24 dev eth0
ip -6 addr add ${GUEST_IP6}/64 dev eth0
echo "FEATURES=$(cat /sys/class/net/eth0/device/features)"
echo "MTU=$(cat /sys/class/net/eth0/mtu)"
echo "QUEUES=$(ls /sys/class/net/eth0/queues | tr '\\n' ' ')"
ping -c 3 -s ${MTU - 28} -W 5 ${HOST_IP}
echo "PINGMTU.rc=$?"
ping6 -c 3 -s ${MTU - 48} -W 5 ${HOST_IP6}
echo "PING6MTU.rc=$?"
dd if=/dev/urandom of=/tmp/tx bs=1M count=${SIZE_MIB} 2>/dev/null
echo "TX.sha256=$(sha256sum /tmp/tx | cut -d' ' -f1)"
t0=$(cs)
nc ${peer} ${SINK_PORT} < /tmp/tx
echo "NCTX.rc=$?"
t1=$(cs)
nc ${peer} ${SOURCE_PORT} < /dev/null > /tmp/rx
echo "NCRX.rc=$?"
t2=$(cs)
echo "TX.cs=$((t1 - t0))"
echo "RX.cs=$((t2 - t1))"
echo "RX.bytes=$(stat -c %s /tmp/rx)"
echo "RX.sha256=$(sha256sum /tmp/rx | cut -d' ' -f1)"
# Driver unbind + bind: a device reset (rings stopped with GET_VRING_BASE, features and tap
# offloads negotiated again), then 1 MiB more to the peer.
dev=$(basename "$(readlink /sys/class/net/eth0/device)")
echo "$dev" > /sys/bus/virtio/drivers/virtio_net/unbind
echo "$dev" > /sys/bus/virtio/drivers/virtio_net/bind
echo 0 > /proc/sys/net/ipv6/conf/eth0/accept_dad
ip link set eth0 up
ip addr add ${GUEST_IP}/24 dev eth0
ip -6 addr add ${GUEST_IP6}/64 dev eth0
echo "REBOUND.features=$(cat /sys/class/net/eth0/device/features)"
head -c ${MIB} /tmp/tx > /tmp/tx2
echo "TX2.sha256=$(sha256sum /tmp/tx2 | cut -d' ' -f1)"
nc ${peer} ${SINK_PORT} < /tmp/tx2
echo "NCTX2.rc=$?"
`;
}

// Two boots, each limited below; the whole file must outlive both (tap's default is 120 s, and
// a loaded CI box runs TCG guests several times slower than an idle one).
t.setTimeout(2 * 420_000 + 60_000);

const rootReason = process.getuid?.() === 0 ? null : 'needs root to create a tap and a network namespace';

for (const v of VARIANTS) {
  const name = `guest ↔ netns TCP through vhost-user-net --tap with offloads (${v.label}): ${SIZE_MIB} MiB each way`;
  if (rootReason !== null) {
    if (e2eRequired()) t.test(name, async (t) => { t.fail(`E2E=1 but ${rootReason}`); });
    else t.test(name, { skip: rootReason }, async () => {});
    continue;
  }
  t.test(name, (t) => e2eTest(t, name, { needs: ['qemu', 'kernel', 'busybox'], timeout: 420_000 }, async (t) => {
    const env = detectEnv();
    const work = makeWorkDir('vte2e-tcp-');
    t.teardown(work.cleanup);
    const ifname = `vtt${process.pid % 100000}v${VARIANTS.indexOf(v)}`;
    const mac = '52:54:00:e2:e2:01';
    const socket = join(work.dir, 'net.sock');
    const cli = await startNetCli(['--socket-path', socket, '--tap', ifname, '--mac', mac, '--mtu', String(MTU), '--queues', String(v.pairs)], [socket]);
    t.teardown(() => cli.stop());
    const ns = new NetNamespace(`vte2e-tcp-${process.pid}-${VARIANTS.indexOf(v)}`);
    t.teardown(() => ns.close());
    ns.adopt(ifname, `${HOST_IP}/24`);
    ns.ip('-6', 'addr', 'add', `${HOST_IP6}/64`, 'dev', ifname, 'nodad');
    const peer = await startTcpPeer(ns, { host: v.ipVersion === 6 ? HOST_IP6 : HOST_IP, sinkPort: SINK_PORT, sourcePort: SOURCE_PORT, bytes: SIZE_MIB * MIB, holdSource: true });
    t.teardown(() => peer.stop());

    const initrd = buildInitramfs({ kernel: env.kernel!, busybox: env.busybox!, modules: NET_MODULES, script: script(v) });
    const abort = new AbortController();
    cli.process.once('exit', () => abort.abort(new Error(`vhost-user-net exited:\n${cli.logs().slice(-2000)}`)));
    const guest = runGuest({ kernel: env.kernel!, initrd, smp: v.pairs, netDevs: [{ socket, mac, deviceProps: v.deviceProps, queuePairs: v.pairs }], signal: abort.signal, timeoutMs: 360_000 });
    let guestDone = false;
    guest.then(() => (guestDone = true), () => (guestDone = true));
    // Between the directions: the guest's send is over and its receiving nc is connected, but
    // the peer holds its data — read the counters so each direction is measured on its own.
    let afterSend: Map<string, number> | null = null;
    while (!guestDone) {
      if (peer.events().some((e) => e.event === 'source-held')) {
        afterSend = await cli.metrics();
        break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    peer.release();
    const r = await guest;
    const diag = { output: r.output, backend: cli.logs().slice(-2000), peer: peer.logs().slice(-2000) };
    t.comment(`guest ran ${r.durationMs} ms`);
    t.equal(r.rc, 0, 'guest script completed', diag);
    const kv = parseKeyValues(r.output);

    // Offloads, as the guest driver negotiated them.
    const features = kv.get('FEATURES') ?? '';
    for (const [f, bitIndex] of Object.entries(WANTED_FEATURES)) t.equal(features[bitIndex], '1', `guest negotiated ${f}`);
    t.equal(features[VIRTIO_NET_F_MRG_RXBUF], v.mergeable ? '1' : '0', `VIRTIO_NET_F_MRG_RXBUF ${v.mergeable ? '' : 'not '}negotiated`);
    t.equal(features[VIRTIO_F_RING_PACKED], v.packed ? '1' : '0', `VIRTIO_F_RING_PACKED ${v.packed ? '' : 'not '}negotiated`);
    t.equal(kv.get('MTU'), String(MTU), 'guest MTU');
    t.equal((kv.get('QUEUES') ?? '').split(' ').filter((q) => q.startsWith('rx-')).length, v.pairs, `guest has ${v.pairs} RX queue(s)`);
    t.equal(kv.get('PINGMTU.rc'), '0', `${MTU}-byte IP packets (ping -s ${MTU - 28}) answered`, diag);
    t.equal(kv.get('PING6MTU.rc'), '0', `${MTU}-byte IPv6 packets (ping6 -s ${MTU - 48}) answered`, diag);
    t.equal(r.output.match(/3 packets transmitted, 3 packets received/g)?.length, 2, 'no MTU-sized ping lost (IPv4, IPv6)');

    // guest → host
    t.equal(kv.get('NCTX.rc'), '0', 'guest nc (send) exited 0', diag);
    const events = peer.events();
    const sink = events.find((e) => e.event === 'sink');
    t.ok(sink, 'host peer received a connection', diag);
    t.equal(sink?.bytes, SIZE_MIB * MIB, `host received ${SIZE_MIB} MiB`);
    t.equal(sink?.sha256, kv.get('TX.sha256'), 'SHA-256 of guest → host data matches');

    // host → guest
    t.equal(kv.get('NCRX.rc'), '0', 'guest nc (receive) exited 0', diag);
    t.equal(kv.get('RX.bytes'), String(SIZE_MIB * MIB), `guest received ${SIZE_MIB} MiB`);
    t.equal(kv.get('RX.sha256'), peer.sourceSha256, 'SHA-256 of host → guest data matches');
    t.notOk(events.some((e) => e.event === 'error'), 'no socket error on the host side', { events });
    // After the driver was unbound and bound again.
    t.equal(kv.get('REBOUND.features'), features, 'the same features negotiated after a driver rebind');
    t.equal(kv.get('NCTX2.rc'), '0', 'guest nc after the rebind exited 0', diag);
    const sink2 = events.filter((e) => e.event === 'sink')[1];
    t.equal(sink2?.bytes, MIB, 'host received 1 MiB after the rebind');
    t.equal(sink2?.sha256, kv.get('TX2.sha256'), 'SHA-256 after the rebind matches');
    const rate = (cs: string | undefined) => (SIZE_MIB / (Number(cs) / 100)).toFixed(1);
    t.comment(`guest→host ${rate(kv.get('TX.cs'))} MiB/s, host→guest ${rate(kv.get('RX.cs'))} MiB/s (TCG)`);

    // The back-end's view: GSO super-frames both ways, nothing malformed or too big. Guest TX
    // is measured during the send (only data frames, a few pings and ARPs), guest RX during the
    // receive (only data frames): on average above a full-MTU frame means super-frames.
    t.ok(afterSend, 'counters read between the two directions');
    const m = await cli.metrics();
    const get = (metric: string, from: Map<string, number> | null = m) => from?.get(portMetric(metric, socket)) ?? NaN;
    const txFrames = get('vhost_net_tx_frames_total', afterSend);
    const txBytes = get('vhost_net_tx_bytes_total', afterSend);
    const rxFrames = get('vhost_net_rx_frames_total') - get('vhost_net_rx_frames_total', afterSend);
    const rxBytes = get('vhost_net_rx_bytes_total') - get('vhost_net_rx_bytes_total', afterSend);
    t.comment(`backend: guest send ${txFrames} TX frames / ${txBytes} B, guest receive ${rxFrames} RX frames / ${rxBytes} B, ` +
      `rx dropped ${get('vhost_net_rx_dropped_total')}, tx dropped ${get('vhost_net_tx_dropped_total')}`);
    t.ok(txBytes >= SIZE_MIB * MIB, 'backend carried the guest\'s data');
    t.ok(rxBytes >= SIZE_MIB * MIB, 'backend carried the host\'s data');
    t.ok(txBytes / txFrames > MAX_PLAIN_FRAME, `guest TX used TSO: ${(txBytes / txFrames).toFixed(0)} B per frame on average`);
    t.ok(rxBytes / rxFrames > MAX_PLAIN_FRAME, `guest RX got GSO frames: ${(rxBytes / rxFrames).toFixed(0)} B per frame on average`);
    t.equal(get('vhost_net_tx_malformed_total'), 0, 'no malformed TX header (offload checks accept the guest\'s frames)');
    t.equal(get('vhost_net_rx_too_big_total'), 0, 'no RX frame too big for the guest\'s buffers');

    t.equal(await cli.stop(), 0, 'vhost-user-net exits 0 on SIGTERM');
    t.notOk(existsSync(socket), 'socket file removed');
  }));
}
