import t from 'tap';
import {
  BLK_CONFIG_SIZE, BlkDevice, MemoryImage, NullImage, VIRTIO_BLK_F_CONFIG_WCE, VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_MQ, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_ID_BLOCK,
} from '../src/index.js';

const bit = (n: number) => 1n << BigInt(n);

t.test('config space layout (virtio 1.2 §5.2.4), little-endian', async (t) => {
  const dev = new BlkDevice({ image: new NullImage(3 * 2 ** 32 + 1024), numQueues: 4, queueSize: 128, maxDiscardSeg: 8, maxDiscardSectors: 4096 });
  const c = dev.readConfig(0, BLK_CONFIG_SIZE);
  const v = new DataView(c.buffer);
  const capacity = v.getUint32(0, true) + v.getUint32(4, true) * 2 ** 32;
  t.equal(capacity, (3 * 2 ** 32 + 1024) / 512, 'capacity in sectors, 64-bit');
  t.equal(v.getUint32(8, true), 1 << 20, 'size_max');
  t.equal(v.getUint32(12, true), 126, 'seg_max = queue size - 2');
  t.equal(v.getUint32(16, true), 0, 'geometry not offered');
  t.equal(v.getUint32(20, true), 512, 'blk_size');
  t.equal(c[24], 3, 'physical_block_exp');
  t.equal(c[25], 0, 'alignment_offset');
  t.equal(v.getUint16(26, true), 1, 'min_io_size');
  t.equal(v.getUint32(28, true), 0, 'opt_io_size');
  t.equal(c[32], 1, 'writeback');
  t.equal(v.getUint16(34, true), 4, 'num_queues');
  t.equal(v.getUint32(36, true), 4096, 'max_discard_sectors');
  t.equal(v.getUint32(40, true), 8, 'max_discard_seg');
  t.equal(v.getUint32(44, true), 8, 'discard_sector_alignment');
  t.equal(v.getUint32(48, true), 4096, 'max_write_zeroes_sectors');
  t.equal(v.getUint32(52, true), 8, 'max_write_zeroes_seg');
  t.equal(c[56], 1, 'write_zeroes_may_unmap');
  t.same([...dev.readConfig(58, 8)], [0, 0, 0, 0, 0, 0, 0, 0], 'bytes past the end read as 0');
  t.same([...dev.readConfig(34, 2)], [4, 0], 'partial read at an offset');
  t.equal(dev.readConfig(-5, 4).length, 4);
  t.same([...dev.readConfig(-5, 4)], [0, 0, 0, 0]);
  t.equal(dev.readConfig(0, 0).length, 0);
});

t.test('features offered', async (t) => {
  const rw = new BlkDevice({ image: new NullImage(1 << 20) });
  t.equal(rw.deviceType, VIRTIO_ID_BLOCK);
  for (const b of [VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_CONFIG_WCE, VIRTIO_BLK_F_MQ, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES, 1, 2, 6, 10, 28, 29, 32]) {
    t.ok(rw.features & bit(b), `bit ${b} offered`);
  }
  t.notOk(rw.features & bit(VIRTIO_BLK_F_RO));
  t.equal(rw.protocolFeatures, bit(0) | bit(9) | bit(12), 'MQ, CONFIG, INFLIGHT_SHMFD');
  const ro = new BlkDevice({ image: new NullImage(1 << 20, { readOnly: true }) });
  t.ok(ro.features & bit(VIRTIO_BLK_F_RO));
  t.notOk(ro.features & bit(VIRTIO_BLK_F_DISCARD), 'no discard on a read-only disk');
  t.equal(ro.readConfig(36, 4)[0], 0);
});

t.test('writeback is guest-writable only with CONFIG_WCE (virtio 1.2 §5.2.5)', async (t) => {
  const dev = new BlkDevice({ image: new MemoryImage(1 << 20) });
  dev.setFeatures(dev.features);
  dev.writeConfig(32, Uint8Array.of(0));
  t.equal(dev.readConfig(32, 1)[0], 0, 'writethrough');
  t.equal(dev.writeback, false);
  // vhost-user.rst SET_CONFIG: a write touching a read-only field is refused, whole.
  t.throws(() => dev.writeConfig(30, Uint8Array.of(9, 9, 1, 9)), { code: 'config-read-only' }, 'a write spanning read-only bytes');
  t.equal(dev.readConfig(32, 1)[0], 0, 'refused whole: writeback not changed either');
  t.equal(dev.readConfig(30, 1)[0], 0);
  const capacity = dev.readConfig(0, 8);
  t.throws(() => dev.writeConfig(0, Uint8Array.of(1, 2, 3)), { code: 'config-read-only' }, 'capacity');
  t.same(dev.readConfig(0, 8), capacity, 'capacity not written');
  t.throws(() => dev.writeConfig(60, Uint8Array.of(1)), { code: 'config-read-only' }, 'past the structure');
  dev.writeConfig(0, new Uint8Array(0));
  t.pass('an empty write is accepted (nothing to refuse)');
  // A migration destination restoring the source's config: writable bytes set, the rest left.
  dev.writeConfig(0, dev.readConfig(0, 60).map((b, i) => (i === 32 ? 1 : b ^ 0xff)), true);
  t.equal(dev.readConfig(32, 1)[0], 1, 'migration write set writeback');
  t.same(dev.readConfig(0, 8), capacity, 'and left capacity');
  dev.writeConfig(32, Uint8Array.of(0));
  dev.setFeatures(dev.features & ~bit(VIRTIO_BLK_F_CONFIG_WCE));
  t.throws(() => dev.writeConfig(32, Uint8Array.of(1)), { code: 'config-read-only' }, 'refused without CONFIG_WCE');
  t.equal(dev.readConfig(32, 1)[0], 1, 'writeback without CONFIG_WCE (re-negotiated)');
  dev.setFeatures(dev.features & ~bit(VIRTIO_BLK_F_FLUSH));
  t.equal(dev.readConfig(32, 1)[0], 0, 'writethrough without FLUSH');
  dev.setFeatures(dev.features);
  t.equal(dev.readConfig(32, 1)[0], 0, 'FLUSH and CONFIG_WCE acked again: the driver\'s last choice (writethrough)');
  dev.writeConfig(32, Uint8Array.of(1));
  dev.setFeatures(dev.features);
  t.equal(dev.readConfig(32, 1)[0], 1, 'a repeated SET_FEATURES keeps the guest choice');
  dev.writeConfig(32, Uint8Array.of(0));
  dev.reset();
  t.equal(dev.readConfig(32, 1)[0], 0, 'a device reset keeps it (the front-end keeps showing it)');
  dev.attachPersistentState(null);
  dev.reset();
  t.equal(dev.readConfig(32, 1)[0], 0, 'detaching the state (an area without room) keeps it too');
  dev.sessionEnded();
  t.equal(dev.readConfig(32, 1)[0], 1, 'the session\'s end forgets it: writeback');
});

t.test('the driver\'s cache mode is kept in the persistent state for the next back-end', async (t) => {
  const bytes = new Uint8Array(64);
  const first = new BlkDevice({ image: new MemoryImage(1 << 20) });
  first.setFeatures(first.features);
  first.attachPersistentState(bytes);
  t.equal(bytes[4], 0xff, 'a fresh area: no choice made');
  first.writeConfig(32, Uint8Array.of(0));
  t.equal(bytes[4], 0, 'the driver\'s choice is written through');
  first.attachPersistentState(null);
  first.reset();
  first.sessionEnded();
  t.equal(bytes[4], 0, 'detached: a stopping back-end leaves the state alone');
  t.equal(first.writeback, true, 'and, its front-end gone, forgets the choice');
  // QEMU's order after a reconnect: SET_FEATURES, then SET_INFLIGHT_FD.
  const second = new BlkDevice({ image: new MemoryImage(1 << 20) });
  second.setFeatures(second.features);
  t.equal(second.writeback, true);
  second.attachPersistentState(bytes);
  t.equal(second.writeback, false, 'writethrough again, as the driver chose');
  t.equal(second.readConfig(32, 1)[0], 0);
  // The other order: the area first, then the features.
  const third = new BlkDevice({ image: new MemoryImage(1 << 20) });
  third.attachPersistentState(bytes);
  third.setFeatures(third.features);
  t.equal(third.writeback, false, 'the saved choice wins over the default when CONFIG_WCE is acked');
  // Without CONFIG_WCE the mode follows FLUSH alone, and the saved choice is not touched.
  const plainBytes = bytes.slice();
  const plain = new BlkDevice({ image: new MemoryImage(1 << 20) });
  plain.setFeatures(plain.features & ~bit(VIRTIO_BLK_F_CONFIG_WCE));
  plain.attachPersistentState(plainBytes);
  t.equal(plain.writeback, true, 'no CONFIG_WCE: writeback (FLUSH acked), whatever was saved');
  t.equal(plainBytes[4], 0, 'the choice stays saved (only a driver write changes it)');
  // Front-end-controlled bytes: anything but our magic and 0/1 is no state.
  for (const bad of [Uint8Array.of(1, 2, 3, 4, 0), Uint8Array.of(0x76, 0x74, 0x62, 0x6b, 7), new Uint8Array(3)]) {
    const d = new BlkDevice({ image: new MemoryImage(1 << 20) });
    d.setFeatures(d.features);
    const area = new Uint8Array(64);
    area.set(bad);
    d.attachPersistentState(area.subarray(0, Math.max(bad.length, 5)));
    t.equal(d.writeback, true, `garbage [${[...bad].join(',')}] ignored`);
  }
  const noFlush = new BlkDevice({ image: new MemoryImage(1 << 20) });
  noFlush.setFeatures(noFlush.features & ~bit(VIRTIO_BLK_F_FLUSH));
  const saidWriteback = Uint8Array.of(0x76, 0x74, 0x62, 0x6b, 1);
  noFlush.attachPersistentState(saidWriteback);
  t.equal(noFlush.writeback, false, 'a saved writeback never overrides writethrough without FLUSH');
});

t.test('the driver\'s choice survives a device reset (QEMU keeps showing it to the rebooted guest)', async (t) => {
  // QEMU 8.2+ sends RESET_DEVICE on a guest reset; its config copy still says writethrough.
  for (const withArea of [true, false]) {
    const dev = new BlkDevice({ image: new MemoryImage(1 << 20) });
    const bytes = new Uint8Array(64);
    dev.setFeatures(dev.features);
    if (withArea) dev.attachPersistentState(bytes);
    dev.writeConfig(32, Uint8Array.of(0));
    dev.reset();
    t.equal(dev.writeback, false, `after RESET_DEVICE (area ${withArea})`);
    dev.setFeatures(dev.features);
    t.equal(dev.writeback, false, 'and after the next SET_FEATURES');
    dev.setFeatures(dev.features);
    t.equal(dev.writeback, false, 'and a repeated one');
    if (withArea) {
      t.equal(bytes[4], 0, 'the saved choice untouched by the reset');
      const fresh = new Uint8Array(64); // QEMU frees the area on a guest reset: GET_INFLIGHT_FD anew
      dev.attachPersistentState(fresh);
      t.equal(fresh[4], 0, 'a fresh area records the choice');
    }
    dev.writeConfig(32, Uint8Array.of(1));
    t.equal(dev.writeback, true, 'until the driver chooses again');
  }
});

t.test('option validation', async (t) => {
  const image = new NullImage(1 << 20);
  t.throws(() => new BlkDevice({ image, numQueues: 0 }), { code: 'bad-option' });
  t.throws(() => new BlkDevice({ image, numQueues: 17 }), { code: 'bad-option' });
  t.throws(() => new BlkDevice({ image, queueSize: 100 }), { code: 'bad-option' });
  t.throws(() => new BlkDevice({ image, queueSize: 65536 }), { code: 'bad-option' });
  t.throws(() => new BlkDevice({ image: new NullImage(1 << 20, { readOnly: true }), readOnly: false }), { code: 'image-not-writable' });
  t.equal(new BlkDevice({ image, numQueues: 16 }).numQueues, 16);
});

t.test('counters as Prometheus text', async (t) => {
  const dev = new BlkDevice({ image: new NullImage(1 << 20), numQueues: 2 });
  dev.counters[1].requests = 5;
  dev.counters[0].bytesRead = 4096;
  const text = dev.metrics('device="vda"');
  t.match(text, /# TYPE vhost_blk_requests_total counter/);
  t.match(text, /vhost_blk_requests_total\{device="vda",queue="1"\} 5\n/);
  t.match(text, /vhost_blk_read_bytes_total\{device="vda",queue="0"\} 4096\n/);
  t.match(text, /vhost_blk_notifications_suppressed_total\{device="vda",queue="0"\} 0\n/);
  t.equal(dev.stats()[1].requests, 5);
});
