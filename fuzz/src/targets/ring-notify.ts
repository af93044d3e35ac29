/**
 * Target `ring-notify`: notification decisions against the spec, for all wraps.
 *
 * The model is the plain-language rule: "notify when the index moved past `event`", i.e. when
 * `event` is one of the indices old, old+1, …, new-1 (mod 2^16) (virtio 1.2 §2.7.7.2 and
 * §2.7.10.2), computed here as a distance comparison independent of vring_need_event's form.
 * The device's shouldNotify and the driver's kickNeeded are driven through random publish
 * sequences from random start indices and compared with that model, in EVENT_IDX and flag mode.
 * @module
 */
import fc from 'fast-check';
import { DescriptorChain, VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_USED_F_NO_NOTIFY, vringNeedEvent } from '@vhost-ts/virtqueue';
import { MockGuest } from '@vhost-ts/virtqueue/testing';
import type { FuzzTarget } from './target.js';

/** Model: is `event` among the indices passed when moving old → new? */
export function passed(event: number, newIdx: number, oldIdx: number): boolean {
  const moved = (newIdx - oldIdx + 0x10000) % 0x10000;
  const dist = (event - oldIdx + 0x10000) % 0x10000;
  return dist < moved;
}

type Round = { batch: number; event: number; flag: boolean; enable: boolean };

export const notifyArb = fc.record({
  startIndex: fc.oneof(fc.integer({ min: 65500, max: 65535 }), fc.nat({ max: 0xffff })),
  eventIdx: fc.boolean(),
  formula: fc.tuple(fc.nat({ max: 0xffff }), fc.nat({ max: 0xffff }), fc.nat({ max: 0xffff })),
  rounds: fc.array(fc.record({
    batch: fc.integer({ min: 0, max: 8 }),
    event: fc.oneof(fc.nat({ max: 0xffff }), fc.integer({ min: -2, max: 10 })),
    flag: fc.boolean(),
    enable: fc.boolean(),
  }), { minLength: 1, maxLength: 40 }),
});

function fail(msg: string): never {
  throw new Error(`ring-notify: ${msg}`);
}

/** Runs one scenario; throws on a decision that differs from the model. */
export function runRingNotify(sc: { startIndex: number; eventIdx: boolean; formula: [number, number, number]; rounds: Round[] }): void {
  const [e, n, o] = sc.formula;
  if (vringNeedEvent(e, n, o) !== passed(e, n, o)) fail(`vringNeedEvent(${e}, ${n}, ${o})`);

  const g = new MockGuest({ queueSize: 8, startIndex: sc.startIndex, eventIdx: sc.eventIdx });
  const buf = g.alloc(8);
  const chain = new DescriptorChain(4);
  let usedOld = sc.startIndex, availOld = sc.startIndex;
  let first = true;
  for (const r of sc.rounds) {
    // Driver side: publish `batch` chains, decide on a kick.
    const dev = g.device;
    if (r.enable) dev.enableNotify(); else dev.disableNotify();
    // The device may set avail_event/flags; the driver's decision must follow them.
    const availEvent = sc.eventIdx ? g.driver.availEvent : 0;
    const noNotify = (g.driver.usedFlags & VIRTQ_USED_F_NO_NOTIFY) !== 0;
    for (let i = 0; i < r.batch; i++) g.driver.addOne(buf, 8, true);
    g.driver.publish();
    const availNew = g.driver.availIdx;
    const kick = g.driver.kickNeeded();
    const wantKick = availNew === availOld ? false
      : sc.eventIdx ? passed(availEvent, availNew, availOld) : !noNotify;
    if (kick !== wantKick) fail(`kick ${kick} for avail ${availOld}→${availNew} event ${availEvent} flags ${noNotify}`);
    availOld = availNew;

    // Device side: consume and publish, then decide on an interrupt.
    const event = (r.event + 0x10000) % 0x10000;
    if (sc.eventIdx) g.driver.setUsedEvent(event);
    g.driver.setAvailFlags(r.flag ? VIRTQ_AVAIL_F_NO_INTERRUPT : 0);
    let p;
    while ((p = dev.pop(chain)) === 1) dev.pushUsed(chain.head, 8);
    if (p !== 0) fail(`pop fault ${p}`);
    dev.publishUsed();
    const usedNew = dev.publishedUsedIdx;
    const notify = dev.shouldNotify();
    let want: boolean;
    if (sc.eventIdx) want = first ? true : passed(event, usedNew, usedOld); // §2.7.7.2: flags ignored
    else want = usedNew !== usedOld && !r.flag;
    if (!sc.eventIdx && first && usedNew === usedOld) want = !r.flag; // first decision is conservative
    if (notify !== want) fail(`notify ${notify} for used ${usedOld}→${usedNew} event ${event} flag ${r.flag} first ${first}`);
    first = false;
    usedOld = usedNew;
    while (g.driver.popUsed() >= 0) { /* recycle descriptors */ }
  }
}

export const ringNotify: FuzzTarget = {
  name: 'ring-notify',
  description: 'EVENT_IDX and flag notification decisions vs the spec rule, all wraps',
  testRuns: 500,
  property: () => fc.property(notifyArb, (s) => { runRingNotify(s as Parameters<typeof runRingNotify>[0]); }),
};
