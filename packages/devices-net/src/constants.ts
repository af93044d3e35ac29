/**
 * virtio-net constants (virtio 1.2 §5.1), with the spec's names kept verbatim, plus the few
 * Linux TUN ioctl flags the TAP backend maps them to.
 * @module
 */

/** virtio device id of a network card (virtio 1.2 §5). */
export const VIRTIO_ID_NET = 1;

// --- feature bits (virtio 1.2 §5.1.3) ---------------------------------------------------------
/** Device handles packets with partial checksum (guest may send NEEDS_CSUM). */
export const VIRTIO_NET_F_CSUM = 0;
/** Driver handles packets with partial checksum (device may deliver NEEDS_CSUM). */
export const VIRTIO_NET_F_GUEST_CSUM = 1;
/** Control channel offloads reconfiguration support. */
export const VIRTIO_NET_F_CTRL_GUEST_OFFLOADS = 2;
/** Device reports its maximum MTU in config space. */
export const VIRTIO_NET_F_MTU = 3;
/** Device has a given MAC address in config space. */
export const VIRTIO_NET_F_MAC = 5;
/** Driver can receive TSOv4. */
export const VIRTIO_NET_F_GUEST_TSO4 = 7;
/** Driver can receive TSOv6. */
export const VIRTIO_NET_F_GUEST_TSO6 = 8;
/** Driver can receive TSO with ECN. */
export const VIRTIO_NET_F_GUEST_ECN = 9;
/** Driver can receive UFO. */
export const VIRTIO_NET_F_GUEST_UFO = 10;
/** Device can receive TSOv4 (the guest may send it). */
export const VIRTIO_NET_F_HOST_TSO4 = 11;
/** Device can receive TSOv6. */
export const VIRTIO_NET_F_HOST_TSO6 = 12;
/** Device can receive TSO with ECN. */
export const VIRTIO_NET_F_HOST_ECN = 13;
/** Device can receive UFO. */
export const VIRTIO_NET_F_HOST_UFO = 14;
/** Driver can merge receive buffers (num_buffers in the header). */
export const VIRTIO_NET_F_MRG_RXBUF = 15;
/** Configuration status field is available. */
export const VIRTIO_NET_F_STATUS = 16;
/** Control channel is available. */
export const VIRTIO_NET_F_CTRL_VQ = 17;
/** Control channel RX mode support. */
export const VIRTIO_NET_F_CTRL_RX = 18;
/** Control channel VLAN filtering. */
export const VIRTIO_NET_F_CTRL_VLAN = 19;
/** Driver can send gratuitous packets (announce). */
export const VIRTIO_NET_F_GUEST_ANNOUNCE = 21;
/** Device supports multiqueue with automatic receive steering. */
export const VIRTIO_NET_F_MQ = 22;
/** Set MAC address through the control channel. */
export const VIRTIO_NET_F_CTRL_MAC_ADDR = 23;
/** virtio 1.x (the modern interface; the header is always 12 bytes). */
export const VIRTIO_F_VERSION_1 = 32;

// --- config status (virtio 1.2 §5.1.4) --------------------------------------------------------
export const VIRTIO_NET_S_LINK_UP = 1;
export const VIRTIO_NET_S_ANNOUNCE = 2;

// --- header (virtio 1.2 §5.1.6) ---------------------------------------------------------------
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;
export const VIRTIO_NET_HDR_F_RSC_INFO = 4;
export const VIRTIO_NET_HDR_GSO_NONE = 0;
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
export const VIRTIO_NET_HDR_GSO_UDP = 3;
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
export const VIRTIO_NET_HDR_GSO_UDP_L4 = 5;
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;
/** Size of `struct virtio_net_hdr_v1` (with num_buffers) — used whenever VERSION_1 or MRG_RXBUF. */
export const VIRTIO_NET_HDR_V1_SIZE = 12;
/** Size of the legacy header without num_buffers. */
export const VIRTIO_NET_HDR_LEGACY_SIZE = 10;

// --- control virtqueue (virtio 1.2 §5.1.6.5) --------------------------------------------------
export const VIRTIO_NET_OK = 0;
export const VIRTIO_NET_ERR = 1;
export const VIRTIO_NET_CTRL_RX = 0;
export const VIRTIO_NET_CTRL_RX_PROMISC = 0;
export const VIRTIO_NET_CTRL_RX_ALLMULTI = 1;
export const VIRTIO_NET_CTRL_RX_ALLUNI = 2;
export const VIRTIO_NET_CTRL_RX_NOMULTI = 3;
export const VIRTIO_NET_CTRL_RX_NOUNI = 4;
export const VIRTIO_NET_CTRL_RX_NOBCAST = 5;
export const VIRTIO_NET_CTRL_MAC = 1;
export const VIRTIO_NET_CTRL_MAC_TABLE_SET = 0;
export const VIRTIO_NET_CTRL_MAC_ADDR_SET = 1;
export const VIRTIO_NET_CTRL_VLAN = 2;
export const VIRTIO_NET_CTRL_VLAN_ADD = 0;
export const VIRTIO_NET_CTRL_VLAN_DEL = 1;
export const VIRTIO_NET_CTRL_ANNOUNCE = 3;
export const VIRTIO_NET_CTRL_ANNOUNCE_ACK = 0;
export const VIRTIO_NET_CTRL_MQ = 4;
export const VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET = 0;
export const VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN = 1;
export const VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX = 0x8000;
export const VIRTIO_NET_CTRL_GUEST_OFFLOADS = 5;
export const VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET = 0;

// --- Linux TUN (include/uapi/linux/if_tun.h) --------------------------------------------------
export const TUN_F_CSUM = 0x01;
export const TUN_F_TSO4 = 0x02;
export const TUN_F_TSO6 = 0x04;
export const TUN_F_TSO_ECN = 0x08;
export const TUN_F_UFO = 0x10;

// --- Ethernet ---------------------------------------------------------------------------------
/** Destination MAC + source MAC + ethertype. */
export const ETH_HLEN = 14;
/** MTU range: virtio 1.2 §5.1.4.1 (at least 68) to what the 16-bit config field holds. */
export const MIN_MTU = 68;
export const MAX_MTU = 65535;

/** True for an integer MTU in MIN_MTU..MAX_MTU. */
export function isValidMtu(mtu: number): boolean {
  return Number.isInteger(mtu) && mtu >= MIN_MTU && mtu <= MAX_MTU;
}

/** Ethernet header with one 802.1Q tag: what a frame carries beyond its MTU. */
export const ETH_VLAN_HLEN = ETH_HLEN + 4;
/** Largest frame we move, header excluded: a 64 KiB GSO super-frame plus its Ethernet/VLAN header. */
export const MAX_FRAME_SIZE = 65535 + ETH_VLAN_HLEN;

/** `1n << BigInt(bit)` for feature masks (control plane only). */
export function bit(n: number): bigint {
  return 1n << BigInt(n);
}
