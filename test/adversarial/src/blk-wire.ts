/**
 * virtio-blk on the wire, written from the spec (virtio 1.2 §5.2.6) rather than imported from
 * the device under test, so a constant both sides got wrong cannot hide a bug.
 * @module
 */

/** Request types (virtio 1.2 §5.2.6). */
export const VIRTIO_BLK_T_IN = 0;
export const VIRTIO_BLK_T_OUT = 1;
export const VIRTIO_BLK_T_FLUSH = 4;
export const VIRTIO_BLK_T_GET_ID = 8;
export const VIRTIO_BLK_T_DISCARD = 11;
export const VIRTIO_BLK_T_WRITE_ZEROES = 13;

/** Status values (virtio 1.2 §5.2.6). */
export const VIRTIO_BLK_S_OK = 0;
export const VIRTIO_BLK_S_IOERR = 1;
export const VIRTIO_BLK_S_UNSUPP = 2;

/** VIRTIO_BLK_F_* / ring feature bits the suite masks. */
export const VIRTIO_RING_F_INDIRECT_DESC = 28;

/** Header: type u32, reserved u32, sector u64 (little-endian). */
export const BLK_HEADER_BYTES = 16;
export const SECTOR_BYTES = 512;

/** Encodes a request header; `sector` as a bigint so any 64-bit value can be sent. */
export function blkHeader(type: number, sector: bigint | number): Uint8Array {
  const b = new Uint8Array(BLK_HEADER_BYTES);
  const v = new DataView(b.buffer);
  v.setUint32(0, type >>> 0, true);
  v.setUint32(4, 0, true);
  v.setBigUint64(8, BigInt.asUintN(64, BigInt(sector)), true);
  return b;
}

/** One discard / write-zeroes range: sector u64, num_sectors u32, flags u32. */
export function blkRange(sector: bigint | number, numSectors: number, flags: number): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, BigInt.asUintN(64, BigInt(sector)), true);
  v.setUint32(8, numSectors >>> 0, true);
  v.setUint32(12, flags >>> 0, true);
  return b;
}

/** Deterministic bytes for data buffers (`seed` tells writes apart). */
export function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}
