/**
 * vhost-user protocol constants, named exactly as in QEMU's docs/interop/vhost-user.rst
 * (the current spec: BACKEND_* names; the older SLAVE_* spellings are given as aliases where
 * they are still common in the field).
 *
 * All multi-byte wire values are little-endian ("machine native byte order" — we only run on
 * little-endian Linux hosts).
 * @module
 */

/** Header flags: lower 2 bits are the version, which is 1. */
export const VHOST_USER_VERSION = 0x1;
/** Header flag mask of the version bits. */
export const VHOST_USER_VERSION_MASK = 0x3;
/** Header flag: this message is a reply (vhost-user.rst "Header"). */
export const VHOST_USER_REPLY_MASK = 0x4;
/** Header flag: the sender asks for a REPLY_ACK (vhost-user.rst "REPLY_ACK"). */
export const VHOST_USER_NEED_REPLY_MASK = 0x8;
/** Size of the message header: request u32, flags u32, size u32. */
export const VHOST_USER_HDR_SIZE = 12;
/** At most this many fds ride along one message (SCM_RIGHTS). */
export const VHOST_USER_MAX_FDS = 8;
/** Regions a SET_MEM_TABLE message can carry (VHOST_MEMORY_BASELINE_NREGIONS). */
export const VHOST_MEMORY_BASELINE_NREGIONS = 8;
/** Largest config space a GET/SET_CONFIG message can carry. */
export const VHOST_USER_MAX_CONFIG_SIZE = 256;
/** Bytes of the GET/SET_CONFIG header (offset, size, flags). */
export const VHOST_USER_CONFIG_HDR_SIZE = 12;
/** SET_CONFIG flags value: a driver write to a writable field. */
export const VHOST_SET_CONFIG_TYPE_FRONTEND = 0;
/** SET_CONFIG flags value: live-migration restore (may write read-only fields). */
export const VHOST_SET_CONFIG_TYPE_MIGRATION = 1;
/** SET_VRING_KICK/CALL/ERR payload: bits 0-7 are the vring index. */
export const VHOST_USER_VRING_IDX_MASK = 0xff;
/** SET_VRING_KICK/CALL/ERR payload: bit 8 says "no fd attached" (polling). */
export const VHOST_USER_VRING_NOFD_MASK = 0x100;
/** SET_VRING_ADDR flags bit: log writes to the used ring at log_guest_addr. */
export const VHOST_VRING_F_LOG = 0;
/** Dirty log granularity: one bit per 4 KiB page. */
export const VHOST_LOG_PAGE = 0x1000;

/** Front-end → back-end request types (vhost-user.rst "Front-end message types"). */
export const VHOST_USER_NONE = 0;
export const VHOST_USER_GET_FEATURES = 1;
export const VHOST_USER_SET_FEATURES = 2;
export const VHOST_USER_SET_OWNER = 3;
export const VHOST_USER_RESET_OWNER = 4;
export const VHOST_USER_SET_MEM_TABLE = 5;
export const VHOST_USER_SET_LOG_BASE = 6;
export const VHOST_USER_SET_LOG_FD = 7;
export const VHOST_USER_SET_VRING_NUM = 8;
export const VHOST_USER_SET_VRING_ADDR = 9;
export const VHOST_USER_SET_VRING_BASE = 10;
export const VHOST_USER_GET_VRING_BASE = 11;
export const VHOST_USER_SET_VRING_KICK = 12;
export const VHOST_USER_SET_VRING_CALL = 13;
export const VHOST_USER_SET_VRING_ERR = 14;
export const VHOST_USER_GET_PROTOCOL_FEATURES = 15;
export const VHOST_USER_SET_PROTOCOL_FEATURES = 16;
export const VHOST_USER_GET_QUEUE_NUM = 17;
export const VHOST_USER_SET_VRING_ENABLE = 18;
export const VHOST_USER_SEND_RARP = 19;
export const VHOST_USER_NET_SET_MTU = 20;
export const VHOST_USER_SET_BACKEND_REQ_FD = 21;
/** Previous name of {@link VHOST_USER_SET_BACKEND_REQ_FD}. */
export const VHOST_USER_SET_SLAVE_REQ_FD = 21;
export const VHOST_USER_IOTLB_MSG = 22;
export const VHOST_USER_SET_VRING_ENDIAN = 23;
export const VHOST_USER_GET_CONFIG = 24;
export const VHOST_USER_SET_CONFIG = 25;
export const VHOST_USER_CREATE_CRYPTO_SESSION = 26;
export const VHOST_USER_CLOSE_CRYPTO_SESSION = 27;
export const VHOST_USER_POSTCOPY_ADVISE = 28;
export const VHOST_USER_POSTCOPY_LISTEN = 29;
export const VHOST_USER_POSTCOPY_END = 30;
export const VHOST_USER_GET_INFLIGHT_FD = 31;
export const VHOST_USER_SET_INFLIGHT_FD = 32;
export const VHOST_USER_GPU_SET_SOCKET = 33;
export const VHOST_USER_RESET_DEVICE = 34;
export const VHOST_USER_VRING_KICK = 35;
export const VHOST_USER_GET_MAX_MEM_SLOTS = 36;
export const VHOST_USER_ADD_MEM_REG = 37;
export const VHOST_USER_REM_MEM_REG = 38;
export const VHOST_USER_SET_STATUS = 39;
export const VHOST_USER_GET_STATUS = 40;
export const VHOST_USER_GET_SHARED_OBJECT = 41;
export const VHOST_USER_SET_DEVICE_STATE_FD = 42;
export const VHOST_USER_CHECK_DEVICE_STATE = 43;
export const VHOST_USER_GET_SHMEM_CONFIG = 44;

/** Back-end → front-end request types (vhost-user.rst "Back-end message types"). */
export const VHOST_USER_BACKEND_NONE = 0;
export const VHOST_USER_BACKEND_IOTLB_MSG = 1;
export const VHOST_USER_BACKEND_CONFIG_CHANGE_MSG = 2;
export const VHOST_USER_BACKEND_VRING_HOST_NOTIFIER_MSG = 3;
export const VHOST_USER_BACKEND_VRING_CALL = 4;
export const VHOST_USER_BACKEND_VRING_ERR = 5;
export const VHOST_USER_BACKEND_SHARED_OBJECT_ADD = 6;
export const VHOST_USER_BACKEND_SHARED_OBJECT_REMOVE = 7;
export const VHOST_USER_BACKEND_SHARED_OBJECT_LOOKUP = 8;
export const VHOST_USER_BACKEND_SHMEM_MAP = 9;
export const VHOST_USER_BACKEND_SHMEM_UNMAP = 10;

/** Protocol feature bits (bit numbers; vhost-user.rst "Protocol features"). */
export const VHOST_USER_PROTOCOL_F_MQ = 0;
export const VHOST_USER_PROTOCOL_F_LOG_SHMFD = 1;
export const VHOST_USER_PROTOCOL_F_RARP = 2;
export const VHOST_USER_PROTOCOL_F_REPLY_ACK = 3;
export const VHOST_USER_PROTOCOL_F_MTU = 4;
export const VHOST_USER_PROTOCOL_F_BACKEND_REQ = 5;
export const VHOST_USER_PROTOCOL_F_CROSS_ENDIAN = 6;
export const VHOST_USER_PROTOCOL_F_CRYPTO_SESSION = 7;
export const VHOST_USER_PROTOCOL_F_PAGEFAULT = 8;
export const VHOST_USER_PROTOCOL_F_CONFIG = 9;
export const VHOST_USER_PROTOCOL_F_BACKEND_SEND_FD = 10;
export const VHOST_USER_PROTOCOL_F_HOST_NOTIFIER = 11;
export const VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD = 12;
export const VHOST_USER_PROTOCOL_F_RESET_DEVICE = 13;
export const VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS = 14;
export const VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS = 15;
export const VHOST_USER_PROTOCOL_F_STATUS = 16;
export const VHOST_USER_PROTOCOL_F_XEN_MMAP = 17;
export const VHOST_USER_PROTOCOL_F_SHARED_OBJECT = 18;
export const VHOST_USER_PROTOCOL_F_DEVICE_STATE = 19;
export const VHOST_USER_PROTOCOL_F_SHMEM = 20;

/** Virtio / vhost feature bits (bit numbers) the transport itself cares about. */
export const VIRTIO_F_NOTIFY_ON_EMPTY = 24;
export const VIRTIO_RING_F_INDIRECT_DESC = 28;
export const VIRTIO_RING_F_EVENT_IDX = 29;
export const VHOST_F_LOG_ALL = 26;
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;
export const VIRTIO_F_VERSION_1 = 32;
export const VIRTIO_F_ACCESS_PLATFORM = 33;
/** Older name of {@link VIRTIO_F_ACCESS_PLATFORM} used by vhost-user.rst. */
export const VIRTIO_F_IOMMU_PLATFORM = 33;
export const VIRTIO_F_RING_PACKED = 34;
export const VIRTIO_F_IN_ORDER = 35;

/** Virtio device status bits (virtio 1.2 §2.1). */
export const VIRTIO_CONFIG_S_ACKNOWLEDGE = 0x01;
export const VIRTIO_CONFIG_S_DRIVER = 0x02;
export const VIRTIO_CONFIG_S_DRIVER_OK = 0x04;
export const VIRTIO_CONFIG_S_FEATURES_OK = 0x08;
export const VIRTIO_CONFIG_S_NEEDS_RESET = 0x40;
export const VIRTIO_CONFIG_S_FAILED = 0x80;

/** Largest split ring the protocol can describe (virtio 1.2 §2.7: Queue Size ≤ 32768). */
export const VIRTQ_MAX_SIZE = 32768;

/** A feature bit number as a bigint mask. */
export function bit(n: number): bigint {
  return 1n << BigInt(n);
}
