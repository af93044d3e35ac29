/**
 * A bench-only {@link NetBackend} that generates traffic for the guest: one preallocated batch
 * of identical frames is delivered into RX queue 0 again and again, as fast as the guest posts
 * buffers. The counterpart of DPDK's vhost PMD in `txonly` mode.
 *
 * Pacing follows the device's own back-pressure signal: the source delivers while
 * `rxReady(0)` (no frames held for lack of buffers); once the guest's ring runs dry the
 * unwritten rest of a batch waits in the queue's hold ring and the source stops until the
 * device reports space again (`onRxSpace`, after the guest's kick drained the hold ring).
 * @module
 */
import { FrameBatch, VIRTIO_NET_HDR_V1_SIZE, type NetBackend, type NetBackendPort, type NetPortSink } from '@vhost-ts/devices-net';

/** Batches delivered per turn of the event loop before yielding (control messages, signals). */
const BATCHES_PER_TURN = 16;

/** Fills `b` with `count` copies of one Ethernet frame of `frameSize` bytes (broadcast, IPv4 ethertype). */
export function fillFrames(b: FrameBatch, count: number, frameSize: number): void {
  const frame = new Uint8Array(VIRTIO_NET_HDR_V1_SIZE + frameSize); // header all zero: no offloads
  const eth = VIRTIO_NET_HDR_V1_SIZE;
  frame.fill(0xff, eth, eth + 6); // broadcast: accepted whatever the guest's RX filter
  frame.set([0x02, 0x76, 0x68, 0x74, 0x73, 0x01], eth + 6); // locally administered source
  frame[eth + 12] = 0x08; // ethertype IPv4
  frame[eth + 13] = 0x00;
  for (let i = eth + 14; i < frame.length; i++) frame[i] = i & 0xff;
  b.clear();
  for (let i = 0; i < count; i++) b.push(frame);
}

/** Generates frames into the guest's RX ring. */
export class SourceBackend implements NetBackend {
  /** The interface knows three kinds; like the loopback this one is in-process without offloads. */
  readonly kind = 'loopback' as const;
  readonly offloadFeatures = 0n;
  readonly slotSize: number;
  readonly maxPairs = 1;
  private readonly batch: FrameBatch;
  private readonly ports = new Set<SourcePort>();

  /**
   * @param frameSize Ethernet frame length generated (CRC excluded)
   * @param batchFrames frames per delivery
   */
  constructor(readonly frameSize: number, batchFrames = 64) {
    this.slotSize = VIRTIO_NET_HDR_V1_SIZE + frameSize;
    this.batch = new FrameBatch(batchFrames, this.slotSize);
    fillFrames(this.batch, batchFrames, frameSize);
  }

  connect(sink: NetPortSink): NetBackendPort {
    const p = new SourcePort(sink, this.batch, this.ports);
    this.ports.add(p);
    return p;
  }

  close(): void {
    for (const p of [...this.ports]) p.close();
  }
}

class SourcePort implements NetBackendPort {
  private active = false;
  private scheduled = false;
  private readonly turn = (): void => {
    this.scheduled = false;
    this.pump();
  };

  constructor(private readonly sink: NetPortSink, private readonly batch: FrameBatch, private readonly owner: Set<SourcePort>) {}

  /** Delivers while the RX queue takes frames; yields to the event loop between turns. */
  private pump(): void {
    const sink = this.sink;
    const b = this.batch;
    for (let i = 0; i < BATCHES_PER_TURN; i++) {
      if (!this.active || !sink.rxReady(0)) return; // onRxSpace resumes us
      sink.deliver(0, b, null, b.count);
    }
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.turn);
    }
  }

  transmit(): void {
    // Frames the guest sends to a source are ignored (the bench's guest only receives).
  }

  onRxSpace(pair: number): void {
    if (pair === 0) this.pump();
  }

  setFeatures(): void {}

  setActivePairs(pairs: number): void {
    this.active = pairs > 0;
    if (this.active) this.pump();
  }

  close(): void {
    this.active = false;
    this.owner.delete(this);
  }
}
