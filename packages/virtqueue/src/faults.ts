/**
 * Fault codes: small negative integers returned by the hot path (which never allocates nor
 * throws), each with a stable string `code` used by the typed errors built at the boundary.
 *
 * A hostile guest can raise these at line rate, so they stay numbers until a device decides to
 * log/count them.
 * @module
 */

// --- guest memory ----------------------------------------------------------------------------
/** Address or end ≥ 2^53, negative, or not an integer. */
export const FAULT_ADDR_RANGE = -1;
/** The start of the range is not mapped. */
export const FAULT_UNMAPPED = -2;
/** The range starts in mapped memory but runs into a gap. */
export const FAULT_GAP = -3;
/** A frontend-virtual range spans regions whose guest-physical ranges are not contiguous. */
export const FAULT_DISCONTIGUOUS = -4;

// --- descriptor chains -----------------------------------------------------------------------
/** The head index read from the available ring is ≥ the queue size. */
export const FAULT_HEAD_OUT_OF_RANGE = -10;
/** A `next` field is ≥ the queue size (or ≥ the indirect table's entry count). */
export const FAULT_NEXT_OUT_OF_RANGE = -11;
/** The chain has more descriptors than the queue size (a loop) — virtio 1.2 §2.7.5.3.1. */
export const FAULT_CHAIN_TOO_LONG = -12;
/** An indirect descriptor inside an indirect table — virtio 1.2 §2.7.5.3.1. */
export const FAULT_NESTED_INDIRECT = -13;
/** A descriptor with both INDIRECT and NEXT — virtio 1.2 §2.7.5.3.1. */
export const FAULT_INDIRECT_WITH_NEXT = -14;
/** An indirect table whose length is 0 or not a multiple of 16. */
export const FAULT_INDIRECT_BAD_LENGTH = -15;
/** An indirect table with more entries than this queue accepts. */
export const FAULT_INDIRECT_TOO_LARGE = -16;
/** VIRTQ_DESC_F_INDIRECT used although VIRTIO_RING_F_INDIRECT_DESC was not negotiated. */
export const FAULT_INDIRECT_NOT_NEGOTIATED = -17;
/** A device-readable descriptor after a device-writable one — virtio 1.2 §2.7.5.2. */
export const FAULT_READABLE_AFTER_WRITABLE = -18;
/** Total chain length ≥ 2^32 bytes — virtio 1.2 §2.7.5.2. */
export const FAULT_LENGTH_OVERFLOW = -19;
/** More segments than the DescriptorChain (or the queue's maxSegments) holds. */
export const FAULT_TOO_MANY_SEGMENTS = -20;

// --- queue -----------------------------------------------------------------------------------
/** avail.idx moved by more than the queue size since the last entry consumed. */
export const FAULT_AVAIL_IDX_JUMP = -30;
/** Queue size 0, not a power of two, or > 32768. */
export const FAULT_BAD_QUEUE_SIZE = -31;
/** A ring part's address is not aligned as virtio 1.2 §2.7 requires (or its mapping is not). */
export const FAULT_RING_MISALIGNED = -32;
/** A ring part is not inside one slab of guest memory. */
export const FAULT_RING_NOT_CONTIGUOUS = -33;

const NAMES: Record<number, string> = {
  [FAULT_ADDR_RANGE]: 'address-out-of-range',
  [FAULT_UNMAPPED]: 'unmapped',
  [FAULT_GAP]: 'runs-into-gap',
  [FAULT_DISCONTIGUOUS]: 'discontiguous',
  [FAULT_HEAD_OUT_OF_RANGE]: 'head-out-of-range',
  [FAULT_NEXT_OUT_OF_RANGE]: 'next-out-of-range',
  [FAULT_CHAIN_TOO_LONG]: 'chain-too-long',
  [FAULT_NESTED_INDIRECT]: 'nested-indirect',
  [FAULT_INDIRECT_WITH_NEXT]: 'indirect-with-next',
  [FAULT_INDIRECT_BAD_LENGTH]: 'indirect-bad-length',
  [FAULT_INDIRECT_TOO_LARGE]: 'indirect-too-large',
  [FAULT_INDIRECT_NOT_NEGOTIATED]: 'indirect-not-negotiated',
  [FAULT_READABLE_AFTER_WRITABLE]: 'readable-after-writable',
  [FAULT_LENGTH_OVERFLOW]: 'length-overflow',
  [FAULT_TOO_MANY_SEGMENTS]: 'too-many-segments',
  [FAULT_AVAIL_IDX_JUMP]: 'avail-index-jump',
  [FAULT_BAD_QUEUE_SIZE]: 'bad-queue-size',
  [FAULT_RING_MISALIGNED]: 'ring-misaligned',
  [FAULT_RING_NOT_CONTIGUOUS]: 'ring-not-contiguous',
};

/** Every fault code defined above (for tests and fuzzing). */
export const ALL_FAULTS: readonly number[] = Object.keys(NAMES).map(Number).sort((a, b) => b - a);

/** Stable string code of a fault number (`'unmapped'`, `'chain-too-long'` ...). */
export function faultName(fault: number): string {
  return NAMES[fault] ?? `unknown-fault(${fault})`;
}

/** True for fault codes that come from a guest-memory translation. */
export function isMemoryFault(fault: number): boolean {
  return fault <= FAULT_ADDR_RANGE && fault >= FAULT_DISCONTIGUOUS;
}

/** True when `value` is one of the fault codes above. */
export function isFault(value: number): boolean {
  return value < 0 && NAMES[value] !== undefined;
}
