/**
 * VIRTIO_RING_F_EVENT_IDX notification rule (virtio 1.2 §2.7.7.2 and §2.7.10.2).
 * @module
 */

/**
 * True when moving an index from `oldIdx` to `newIdx` crosses `eventIdx`, i.e. the other side
 * asked to be notified when the index passes `eventIdx`: `(new - event - 1) mod 2^16 <
 * (new - old) mod 2^16`. Wrap-safe for all 16-bit values.
 */
export function vringNeedEvent(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}
