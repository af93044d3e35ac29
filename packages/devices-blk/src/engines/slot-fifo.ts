/**
 * A FIFO of request slots waiting for a resource (a kernel worker, a bounce chunk), preallocated
 * for every slot of a queue: a slot waits at most once at a time, so it never overflows.
 * @module
 */
export class SlotFifo {
  private readonly slots: Int32Array;
  private head = 0;
  /** Slots waiting. */
  count = 0;

  constructor(capacity: number) {
    this.slots = new Int32Array(capacity);
  }

  push(slot: number): void {
    this.slots[(this.head + this.count) % this.slots.length] = slot;
    this.count++;
  }

  /** The oldest waiting slot (call only while count > 0). */
  shift(): number {
    const slot = this.slots[this.head];
    this.head = (this.head + 1) % this.slots.length;
    this.count--;
    return slot;
  }
}
