/**
 * The few virtio-blk facts the load generator needs (virtio 1.2 §5.2). Kept local so the bench
 * does not depend on the device package it measures.
 *
 * ```
 *  request chain:  [ header 16 B, device-readable ][ data, readable (OUT) or writable (IN) ][ status 1 B, writable ]
 *  header:         le32 type | le32 reserved | le64 sector (512-byte units)
 * ```
 * @module
 */

/** Read (virtio 1.2 §5.2.6). */
export const VIRTIO_BLK_T_IN = 0;
/** Write. */
export const VIRTIO_BLK_T_OUT = 1;
/** Status: success. */
export const VIRTIO_BLK_S_OK = 0;
/** Size of `struct virtio_blk_req`'s header part. */
export const BLK_HEADER_SIZE = 16;
/** Sector size of the `sector` field, whatever the device's block size (virtio 1.2 §5.2.6). */
export const SECTOR_SIZE = 512;

/** Feature bits (virtio 1.2 §5.2.3). */
export const VIRTIO_BLK_F_SIZE_MAX = 1;
export const VIRTIO_BLK_F_SEG_MAX = 2;
export const VIRTIO_BLK_F_BLK_SIZE = 6;
export const VIRTIO_BLK_F_FLUSH = 9;
export const VIRTIO_BLK_F_MQ = 12;

/** Config space offsets (virtio 1.2 §5.2.4). */
export const CFG_CAPACITY = 0; // le64, in 512-byte sectors
export const CFG_SIZE_MAX = 8; // le32
export const CFG_SEG_MAX = 12; // le32
export const CFG_BLK_SIZE = 20; // le32
export const CFG_NUM_QUEUES = 34; // le16
/** Bytes of config read at start (up to and including num_queues). */
export const CFG_READ_LEN = 36;
