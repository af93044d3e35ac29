/**
 * Per-request wire rules: payload struct, allowed sizes, fds, and reply shape — for every
 * front-end request (ids 1-44) and every back-end request (ids 1-10) of vhost-user.rst.
 * @module
 */
import * as C from '../constants.js';
import type { PayloadKind } from './payloads.js';

/**
 * How many fds a message may carry.
 * - `none`: 0; `one`: exactly 1; `zero-or-one`: 0 or 1;
 * - `per-region`: one per memory region (SET_MEM_TABLE);
 * - `unless-nofd`: 1 unless the payload's "no fd" bit (bit 8) is set, then 0.
 */
export type FdRule = 'none' | 'one' | 'zero-or-one' | 'per-region' | 'unless-nofd';

/** Allowed payload sizes: a list of exact sizes, or a rule tied to the struct. */
export type SizeRule = readonly number[] | 'memory' | 'config' | 'raw';

/** Wire rules of one request type. */
export interface RequestSpec {
  /** Spec name, verbatim (`VHOST_USER_SET_VRING_ADDR`). */
  readonly name: string;
  readonly payload: PayloadKind;
  readonly sizes: SizeRule;
  readonly fds: FdRule;
  /** Explicit reply body, or null when the request only gets a REPLY_ACK u64 (if asked). */
  readonly reply: PayloadKind | null;
  /** fds the explicit reply may carry. */
  readonly replyFds: FdRule;
}

/** Largest payload we are willing to read for any message (largest legal: GET_SHMEM_CONFIG reply, 2056). */
export const MAX_PAYLOAD_SIZE = 4096;

function spec(name: string, payload: PayloadKind, sizes: SizeRule, fds: FdRule = 'none',
  reply: PayloadKind | null = null, replyFds: FdRule = 'none'): RequestSpec {
  return Object.freeze({ name, payload, sizes, fds, reply, replyFds });
}

const S0 = [0] as const;
const S8 = [8] as const;
// VhostUserInflight is 20 bytes of fields; QEMU sends sizeof() = 24 (tail padding). Accept both.
const INFLIGHT_SIZES = [24, 20] as const;

/** Front-end → back-end requests. */
export const FRONTEND_REQUESTS: ReadonlyMap<number, RequestSpec> = new Map<number, RequestSpec>([
  [C.VHOST_USER_GET_FEATURES, spec('VHOST_USER_GET_FEATURES', 'none', S0, 'none', 'u64')],
  [C.VHOST_USER_SET_FEATURES, spec('VHOST_USER_SET_FEATURES', 'u64', S8)],
  [C.VHOST_USER_SET_OWNER, spec('VHOST_USER_SET_OWNER', 'none', S0)],
  [C.VHOST_USER_RESET_OWNER, spec('VHOST_USER_RESET_OWNER', 'none', S0)],
  [C.VHOST_USER_SET_MEM_TABLE, spec('VHOST_USER_SET_MEM_TABLE', 'memory', 'memory', 'per-region')],
  // The spec table says "u64" but every implementation sends VhostUserLog (16) with the fd.
  [C.VHOST_USER_SET_LOG_BASE, spec('VHOST_USER_SET_LOG_BASE', 'log', [16], 'one', 'u64')],
  [C.VHOST_USER_SET_LOG_FD, spec('VHOST_USER_SET_LOG_FD', 'none', S0, 'one')],
  [C.VHOST_USER_SET_VRING_NUM, spec('VHOST_USER_SET_VRING_NUM', 'vring-state', S8)],
  [C.VHOST_USER_SET_VRING_ADDR, spec('VHOST_USER_SET_VRING_ADDR', 'vring-addr', [40])],
  [C.VHOST_USER_SET_VRING_BASE, spec('VHOST_USER_SET_VRING_BASE', 'vring-state', S8)],
  [C.VHOST_USER_GET_VRING_BASE, spec('VHOST_USER_GET_VRING_BASE', 'vring-state', S8, 'none', 'vring-state')],
  [C.VHOST_USER_SET_VRING_KICK, spec('VHOST_USER_SET_VRING_KICK', 'vring-fd', S8, 'unless-nofd')],
  [C.VHOST_USER_SET_VRING_CALL, spec('VHOST_USER_SET_VRING_CALL', 'vring-fd', S8, 'unless-nofd')],
  [C.VHOST_USER_SET_VRING_ERR, spec('VHOST_USER_SET_VRING_ERR', 'vring-fd', S8, 'unless-nofd')],
  [C.VHOST_USER_GET_PROTOCOL_FEATURES, spec('VHOST_USER_GET_PROTOCOL_FEATURES', 'none', S0, 'none', 'u64')],
  [C.VHOST_USER_SET_PROTOCOL_FEATURES, spec('VHOST_USER_SET_PROTOCOL_FEATURES', 'u64', S8)],
  [C.VHOST_USER_GET_QUEUE_NUM, spec('VHOST_USER_GET_QUEUE_NUM', 'none', S0, 'none', 'u64')],
  [C.VHOST_USER_SET_VRING_ENABLE, spec('VHOST_USER_SET_VRING_ENABLE', 'vring-state', S8)],
  [C.VHOST_USER_SEND_RARP, spec('VHOST_USER_SEND_RARP', 'u64', S8)],
  [C.VHOST_USER_NET_SET_MTU, spec('VHOST_USER_NET_SET_MTU', 'u64', S8)],
  [C.VHOST_USER_SET_BACKEND_REQ_FD, spec('VHOST_USER_SET_BACKEND_REQ_FD', 'none', S0, 'one')],
  [C.VHOST_USER_IOTLB_MSG, spec('VHOST_USER_IOTLB_MSG', 'iotlb', [32], 'none', 'u64')],
  [C.VHOST_USER_SET_VRING_ENDIAN, spec('VHOST_USER_SET_VRING_ENDIAN', 'vring-state', S8)],
  [C.VHOST_USER_GET_CONFIG, spec('VHOST_USER_GET_CONFIG', 'config', 'config', 'none', 'config')],
  [C.VHOST_USER_SET_CONFIG, spec('VHOST_USER_SET_CONFIG', 'config', 'config')],
  [C.VHOST_USER_CREATE_CRYPTO_SESSION, spec('VHOST_USER_CREATE_CRYPTO_SESSION', 'raw', 'raw', 'none', 'raw')],
  [C.VHOST_USER_CLOSE_CRYPTO_SESSION, spec('VHOST_USER_CLOSE_CRYPTO_SESSION', 'u64', S8)],
  [C.VHOST_USER_POSTCOPY_ADVISE, spec('VHOST_USER_POSTCOPY_ADVISE', 'none', S0, 'none', 'none', 'one')],
  [C.VHOST_USER_POSTCOPY_LISTEN, spec('VHOST_USER_POSTCOPY_LISTEN', 'none', S0)],
  [C.VHOST_USER_POSTCOPY_END, spec('VHOST_USER_POSTCOPY_END', 'none', S0, 'none', 'u64')],
  [C.VHOST_USER_GET_INFLIGHT_FD, spec('VHOST_USER_GET_INFLIGHT_FD', 'inflight', INFLIGHT_SIZES, 'none', 'inflight', 'one')],
  [C.VHOST_USER_SET_INFLIGHT_FD, spec('VHOST_USER_SET_INFLIGHT_FD', 'inflight', INFLIGHT_SIZES, 'one')],
  [C.VHOST_USER_GPU_SET_SOCKET, spec('VHOST_USER_GPU_SET_SOCKET', 'none', S0, 'one')],
  [C.VHOST_USER_RESET_DEVICE, spec('VHOST_USER_RESET_DEVICE', 'none', S0)],
  [C.VHOST_USER_VRING_KICK, spec('VHOST_USER_VRING_KICK', 'vring-state', S8)],
  [C.VHOST_USER_GET_MAX_MEM_SLOTS, spec('VHOST_USER_GET_MAX_MEM_SLOTS', 'none', S0, 'none', 'u64')],
  [C.VHOST_USER_ADD_MEM_REG, spec('VHOST_USER_ADD_MEM_REG', 'mem-region', [40], 'one')],
  // vhost-user.rst: REM_MEM_REG SHOULD carry no fd; the back-end MAY accept one and MUST close it.
  [C.VHOST_USER_REM_MEM_REG, spec('VHOST_USER_REM_MEM_REG', 'mem-region', [40], 'zero-or-one')],
  [C.VHOST_USER_SET_STATUS, spec('VHOST_USER_SET_STATUS', 'u64', S8)],
  [C.VHOST_USER_GET_STATUS, spec('VHOST_USER_GET_STATUS', 'none', S0, 'none', 'u64')],
  [C.VHOST_USER_GET_SHARED_OBJECT, spec('VHOST_USER_GET_SHARED_OBJECT', 'shared', [16], 'none', 'u64', 'zero-or-one')],
  [C.VHOST_USER_SET_DEVICE_STATE_FD, spec('VHOST_USER_SET_DEVICE_STATE_FD', 'transfer-state', S8, 'one', 'u64', 'zero-or-one')],
  [C.VHOST_USER_CHECK_DEVICE_STATE, spec('VHOST_USER_CHECK_DEVICE_STATE', 'none', S0, 'none', 'u64')],
  [C.VHOST_USER_GET_SHMEM_CONFIG, spec('VHOST_USER_GET_SHMEM_CONFIG', 'none', S0, 'none', 'raw')],
]);

/** Back-end → front-end requests (sent on the SET_BACKEND_REQ_FD channel). */
export const BACKEND_REQUESTS: ReadonlyMap<number, RequestSpec> = new Map<number, RequestSpec>([
  [C.VHOST_USER_BACKEND_IOTLB_MSG, spec('VHOST_USER_BACKEND_IOTLB_MSG', 'iotlb', [32])],
  [C.VHOST_USER_BACKEND_CONFIG_CHANGE_MSG, spec('VHOST_USER_BACKEND_CONFIG_CHANGE_MSG', 'none', S0)],
  [C.VHOST_USER_BACKEND_VRING_HOST_NOTIFIER_MSG,
    spec('VHOST_USER_BACKEND_VRING_HOST_NOTIFIER_MSG', 'vring-area', [24], 'zero-or-one')],
  [C.VHOST_USER_BACKEND_VRING_CALL, spec('VHOST_USER_BACKEND_VRING_CALL', 'vring-state', S8)],
  [C.VHOST_USER_BACKEND_VRING_ERR, spec('VHOST_USER_BACKEND_VRING_ERR', 'vring-state', S8)],
  [C.VHOST_USER_BACKEND_SHARED_OBJECT_ADD, spec('VHOST_USER_BACKEND_SHARED_OBJECT_ADD', 'shared', [16])],
  [C.VHOST_USER_BACKEND_SHARED_OBJECT_REMOVE, spec('VHOST_USER_BACKEND_SHARED_OBJECT_REMOVE', 'shared', [16])],
  [C.VHOST_USER_BACKEND_SHARED_OBJECT_LOOKUP,
    spec('VHOST_USER_BACKEND_SHARED_OBJECT_LOOKUP', 'shared', [16], 'none', 'u64', 'zero-or-one')],
  [C.VHOST_USER_BACKEND_SHMEM_MAP, spec('VHOST_USER_BACKEND_SHMEM_MAP', 'shmem-map', [40], 'one')],
  [C.VHOST_USER_BACKEND_SHMEM_UNMAP, spec('VHOST_USER_BACKEND_SHMEM_UNMAP', 'shmem-map', [40])],
]);

/** Which table a message belongs to. */
export type Direction = 'frontend' | 'backend';

/** The request table of a direction. */
export function requestTable(direction: Direction): ReadonlyMap<number, RequestSpec> {
  return direction === 'frontend' ? FRONTEND_REQUESTS : BACKEND_REQUESTS;
}

/** Spec name of a front-end request, or `UNKNOWN(n)`. */
export function frontendRequestName(request: number): string {
  return FRONTEND_REQUESTS.get(request)?.name ?? `UNKNOWN(${request})`;
}
/** Spec name of a back-end request, or `UNKNOWN(n)`. */
export function backendRequestName(request: number): string {
  return BACKEND_REQUESTS.get(request)?.name ?? `UNKNOWN(${request})`;
}

const PROTOCOL_FEATURE_NAMES: readonly string[] = [
  'MQ', 'LOG_SHMFD', 'RARP', 'REPLY_ACK', 'MTU', 'BACKEND_REQ', 'CROSS_ENDIAN', 'CRYPTO_SESSION', 'PAGEFAULT',
  'CONFIG', 'BACKEND_SEND_FD', 'HOST_NOTIFIER', 'INFLIGHT_SHMFD', 'RESET_DEVICE', 'INBAND_NOTIFICATIONS',
  'CONFIGURE_MEM_SLOTS', 'STATUS', 'XEN_MMAP', 'SHARED_OBJECT', 'DEVICE_STATE', 'SHMEM',
];
/** Spec name of a protocol feature bit (`VHOST_USER_PROTOCOL_F_MQ`), or `BIT(n)`. */
export function protocolFeatureName(bitNumber: number): string {
  const n = PROTOCOL_FEATURE_NAMES[bitNumber];
  return n === undefined ? `BIT(${bitNumber})` : `VHOST_USER_PROTOCOL_F_${n}`;
}
