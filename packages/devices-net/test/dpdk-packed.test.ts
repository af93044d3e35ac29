// DPDK interop on packed virtqueues (virtio 1.2 §2.8): dpdk-testpmd's virtio-user PMD with
// packed_vq=1 is the vhost-user frontend; our net device's rings are then PackedQueueDevice.
//  - txonly: every frame testpmd sends is received and counted by our TX path (exact match).
//  - io --tx-first: frames circulate testpmd → loopback → testpmd for the whole run (RX and TX
//    rings both packed, the wrap counters flip thousands of times).
// EAL as in dpdk-testpmd.test.ts: --no-huge -m 256 (memfd-backed memory virtio-user can share).
import t from 'tap';
import { spawn } from 'node:child_process';
import { accessSync, constants, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startNetServer, type NetServer } from '../src/net-server.js';

const TESTPMD = ['/usr/bin/dpdk-testpmd', '/usr/local/bin/dpdk-testpmd'].find((p) => {
  try { accessSync(p, constants.X_OK); return true; } catch { return false; }
});
const e2e = process.env.E2E === '1';
const VIRTIO_F_RING_PACKED = 34n;

interface PortStats { rx: number; tx: number }

async function testpmdPacked(sock: string, fwdArgs: string[], runMs: number, vdevExtra = ',packed_vq=1', descs = 256): Promise<{ port?: PortStats; out: string; code: number | null }> {
  const args = ['-l', '0-1', '--no-huge', '-m', '256', '--no-pci', '--no-shconf', '--no-telemetry',
    '--file-prefix', `vhtsp${process.pid}`, '--vdev', `net_virtio_user0,path=${sock},queues=1${vdevExtra}`,
    '--', ...fwdArgs, `--txd=${descs}`, `--rxd=${descs}`, '--total-num-mbufs=4096'];
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
  const m = /Forward statistics for port 0\s+-+\s+RX-packets:\s+(\d+)\s+RX-dropped:\s+\d+\s+RX-total:\s+\d+\s+TX-packets:\s+(\d+)/.exec(out);
  return { port: m ? { rx: Number(m[1]), tx: Number(m[2]) } : undefined, out, code };
}

/** ORs every feature set the device had acked while `run` ran (a disconnect resets it to 0). */
async function ackedDuring<T>(server: NetServer, run: () => Promise<T>): Promise<[T, bigint]> {
  let seen = 0n;
  const timer = setInterval(() => { seen |= server.devices[0].acked; }, 20);
  try {
    return [await run(), seen];
  } finally {
    clearInterval(timer);
  }
}

async function settle(server: NetServer): Promise<void> {
  await Promise.all(server.servers.map((s) => s.idle()));
}

if (TESTPMD === undefined) {
  if (e2e) t.fail('E2E=1 but dpdk-testpmd is not installed (apt-get install dpdk)');
  else t.skip('dpdk-testpmd not installed (apt-get install dpdk)');
} else {
  const dir = mkdtempSync(join(tmpdir(), 'vhost-net-packed-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const quiet = (): void => {};

  t.test('packed_vq=1 txonly: every frame testpmd sends is received and counted', async (t) => {
    const sock = join(dir, 'tx.sock');
    const server = startNetServer({ socketPaths: [sock], backend: { kind: 'loopback' }, log: quiet });
    t.teardown(() => server.close());
    const [r, acked] = await ackedDuring(server, () => testpmdPacked(sock, ['--forward-mode=txonly'], 2000));
    t.equal(r.code, 0, 'testpmd exited cleanly');
    await settle(server);
    const dev = server.devices[0];
    t.ok((acked >> VIRTIO_F_RING_PACKED) & 1n, `VIRTIO_F_RING_PACKED negotiated (acked 0x${acked.toString(16)})`);
    const p = r.port;
    if (!t.ok(p, 'testpmd printed port statistics')) { t.comment(r.out.slice(-2000)); return; }
    t.ok(p!.tx > 1000, `testpmd sent ${p!.tx} frames`);
    t.equal(dev.counters.txFrames, p!.tx, 'our TX count equals testpmd TX-packets');
    t.equal(dev.counters.txMalformed, 0, 'no frame judged malformed');
  });

  t.test('packed_vq=1 txonly, two segments per frame: DPDK\'s indirect tables (header entry flagged writable) are taken', async (t) => {
    // virtio-user sends a multi-segment mbuf through an indirect table whose every entry it
    // flags device-writable, the net header included; the TX queue reads them (before: the
    // ring broke on the first frame, "readable-after-writable").
    const sock = join(dir, 'txseg.sock');
    const logs: string[] = [];
    const server = startNetServer({ socketPaths: [sock], backend: { kind: 'loopback' }, log: (l) => logs.push(l) });
    t.teardown(() => server.close());
    const r = await testpmdPacked(sock, ['--forward-mode=txonly', '--tx-offloads=0x8000', '--txpkts=1000,514'], 2000);
    t.equal(r.code, 0, 'testpmd exited cleanly');
    await settle(server);
    const dev = server.devices[0];
    const p = r.port;
    if (!t.ok(p, 'testpmd printed port statistics')) { t.comment(r.out.slice(-2000)); return; }
    t.ok(p!.tx > 1000, `testpmd sent ${p!.tx} two-segment frames`);
    t.equal(dev.counters.txFrames, p!.tx, 'our TX count equals testpmd TX-packets');
    t.equal(dev.counters.txMalformed, 0, 'no frame judged malformed');
    t.equal(dev.counters.txBytes, p!.tx * 1514, 'every frame whole: 1000 + 514 bytes');
    t.notOk(logs.some((l) => /broken/.test(l)), 'no ring broken');
  });

  t.test('split rings, testpmd in server mode: a back-end that goes away and comes back is driven again', async (t) => {
    // virtio-user (server=1) keeps its rings when the back-end reconnects and restarts them
    // with SET_VRING_BASE 0; the new back-end resumes at used.idx (before: avail-index-jump,
    // ring broken, nothing more transmitted).
    const sock = join(dir, 'srv.sock');
    const logs: string[] = [];
    const run = testpmdPacked(sock, ['--forward-mode=txonly'], 6000, ',server=1');
    const up = Date.now() + 10_000;
    while (!existsSync(sock) && Date.now() < up) await new Promise((r) => setTimeout(r, 50));
    const first = startNetServer({ socketPaths: [sock], backend: { kind: 'loopback' }, client: true, log: (l) => logs.push(l) });
    const busy = Date.now() + 10_000;
    while (first.devices[0].counters.txFrames < 1000 && Date.now() < busy) await new Promise((r) => setTimeout(r, 50));
    t.ok(first.devices[0].counters.txFrames >= 1000, `first back-end took ${first.devices[0].counters.txFrames} frames`);
    await first.close();
    const second = startNetServer({ socketPaths: [sock], backend: { kind: 'loopback' }, client: true, log: (l) => logs.push(l) });
    t.teardown(() => second.close());
    const again = Date.now() + 10_000;
    while (second.devices[0].counters.txFrames < 1000 && Date.now() < again) await new Promise((r) => setTimeout(r, 50));
    t.ok(second.devices[0].counters.txFrames >= 1000, `the second back-end took ${second.devices[0].counters.txFrames} frames`);
    t.notOk(logs.some((l) => /broken/.test(l)), 'no ring broken');
    t.ok(logs.some((l) => /SET_VRING_BASE 0 but used\.idx is \d+: resuming at used\.idx/.test(l)), 'the reconnect restarted the rings from 0');
    const r = await run;
    t.equal(r.code, 0, 'testpmd exited cleanly');
  });

  t.test('packed_vq=1 with 200-entry rings (not a power of two, virtio 1.2 §2.8): frames circulate', async (t) => {
    const sock = join(dir, 'q200.sock');
    const server = startNetServer({ socketPaths: [sock], backend: { kind: 'loopback' }, log: quiet });
    t.teardown(() => server.close());
    const r = await testpmdPacked(sock, ['--forward-mode=io', '--tx-first'], 2000, ',packed_vq=1,queue_size=200', 200);
    t.equal(r.code, 0, 'testpmd exited cleanly');
    await settle(server);
    const p = r.port;
    if (!t.ok(p, 'port statistics')) { t.comment(r.out.slice(-2000)); return; }
    t.ok(p!.rx > 1000, `testpmd received ${p!.rx}`);
    t.equal(server.devices[0].counters.txFrames, p!.tx, 'we took every frame testpmd sent');
  });

  t.test('packed_vq=1 io --tx-first: frames circulate testpmd ⇄ loopback', async (t) => {
    const sock = join(dir, 'io.sock');
    const server = startNetServer({ socketPaths: [sock], backend: { kind: 'loopback' }, log: quiet });
    t.teardown(() => server.close());
    const [r, acked] = await ackedDuring(server, () => testpmdPacked(sock, ['--forward-mode=io', '--tx-first'], 2000));
    t.equal(r.code, 0, 'testpmd exited cleanly');
    await settle(server);
    const dev = server.devices[0];
    t.ok((acked >> VIRTIO_F_RING_PACKED) & 1n, `VIRTIO_F_RING_PACKED negotiated (acked 0x${acked.toString(16)})`);
    const p = r.port;
    if (!t.ok(p, 'port statistics')) { t.comment(r.out.slice(-2000)); return; }
    t.ok(p!.rx > 1000, `testpmd received ${p!.rx} (ring size 256: many laps of both wrap counters)`);
    t.ok(dev.counters.rxFrames >= p!.rx, `we delivered ${dev.counters.rxFrames} ≥ ${p!.rx}`);
    t.equal(dev.counters.txFrames, p!.tx, 'we took every frame testpmd sent');
  });
}
