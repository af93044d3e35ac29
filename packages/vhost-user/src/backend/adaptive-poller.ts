/**
 * AdaptivePoller — bounded, self-tuning busy-polling of a queue after a batch, so a busy queue
 * is served without a kick → eventfd → event-loop → JS wake-up per batch, and an idle queue
 * costs no CPU at all.
 *
 * ```
 *  batch done ─▶ spin(ready) up to `window` µs (notifications still off)
 *                 ├─ ready() true  ─▶ "hit": process the next batch, no kick, no wake-up
 *                 └─ window over   ─▶ enableNotify, sleeping() ─▶ … kick … ─▶ woke()
 *                                                                   │
 *       blocked (window + sleep) ≤ max: the window was too short ──▶ grow (×2, from startUs)
 *       blocked > max: the queue went quiet ────────────────────────▶ shrink (÷2, to 0)
 * ```
 *
 * The policy is QEMU's AioContext polling (util/aio-posix.c, poll-max-ns / poll-grow /
 * poll-shrink) restated for a single-threaded JS handler: we only ever spin right after a
 * batch, so a queue that gets no requests never spins, and a window that keeps missing decays
 * to zero. Because a spin blocks the Node event loop (control socket, other queues), a
 * handler must also stop spinning after {@link AdaptivePoller.yieldMs} of continuous work:
 * {@link AdaptivePoller.mayContinue} tells it when — and, in a {@link PollGroup}, as soon as
 * another queue of the group has work ({@link AdaptivePoller.yielded} after a spin).
 * @module
 */
import type { HasWork, PollGroup } from './poll-group.js';

/**
 * Spinning reads the clock about once per µs, not once per look at the ring: a read costs more
 * than a look (≈ 70 ns against ≈ 12) and allocates (performance.now's result is a heap number on
 * Node 20). With one read per look a busy blk queue made ~100 MB/s of garbage, a scavenge every
 * ~35 ms (allocation-sampling profile of the back-end). The looks between reads start at
 * LOOKS_FIRST and double while a round of them takes under CLOCK_ROUND_MS, so a window
 * overshoots by at most about a µs also when a look is a native call (the file engine's
 * completion-ring peek, ≈ 150 ns).
 */
const LOOKS_FIRST = 4;
const LOOKS_MAX = 1024;
const CLOCK_ROUND_MS = 0.0005;

/** Options of {@link AdaptivePoller}. */
export interface AdaptivePollerOptions {
  /** Longest busy-poll window in µs (0 disables polling). */
  maxUs: number;
  /** First window when growing from 0, in µs (default min(4, maxUs)). */
  startUs?: number;
  /**
   * Longest continuous run (processing + spinning) of one handler call before it must yield to
   * the event loop, in ms (default 1).
   */
  yieldMs?: number;
  /** Clock in ms (tests inject one; default `performance.now`). */
  now?: () => number;
  /** The handlers this one takes turns with (see {@link AdaptivePoller.join}). */
  group?: PollGroup;
}

/** Counters of a poller (monotonic). */
export class PollCounters {
  /** Spins that found work before the window ended. */
  hits = 0;
  /** Spins that ran out their window. */
  misses = 0;
  /**
   * Microseconds spent spinning (hits and misses). A hit counts to the spin's last clock read
   * (the clock is read about once per µs, not on the hit): under by less than a µs per hit.
   */
  spinUs = 0;
  /** Window grown / shrunk. */
  grows = 0;
  shrinks = 0;
  /** Spins and runs cut short because another member of the group had work. */
  yields = 0;
}

/** The adaptive busy-poll policy of one queue handler. */
export class AdaptivePoller {
  /** Upper bound of the window, µs. */
  readonly maxUs: number;
  readonly startUs: number;
  /** Continuous-run budget before yielding, ms (may be changed at run time). */
  yieldMs: number;
  readonly counters = new PollCounters();
  /** Current window, µs (0 = do not spin). */
  windowUs: number;
  private readonly now: () => number;
  /** When the handler went to sleep after a miss (ms), or -1. */
  private sleptAt: number;
  /** Length of the missed window that preceded the sleep, µs. */
  private missedUs: number;
  /** Start of the current continuous run (ms), for yielding. */
  private runStart: number;
  private readonly group: PollGroup | null;
  /** This handler's membership in `group` (null until join). */
  private member: HasWork | null = null;
  /**
   * The last spin ended because another member of the group had work (not a miss: the window
   * does not adapt). The handler should give the event loop a turn with notifications still
   * off and go on after it.
   */
  yielded = false;

  constructor(opts: AdaptivePollerOptions) {
    const maxUs = opts.maxUs;
    if (!(Number.isFinite(maxUs) && maxUs >= 0 && maxUs <= 1_000_000)) throw new RangeError(`poll maxUs must be in 0..1000000, got ${maxUs}`);
    this.maxUs = maxUs;
    this.startUs = Math.min(opts.startUs ?? 4, maxUs);
    if (!(this.startUs > 0) && maxUs > 0) throw new RangeError(`poll startUs must be > 0, got ${opts.startUs}`);
    this.yieldMs = opts.yieldMs ?? 1;
    if (!(Number.isFinite(this.yieldMs) && this.yieldMs > 0)) throw new RangeError(`poll yieldMs must be > 0, got ${opts.yieldMs}`);
    this.now = opts.now ?? performance.now.bind(performance);
    // Start polling at once: a queue is started because a driver is about to use it.
    this.windowUs = this.startUs;
    this.sleptAt = -1;
    this.missedUs = 0;
    this.runStart = 0;
    this.group = opts.group ?? null;
  }

  /** Joins the group (no-op without one); `hasWork` says whether this handler has work now. */
  join(hasWork: HasWork): void {
    if (this.group === null || this.member !== null) return;
    this.member = hasWork;
    this.group.join(hasWork);
  }

  /** Leaves the group (idempotent); call before the handler's rings go away. */
  leave(): void {
    if (this.group !== null && this.member !== null) this.group.leave(this.member);
    this.member = null;
  }

  /**
   * True when another member of the group has work, counted as a yield: the handler should
   * give the event loop a turn (notifications off) instead of going round again. False
   * without a group.
   */
  shouldYield(): boolean {
    if (this.member === null || !this.group!.othersHaveWork(this.member)) return false;
    this.counters.yields++;
    return true;
  }

  /** Polling is configured at all. */
  get enabled(): boolean {
    return this.maxUs > 0;
  }

  /**
   * The handler woke up (a kick, or the start of a run): adapts the window to how long it
   * slept and starts the yield clock.
   */
  woke(): void {
    const t = this.now();
    this.runStart = t;
    if (this.sleptAt < 0) return;
    const blockedUs = (t - this.sleptAt) * 1000 + this.missedUs;
    this.sleptAt = -1;
    if (blockedUs > this.maxUs) {
      // Quiet queue: polling longer would not have caught this one.
      if (this.windowUs > 0) {
        this.windowUs = this.windowUs / 2 < this.startUs ? 0 : this.windowUs / 2;
        this.counters.shrinks++;
      }
    } else if (this.windowUs < this.maxUs) {
      // The next request came within reach: a longer window would have caught it.
      this.windowUs = this.windowUs === 0 ? this.startUs : Math.min(this.maxUs, this.windowUs * 2);
      this.counters.grows++;
    }
  }

  /**
   * True while the current run may go on: it has not used up its yield budget, and no other
   * member of the group has work waiting (then it should rather sleep than spin: the others
   * run, and its own driver kicks again).
   */
  mayContinue(): boolean {
    return this.now() - this.runStart < this.yieldMs && !this.shouldYield();
  }

  /**
   * Busy-waits up to the current window for `ready()` to return true.
   * @returns true on a hit (the caller processes again, notifications still disabled); false on
   *   a miss, or when another member of the group has work ({@link yielded} is then set).
   */
  spin(ready: () => boolean): boolean {
    this.yielded = false;
    const w = this.windowUs;
    if (w === 0) return false;
    const t0 = this.now();
    const deadline = t0 + w / 1000;
    let t = t0;
    let looks = LOOKS_FIRST;
    do {
      for (let i = 0; i < looks; i++) {
        if (ready()) {
          // Spin time of a hit counts to the last clock read (under a µs short): no read here.
          this.counters.hits++;
          this.counters.spinUs += (t - t0) * 1000;
          return true;
        }
      }
      const t1 = this.now();
      if (t1 - t < CLOCK_ROUND_MS && looks < LOOKS_MAX) looks *= 2;
      t = t1;
      // Once per clock read (about once per µs): another queue waiting ends the spin.
      if (this.shouldYield()) {
        this.counters.spinUs += (t - t0) * 1000;
        this.yielded = true;
        return false;
      }
    } while (t < deadline);
    this.counters.misses++;
    this.counters.spinUs += (t - t0) * 1000;
    this.missedUs = w;
    return false;
  }

  /**
   * The handler re-enabled notifications and returns to the event loop. `missed` says
   * whether a spin preceded it (only then does the next wake-up adapt the window).
   */
  sleeping(missed: boolean): void {
    if (!missed) {
      // Woken with work, went to sleep without spinning (window 0, or a handler that sleeps at
      // the end of its budget): the next wake-up still measures the gap, as a zero-length miss,
      // so a busy queue regrows its window.
      this.missedUs = 0;
    }
    if (this.maxUs > 0) this.sleptAt = this.now();
  }
}
