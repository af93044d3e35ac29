/**
 * The virtio-blk configuration space (virtio 1.2 §5.2.4), little-endian:
 *
 * ```
 *  off size field                         off size field
 *   0   8  capacity (512-byte sectors)     32   1  writeback (CONFIG_WCE, guest-writable)
 *   8   4  size_max                        33   1  unused0
 *  12   4  seg_max                         34   2  num_queues
 *  16   2  geometry.cylinders              36   4  max_discard_sectors
 *  18   1  geometry.heads                  40   4  max_discard_seg
 *  19   1  geometry.sectors                44   4  discard_sector_alignment
 *  20   4  blk_size                        48   4  max_write_zeroes_sectors
 *  24   1  topology.physical_block_exp     52   4  max_write_zeroes_seg
 *  25   1  topology.alignment_offset       56   1  write_zeroes_may_unmap
 *  26   2  topology.min_io_size            57   3  unused1
 *  28   4  topology.opt_io_size            60      (end; SECURE_ERASE fields are not offered)
 * ```
 * @module
 */
import { SECTOR_SIZE } from './constants.js';

/** Bytes of config space this device exposes. */
export const BLK_CONFIG_SIZE = 60;
/** Offset of the guest-writable `writeback` byte. */
export const BLK_CONFIG_WRITEBACK_OFFSET = 32;

/** Values of the configuration space; all counts are plain Numbers. */
export interface BlkConfigValues {
  /** Capacity in 512-byte sectors. */
  capacity: number;
  sizeMax: number;
  segMax: number;
  blkSize: number;
  physicalBlockExp: number;
  alignmentOffset: number;
  minIoSize: number;
  optIoSize: number;
  /** 1 = writeback, 0 = writethrough. */
  writeback: number;
  numQueues: number;
  maxDiscardSectors: number;
  maxDiscardSeg: number;
  discardSectorAlignment: number;
  maxWriteZeroesSectors: number;
  maxWriteZeroesSeg: number;
  writeZeroesMayUnmap: number;
}

/** Encodes `v` into a fresh {@link BLK_CONFIG_SIZE}-byte config space image. */
export function encodeBlkConfig(v: BlkConfigValues): Uint8Array {
  const out = new Uint8Array(BLK_CONFIG_SIZE);
  const d = new DataView(out.buffer);
  d.setUint32(0, v.capacity % 0x100000000, true);
  d.setUint32(4, Math.floor(v.capacity / 0x100000000), true);
  d.setUint32(8, v.sizeMax, true);
  d.setUint32(12, v.segMax, true);
  // geometry (16..19) stays 0: VIRTIO_BLK_F_GEOMETRY is not offered.
  d.setUint32(20, v.blkSize, true);
  d.setUint8(24, v.physicalBlockExp);
  d.setUint8(25, v.alignmentOffset);
  d.setUint16(26, v.minIoSize, true);
  d.setUint32(28, v.optIoSize, true);
  d.setUint8(BLK_CONFIG_WRITEBACK_OFFSET, v.writeback);
  d.setUint16(34, v.numQueues, true);
  d.setUint32(36, v.maxDiscardSectors, true);
  d.setUint32(40, v.maxDiscardSeg, true);
  d.setUint32(44, v.discardSectorAlignment, true);
  d.setUint32(48, v.maxWriteZeroesSectors, true);
  d.setUint32(52, v.maxWriteZeroesSeg, true);
  d.setUint8(56, v.writeZeroesMayUnmap);
  return out;
}

/** Capacity in sectors of an image of `bytes` bytes (a trailing partial sector is not exposed). */
export function capacitySectors(bytes: number): number {
  return Math.floor(bytes / SECTOR_SIZE);
}

/**
 * Copies `length` bytes of `config` from `offset`; bytes past the end (or a negative/garbage
 * range) read as 0, as the device interface requires.
 */
export function sliceConfig(config: Uint8Array, offset: number, length: number): Uint8Array {
  const len = Number.isInteger(length) && length > 0 ? Math.min(length, 4096) : 0;
  const out = new Uint8Array(len);
  if (!Number.isInteger(offset) || offset < 0) return out;
  for (let i = 0; i < len && offset + i < config.length; i++) out[i] = config[offset + i];
  return out;
}
