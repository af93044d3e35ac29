/**
 * The virtio-net configuration space (virtio 1.2 §5.1.4), kept as its little-endian byte image:
 *
 * ```
 * off  size  field
 *   0     6  mac
 *   6     2  status                       (VIRTIO_NET_S_LINK_UP | VIRTIO_NET_S_ANNOUNCE)
 *   8     2  max_virtqueue_pairs          (valid with VIRTIO_NET_F_MQ)
 *  10     2  mtu                          (valid with VIRTIO_NET_F_MTU)
 *  12     4  speed                        (Mbit/s; 0xffffffff = unknown)
 *  16     1  duplex                       (0x01 full, 0xff unknown)
 *  17     1  rss_max_key_size             (RSS not offered: 0)
 *  18     2  rss_max_indirection_table_length
 *  20     4  supported_hash_types
 * ```
 * @module
 */
import { VIRTIO_NET_S_ANNOUNCE, VIRTIO_NET_S_LINK_UP } from './constants.js';

/** Size of the config image we expose. */
export const NET_CONFIG_SIZE = 24;
export const CFG_MAC = 0;
export const CFG_STATUS = 6;
export const CFG_MAX_VQ_PAIRS = 8;
export const CFG_MTU = 10;
export const CFG_SPEED = 12;
export const CFG_DUPLEX = 16;

/** Config space of one device. Reads outside the image return zeros (contract of `readConfig`). */
export class NetConfig {
  /** The raw little-endian image. */
  readonly bytes = new Uint8Array(NET_CONFIG_SIZE);
  private readonly view = new DataView(this.bytes.buffer);

  constructor(mac: Uint8Array, maxPairs: number, mtu: number) {
    this.bytes.set(mac.subarray(0, 6), CFG_MAC);
    this.view.setUint16(CFG_MAX_VQ_PAIRS, maxPairs, true);
    this.view.setUint16(CFG_MTU, mtu, true);
    this.view.setUint32(CFG_SPEED, 0xffffffff, true); // unknown
    this.bytes[CFG_DUPLEX] = 0xff; // unknown
    this.view.setUint16(CFG_STATUS, VIRTIO_NET_S_LINK_UP, true);
  }

  /** The MAC currently in config space. */
  get mac(): Uint8Array {
    return this.bytes.subarray(CFG_MAC, CFG_MAC + 6);
  }

  get status(): number {
    return this.view.getUint16(CFG_STATUS, true);
  }

  get linkUp(): boolean {
    return (this.status & VIRTIO_NET_S_LINK_UP) !== 0;
  }

  /** Sets or clears LINK_UP; returns true when the value changed. */
  setLinkUp(up: boolean): boolean {
    return this.setStatusBit(VIRTIO_NET_S_LINK_UP, up);
  }

  /** Sets or clears ANNOUNCE; returns true when the value changed. */
  setAnnounce(on: boolean): boolean {
    return this.setStatusBit(VIRTIO_NET_S_ANNOUNCE, on);
  }

  private setStatusBit(mask: number, on: boolean): boolean {
    const old = this.status;
    const next = on ? old | mask : old & ~mask;
    this.view.setUint16(CFG_STATUS, next, true);
    return next !== old;
  }

  /** Copies `length` bytes at `offset`; bytes outside the image read as 0. */
  read(offset: number, length: number): Uint8Array {
    const out = new Uint8Array(Math.max(0, Math.min(length, 256)));
    for (let i = 0; i < out.length; i++) {
      const o = offset + i;
      if (o >= 0 && o < NET_CONFIG_SIZE) out[i] = this.bytes[o];
    }
    return out;
  }

  /** The driver may write these bytes: the mac, by a legacy driver only (see write). */
  writable(offset: number, length: number, legacy: boolean): boolean {
    return length === 0 || (legacy && offset >= CFG_MAC && offset + length <= CFG_MAC + 6);
  }

  /**
   * Driver writes. virtio 1.2 §5.1.4: every field is read-only for a VERSION_1 driver; a
   * legacy driver may write `mac` (§5.1.4.3). Only the mac bytes are written (callers refuse
   * other driver writes first, see writable). Returns true when anything changed.
   */
  write(offset: number, data: Uint8Array, legacy: boolean): boolean {
    if (!legacy) return false;
    let changed = false;
    for (let i = 0; i < data.length; i++) {
      const o = offset + i;
      if (o >= CFG_MAC && o < CFG_MAC + 6 && this.bytes[o] !== data[i]) {
        this.bytes[o] = data[i];
        changed = true;
      }
    }
    return changed;
  }

  /** The MTU field. */
  get mtu(): number {
    return this.view.getUint16(CFG_MTU, true);
  }

  /** Sets the MTU field (VHOST_USER_NET_SET_MTU: the front-end's value wins). */
  setMtu(mtu: number): void {
    this.view.setUint16(CFG_MTU, mtu, true);
  }

  /** Replaces the MAC (VIRTIO_NET_CTRL_MAC_ADDR_SET updates config space too, §5.1.6.5.2). */
  setMac(mac: Uint8Array): void {
    this.bytes.set(mac.subarray(0, 6), CFG_MAC);
  }
}
