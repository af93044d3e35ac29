/**
 * Two Linux guests (two QEMU processes) on ONE `vhost-user-net --switch` process, one socket
 * each: every frame between them goes guest A's TX ring → our device → the in-process learning
 * switch → guest B's RX ring, with no kernel in between. Each guest has its own MAC and IP;
 * they wait for each other (boots under TCG are not in step), ping each other both ways (also
 * with 9000-byte jumbo packets: the switch runs with --mtu 9000), and A sends B a few MiB over
 * TCP with busybox `nc` (SHA-256 compared). The back-end's counters must
 * agree: A's TX frames reached B's RX and back, nothing malformed, and the switch learned both
 * MACs and forwarded the traffic as known unicast rather than flooding it.
 */
import t from 'tap';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { makeWorkDir } from './src/backends.js';
import { detectEnv, e2eTest } from './src/env.js';
import { buildInitramfs, NET_MODULES } from './src/initramfs.js';
import { portMetric, startNetCli } from './src/net-rig.js';
import { parseKeyValues, runGuest } from './src/qemu.js';

const PINGS = 5;
/** Jumbo frames: every TCP segment then spans several of Linux's mergeable RX buffers. */
const MTU = 9000;
const VIRTIO_NET_F_MTU = 3;
const NC_MIB = 4;
const NC_PORT = 5000;
/** Guest boots are up to tens of seconds apart under TCG on a loaded host; each try takes ~1 s. */
const WAIT_TRIES = 180;

interface Side {
  readonly name: 'A' | 'B';
  readonly mac: string;
  readonly ip: string;
  readonly peerIp: string;
}

const A: Side = { name: 'A', mac: '52:54:00:e2:e3:01', ip: '10.0.3.1', peerIp: '10.0.3.2' };
// The CLI gives port i the first MAC with the last byte + i.
const B: Side = { name: 'B', mac: '52:54:00:e2:e3:02', ip: '10.0.3.2', peerIp: '10.0.3.1' };

function script(s: Side): string {
  const common = `
ip link set eth0 up
ip addr add ${s.ip}/24 dev eth0
echo "MAC=$(cat /sys/class/net/eth0/address)"
echo "FEATURES=$(cat /sys/class/net/eth0/device/features)"
i=0
until ping -c 1 -W 1 ${s.peerIp} > /dev/null 2>&1; do
  i=$((i + 1))
  if [ $i -ge ${WAIT_TRIES} ]; then break; fi
done
echo "WAITED=$i"
ping -c ${PINGS} -i 0.2 -W 5 ${s.peerIp}
echo "PING.rc=$?"
echo "MTU=$(cat /sys/class/net/eth0/mtu)"
ping -c 3 -s ${MTU - 28} -W 5 ${s.peerIp}
echo "PINGMTU.rc=$?"
echo "NEIGH=$(ip neigh show ${s.peerIp})"
`;
  if (s.name === 'A') {
    // Sender. nc fails fast (connection refused) until B listens; B listens only after its own
    // pings to A are done, so A cannot power off under them.
    return common + `
dd if=/dev/urandom of=/tmp/tx bs=1M count=${NC_MIB} 2>/dev/null
echo "TX.sha256=$(sha256sum /tmp/tx | cut -d' ' -f1)"
n=0
until nc ${s.peerIp} ${NC_PORT} < /tmp/tx; do
  n=$((n + 1))
  if [ $n -ge 60 ]; then break; fi
  sleep 1
done
echo "NC.tries=$n"
`;
  }
  // Receiver. busybox nc exits when its peer half-closes, and a listener whose stdin hits EOF
  // half-closes at once — so stdin is a FIFO this shell holds open: no EOF, and nc ends when
  // A's stream does.
  return common + `
mkfifo /tmp/hold
exec 3<>/tmp/hold
timeout 180 nc -l -p ${NC_PORT} < /tmp/hold > /tmp/rx
echo "NC.rc=$?"
echo "RX.bytes=$(stat -c %s /tmp/rx)"
echo "RX.sha256=$(sha256sum /tmp/rx | cut -d' ' -f1)"
`;
}

// tap's default file timeout is 120 s; the subtest below has its own, longer limit.
t.setTimeout(480_000 + 60_000);

t.test('two guests on one vhost-user-net --switch: ping both ways and a TCP transfer', (t) =>
  e2eTest(t, 'two guests on the switch', { needs: ['qemu', 'kernel', 'busybox'], timeout: 480_000 }, async (t) => {
    const env = detectEnv();
    const work = makeWorkDir('vte2e-sw-');
    t.teardown(work.cleanup);
    const sockA = join(work.dir, 'a.sock');
    const sockB = join(work.dir, 'b.sock');
    const cli = await startNetCli(['--socket-path', sockA, '--socket-path', sockB, '--switch', '--mac', A.mac, '--mtu', String(MTU)], [sockA, sockB]);
    t.teardown(() => cli.stop());
    const abort = new AbortController();
    cli.process.once('exit', () => abort.abort(new Error(`vhost-user-net exited:\n${cli.logs().slice(-2000)}`)));

    const boot = (s: Side, socket: string) => runGuest({
      kernel: env.kernel!,
      initrd: buildInitramfs({ kernel: env.kernel!, busybox: env.busybox!, modules: NET_MODULES, script: script(s) }),
      // QEMU 7.2 builds the virtio-net config space itself (the back-end's GET_CONFIG is used for
      // vDPA only): the guest sees MTU 9000 and VIRTIO_NET_F_MTU only with host_mtu= set.
      netDevs: [{ socket, mac: s.mac, deviceProps: `host_mtu=${MTU}` }],
      signal: abort.signal,
      timeoutMs: 420_000,
    });
    // Both at once: each waits for the other on the network.
    const [ra, rb] = await Promise.all([boot(A, sockA), boot(B, sockB)]);
    t.comment(`guest A ran ${ra.durationMs} ms, guest B ${rb.durationMs} ms`);
    const backend = cli.logs().slice(-2000);

    for (const [s, r] of [[A, ra], [B, rb]] as const) {
      const kv = parseKeyValues(r.output);
      t.equal(r.rc, 0, `guest ${s.name}: script completed`, { output: r.output, backend });
      t.equal(kv.get('MAC'), s.mac, `guest ${s.name}: its own MAC`);
      t.equal((kv.get('FEATURES') ?? '')[VIRTIO_NET_F_MTU], '1', `guest ${s.name}: VIRTIO_NET_F_MTU negotiated`);
      t.equal((kv.get('FEATURES') ?? '')[0], '0', `guest ${s.name}: no CSUM offload offered by the switch`);
      t.ok(Number(kv.get('WAITED')) < WAIT_TRIES, `guest ${s.name} reached its peer (after ${kv.get('WAITED')} tries)`, { output: r.output });
      t.equal(kv.get('PING.rc'), '0', `guest ${s.name} → ${s.peerIp}: ping answered`, { output: r.output });
      t.match(r.output, new RegExp(`${PINGS} packets transmitted, ${PINGS} packets received`), `guest ${s.name}: no ping lost`);
      t.equal(kv.get('MTU'), String(MTU), `guest ${s.name}: MTU ${MTU}`);
      t.equal(kv.get('PINGMTU.rc'), '0', `guest ${s.name}: ${MTU}-byte IP packets answered`, { output: r.output });
      t.match(r.output, /3 packets transmitted, 3 packets received/, `guest ${s.name}: no jumbo ping lost`);
      const peer = s === A ? B : A;
      t.match(kv.get('NEIGH') ?? '', new RegExp(`lladdr ${peer.mac}`), `guest ${s.name} resolved the peer's MAC (ARP through the switch)`);
    }

    const kvA = parseKeyValues(ra.output);
    const kvB = parseKeyValues(rb.output);
    t.equal(kvB.get('NC.rc'), '0', 'B: nc listener exited 0', { output: rb.output });
    t.equal(kvB.get('RX.bytes'), String(NC_MIB << 20), `B received ${NC_MIB} MiB`);
    t.equal(kvB.get('RX.sha256'), kvA.get('TX.sha256'), 'SHA-256 of A → B data matches');

    const m = await cli.metrics({ also: ['vhost_net_switch_mac_entries'] });
    const port = (metric: string, socket: string) => m.get(portMetric(metric, socket)) ?? NaN;
    const txA = port('vhost_net_tx_frames_total', sockA);
    const rxA = port('vhost_net_rx_frames_total', sockA);
    const txB = port('vhost_net_tx_frames_total', sockB);
    const rxB = port('vhost_net_rx_frames_total', sockB);
    const unicast = m.get('vhost_net_switch_unicast_total') ?? NaN;
    const flooded = m.get('vhost_net_switch_flooded_total') ?? NaN;
    t.comment(`A: tx ${txA} rx ${rxA}; B: tx ${txB} rx ${rxB}; switch unicast ${unicast} flooded ${flooded}`);
    t.ok(txA >= PINGS && rxB >= PINGS, 'frames from A reached B');
    t.ok(txB >= PINGS && rxA >= PINGS, 'frames from B reached A');
    t.ok(port('vhost_net_rx_bytes_total', sockB) >= NC_MIB << 20, 'B\'s RX carried the TCP stream');
    for (const s of [sockA, sockB]) {
      t.equal(port('vhost_net_tx_malformed_total', s), 0, `${s === sockA ? 'A' : 'B'}: no malformed TX`);
      t.equal(port('vhost_net_rx_too_big_total', s), 0, `${s === sockA ? 'A' : 'B'}: no RX frame too big`);
    }
    // Only two ports: whatever is not flooded is known unicast to the other guest. A's early
    // pings (B not booted) and ARP broadcasts flood; the TCP stream must not.
    t.ok(unicast > flooded, `learned MACs forward as unicast (${unicast} unicast vs ${flooded} flooded)`);
    // 4 MiB in 8948-byte segments ≈ 470 data frames plus B's ACKs.
    t.ok(unicast >= (NC_MIB << 20) / (MTU - 52), 'the TCP stream went unicast');
    t.ok(port('vhost_net_rx_bytes_total', sockB) / rxB > 1514, 'B received frames larger than 1500-byte MTU ones on average');
    t.equal(m.get('vhost_net_switch_mac_entries'), 2, 'the switch learned exactly the two guests\' MACs');
    t.equal(m.get('vhost_net_switch_hairpin_dropped_total'), 0, 'no frame sent back to its own port');

    t.equal(await cli.stop(), 0, 'vhost-user-net exits 0 on SIGTERM');
    t.notOk(existsSync(sockA) || existsSync(sockB), 'socket files removed');
  }));
