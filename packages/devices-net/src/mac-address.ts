/**
 * MAC address helpers (control plane: parsing flags, formatting logs). The data path reads MACs
 * straight out of frames as two numbers (see `macHigh` / `macLow`), never as strings.
 * @module
 */
import { randomBytes } from 'node:crypto';
import { NetError } from './errors.js';

const MAC_RE = /^([0-9a-f]{2})(?::([0-9a-f]{2})){5}$/i;

/** Parses `aa:bb:cc:dd:ee:ff` into 6 bytes; throws `NetError('bad-mac')`. */
export function parseMac(text: string): Uint8Array {
  if (!MAC_RE.test(text)) throw new NetError('bad-mac', `invalid MAC address "${text}" (want aa:bb:cc:dd:ee:ff)`);
  const out = new Uint8Array(6);
  const parts = text.split(':');
  for (let i = 0; i < 6; i++) out[i] = parseInt(parts[i], 16);
  if ((out[0] & 1) !== 0) throw new NetError('bad-mac', `MAC address "${text}" is multicast; a NIC needs a unicast address`);
  return out;
}

/** Formats 6 bytes at `offset` as `aa:bb:cc:dd:ee:ff`. */
export function formatMac(bytes: Uint8Array, offset = 0): string {
  const parts: string[] = [];
  for (let i = 0; i < 6; i++) parts.push(bytes[offset + i].toString(16).padStart(2, '0'));
  return parts.join(':');
}

/** A random locally administered unicast MAC (52:54:00-style prefix is QEMU's; we set the LA bit instead). */
export function randomMac(): Uint8Array {
  const out = new Uint8Array(randomBytes(6));
  out[0] = (out[0] & 0xfe) | 0x02;
  return out;
}

/** High 16 bits of the MAC at `offset` (bytes 0..1). With `macLow` it forms a numeric key. */
export function macHigh(b: Uint8Array, offset: number): number {
  return (b[offset] << 8) | b[offset + 1];
}

/** Low 32 bits of the MAC at `offset` (bytes 2..5), unsigned. */
export function macLow(b: Uint8Array, offset: number): number {
  return ((b[offset + 2] << 24) | (b[offset + 3] << 16) | (b[offset + 4] << 8) | b[offset + 5]) >>> 0;
}

/** A MAC as one exact Number (48 bits < 2^53), usable as a Map key without allocating. */
export function macKey(b: Uint8Array, offset: number): number {
  return macHigh(b, offset) * 0x1_0000_0000 + macLow(b, offset);
}

/** True when the MAC at `offset` is a group (multicast or broadcast) address: I/G bit set. */
export function isGroupMac(b: Uint8Array, offset: number): boolean {
  return (b[offset] & 1) !== 0;
}
