/**
 * Runs one hostile case on one connection and reports, as a list of problems, everything the
 * device did that it must not do: crash, hang, answer differently than expected, write guest
 * memory it was not given, or keep processing a ring it declared broken.
 *
 * Expected outcomes:
 * - `status`: the request completes with a virtio-blk status (IOERR / UNSUPP) in its status byte
 *   and the used length the spec gives (virtio 1.2 §2.7.8.2: bytes written, status included);
 *   the ring goes on working.
 * - `returned`: the buffer comes back in the used ring with the given length (net: a malformed
 *   TX frame is dropped, its chain returned with len 0); the ring goes on working.
 * - `broken`: the device signals the ring's error eventfd, reports NEEDS_RESET in GET_STATUS
 *   and sends one CONFIG_CHANGE_MSG on the back-end channel (virtio 1.2 §2.1.2.1; DRIVER_OK is
 *   set), completes nothing from the bad chain on, and ignores later kicks.
 * @module
 */
import type { AttackSession } from './attack-session.js';

/** What a case expects from the device. */
export type Expectation =
  | { readonly kind: 'status'; readonly head: number; readonly statusGpa: number; readonly status: number; readonly usedLen: number;
      /** Used elements expected for `head` (a head offered twice); default 1. */
      readonly times?: number }
  | { readonly kind: 'returned'; readonly head: number; readonly usedLen: number; readonly times?: number }
  | { readonly kind: 'broken'; readonly completes?: readonly Completion[] };

/**
 * A well-formed request offered before the bad chain: the device accepted it before it met the
 * fault, so it must still complete it (in this order), and may write its writable buffers.
 */
export interface Completion {
  readonly head: number;
  readonly usedLen: number;
  /** Where its status byte is, and the value it must hold (blk). */
  readonly statusGpa?: number;
  readonly status?: number;
}

/** How the runner drives and probes a case. */
export interface CaseDriver {
  /** Ring the case attacks (whose outcome is checked). */
  readonly ring: number;
  /** Makes the device look at the case (default: kick `ring`). */
  trigger?(): void;
  /** After a `status`/`returned` case: proves the ring still works; returns problems. */
  probe(): Promise<string[]>;
  /** After a `broken` case: offers a well-formed request on `ring` (and kicks). */
  poke(): void;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** How long a broken ring is watched for (wrongly) completing a later request. */
const QUIET_MS = 150;

/**
 * Runs a case whose chains are already offered (not kicked).
 * @returns the problems found, and a short description of what the device did.
 */
export async function runCase(s: AttackSession, expect: Expectation, d: CaseDriver): Promise<{ problems: string[]; observed: string }> {
  const r = s.ring(d.ring);
  const problems: string[] = [];
  let observed = '';
  // A broken ring must not write anything but its used ring: not even the buffers it was offered.
  // (Cases with earlier good requests declared exactly those requests' buffers.)
  if (expect.kind === 'broken' && expect.completes === undefined) s.arena.clearAllowed();
  s.snapshot();
  if (d.trigger !== undefined) d.trigger();
  else r.kick();

  if (expect.kind === 'broken') {
    const err = await r.waitErr(5000);
    observed = err ? 'ring error signalled' : 'no ring error';
    if (!err) problems.push('the ring error eventfd was not signalled');
    if (s.hasStatus && !(await s.needsReset())) problems.push('GET_STATUS does not report NEEDS_RESET');
    if (s.expectsConfigChange) {
      const deadline = Date.now() + 3000;
      while (s.configChanges === 0 && Date.now() < deadline) await sleep(5);
      if (s.configChanges !== 1) problems.push(`${s.configChanges} CONFIG_CHANGE_MSG on the back-end channel, expected 1 (virtio 1.2 §2.1.2.1)`);
      else observed += ', CONFIG_CHANGE_MSG';
    }
    const good = expect.completes ?? [];
    if (good.length > 0 && !(await r.waitUsed(good.length, 5000))) {
      problems.push(`${r.usedIdx()} of ${good.length} earlier requests completed`);
    }
    // Give a wrong extra completion a moment to show up.
    await sleep(50);
    if (r.usedIdx() !== good.length) problems.push(`used.idx is ${r.usedIdx()}, expected ${good.length} (the ring is broken)`);
    good.forEach((g, k) => {
      const e = r.usedElem(k);
      if (e.id !== g.head || e.len !== g.usedLen) problems.push(`used[${k}] = {id ${e.id}, len ${e.len}}, expected {${g.head}, ${g.usedLen}}`);
      if (g.statusGpa !== undefined && s.arena.read(g.statusGpa, 1)[0] !== g.status) {
        problems.push(`used[${k}]: status ${s.arena.read(g.statusGpa, 1)[0]}, expected ${g.status}`);
      }
    });
    if (good.length > 0) observed += `, ${good.length} earlier request(s) completed`;
  } else {
    const times = expect.times ?? 1;
    const done = await r.waitUsed(times, 5000);
    // Give a wrong extra completion a moment to show up.
    if (done) await sleep(20);
    if (!done) {
      problems.push(`no used element within the timeout${r.errSignaled() ? ' (the ring was declared broken)' : ''}`);
      observed = 'no completion';
    } else if (r.usedIdx() !== times) {
      problems.push(`used.idx is ${r.usedIdx()}, expected ${times}`);
      observed = `${r.usedIdx()} completions`;
    } else {
      for (let k = 0; k < times; k++) {
        const e = r.usedElem(k);
        observed = `used {id ${e.id}, len ${e.len}}${times > 1 ? ` × ${times}` : ''}`;
        if (e.id !== expect.head) problems.push(`used[${k}] id ${e.id}, expected ${expect.head}`);
        if (e.len !== expect.usedLen) problems.push(`used[${k}] len ${e.len}, expected ${expect.usedLen}`);
      }
      if (expect.kind === 'status') {
        const st = s.arena.read(expect.statusGpa, 1)[0];
        observed += `, status ${st}`;
        if (st !== expect.status) problems.push(`status byte ${st}, expected ${expect.status}`);
      }
    }
    if (r.errSignaled()) problems.push('the ring was declared broken');
    if (s.configChanges !== 0) problems.push('unexpected CONFIG_CHANGE_MSG on the back-end channel');
    if (s.hasStatus && (await s.needsReset())) problems.push('GET_STATUS reports NEEDS_RESET');
  }
  for (const w of s.arena.diff()) problems.push(`stray write at 0x${w.gpa.toString(16)}: ${w.before} → ${w.after}`);
  for (const c of s.arena.brokenCanaries()) problems.push(`canary at 0x${c.toString(16)} overwritten`);
  if (!s.connected) problems.push('the back-end dropped the connection');

  if (problems.length === 0) {
    if (expect.kind === 'broken') {
      const before = r.usedIdx();
      d.poke();
      await sleep(QUIET_MS);
      if (r.usedIdx() !== before) problems.push('the broken ring completed a later request');
    } else {
      for (const p of await d.probe()) problems.push(`follow-up on the same ring: ${p}`);
    }
  }
  return { problems, observed };
}
