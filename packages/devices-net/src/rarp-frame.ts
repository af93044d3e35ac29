/**
 * The announcement a back-end sends for a guest that cannot announce itself after a migration
 * (VHOST_USER_SEND_RARP): a Reverse ARP request (RFC 903) broadcast from the guest's MAC, so
 * learning switches on the path move that address to the guest's new port. Only its source
 * address matters to them; the body is what hypervisors conventionally send (hardware and
 * target addresses the guest's, protocol addresses 0), padded to the 60-byte minimum.
 *
 * ```
 *  0  dst ff:ff:ff:ff:ff:ff   6  src = mac   12  ethertype 0x8035
 * 14  htype 1 (Ethernet)  16  ptype 0x0800 (IPv4)  18  hlen 6  19  plen 4  20  op 3 (request reverse)
 * 22  sender hw = mac  28  sender IP 0  32  target hw = mac  38  target IP 0  42..59  padding 0
 * ```
 * @module
 */

/** Ethertype of RARP. */
export const ETH_P_RARP = 0x8035;
/** RARP opcode "request reverse". */
export const RARP_OP_REQUEST_REVERSE = 3;
/** Length of the frame: the Ethernet minimum without the FCS. */
export const RARP_FRAME_SIZE = 60;

/** Builds the RARP announcement for `mac` (6 bytes). */
export function buildRarpFrame(mac: Uint8Array): Uint8Array {
  if (mac.length !== 6) throw new RangeError(`a MAC is 6 bytes, got ${mac.length}`);
  const f = new Uint8Array(RARP_FRAME_SIZE);
  const v = new DataView(f.buffer);
  f.fill(0xff, 0, 6);
  f.set(mac, 6);
  v.setUint16(12, ETH_P_RARP);
  v.setUint16(14, 1);
  v.setUint16(16, 0x0800);
  f[18] = 6;
  f[19] = 4;
  v.setUint16(20, RARP_OP_REQUEST_REVERSE);
  f.set(mac, 22);
  f.set(mac, 32);
  return f;
}
