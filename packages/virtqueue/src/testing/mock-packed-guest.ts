/**
 * MockPackedGuest — the mock guest with a packed ring (virtio 1.2 §2.8): the same memory map,
 * allocator and canaries as MockGuest (MockGuestMemory), a PackedQueueDriver and a
 * PackedQueueDevice. The packed ring reuses the split placement: the descriptor ring where the
 * split descriptor table is, the driver event area at the split avail ring, the device event
 * area at the split used ring.
 * @module
 */
import { PackedQueueDevice, type PackedQueueDeviceOptions } from '../packed-queue-device.js';
import { PackedQueueDriver } from '../packed-queue-driver.js';
import { encodePackedIndex, type PackedQueueLayout } from '../packed-ring.js';
import { MockGuestMemory, type MockMemoryOptions } from './mock-memory.js';

/** Options of a packed mock guest. */
export interface MockPackedGuestOptions extends Omit<MockMemoryOptions, 'startIndex'> {
  /** Starting slot of both sides (default 0; e.g. size - 2 to exercise wrap-around). */
  startSlot?: number;
  /** Starting wrap counter (default 1, as a fresh ring). */
  startWrap?: 0 | 1;
  /** Extra device options. */
  device?: Partial<PackedQueueDeviceOptions>;
}

/** A guest with memory, one packed queue laid out in it, a driver and a device. */
export class MockPackedGuest extends MockGuestMemory {
  readonly packedLayout: PackedQueueLayout;
  /** Starting position, slot | wrap << 15. */
  readonly start: number;
  driver: PackedQueueDriver;
  device: PackedQueueDevice;
  private readonly deviceOpts: PackedQueueDeviceOptions;

  constructor(opts: MockPackedGuestOptions = {}) {
    super({ ...opts, startIndex: 0 });
    const l = this.layout;
    this.packedLayout = { size: l.size, descGpa: l.descGpa, driverGpa: l.availGpa, deviceGpa: l.usedGpa };
    this.start = encodePackedIndex(opts.startSlot ?? 0, opts.startWrap ?? 1);
    this.deviceOpts = {
      eventIdx: this.eventIdx, indirect: this.indirect, nextAvail: this.start, maxIndirect: this.indirectEntries,
      ...opts.device,
    };
    this.driver = this.newDriver();
    this.device = this.newDevice();
  }

  /** A fresh driver over the same ring (re-initialises descriptor flags and event areas). */
  newDriver(): PackedQueueDriver {
    this.driver = new PackedQueueDriver(this.memory, this.packedLayout, {
      eventIdx: this.eventIdx,
      indirectArea: { gpa: this.indirectGpa, entriesPerHead: this.indirectEntries },
      start: this.start,
    });
    return this.driver;
  }

  /** A fresh device over the same ring (as after SET_VRING_ADDR/BASE); options override. */
  newDevice(over: Partial<PackedQueueDeviceOptions> = {}): PackedQueueDevice {
    this.device = new PackedQueueDevice(this.memory, this.packedLayout, { ...this.deviceOpts, ...over });
    return this.device;
  }
}
