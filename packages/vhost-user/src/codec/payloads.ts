/**
 * Decoded payload shapes, one per wire struct of vhost-user.rst "Payload".
 * @module
 */

/** No payload (size 0). */
export interface NonePayload { readonly kind: 'none' }
/** A single u64 (feature masks, status, acks, queue counts). */
export interface U64Payload { readonly kind: 'u64'; readonly value: bigint }
/** The u64 of SET_VRING_KICK/CALL/ERR: bits 0-7 ring index, bit 8 "no fd". */
export interface VringFdPayload { readonly kind: 'vring-fd'; readonly index: number; readonly noFd: boolean }
/** `struct vhost_vring_state`. */
export interface VringStatePayload { readonly kind: 'vring-state'; readonly index: number; readonly num: number }
/** `struct vhost_vring_addr`; addresses are front-end virtual (UVA) unless IOMMU is on. */
export interface VringAddrPayload {
  readonly kind: 'vring-addr'; readonly index: number; readonly flags: number;
  readonly descUserAddr: number; readonly usedUserAddr: number; readonly availUserAddr: number; readonly logGuestAddr: number;
}
/** One `VhostUserMemoryRegion`. */
export interface MemoryRegionDesc {
  readonly guestPhysAddr: number; readonly size: number; readonly userAddr: number; readonly mmapOffset: number;
}
/** `VhostUserMemory` (SET_MEM_TABLE). */
export interface MemoryTablePayload { readonly kind: 'memory'; readonly regions: readonly MemoryRegionDesc[] }
/** `VhostUserMemRegMsg` (ADD_MEM_REG / REM_MEM_REG). */
export interface MemoryRegionPayload { readonly kind: 'mem-region'; readonly region: MemoryRegionDesc }
/** `VhostUserLog` (SET_LOG_BASE). */
export interface LogPayload { readonly kind: 'log'; readonly mmapSize: number; readonly mmapOffset: number }
/** `struct vhost_iotlb_msg`. */
export interface IotlbPayload {
  readonly kind: 'iotlb'; readonly iova: number; readonly size: number; readonly uaddr: number;
  readonly perm: number; readonly type: number;
}
/** `VhostUserConfig`; `data.length === size`. */
export interface ConfigPayload {
  readonly kind: 'config'; readonly offset: number; readonly size: number; readonly flags: number; readonly data: Uint8Array;
}
/** `VhostUserVringArea`. */
export interface VringAreaPayload { readonly kind: 'vring-area'; readonly u64: bigint; readonly size: number; readonly offset: number }
/** `VhostUserInflight`. */
export interface InflightPayload {
  readonly kind: 'inflight'; readonly mmapSize: number; readonly mmapOffset: number;
  readonly numQueues: number; readonly queueSize: number;
}
/** `VhostUserShared`. */
export interface SharedPayload { readonly kind: 'shared'; readonly uuid: Uint8Array }
/** `VhostUserTransferDeviceState`. */
export interface TransferStatePayload { readonly kind: 'transfer-state'; readonly direction: number; readonly phase: number }
/** `VhostUserMMap`. */
export interface ShmemMapPayload {
  readonly kind: 'shmem-map'; readonly shmid: number; readonly fdOffset: number; readonly shmOffset: number;
  readonly len: number; readonly flags: bigint;
}
/** Bytes the codec does not interpret (crypto sessions, GET_SHMEM_CONFIG replies). */
export interface RawPayload { readonly kind: 'raw'; readonly bytes: Uint8Array }

/** Any decoded payload. */
export type Payload =
  | NonePayload | U64Payload | VringFdPayload | VringStatePayload | VringAddrPayload | MemoryTablePayload
  | MemoryRegionPayload | LogPayload | IotlbPayload | ConfigPayload | VringAreaPayload | InflightPayload
  | SharedPayload | TransferStatePayload | ShmemMapPayload | RawPayload;

/** The `kind` tag of a payload. */
export type PayloadKind = Payload['kind'];

/** A whole decoded message. `fds` are owned by whoever holds the message (close them!). */
export interface Message<P extends Payload = Payload> {
  readonly request: number;
  readonly flags: number;
  readonly payload: P;
  readonly fds: number[];
}

/** Shorthand constructors. */
export const NONE: NonePayload = Object.freeze({ kind: 'none' });
/** A u64 payload. */
export function u64(value: bigint | number): U64Payload {
  return { kind: 'u64', value: BigInt(value) };
}
/** A vring state payload. */
export function vringState(index: number, num: number): VringStatePayload {
  return { kind: 'vring-state', index, num };
}
