/**
 * The MAC learning table of the L2 switch: source MAC → port, with ageing. Keys are MACs as
 * exact 48-bit Numbers (see `macKey`), so learning and lookup allocate nothing once a MAC is
 * known.
 * @module
 */

/** Default age after which a learned MAC is forgotten (the 802.1D default is 300 s). */
export const DEFAULT_MAC_AGE_MS = 300_000;

/** MAC → port with last-seen time. */
export class MacTable {
  private readonly port = new Map<number, number>();
  private readonly seen = new Map<number, number>();
  readonly ageMs: number;
  readonly maxEntries: number;
  /** Learn attempts refused because the table was full. */
  overflows = 0;
  /** Entries that moved from one port to another (a guest migrated or a loop). */
  moves = 0;

  constructor(ageMs = DEFAULT_MAC_AGE_MS, maxEntries = 4096) {
    this.ageMs = ageMs;
    this.maxEntries = maxEntries;
  }

  get size(): number {
    return this.port.size;
  }

  /** Records that `mac` was seen on `port` at `now` (ms). A full table refuses new MACs (bounded memory against a MAC-flooding guest). */
  learn(mac: number, port: number, now: number): void {
    const old = this.port.get(mac);
    if (old === undefined) {
      if (this.port.size >= this.maxEntries) {
        this.sweep(now);
        if (this.port.size >= this.maxEntries) {
          this.overflows++;
          return;
        }
      }
    } else if (old !== port) {
      this.moves++;
    }
    this.port.set(mac, port);
    this.seen.set(mac, now);
  }

  /** Port of `mac`, or -1 when unknown or aged out. */
  lookup(mac: number, now: number): number {
    const p = this.port.get(mac);
    if (p === undefined) return -1;
    if (now - (this.seen.get(mac) as number) > this.ageMs) {
      this.port.delete(mac);
      this.seen.delete(mac);
      return -1;
    }
    return p;
  }

  /** Forgets every MAC learned on `port` (the port went away). */
  forgetPort(port: number): void {
    for (const [mac, p] of this.port) {
      if (p === port) {
        this.port.delete(mac);
        this.seen.delete(mac);
      }
    }
  }

  /** Drops aged entries; returns how many. */
  sweep(now: number): number {
    let n = 0;
    for (const [mac, t] of this.seen) {
      if (now - t > this.ageMs) {
        this.seen.delete(mac);
        this.port.delete(mac);
        n++;
      }
    }
    return n;
  }

  clear(): void {
    this.port.clear();
    this.seen.clear();
  }
}
