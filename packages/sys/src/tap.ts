// TAP interfaces with virtio-net headers, for the net backend.
import { invalidArgument } from './errors.js';
import { addon, assertNative } from './native.js';
import { assertFd, assertInt, optionalBool } from './validate.js';

/** Offload flags of TUNSETOFFLOAD (linux/if_tun.h). */
export const TUN_F_CSUM = 0x01;
/** The tap accepts TSO for IPv4. */
export const TUN_F_TSO4 = 0x02;
/** The tap accepts TSO for IPv6. */
export const TUN_F_TSO6 = 0x04;
/** The tap accepts TSO with ECN. */
export const TUN_F_TSO_ECN = 0x08;
/** Alias of {@link TUN_F_TSO_ECN}. */
export const TUN_F_ECN = TUN_F_TSO_ECN;
/** The tap accepts UFO. */
export const TUN_F_UFO = 0x10;

assertNative('TUN_F_CSUM', addon.tunConstants.TUN_F_CSUM, TUN_F_CSUM);
assertNative('TUN_F_TSO4', addon.tunConstants.TUN_F_TSO4, TUN_F_TSO4);
assertNative('TUN_F_TSO6', addon.tunConstants.TUN_F_TSO6, TUN_F_TSO6);
assertNative('TUN_F_TSO_ECN', addon.tunConstants.TUN_F_TSO_ECN, TUN_F_TSO_ECN);
assertNative('TUN_F_UFO', addon.tunConstants.TUN_F_UFO, TUN_F_UFO);

/** Options of {@link tapOpen}. */
export interface TapOpenOptions {
  /** IFF_MULTI_QUEUE: open one more queue of a multi-queue tap. */
  multiQueue?: boolean;
}

/** An open tap queue. */
export interface TapHandle {
  fd: number;
  /** The interface name the kernel used (it fills `%d` or an empty name). */
  name: string;
}

/**
 * Opens (creating if needed) tap `name` with IFF_TAP | IFF_NO_PI |
 * IFF_VNET_HDR, non-blocking and cloexec. Needs CAP_NET_ADMIN, or a tap
 * owned by this user. An empty name lets the kernel choose.
 */
export function tapOpen(name: string, opts: TapOpenOptions = {}): TapHandle {
  if (typeof name !== 'string' || name.includes('\0') || name.includes('/') || Buffer.byteLength(name) > 15) {
    throw invalidArgument('ioctl(TUNSETIFF)', 'name must be a string of at most 15 bytes without NUL or /');
  }
  if (typeof opts !== 'object' || opts === null) throw invalidArgument('ioctl(TUNSETIFF)', 'opts must be an object');
  return addon.tapOpen(name, optionalBool(opts.multiQueue, false, 'multiQueue', 'ioctl(TUNSETIFF)'));
}

/** TUNSETVNETHDRSZ: 10 (legacy header) or 12 (VIRTIO_NET_F_MRG_RXBUF / VERSION_1). */
export function tapSetVnetHdrSize(fd: number, size: number): void {
  assertFd(fd, 'ioctl(TUNSETVNETHDRSZ)');
  assertInt(size, 10, 256, 'size', 'ioctl(TUNSETVNETHDRSZ)');
  addon.tapSetVnetHdrSize(fd, size);
}

/** TUNSETOFFLOAD with a mask of TUN_F_* flags. */
export function tapSetOffload(fd: number, flags: number): void {
  assertFd(fd, 'ioctl(TUNSETOFFLOAD)');
  assertInt(flags, 0, 0xffff, 'flags', 'ioctl(TUNSETOFFLOAD)');
  addon.tapSetOffload(fd, flags);
}
