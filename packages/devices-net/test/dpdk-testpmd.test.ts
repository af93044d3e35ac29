// DPDK interop: dpdk-testpmd's virtio-user PMD is the vhost-user FRONTEND against our backend.
//  - txonly: every frame testpmd sends is received and counted by our TX path (exact match).
//  - rxonly --tx-first: one burst goes out, our loopback returns it, testpmd receives all of it.
//  - io --tx-first: frames circulate testpmd → loopback → testpmd for the whole run.
//  - io --tx-first with two ports joined by our switch.
// EAL runs with --no-huge -m 256: DPDK 22.11 then backs its memory with memfd, which
// virtio-user can share over vhost-user, so no hugetlbfs mount or nr_hugepages is needed.
import t from 'tap';
import { spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VIRTIO_F_IN_ORDER } from '@vhost-ts/virtqueue';
import { bit } from '../src/constants.js';
import { startNetServer, type NetServer } from '../src/net-server.js';

const TESTPMD = ['/usr/bin/dpdk-testpmd', '/usr/local/bin/dpdk-testpmd'].find((p) => {
  try { accessSync(p, constants.X_OK); return true; } catch { return false; }
});
const e2e = process.env.E2E === '1';

interface PortStats { rx: number; tx: number; txDropped: number }

/** Runs testpmd for `runMs`, then presses enter; returns per-port forward statistics. */
async function testpmd(sockets: string[], fwdArgs: string[], runMs: number): Promise<{ ports: PortStats[]; out: string; code: number | null }> {
  const vdevs = sockets.flatMap((s, i) => ['--vdev', `net_virtio_user${i},path=${s},queues=1`]);
  const args = ['-l', '0-1', '--no-huge', '-m', '256', '--no-pci', '--no-shconf', '--no-telemetry',
    '--file-prefix', `vhts${process.pid}`, ...vdevs, '--', ...fwdArgs, '--txd=256', '--rxd=256', '--total-num-mbufs=4096'];
  const child = spawn(TESTPMD!, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const press = setTimeout(() => child.stdin.end('\n'), runMs);
  const kill = setTimeout(() => child.kill('SIGKILL'), runMs + 15_000);
  const code = await exited;
  clearTimeout(press);
  clearTimeout(kill);
  const ports: PortStats[] = [];
  const re = /Forward statistics for port (\d+)\s+-+\s+RX-packets:\s+(\d+)\s+RX-dropped:\s+\d+\s+RX-total:\s+\d+\s+TX-packets:\s+(\d+)\s+TX-dropped:\s+(\d+)/g;
  for (const m of out.matchAll(re)) ports[Number(m[1])] = { rx: Number(m[2]), tx: Number(m[3]), txDropped: Number(m[4]) };
  return { ports, out, code };
}

async function settle(server: NetServer): Promise<void> {
  // testpmd stopped the rings before exiting; wait for our side of the session to end.
  await Promise.all(server.servers.map((s) => s.idle()));
}

if (TESTPMD === undefined) {
  if (e2e) t.fail('E2E=1 but dpdk-testpmd is not installed (apt-get install dpdk)');
  else t.skip('dpdk-testpmd not installed (apt-get install dpdk)');
} else {
  const dir = mkdtempSync(join(tmpdir(), 'vhost-net-dpdk-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const quiet = () => {};

  t.test('txonly: every frame testpmd sends is received and counted', async (t) => {
    const sock = join(dir, 'tx.sock');
    const server = startNetServer({ socketPaths: [sock], backend: { kind: 'loopback' }, log: quiet });
    t.teardown(() => server.close());
    // The session's acked features are cleared when it ends: sample them while testpmd runs.
    let inOrder = false;
    const probe = setInterval(() => { if ((server.devices[0].acked & bit(VIRTIO_F_IN_ORDER)) !== 0n) inOrder = true; }, 10);
    const r = await testpmd([sock], ['--forward-mode=txonly'], 2000);
    clearInterval(probe);
    t.equal(r.code, 0, 'testpmd exited cleanly');
    t.ok(inOrder, 'virtio-user acked VIRTIO_F_IN_ORDER (its in-order TX path ran against us)');
    await settle(server);
    const p = r.ports[0];
    t.ok(p, 'testpmd printed port statistics') || t.comment(r.out.slice(-2000));
    const c = server.devices[0].counters;
    t.ok(p.tx > 1000, `testpmd sent ${p.tx} frames`);
    t.equal(c.txFrames, p.tx, 'our TX count equals testpmd TX-packets');
    t.equal(c.txMalformed, 0, 'no frame judged malformed');
    t.equal(c.txBytes, p.tx * 64, 'txonly frames are 64 bytes (without CRC)');
  });

  t.test('rxonly --tx-first: the burst our loopback returns is received by testpmd', async (t) => {
    const sock = join(dir, 'rx.sock');
    const server = startNetServer({ socketPaths: [sock], backend: { kind: 'loopback' }, log: quiet });
    t.teardown(() => server.close());
    const r = await testpmd([sock], ['--forward-mode=rxonly', '--tx-first'], 1500);
    t.equal(r.code, 0);
    await settle(server);
    const p = r.ports[0];
    t.ok(p, 'port statistics') || t.comment(r.out.slice(-2000));
    t.ok(p.tx > 0, `burst of ${p.tx}`);
    t.equal(p.rx, p.tx, 'every frame came back');
    t.equal(server.devices[0].counters.rxFrames, p.rx, 'our RX count matches');
  });

  t.test('io --tx-first: frames circulate testpmd ⇄ loopback', async (t) => {
    const sock = join(dir, 'io.sock');
    const server = startNetServer({ socketPaths: [sock], backend: { kind: 'loopback' }, log: quiet });
    t.teardown(() => server.close());
    const r = await testpmd([sock], ['--forward-mode=io', '--tx-first'], 2000);
    t.equal(r.code, 0);
    await settle(server);
    const p = r.ports[0];
    t.ok(p, 'port statistics') || t.comment(r.out.slice(-2000));
    t.ok(p.rx > 1000, `testpmd received ${p.rx}`);
    const c = server.devices[0].counters;
    t.ok(c.rxFrames >= p.rx, `we delivered ${c.rxFrames} ≥ ${p.rx}`);
    t.equal(c.txFrames, p.tx, 'we took every frame testpmd sent');
  });

  t.test('two testpmd ports joined by our switch (io --tx-first)', async (t) => {
    const a = join(dir, 'sw-a.sock');
    const b = join(dir, 'sw-b.sock');
    const server = startNetServer({ socketPaths: [a, b], backend: { kind: 'switch' }, log: quiet });
    t.teardown(() => server.close());
    const r = await testpmd([a, b], ['--forward-mode=io', '--tx-first'], 2000);
    t.equal(r.code, 0);
    await settle(server);
    t.equal(r.ports.length, 2, 'two ports') || t.comment(r.out.slice(-2000));
    t.ok(r.ports[0].rx > 100 && r.ports[1].rx > 100, `port rx ${r.ports[0].rx} / ${r.ports[1].rx}`);
    const [da, db] = server.devices;
    t.equal(da.counters.txFrames, r.ports[0].tx, 'switch port A took all of port 0 TX');
    t.equal(db.counters.txFrames, r.ports[1].tx, 'switch port B took all of port 1 TX');
    t.ok(db.counters.rxFrames >= r.ports[1].rx, 'frames crossed A → B');
  });
}
