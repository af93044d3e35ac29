/**
 * Receive filtering as the control queue configures it (virtio 1.2 §5.1.6.5.1 "Packet Receive
 * Filtering" and §5.1.6.5.2 "Setting MAC Address Filtering"). Until the driver says otherwise
 * the filter is promiscuous, as QEMU's virtio-net is, so a driver that never uses the control
 * queue receives everything the backend sends.
 * @module
 */
import { isGroupMac, macKey } from './mac-address.js';

/** Entries per MAC table we keep; a longer table sets the matching overflow (accept-all) flag. */
export const MAC_TABLE_ENTRIES = 64;

/** The RX filter state of one device. */
export class RxFilter {
  promisc = true;
  allmulti = false;
  alluni = false;
  nomulti = false;
  nouni = false;
  nobcast = false;
  /** Unicast addresses accepted besides the device MAC (keys from `macKey`). */
  readonly unicast = new Set<number>();
  readonly multicast = new Set<number>();
  /** The device's own MAC as a key. */
  macKey = 0;
  /** Frames the filter refused. */
  filtered = 0;

  reset(mac: Uint8Array): void {
    this.promisc = true;
    this.allmulti = this.alluni = this.nomulti = this.nouni = this.nobcast = false;
    this.unicast.clear();
    this.multicast.clear();
    this.macKey = macKey(mac, 0);
  }

  /** True when a frame with its destination MAC at `b[eth]` should reach the driver. */
  accept(b: Uint8Array, eth: number): boolean {
    if (this.promisc) return true;
    if (isGroupMac(b, eth)) {
      if ((b[eth] & b[eth + 1] & b[eth + 2] & b[eth + 3] & b[eth + 4] & b[eth + 5]) === 0xff) {
        return !this.nobcast;
      }
      if (this.nomulti) return false;
      return this.allmulti || this.multicast.has(macKey(b, eth));
    }
    if (this.nouni) return false;
    if (this.alluni) return true;
    const key = macKey(b, eth);
    return key === this.macKey || this.unicast.has(key);
  }
}
