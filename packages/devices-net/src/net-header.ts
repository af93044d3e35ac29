/**
 * `struct virtio_net_hdr_v1` (virtio 1.2 §5.1.6): the 12-byte header in front of every frame on
 * the RX and TX virtqueues.
 *
 * ```
 *  0      1         2          4          6            8             10            12
 *  +------+---------+----------+----------+------------+-------------+-------------+
 *  |flags |gso_type | hdr_len  | gso_size | csum_start | csum_offset | num_buffers |
 *  +------+---------+----------+----------+------------+-------------+-------------+
 *                     (all multi-byte fields little-endian)
 * ```
 *
 * Inside this package every frame carries the full 12-byte layout (a "frame" in a
 * {@link FrameBatch} is header + Ethernet frame); a legacy 10-byte ring header is converted at
 * the ring edge. The helpers read and write in place and never allocate.
 * @module
 */
import {
  VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP, VIRTIO_NET_HDR_GSO_UDP_L4,
  VIRTIO_NET_HDR_V1_SIZE, ETH_HLEN,
} from './constants.js';

/** Byte offsets of the header fields. */
export const HDR_FLAGS = 0;
export const HDR_GSO_TYPE = 1;
export const HDR_HDR_LEN = 2;
export const HDR_GSO_SIZE = 4;
export const HDR_CSUM_START = 6;
export const HDR_CSUM_OFFSET = 8;
export const HDR_NUM_BUFFERS = 10;

/** Which offloads a TX header may use: computed once from the negotiated features. */
export interface TxOffloadPolicy {
  /** VIRTIO_NET_F_CSUM negotiated: NEEDS_CSUM is allowed. */
  csum: boolean;
  /** HOST_TSO4 negotiated. */
  tso4: boolean;
  /** HOST_TSO6 negotiated. */
  tso6: boolean;
  /** HOST_ECN negotiated. */
  ecn: boolean;
  /** HOST_UFO negotiated (never offered; kept so the check is explicit). */
  ufo: boolean;
}

/** Result codes of {@link checkTxHeader} (0 = acceptable). */
export const TX_HDR_OK = 0;
/** Frame (after the header) shorter than an Ethernet header. */
export const TX_HDR_RUNT = 1;
/** NEEDS_CSUM without VIRTIO_NET_F_CSUM, or csum_start/csum_offset pointing past the frame. */
export const TX_HDR_BAD_CSUM = 2;
/** A gso_type that was not negotiated (or unknown), or GSO without NEEDS_CSUM / gso_size 0. */
export const TX_HDR_BAD_GSO = 3;

function u16(b: Uint8Array, o: number): number {
  return b[o] | (b[o + 1] << 8);
}

function putU16(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
}

/** Reads `num_buffers`. */
export function getNumBuffers(b: Uint8Array, hdrOffset: number): number {
  return u16(b, hdrOffset + HDR_NUM_BUFFERS);
}

/** Writes `num_buffers` (virtio 1.2 §5.1.6.4: the device sets it to the number of buffers used). */
export function setNumBuffers(b: Uint8Array, hdrOffset: number, n: number): void {
  putU16(b, hdrOffset + HDR_NUM_BUFFERS, n);
}

/** Zeroes a header: no checksum offload, GSO_NONE, num_buffers 0. */
export function clearNetHeader(b: Uint8Array, hdrOffset: number): void {
  // Twelve stores beat a fill() builtin call per frame on the TX path.
  for (let i = 0; i < VIRTIO_NET_HDR_V1_SIZE; i++) b[hdrOffset + i] = 0;
}

/** Fields of a header, for tests and diagnostics (the data path uses the accessors). */
export interface NetHeader {
  flags: number; gsoType: number; hdrLen: number; gsoSize: number;
  csumStart: number; csumOffset: number; numBuffers: number;
}

/** Decodes the 12-byte header at `hdrOffset`. */
export function readNetHeader(b: Uint8Array, hdrOffset: number): NetHeader {
  return {
    flags: b[hdrOffset + HDR_FLAGS],
    gsoType: b[hdrOffset + HDR_GSO_TYPE],
    hdrLen: u16(b, hdrOffset + HDR_HDR_LEN),
    gsoSize: u16(b, hdrOffset + HDR_GSO_SIZE),
    csumStart: u16(b, hdrOffset + HDR_CSUM_START),
    csumOffset: u16(b, hdrOffset + HDR_CSUM_OFFSET),
    numBuffers: u16(b, hdrOffset + HDR_NUM_BUFFERS),
  };
}

/** Encodes `h` as a 12-byte header at `hdrOffset` (fields not given are 0). */
export function writeNetHeader(b: Uint8Array, hdrOffset: number, h: Partial<NetHeader>): void {
  b[hdrOffset + HDR_FLAGS] = h.flags ?? 0;
  b[hdrOffset + HDR_GSO_TYPE] = h.gsoType ?? 0;
  putU16(b, hdrOffset + HDR_HDR_LEN, h.hdrLen ?? 0);
  putU16(b, hdrOffset + HDR_GSO_SIZE, h.gsoSize ?? 0);
  putU16(b, hdrOffset + HDR_CSUM_START, h.csumStart ?? 0);
  putU16(b, hdrOffset + HDR_CSUM_OFFSET, h.csumOffset ?? 0);
  putU16(b, hdrOffset + HDR_NUM_BUFFERS, h.numBuffers ?? 0);
}

/**
 * Checks a header the guest wrote on a TX chain against what was negotiated. `frameLen` is the
 * Ethernet frame's length (header excluded). Returns a `TX_HDR_*` code; the device drops and
 * counts anything non-zero. The guest is untrusted: virtio 1.2 §5.1.6.2 says the driver MUST
 * NOT set NEEDS_CSUM or a gso_type it did not negotiate — we verify instead of trusting, and
 * the TAP's kernel verifies again (virtio_net_hdr_to_skb).
 */
export function checkTxHeader(b: Uint8Array, hdrOffset: number, frameLen: number, policy: TxOffloadPolicy): number {
  if (frameLen < ETH_HLEN) return TX_HDR_RUNT;
  const flags = b[hdrOffset + HDR_FLAGS];
  if ((flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0) {
    if (!policy.csum) return TX_HDR_BAD_CSUM;
    // The checksum field (2 bytes at csum_start + csum_offset) must lie inside the frame.
    const start = u16(b, hdrOffset + HDR_CSUM_START);
    const off = u16(b, hdrOffset + HDR_CSUM_OFFSET);
    if (start + off + 2 > frameLen) return TX_HDR_BAD_CSUM;
  }
  const gso = b[hdrOffset + HDR_GSO_TYPE];
  if (gso === VIRTIO_NET_HDR_GSO_NONE) return TX_HDR_OK;
  if ((gso & VIRTIO_NET_HDR_GSO_ECN) !== 0 && !policy.ecn) return TX_HDR_BAD_GSO;
  const kind = gso & ~VIRTIO_NET_HDR_GSO_ECN;
  let allowed: boolean;
  switch (kind) {
    case VIRTIO_NET_HDR_GSO_TCPV4: allowed = policy.tso4; break;
    case VIRTIO_NET_HDR_GSO_TCPV6: allowed = policy.tso6; break;
    case VIRTIO_NET_HDR_GSO_UDP: allowed = policy.ufo; break;
    case VIRTIO_NET_HDR_GSO_UDP_L4: allowed = false; break;
    default: allowed = false;
  }
  if (!allowed) return TX_HDR_BAD_GSO;
  // GSO needs a partial checksum and a non-zero segment size (virtio 1.2 §5.1.6.2).
  if ((flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) === 0 || u16(b, hdrOffset + HDR_GSO_SIZE) === 0) return TX_HDR_BAD_GSO;
  return TX_HDR_OK;
}

/** A policy that allows no offload at all (switch/loopback paths). */
export const NO_OFFLOADS: Readonly<TxOffloadPolicy> = Object.freeze({ csum: false, tso4: false, tso6: false, ecn: false, ufo: false });
