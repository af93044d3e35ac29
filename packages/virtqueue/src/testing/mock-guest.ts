/**
 * MockGuest — a guest made of plain ArrayBuffers, with a split-ring driver and device on one
 * queue. The one mock used by unit tests, fuzz targets, benches and device tests; the memory
 * map, allocator and canaries are MockGuestMemory's (see mock-memory.ts).
 * @module
 */
import { SplitQueueDevice, type SplitQueueDeviceOptions } from '../split-queue-device.js';
import { SplitQueueDriver } from '../split-queue-driver.js';
import { MockGuestMemory, type MockMemoryOptions } from './mock-memory.js';

/** Options of a mock guest. */
export interface MockGuestOptions extends MockMemoryOptions {
  /** Extra device options. */
  device?: Partial<SplitQueueDeviceOptions>;
  /** VIRTIO_F_IN_ORDER on both sides (driver and device). Default false. */
  inOrder?: boolean;
}

/** A guest with memory, one split queue laid out in it, a driver and a device. */
export class MockGuest extends MockGuestMemory {
  driver: SplitQueueDriver;
  device: SplitQueueDevice;
  private readonly deviceOpts: SplitQueueDeviceOptions;

  constructor(opts: MockGuestOptions = {}) {
    super(opts);
    this.deviceOpts = {
      eventIdx: this.eventIdx, indirect: this.indirect, nextAvail: this.startIndex, maxIndirect: this.indirectEntries,
      inOrder: opts.inOrder ?? false,
      ...opts.device,
    };
    this.driver = this.newDriver();
    this.device = this.newDevice();
  }

  /** A fresh driver over the same rings (re-initialises the ring headers). */
  newDriver(): SplitQueueDriver {
    this.driver = new SplitQueueDriver(this.memory, this.layout, {
      eventIdx: this.eventIdx,
      indirectArea: { gpa: this.indirectGpa, entriesPerHead: this.indirectEntries },
      startIndex: this.startIndex,
      inOrder: this.deviceOpts.inOrder,
    });
    return this.driver;
  }

  /** A fresh device over the same rings (as after SET_VRING_ADDR/BASE); options override. */
  newDevice(over: Partial<SplitQueueDeviceOptions> = {}): SplitQueueDevice {
    this.device = new SplitQueueDevice(this.memory, this.layout, { ...this.deviceOpts, ...over });
    return this.device;
  }
}
