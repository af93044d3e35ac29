/**
 * The `popDirect` oracle shared by the hostile-ring targets (ring-corrupt's `ring-direct` and
 * packed-corrupt's `packed-direct`): one run of direct pops under a corrupted ring must return
 * a known fault (and leave the queue broken) or at most `n` chains, each inside a slab with a
 * buffer id below the queue size; giving back the end of the run (as devices-net RX does) and
 * popping again must hand out exactly the same chains. Taken chains are used as a device would.
 * @module
 */
import fc from 'fast-check';
import { ALL_FAULTS, type DeviceQueue, type GuestMemory } from '@vhost-ts/virtqueue';

/** The pop step of a scenario: `pop` only, or with `direct` also `popDirect` runs of either direction. */
export type PopStep = { s: 'pop'; n: number; direct?: boolean; writable?: boolean };

/** Arbitrary pop steps (see {@link PopStep}). */
export function popStepArb(direct: boolean): fc.Arbitrary<PopStep> {
  return direct
    ? fc.record({ s: fc.constant('pop' as const), n: fc.integer({ min: 1, max: 20 }), direct: fc.boolean(), writable: fc.boolean() })
    : fc.record({ s: fc.constant('pop' as const), n: fc.integer({ min: 1, max: 20 }) });
}

/** Preallocated output of two popDirect calls (20 chains each). */
export class DirectPopper {
  private readonly direct = new Float64Array(4 * 20);
  private readonly again = new Float64Array(4 * 20);
  /** Set once a fault was reported: no chain may come out after it. */
  faulted = false;

  constructor(private readonly fail: (msg: string) => never) {}

  /** One run of at most `n` (≤ 20) chains of the given direction; throws through `fail`. */
  run(device: DeviceQueue, mem: GuestMemory, n: number, writable: boolean): void {
    const fail: (msg: string) => never = this.fail;
    const direct = this.direct;
    let r: number;
    try {
      r = device.popDirect(direct, n, writable);
    } catch (e) {
      fail(`popDirect threw ${String(e)}`);
    }
    if (r < 0) {
      if (!ALL_FAULTS.includes(r)) fail(`popDirect returned unknown fault ${r}`);
      this.faulted = true;
      if (!device.isBroken) fail('popDirect fault without a broken queue');
      return;
    }
    if (this.faulted && r > 0) fail('a broken queue popped (popDirect)');
    if (!(Number.isInteger(r) && r <= n)) fail(`popDirect returned ${r} for max ${n}`);
    const back = r > 1 ? n % r : 0;
    if (back > 0) {
      const popped = device.popped;
      const at = device.nextAvail;
      try {
        device.unpop(back);
      } catch (e) {
        fail(`unpop(${back}) after a run of ${r} threw ${String(e)}`);
      }
      if (device.popped !== popped - back) fail(`unpop(${back}): popped ${popped} → ${device.popped}`);
      const again = device.popDirect(this.again, back, writable);
      if (again !== back) fail(`after unpop(${back}) popDirect returned ${again}`);
      if (device.nextAvail !== at) fail('after unpop and the same pops, another position');
      for (let k = 0; k < back * 4; k++) {
        if (this.again[k] !== direct[4 * (r - back) + k]) fail(`after unpop(${back}): entry ${k >> 2} differs`);
      }
    }
    for (let k = 0; k < r; k++) {
      const head = direct[4 * k], s = direct[4 * k + 1], off = direct[4 * k + 2], len = direct[4 * k + 3];
      if (!(head >= 0 && head < device.size)) fail(`popDirect: head ${head} out of range`);
      if (!(s >= 0 && s < mem.slabCount)) fail(`popDirect: slab ${s}`);
      if (!(off >= 0 && len > 0 && off + len <= mem.slabs[s].length)) fail(`popDirect: ${off}+${len} outside slab ${s}`);
      const used = writable ? Math.min(len, 1 << 16) : 0;
      if (writable) mem.slabs[s].fill(0x3c, off, off + used);
      try {
        device.pushUsed(head, used);
      } catch (e) {
        fail(`used path threw ${String(e)}`);
      }
    }
    try {
      device.publishUsed();
      device.shouldNotify();
    } catch (e) {
      fail(`used path threw ${String(e)}`);
    }
  }
}
