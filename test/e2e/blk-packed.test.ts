/**
 * vhost-user-blk on packed virtqueues (VIRTIO_F_RING_PACKED, virtio 1.2 §2.8), end to end: a
 * Linux guest (QEMU TCG, `vhost-user-blk-pci,...,packed=on`) drives the vhost-ts backend, whose
 * rings are then PackedQueueDevice.
 *
 * One boot: vda is the backend under test (2 queues, 2 vCPUs), vdb QEMU's own virtio-blk with
 * the pattern source. Checked: the guest negotiated RING_PACKED; O_DIRECT and buffered pattern
 * writes read back two ways; FLUSH; both queues completed requests; a driver unbind/bind (QEMU
 * stops the rings with GET_VRING_BASE — the packed 32-bit encoding — and restarts them) keeps
 * data and I/O working; the image file holds exactly what the guest wrote.
 */
import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { abortOnExit, findVhostTsBlkCli, makeWorkDir, startBlkBackend, type Backend } from './src/backends.js';
import { defaultPlan, expectedImage, firstDifference, patternBytes, patternScript, sha256, SRC_SIZE } from './src/blk-checks.js';
import { detectEnv, e2eTest } from './src/env.js';
import { buildInitramfs } from './src/initramfs.js';
import { parseKeyValues, runGuest } from './src/qemu.js';

const MiB = 1024 * 1024;
const NUM_QUEUES = 2;
const SIZE = 16 * MiB;
const VIRTIO_F_RING_PACKED = 34;
const VIRTIO_F_VERSION_1 = 32;

function guestScript(plan: ReturnType<typeof defaultPlan>): string {
  return [
    'echo "P.size=$(cat /sys/block/vda/size)"',
    'echo "P.features=$(cat /sys/block/vda/device/features)"',
    'echo "P.queues=$(ls /sys/block/vda/mq | wc -l)"',
    'echo "write back" > /sys/block/vda/queue/write_cache',
    'echo "SRC.size=$(cat /sys/block/vdb/size)"',
    patternScript(plan, '/dev/vda', '/dev/vdb'),
    'dd if=/dev/zero of=/dev/vda count=0 conv=notrunc,fsync status=none; echo "P.flush_rc=$?"',
    'V=$(basename $(readlink /sys/block/vda/device))',
    'grep "$V-req\\." /proc/interrupts | awk -v n=$(nproc) \'{ s = 0; for (i = 2; i <= n + 1; i++) s += $i; q = $NF; sub(/.*req\\./, "", q); print "P.irq.q" q "=" s }\'',
    // Reset and re-initialisation on packed rings: GET_VRING_BASE / SET_VRING_BASE round trip.
    'echo $V > /sys/bus/virtio/drivers/virtio_blk/unbind; echo "P.unbind_rc=$?"',
    'echo $V > /sys/bus/virtio/drivers/virtio_blk/bind; echo "P.bind_rc=$?"',
    'i=0; while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done',
    `echo "P.rebind_read=$(dd if=/dev/vda bs=${plan[3].length} count=1 skip=${plan[3].offset} iflag=skip_bytes,direct status=none | sha256sum | cut -d" " -f1)"`,
    'true',
  ].join('\n');
}

const env = detectEnv();

if (findVhostTsBlkCli() === null) {
  t.fail('vhost-user-blk CLI not found (packages/devices-blk/src/cli.ts or dist/cli.js)');
} else {
  t.test('vhost-user-blk on packed virtqueues (packed=on)', async (t) => {
    await e2eTest(t, 'guest run', { needs: ['qemu', 'kernel', 'busybox'], pendingReason: null }, async (t) => {
      const work = makeWorkDir();
      t.teardown(work.cleanup);
      const seed = `blk-packed-${Date.now()}`;
      t.comment(`pattern seed: ${seed}`);
      const image = join(work.dir, 'packed.img');
      const srcImage = join(work.dir, 'src.img');
      const initial = patternBytes(`${seed}/img`, SIZE);
      const src = patternBytes(`${seed}/src`, SRC_SIZE);
      writeFileSync(image, initial);
      writeFileSync(srcImage, src);
      const plan = defaultPlan(SIZE);
      const initrd = buildInitramfs({ kernel: env.kernel!, busybox: env.busybox!, script: guestScript(plan) });

      const backends: Backend[] = [];
      t.teardown(async () => { await Promise.all(backends.map((b) => b.stop())); });
      const be = await startBlkBackend('vhost-ts', { image, socket: join(work.dir, 'packed.sock'), numQueues: NUM_QUEUES });
      backends.push(be);

      const r = await runGuest({
        kernel: env.kernel!,
        initrd,
        smp: 2,
        blkDisks: [{ socket: be.socket, numQueues: NUM_QUEUES, packed: true }],
        rawDisks: [{ path: srcImage }],
        signal: abortOnExit(backends),
      }).catch((err: unknown) => {
        t.comment(`backend logs:\n${be.logs().slice(-3000)}`);
        throw err;
      });
      t.comment(`guest ran ${r.durationMs} ms`);
      const diag = { output: r.output, logs: be.logs().slice(-2000) };
      t.same(r.insmodFailures, [], 'all modules loaded');
      t.equal(r.rc, 0, 'guest script completed', diag);
      const kv = parseKeyValues(r.output);
      t.equal(kv.get('SRC.size'), String(SRC_SIZE / 512), 'vdb is the pattern source');
      const features = kv.get('P.features') ?? '';
      t.comment(`negotiated features ${features}`);
      t.equal(features[VIRTIO_F_RING_PACKED], '1', 'VIRTIO_F_RING_PACKED negotiated (the rings are packed)');
      t.equal(features[VIRTIO_F_VERSION_1], '1', 'VIRTIO_F_VERSION_1 negotiated');
      t.equal(kv.get('P.size'), String(SIZE / 512), 'capacity');
      t.equal(kv.get('P.queues'), String(NUM_QUEUES), 'two hardware queues');
      for (let q = 0; q < NUM_QUEUES; q++) {
        t.ok(Number(kv.get(`P.irq.q${q}`) ?? 0) > 0, `packed virtqueue ${q} completed requests (${kv.get(`P.irq.q${q}`)} interrupts)`);
      }
      plan.forEach((w, i) => {
        const want = sha256(src.subarray(w.srcOffset, w.srcOffset + w.length));
        t.equal(kv.get(`W${i}.rc`), '0', `write ${i} (${w.mode} @${w.offset}+${w.length}) succeeded`);
        t.equal(kv.get(`W${i}.direct`), want, `write ${i}: O_DIRECT read-back matches`);
        t.equal(kv.get(`W${i}.cached`), want, `write ${i}: buffered read-back matches`);
      });
      t.equal(kv.get('P.flush_rc'), '0', 'FLUSH succeeded');
      t.equal(kv.get('P.unbind_rc'), '0', 'driver unbound (device reset)');
      t.equal(kv.get('P.bind_rc'), '0', 'driver bound again');
      t.equal(kv.get('P.rebind_read'), sha256(src.subarray(plan[3].srcOffset, plan[3].srcOffset + plan[3].length)), 'data reads back on the restarted packed rings');
      t.notMatch(be.logs(), /broken/, 'no ring broke', diag);

      await be.stop();
      t.equal(firstDifference(readFileSync(image), expectedImage(initial, src, plan)), null, 'image holds exactly the guest\'s writes');
    });
  });
}
