// regression (fuzz config-space, seed 20261137): with CONFIG_WCE acked but not FLUSH, a driver
// wrote writeback = 1 and the device switched to a writeback cache it could never be asked to
// flush. virtio 1.2 §5.2.5.2: without FLUSH the device starts (and now stays) writethrough.
import t from 'tap';
import { BLK_CONFIG_WRITEBACK_OFFSET, BlkDevice, MemoryImage, VIRTIO_BLK_F_CONFIG_WCE, VIRTIO_BLK_F_FLUSH } from '../src/index.js';

const bit = (n: number) => 1n << BigInt(n);

t.test('CONFIG_WCE without FLUSH: writeback stays 0 whatever the driver writes', async (t) => {
  const dev = new BlkDevice({ image: new MemoryImage(1 << 16) });
  dev.setFeatures(bit(VIRTIO_BLK_F_CONFIG_WCE));
  t.equal(dev.readConfig(BLK_CONFIG_WRITEBACK_OFFSET, 1)[0], 0, 'writethrough after negotiation');
  t.throws(() => dev.writeConfig(BLK_CONFIG_WRITEBACK_OFFSET, Uint8Array.of(1)), { code: 'config-read-only' }, 'write of 1 refused');
  t.equal(dev.readConfig(BLK_CONFIG_WRITEBACK_OFFSET, 1)[0], 0, 'still writethrough');
  t.equal(dev.writeback, false);
  dev.writeConfig(BLK_CONFIG_WRITEBACK_OFFSET, Uint8Array.of(0));
  t.pass('writing the 0 it has is accepted');
  t.throws(() => dev.writeConfig(23, Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 0, 1)), { code: 'config-read-only' });
  t.equal(dev.readConfig(BLK_CONFIG_WRITEBACK_OFFSET, 1)[0], 0, 'a longer write covering the byte is refused too');
  dev.writeConfig(BLK_CONFIG_WRITEBACK_OFFSET, Uint8Array.of(1), true);
  t.equal(dev.readConfig(BLK_CONFIG_WRITEBACK_OFFSET, 1)[0], 0, 'a migration write cannot enable it either');
});

t.test('CONFIG_WCE with FLUSH: the driver chooses', async (t) => {
  const dev = new BlkDevice({ image: new MemoryImage(1 << 16) });
  dev.setFeatures(bit(VIRTIO_BLK_F_CONFIG_WCE) | bit(VIRTIO_BLK_F_FLUSH));
  t.equal(dev.readConfig(BLK_CONFIG_WRITEBACK_OFFSET, 1)[0], 1, 'writeback after negotiation');
  dev.writeConfig(BLK_CONFIG_WRITEBACK_OFFSET, Uint8Array.of(0));
  t.equal(dev.readConfig(BLK_CONFIG_WRITEBACK_OFFSET, 1)[0], 0, 'driver chose writethrough');
  dev.writeConfig(BLK_CONFIG_WRITEBACK_OFFSET, Uint8Array.of(1));
  t.equal(dev.readConfig(BLK_CONFIG_WRITEBACK_OFFSET, 1)[0], 1, 'and back to writeback');
});
