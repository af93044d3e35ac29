/**
 * Declarative wire layouts of the vhost-user control-plane structs (buffer-layout).
 *
 * 64-bit fields come in two flavours: {@link addr64} decodes to a Number and rejects values
 * ≥ 2^53 (addresses, sizes, offsets — the rest of the stack keeps addresses as Numbers);
 * {@link big64} decodes to a bigint (feature masks, opaque u64 payloads).
 *
 * ```
 *  header (12)          vring state (8)     vring addr (40)
 *  +---------+-------+------+  +-------+-----+  +-------+-------+------+------+-------+-----+
 *  | request | flags | size |  | index | num |  | index | flags | desc | used | avail | log |
 *  +---------+-------+------+  +-------+-----+  +-------+-------+------+------+-------+-----+
 *     u32       u32     u32      u32     u32      u32     u32    u64    u64    u64    u64
 *
 *  memory region (32)                                  memory table (8 + n*32, n <= 8)
 *  +---------------+------+--------------+-------------+  +-------------+---------+---------+---
 *  | guest address | size | user address | mmap offset |  | num regions | padding | region0 | ...
 *  +---------------+------+--------------+-------------+  +-------------+---------+---------+---
 * ```
 * @module
 */
import { Layout, blob, struct, u16, u32, u8 } from 'buffer-layout';
import { ProtocolError } from '../errors.js';

const TWO_32 = 0x1_0000_0000;
/** Highest value the high word of a safe 64-bit number may hold (2^53 = 2^21 · 2^32). */
const MAX_SAFE_HI = 0x1f_ffff;

/** Unsigned 64-bit little-endian field decoded as a Number; ≥ 2^53 is a {@link ProtocolError}. */
class SafeU64 extends Layout<number> {
  constructor(property?: string) {
    super(8, property);
  }
  override decode(b: Buffer, offset = 0): number {
    const lo = b.readUInt32LE(offset);
    const hi = b.readUInt32LE(offset + 4);
    if (hi > MAX_SAFE_HI) {
      throw new ProtocolError('ADDRESS_RANGE', `64-bit field ${this.property ?? ''} is >= 2^53`);
    }
    return hi * TWO_32 + lo;
  }
  override encode(src: number, b: Buffer, offset = 0): number {
    if (!Number.isSafeInteger(src) || src < 0) {
      throw new ProtocolError('ADDRESS_RANGE', `cannot encode ${src} as a 64-bit address`);
    }
    b.writeUInt32LE(src % TWO_32, offset);
    b.writeUInt32LE(Math.floor(src / TWO_32), offset + 4);
    return 8;
  }
}

/** Unsigned 64-bit little-endian field decoded as a bigint. */
class BigU64 extends Layout<bigint> {
  constructor(property?: string) {
    super(8, property);
  }
  override decode(b: Buffer, offset = 0): bigint {
    return b.readBigUInt64LE(offset);
  }
  override encode(src: bigint, b: Buffer, offset = 0): number {
    b.writeBigUInt64LE(BigInt.asUintN(64, src), offset);
    return 8;
  }
}

/** A 64-bit address/size/offset field (Number, < 2^53). */
export function addr64(property?: string): Layout<number> {
  return new SafeU64(property);
}
/** A 64-bit opaque field (bigint). */
export function big64(property?: string): Layout<bigint> {
  return new BigU64(property);
}

/** Message header. */
export const headerLayout = struct<{ request: number; flags: number; size: number }>([
  u32('request'), u32('flags'), u32('size'),
]);
/** A single u64 payload. */
export const u64Layout = struct<{ value: bigint }>([big64('value')]);
/** `struct vhost_vring_state`. */
export const vringStateLayout = struct<{ index: number; num: number }>([u32('index'), u32('num')]);
/** `struct vhost_vring_addr`. */
export const vringAddrLayout = struct<{
  index: number; flags: number; descUserAddr: number; usedUserAddr: number; availUserAddr: number; logGuestAddr: number;
}>([
  u32('index'), u32('flags'),
  addr64('descUserAddr'), addr64('usedUserAddr'), addr64('availUserAddr'), addr64('logGuestAddr'),
]);
/** `VhostUserMemoryRegion`. */
export const memoryRegionLayout = struct<{ guestPhysAddr: number; size: number; userAddr: number; mmapOffset: number }>([
  addr64('guestPhysAddr'), addr64('size'), addr64('userAddr'), addr64('mmapOffset'),
]);
/** Header of `VhostUserMemory` (followed by up to 8 regions). */
export const memoryHeaderLayout = struct<{ numRegions: number; padding: number }>([u32('numRegions'), u32('padding')]);
/** `VhostUserMemRegMsg` — a 64-bit padding then one region (ADD_MEM_REG / REM_MEM_REG). */
export const singleMemoryRegionLayout = struct<{
  padding: bigint; guestPhysAddr: number; size: number; userAddr: number; mmapOffset: number;
}>([big64('padding'), addr64('guestPhysAddr'), addr64('size'), addr64('userAddr'), addr64('mmapOffset')]);
/** `VhostUserLog`. */
export const logLayout = struct<{ mmapSize: number; mmapOffset: number }>([addr64('mmapSize'), addr64('mmapOffset')]);
/** `struct vhost_iotlb_msg` (26 bytes of fields, padded to 32 as the C struct is). */
export const iotlbLayout = struct<{ iova: number; size: number; uaddr: number; perm: number; type: number; pad: Buffer }>([
  addr64('iova'), addr64('size'), addr64('uaddr'), u8('perm'), u8('type'), blob(6, 'pad'),
]);
/** Header of `VhostUserConfig` (followed by `size` bytes of config space). */
export const configHeaderLayout = struct<{ offset: number; size: number; flags: number }>([
  u32('offset'), u32('size'), u32('flags'),
]);
/** `VhostUserVringArea`. */
export const vringAreaLayout = struct<{ u64: bigint; size: number; offset: number }>([
  big64('u64'), addr64('size'), addr64('offset'),
]);
/** `VhostUserInflight` (20 bytes of fields, 24 with the C struct's tail padding). */
export const inflightLayout = struct<{ mmapSize: number; mmapOffset: number; numQueues: number; queueSize: number }>([
  addr64('mmapSize'), addr64('mmapOffset'), u16('numQueues'), u16('queueSize'),
]);
/** `VhostUserShared` — a 16-byte UUID. */
export const sharedLayout = struct<{ uuid: Buffer }>([blob(16, 'uuid')]);
/** `VhostUserTransferDeviceState`. */
export const transferStateLayout = struct<{ direction: number; phase: number }>([u32('direction'), u32('phase')]);
/** `VhostUserMMap` (BACKEND_SHMEM_MAP / UNMAP). */
export const shmemMapLayout = struct<{
  shmid: number; pad: Buffer; fdOffset: number; shmOffset: number; len: number; flags: bigint;
}>([u8('shmid'), blob(7, 'pad'), addr64('fdOffset'), addr64('shmOffset'), addr64('len'), big64('flags')]);

/** Size of one `VhostUserMemoryRegion`. */
export const MEMORY_REGION_SIZE = 32;
/** Size of the `VhostUserMemory` header. */
export const MEMORY_HEADER_SIZE = 8;
