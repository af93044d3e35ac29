/**
 * Back-end restarts under guest I/O: a QEMU guest keeps writing and verifying a vhost-user-blk
 * disk while the host kills (SIGKILL) or stops (SIGTERM) our `vhost-user-blk` CLI at random
 * moments and starts it again on the same socket and image. QEMU's chardev has `reconnect=1`,
 * so it re-dials the socket and replays the whole setup, including SET_INFLIGHT_FD with the
 * inflight area the previous back-end filled; the new back-end must resubmit what the dead one
 * had popped but not completed (QEMU docs/interop/vhost-user.rst, "Inflight I/O tracking").
 *
 * ```
 *  host                                     guest (busybox sh, 1 vCPU)
 *  ─────────────────────────────────────    ──────────────────────────────────────────────
 *  src.img  = pass 1 | pass 2 | ... | MAX   vdb (QEMU virtio-blk, ro): the pass patterns
 *  ctl.img  = "STOP" once enough restarts   vdc (QEMU virtio-blk, ro): polled after a pass
 *  disk.img = served by vhost-user-blk      vda (vhost-user-blk, reconnecting chardev)
 *                                            pass p: 4 parallel dd vdb→vda (O_DIRECT on odd
 *  loop: random delay (seeded), [wait for      passes, buffered + fsync on even ones), then
 *        heads marked in flight], kill,        4 parallel O_DIRECT read-backs, SHA-256 per
 *        restart, wait for the reconnect       region against the host's digests
 * ```
 * Every 4 KiB block of every pass is distinct: a text header naming pass and block, then an
 * AES-CTR keystream keyed by seed and pass. At the end the host reads the image and checks each
 * block is the final pass's — a block from an earlier pass is *stale*, one mixing sources
 * *torn*, anything else *foreign*.
 *
 * In-flight evidence: the test reads the shared inflight area itself, through QEMU's fd
 * (`/proc/<qemu>/fd/N` → `memfd:vhost-user-inflight`), right after each kill, and the next
 * back-end logs how many heads it resubmitted; a kill counts as "with I/O in flight" when the
 * new back-end resubmitted at least one request.
 * @module
 */
import { closeSync, openSync, readFileSync, readSync, readdirSync, readlinkSync, writeFileSync, writeSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Backend } from './backends.js';
import { makeWorkDir, startVhostTsBlk } from './backends.js';
import { patternBytes, sha256 } from './blk-checks.js';
import { detectEnv } from './env.js';
import { buildInitramfs } from './initramfs.js';
import { parseKeyValues, runGuest, type GuestResult } from './qemu.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Size of the disk under test. */
export const CHAOS_DISK_SIZE = 4 * MiB;
/** Block granularity of the host-side check (and of the per-block headers). */
export const CHAOS_BLOCK = 4 * KiB;
/** Parallel writers / readers per pass (one region each). */
const REGIONS = 4;
/** dd block size in the guest. */
const DD_BS = 64 * KiB;
/** Passes the source disk holds; the guest stops earlier when the host writes STOP. */
const DEFAULT_MAX_PASSES = 48;
/** Bytes of the text header at the start of every block. */
const HEADER_BYTES = 64;
/** QEMU names the inflight memfd after the creator's name; ours is this (session.ts). */
const INFLIGHT_MEMFD = '/memfd:vhost-user-inflight';
/**
 * Progress showing the guest's loop runs (the driver's probe needs a handful of requests):
 * used_idx (split) or pops counted (packed).
 */
const IO_STARTED_USED_IDX = 64;

/** How restarts are done. */
export type RestartMode = 'kill' | 'term';

/** Options of {@link runRestartChaos}. */
export interface RestartChaosOptions {
  readonly mode: RestartMode;
  /** PRNG seed for the delays (logged by the caller). */
  readonly seed: number;
  /**
   * Stop restarting once this many restarts were "disruptive": for `kill`, the next back-end
   * resubmitted ≥ 1 request; for `term`, any completed graceful restart.
   */
  readonly targetDisruptive: number;
  /** Hard cap on restarts. */
  readonly maxRestarts: number;
  /** Random delay between the end of QEMU's setup replay and the next restart, in ms. */
  readonly delayMs: readonly [number, number];
  /**
   * Probability that a restart follows the end of QEMU's setup replay after only 0–50 ms (no
   * in-flight wait): hits the new back-end's resubmission and its first requests. Restarts never
   * land inside the replay itself — QEMU 7.2 loses the device then (see runRestartChaos).
   * Default 0.
   */
  readonly quickRestartChance?: number;
  /** After the delay, wait up to this long for heads marked in flight before the signal. */
  readonly inflightWaitMs?: number;
  /** Time budget of the restart phase (ms) before STOP is written regardless. */
  readonly budgetMs: number;
  readonly maxPasses?: number;
  /** Request queues (default 1). */
  readonly numQueues?: number;
  /** Guest vCPUs (default 2: the parallel writers then really overlap). */
  readonly smp?: number;
  /**
   * `packed=on` on the vhost-user-blk device: packed virtqueues, and the inflight area in the
   * packed format (vhost-user.rst QueueRegionPacked), which the in-flight probes then parse.
   */
  readonly packed?: boolean;
  /**
   * The guest switches the disk to writethrough first (`cache_type`, a CONFIG_WCE write): every
   * back-end after the first must find that choice in the inflight area, since QEMU does not
   * send it again. Default: the guest keeps writeback.
   */
  readonly guestWriteThrough?: boolean;
  /** Further CLI flags for back-end instance `n` (0 = the first), e.g. `--direct` on some. */
  readonly backendArgs?: (n: number) => readonly string[];
  /** Diagnostics sink (tap's t.comment). */
  readonly comment: (msg: string) => void;
}

/** One restart of the back-end. */
export interface RestartRecord {
  readonly n: number;
  /** ms since the guest was started. */
  readonly atMs: number;
  /** Heads flagged in the inflight area when the kill was decided (polled; -1 = not polled). */
  readonly flaggedBefore: number;
  /** Heads flagged in the inflight area after the old back-end was gone (what the new one finds). */
  readonly flaggedAfter: number;
  /** The heads behind {@link flaggedAfter}. */
  readonly heads: readonly string[];
  /** used_idx recorded in the area's header after the kill (progress evidence). */
  readonly areaUsedIdx: number;
  readonly exitCode: number | null;
  readonly exitSignal: string | null;
  /** ms from SIGTERM to exit (graceful drain); 0 for SIGKILL. */
  readonly drainMs: number;
  /** Restarted 0–50 ms after QEMU finished replaying the setup (see quickRestartChance). */
  readonly quick: boolean;
  /** ms from the old back-end's exit until QEMU had connected to the new one and replayed its setup. */
  readonly downMs: number;
  /** Requests the new back-end reported resubmitting (filled in once it ran). */
  resubmitted: number;
}

/** What a chaos run produced; the test files assert on it. */
export interface RestartChaosResult {
  readonly guest: GuestResult;
  readonly kv: Map<string, string>;
  readonly restarts: readonly RestartRecord[];
  /** Last pass the guest completed and verified. */
  readonly finalPass: number;
  /** Host-side image check against the final pass's pattern. */
  readonly image: ImageCheck;
  /** Each back-end instance's logs, oldest first (diagnostics). */
  readonly backendLogs: readonly string[];
  /** Why the restart loop ended. */
  readonly stopReason: string;
}

/** Outcome of the block-by-block image comparison. */
export interface ImageCheck {
  readonly blocks: number;
  readonly good: number;
  /** Blocks holding an earlier pass's data for that block. */
  readonly stale: number[];
  /** Blocks mixing the final pass with something else. */
  readonly torn: number[];
  /** Blocks matching no pass (or a pass at the wrong block). */
  readonly foreign: number[];
}

/** mulberry32: a tiny seeded PRNG, so a failing schedule can be replayed from the seed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

/** The bytes pass `pass` (1-based) writes over the whole disk. */
export function passPattern(seed: string, pass: number, size = CHAOS_DISK_SIZE): Buffer {
  const data = patternBytes(`${seed}/pass${pass}`, size);
  for (let b = 0; b * CHAOS_BLOCK < size; b++) {
    const header = Buffer.alloc(HEADER_BYTES, 0x20);
    header.write(`vhost-ts restart pass=${pass} block=${b}`);
    header[HEADER_BYTES - 1] = 0x0a;
    header.copy(data, b * CHAOS_BLOCK);
  }
  return data;
}

/** Reads the pass/block header of a 4 KiB block, or null when it is not one of ours. */
function blockHeader(block: Uint8Array): { pass: number; block: number } | null {
  const m = /^vhost-ts restart pass=(\d+) block=(\d+)/.exec(Buffer.from(block.subarray(0, HEADER_BYTES)).toString('latin1'));
  return m === null ? null : { pass: Number(m[1]), block: Number(m[2]) };
}

/** Compares the image with the final pass, block by block, classifying every bad block. */
export function checkImage(image: Uint8Array, seed: string, finalPass: number, size = CHAOS_DISK_SIZE): ImageCheck {
  const want = passPattern(seed, finalPass, size);
  const blocks = size / CHAOS_BLOCK;
  const res = { blocks, good: 0, stale: [] as number[], torn: [] as number[], foreign: [] as number[] };
  const patterns = new Map<number, Buffer>();
  const pattern = (p: number): Buffer => {
    let buf = patterns.get(p);
    if (buf === undefined) patterns.set(p, (buf = passPattern(seed, p, size)));
    return buf;
  };
  for (let b = 0; b < blocks; b++) {
    const off = b * CHAOS_BLOCK;
    const got = image.subarray(off, off + CHAOS_BLOCK);
    const exp = want.subarray(off, off + CHAOS_BLOCK);
    if (Buffer.compare(got, exp) === 0) { res.good++; continue; }
    const h = blockHeader(got);
    if (h !== null && h.block === b && h.pass >= 1 && h.pass < finalPass
      && Buffer.compare(got, pattern(h.pass).subarray(off, off + CHAOS_BLOCK)) === 0) {
      res.stale.push(b);
      continue;
    }
    // Torn: some 512-byte sector matches the final pass, another does not.
    let matching = 0;
    for (let s = 0; s < CHAOS_BLOCK; s += 512) {
      if (Buffer.compare(got.subarray(s, s + 512), exp.subarray(s, s + 512)) === 0) matching++;
    }
    if (matching > 0) res.torn.push(b);
    else res.foreign.push(b);
  }
  return res;
}

function guestScript(maxPasses: number, writeThrough: boolean): string {
  const blocksPerRegion = CHAOS_DISK_SIZE / REGIONS / DD_BS;
  const cache = writeThrough
    // The device's cache mode (virtio_blk writes CONFIG_WCE = 0): every write durable on completion.
    ? `echo "write through" > /sys/block/vda/cache_type
echo "RESTART.cache=$(cat /sys/block/vda/cache_type)"`
    // The device may start write-through; a volatile cache makes fsync send VIRTIO_BLK_T_FLUSH.
    : 'echo "write back" > /sys/block/vda/queue/write_cache 2>/dev/null';
  return `
DISK=${CHAOS_DISK_SIZE}; BS=${DD_BS}; REGIONS=${REGIONS}; RB=${blocksPerRegion}; MAX=${maxPasses}
echo "RESTART.size=$(cat /sys/block/vda/size)"
${cache}
fails=0; last=0; p=1
while [ $p -le $MAX ]; do
  if [ $((p % 2)) -eq 1 ]; then mode=direct; oflag=oflag=direct; conv=notrunc
  else mode=fsync; oflag=; conv=notrunc,fsync; fi
  pids=""; r=0
  while [ $r -lt $REGIONS ]; do
    dd if=/dev/vdb of=/dev/vda bs=$BS skip=$(( (p - 1) * REGIONS * RB + r * RB )) seek=$((r * RB)) count=$RB \\
      iflag=direct $oflag conv=$conv status=none &
    pids="$pids $!"; r=$((r + 1))
  done
  r=0
  for pid in $pids; do
    wait $pid; rc=$?
    if [ $rc -ne 0 ]; then echo "WRITE_FAIL pass=$p region=$r rc=$rc"; fails=$((fails + 1)); fi
    r=$((r + 1))
  done
  r=0
  while [ $r -lt $REGIONS ]; do
    ( dd if=/dev/vda bs=$BS skip=$((r * RB)) count=$RB iflag=direct status=none | sha256sum > /tmp/h$r ) &
    r=$((r + 1))
  done
  wait
  ok=ok; r=0
  while [ $r -lt $REGIONS ]; do
    got=$(cut -d" " -f1 /tmp/h$r); want=$(grep "^$p $r " /hashes | cut -d" " -f3)
    if [ "$got" != "$want" ]; then echo "VERIFY_FAIL pass=$p region=$r"; ok=bad; fails=$((fails + 1)); fi
    r=$((r + 1))
  done
  echo "PASS.$p=$mode,$ok"
  last=$p
  [ "$(dd if=/dev/vdc bs=512 count=1 iflag=direct status=none | head -c 4)" = STOP ] && break
  p=$((p + 1))
done
dmesg | grep -iE "i/o error|blk_update_request|critical (medium|target)|not a head|buffer i/o|virtio_blk.*(error|broken|fail)" > /tmp/ioerr
echo "RESTART.ioerrors=$(wc -l < /tmp/ioerr)"
sed 's/^/DMESG: /' /tmp/ioerr
echo "RESTART.passes=$last"
echo "RESTART.fails=$fails"
if [ $fails -eq 0 ]; then echo "RESTART.result=ok"; else echo "RESTART.result=FAIL"; fi
exit $fails
`;
}

/** QEMU started by this process with our socket on its command line. */
function findQemuPid(socket: string): number | null {
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'latin1');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid !== process.pid) continue;
      if (readFileSync(`/proc/${name}/cmdline`, 'latin1').includes(`path=${socket}`)) return Number(name);
    } catch {
      // raced with an exiting process
    }
  }
  return null;
}

/** Opens QEMU's copy of the inflight memfd (QEMU keeps it for SET_INFLIGHT_FD on reconnect). */
function openInflightArea(qemuPid: number): number | null {
  try {
    for (const fd of readdirSync(`/proc/${qemuPid}/fd`)) {
      let target: string;
      try { target = readlinkSync(`/proc/${qemuPid}/fd/${fd}`); } catch { continue; }
      if (target.startsWith(INFLIGHT_MEMFD)) return openSync(`/proc/${qemuPid}/fd/${fd}`, 'r');
    }
  } catch {
    // QEMU gone
  }
  return null;
}

/**
 * Heads flagged in flight in the area; `out`, when given, receives `queue:head` labels (split)
 * or `queue:entry` labels (packed). The area stays in `buf` ({@link areaProgress} reads it).
 * Split layout per queue: 16-byte header, 16-byte entries, regions 64-byte aligned.
 */
function flaggedHeads(fd: number, buf: Buffer, packed: boolean, out?: string[]): number {
  const n = readSync(fd, buf, 0, buf.length, 0);
  if (packed) return packedFlaggedHeads(buf, n, out);
  if (n < 16) return 0;
  const descNum = buf.readUInt16LE(10);
  const regionSize = Math.ceil((16 + 16 * descNum) / 64) * 64;
  let count = 0;
  for (let q = 0; (q + 1) * regionSize <= n && descNum > 0; q++) {
    const base = q * regionSize;
    for (let i = 0; i < descNum; i++) {
      if (buf[base + 16 + 16 * i] !== 1) continue;
      count++;
      out?.push(`${q}:${i}`);
    }
  }
  return count;
}

/**
 * Packed layout per queue (vhost-user.rst QueueRegionPacked): 32-byte header (desc_num +10,
 * free_head +12, old_free_head +14, used_idx +16, old_used_idx +18, wraps +20/+21), then 32-byte
 * DescStatePacked entries (inflight +0, next +2, num +6, counter +8), regions 64-byte aligned.
 * A head counts when flagged and not on the committed free list (from old_free_head): that is
 * what a restarted back-end resubmits at most — the recovery may also commit a published batch,
 * which only frees more.
 */
function packedFlaggedHeads(buf: Buffer, n: number, out?: string[]): number {
  if (n < 32) return 0;
  const descNum = buf.readUInt16LE(10);
  const regionSize = Math.ceil((32 + 32 * descNum) / 64) * 64;
  let count = 0;
  for (let q = 0; (q + 1) * regionSize <= n && descNum > 0; q++) {
    const base = q * regionSize;
    const free = new Uint8Array(descNum);
    for (let e = buf.readUInt16LE(base + 14), k = 0; e < descNum && k < descNum && free[e] === 0; k++) {
      free[e] = 1;
      e = buf.readUInt16LE(base + 32 + 32 * e + 2);
    }
    for (let e = 0; e < descNum; e++) {
      if (buf[base + 32 + 32 * e] !== 1 || free[e] === 1) continue;
      count++;
      out?.push(`${q}:${e}`);
    }
  }
  return count;
}

/**
 * A number that moves while queue 0 serves requests, from the area in `buf`: split — used_idx
 * (+14); packed — the largest pop counter of queue 0's entries (used_idx wraps at the ring size
 * there, the counter only grows).
 */
function areaProgress(buf: Buffer, packed: boolean): number {
  if (!packed) return buf.readUInt16LE(14);
  const descNum = buf.readUInt16LE(10);
  let max = 0;
  for (let e = 0; e < descNum && 32 + 32 * (e + 1) <= buf.length; e++) {
    const c = buf.readUInt32LE(32 + 32 * e + 8) + buf.readUInt32LE(32 + 32 * e + 12) * 0x1_0000_0000;
    if (c > max) max = c;
  }
  return max;
}

const RESUBMIT_RE = /resubmitting (\d+) inflight request/g;
const BROKEN_RE = /ring \d+ broken/;
/** The guest's loop never pauses this long, outages included (scaled by {@link timeScale}). */
const STALL_MS = 30_000;
/** Back-end log bytes kept per instance in a failure report (the tail: the trace's last requests). */
const LOG_TAIL = 2500;
/** Instances whose log tails a failure report prints (the last ones: the stuck one and its predecessor). */
const LOG_INSTANCES = 3;

/**
 * QEMU 7.2 finished replaying its setup to a (re)connected back-end: the rings were enabled
 * (vhost_dev_start) and DRIVER_OK was set again. The back-end runs with `--log-level debug`,
 * whose message trace shows both. From here on QEMU's vhost device is started, so losing the
 * back-end takes QEMU's normal disconnect path (see {@link runRestartChaos} on the window before).
 */
const SETUP_REPLAYED_RE = /<- VHOST_USER_SET_VRING_ENABLE[\s\S]*<- VHOST_USER_SET_STATUS/;

/**
 * Factor for waits and budgets on a loaded machine: 1 on an idle one, up to 3 when the load
 * average exceeds the core count (CI shares 2 cores between QEMU, the back-end and other test
 * files). `E2E_TIME_SCALE` overrides it.
 */
export function timeScale(): number {
  const env = Number(process.env.E2E_TIME_SCALE);
  if (Number.isFinite(env) && env > 0) return env;
  return Math.min(3, Math.max(1, loadavg()[0] / Math.max(1, cpus().length)));
}

/** The tails of the last back-ends' logs (message traces included), for a failure report. */
function logTails(instances: readonly Backend[]): string {
  const first = Math.max(0, instances.length - LOG_INSTANCES);
  return instances.slice(first).map((b, i) => `back-end #${first + i} (log tail):\n${b.logs().slice(-LOG_TAIL)}`).join('\n');
}

function resubmittedIn(logs: string): number {
  let total = 0;
  for (const m of logs.matchAll(RESUBMIT_RE)) total += Number(m[1]);
  return total;
}

async function waitFor<T>(what: string, timeoutMs: number, probe: () => T | null, abort: AbortSignal): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (abort.aborted) throw new Error(`aborted while waiting for ${what}: ${String((abort.reason as Error | undefined)?.message ?? abort.reason)}`);
    const v = probe();
    if (v !== null) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/**
 * Boots the guest, restarts the back-end per `opts` while the guest's write/verify loop runs,
 * then tells the guest to stop, waits for its result and checks the image on the host.
 */
export async function runRestartChaos(opts: RestartChaosOptions): Promise<RestartChaosResult> {
  const env = detectEnv();
  const maxPasses = opts.maxPasses ?? DEFAULT_MAX_PASSES;
  const work = makeWorkDir('vtrst-');
  const rand = seededRandom(opts.seed);
  const patternSeed = `restart-${opts.seed}`;
  const image = join(work.dir, 'disk.img');
  const srcImage = join(work.dir, 'src.img');
  const ctlImage = join(work.dir, 'ctl.img');
  const socket = join(work.dir, 'blk.sock');
  const instances: Backend[] = [];
  const scale = timeScale();
  opts.comment(`time scale ${scale.toFixed(2)} (load ${loadavg()[0].toFixed(1)} on ${cpus().length} cores)`);
  const stallMs = STALL_MS * scale;
  let current: Backend | null = null;
  let inflightFd = -1;
  /** Resolves once QEMU is gone, whatever the outcome (awaited before the work dir goes). */
  let guestSettled: Promise<unknown> = Promise.resolve();
  try {
    // Initial disk contents are none of the passes, so an unwritten block is "foreign".
    writeFileSync(image, patternBytes(`${patternSeed}/initial`, CHAOS_DISK_SIZE));
    writeFileSync(ctlImage, Buffer.alloc(4096));
    const hashes: string[] = [];
    const srcFd = openSync(srcImage, 'w');
    try {
      for (let p = 1; p <= maxPasses; p++) {
        const data = passPattern(patternSeed, p);
        writeSync(srcFd, data);
        const regionBytes = CHAOS_DISK_SIZE / REGIONS;
        for (let r = 0; r < REGIONS; r++) hashes.push(`${p} ${r} ${sha256(data.subarray(r * regionBytes, (r + 1) * regionBytes))}`);
      }
    } finally {
      closeSync(srcFd);
    }
    const initrd = buildInitramfs({
      kernel: env.kernel!, busybox: env.busybox!, script: guestScript(maxPasses, opts.guestWriteThrough ?? false), files: { hashes: `${hashes.join('\n')}\n` },
    });

    // A back-end that dies when we did not kill it fails the run at once.
    const unexpected = new AbortController();
    const intended = new WeakSet<Backend>();
    const start = async (): Promise<Backend> => {
      // Always with the message trace: a back-end that QEMU stops talking to shows which
      // request came last.
      const b = await startVhostTsBlk({
        image, socket, numQueues: opts.numQueues ?? 1, startTimeoutMs: 30_000 * scale,
        extraArgs: ['--log-level', 'debug', ...(opts.backendArgs?.(instances.length) ?? [])],
      });
      instances.push(b);
      b.process.once('exit', (code, signal) => {
        if (intended.has(b) || unexpected.signal.aborted) return;
        unexpected.abort(new Error(`back-end #${instances.indexOf(b)} exited on its own (code ${code}, signal ${signal}):\n${b.logs().slice(-3000)}`));
      });
      // A ring the back-end declared broken never serves the guest again: fail now, not at
      // the guest timeout (this is how a wrong resume index shows: avail-index-jump).
      b.process.stderr?.on('data', () => {
        if (unexpected.signal.aborted || !BROKEN_RE.test(b.logs())) return;
        unexpected.abort(new Error(`back-end #${instances.indexOf(b)} broke a ring:\n${b.logs().slice(-3000)}`));
      });
      return b;
    };
    current = await start();

    const startedAt = Date.now();
    // Room for a few queues' regions (QEMU's default queue size is 128).
    const region = Buffer.alloc(64 * 1024);
    let guestDone = false;
    const guestRun = runGuest({
      kernel: env.kernel!,
      initrd,
      rawDisks: [{ path: srcImage }, { path: ctlImage }],
      smp: opts.smp ?? 2,
      // reconnect=1: QEMU re-dials a lost back-end every second and replays the setup.
      extraArgs: [
        '-chardev', `socket,id=rblk,path=${socket},reconnect=1`,
        '-device', `vhost-user-blk-pci,chardev=rblk,num-queues=${opts.numQueues ?? 1},addr=0x04${opts.packed ? ',packed=on' : ''}`,
      ],
      timeoutMs: (opts.budgetMs + 90_000) * scale,
      signal: unexpected.signal,
    }).finally(() => {
      guestDone = true;
      clearInterval(watchdog);
    });
    // Stall watchdog: queue 0's progress (read through QEMU's copy of the area) must move.
    const packed = opts.packed ?? false;
    let lastUsed = -1;
    let lastMove = Date.now();
    const probe = Buffer.alloc(packed ? 64 * 1024 : 16);
    const watchdog = setInterval(() => {
      if (inflightFd < 0 || unexpected.signal.aborted) { lastMove = Date.now(); return; }
      let used = -1;
      try {
        if (readSync(inflightFd, probe, 0, probe.length, 0) >= 16) used = areaProgress(probe, packed);
      } catch {
        // the loop is swapping the fd (device reset): next tick
      }
      if (used !== lastUsed) { lastUsed = used; lastMove = Date.now(); return; }
      if (Date.now() - lastMove > stallMs) {
        unexpected.abort(new Error(`guest I/O stalled: ${packed ? 'pop counter' : 'used_idx'} ${used} unchanged for ${stallMs} ms;\n${logTails(instances)}`));
      }
    }, 1000);
    // Keep a rejection from being unhandled while the loop below runs.
    guestSettled = guestRun.catch(() => {});

    const restarts: RestartRecord[] = [];
    let stopReason = '';
    try {
      const qemuPid = await waitFor('the QEMU process', 30_000 * scale, () => findQemuPid(socket), unexpected.signal);
      // The area exists once the device started (GET_INFLIGHT_FD); the driver's probe resets the
      // device and QEMU fetches a new one. Start restarting once the guest's loop has moved
      // used_idx well past the probe's few requests.
      inflightFd = await waitFor('guest I/O through the inflight area', 120_000 * scale, () => {
        if (guestDone) throw new Error('guest finished before its I/O loop was seen');
        const fd = openInflightArea(qemuPid);
        if (fd === null) return null;
        flaggedHeads(fd, region, packed);
        if (areaProgress(region, packed) >= IO_STARTED_USED_IDX) return fd;
        closeSync(fd);
        return null;
      }, unexpected.signal);
      const deadline = Date.now() + opts.budgetMs * scale;
      const disruptive = (): number => restarts.filter((r) => (opts.mode === 'kill' ? r.resubmitted > 0 : r.exitCode === 0)).length;
      for (;;) {
        for (const r of restarts) r.resubmitted = resubmittedIn(instances[r.n].logs());
        if (disruptive() >= opts.targetDisruptive) { stopReason = `${disruptive()} disruptive restarts reached`; break; }
        if (restarts.length >= opts.maxRestarts) { stopReason = `restart cap ${opts.maxRestarts} reached`; break; }
        if (Date.now() > deadline) { stopReason = `time budget ${Math.round(opts.budgetMs * scale)} ms used`; break; }
        if (guestDone) { stopReason = 'guest finished first'; break; }
        // Now and then restart again right after the reconnect, while QEMU may still be
        // replaying the setup or the new back-end is resubmitting the previous one's requests.
        const quick = restarts.length > 0 && rand() < (opts.quickRestartChance ?? 0);
        const [lo, hi] = quick ? [0, 50] : opts.delayMs;
        await sleep(lo + Math.floor(rand() * (hi - lo)));
        if (guestDone || unexpected.signal.aborted) continue;
        const victim: Backend = current;
        // A device reset (driver probe, rebind) makes QEMU fetch a new area: look it up afresh.
        const fresh = openInflightArea(qemuPid);
        if (fresh !== null) {
          closeSync(inflightFd);
          inflightFd = fresh;
        }
        let flaggedBefore = -1;
        if (!quick && (opts.inflightWaitMs ?? 0) > 0) {
          // A random moment, then the first instant the area shows a popped, uncompleted head.
          const until = Date.now() + (opts.inflightWaitMs ?? 0);
          flaggedBefore = flaggedHeads(inflightFd, region, packed);
          while (flaggedBefore === 0 && Date.now() < until) {
            await sleep(1);
            flaggedBefore = flaggedHeads(inflightFd, region, packed);
          }
        }
        intended.add(victim);
        const exited = new Promise<void>((resolve) => victim.process.once('exit', () => resolve()));
        const sigAt = Date.now();
        victim.process.kill(opts.mode === 'kill' ? 'SIGKILL' : 'SIGTERM');
        await exited;
        const goneAt = Date.now();
        const heads: string[] = [];
        const flaggedAfter = flaggedHeads(inflightFd, region, packed, heads);
        // Split: used_idx; packed: the committed used position, slot | wrap << 15.
        const areaUsedIdx = packed ? region.readUInt16LE(18) | (region[21] & 1) << 15 : region.readUInt16LE(14);
        current = await start();
        const next: Backend = current;
        // (A guest that finished meanwhile powers QEMU off: nobody will reconnect.)
        await waitFor('QEMU to reconnect', 30_000 * scale, () => (next.logs().includes('front-end connected') || guestDone ? true : null), unexpected.signal);
        // The next restart (quick ones included) comes only once QEMU replayed its whole setup.
        // QEMU 7.2 cannot take losing the back-end before that: when the connection drops
        // while its vhost device is not started (vhost_dev_init, or the start sequence),
        // vhost_user_async_close_bh finds vhost_dev.vdev NULL and skips the disconnect
        // callback, so vhost-user-blk's event handler is never installed again and `connected`
        // stays true — QEMU still re-dials the socket but never sends a message again (fixed
        // upstream in 2024, "vhost-user: fix lost reconnect"; docs/protocol.md).
        await waitFor('QEMU to replay its setup (rings enabled, DRIVER_OK)', 30_000 * scale,
          () => (SETUP_REPLAYED_RE.test(next.logs()) || guestDone ? true : null), unexpected.signal);
        const rec: RestartRecord = {
          n: instances.length - 1,
          atMs: sigAt - startedAt,
          flaggedBefore,
          flaggedAfter,
          heads,
          quick,
          areaUsedIdx,
          exitCode: victim.process.exitCode,
          exitSignal: victim.process.signalCode,
          drainMs: opts.mode === 'term' ? goneAt - sigAt : 0,
          downMs: Date.now() - goneAt,
          resubmitted: 0,
        };
        restarts.push(rec);
        opts.comment(`restart ${restarts.length} at ${rec.atMs} ms: ${opts.mode === 'kill' ? 'SIGKILL' : 'SIGTERM'}${quick ? ' (quick)' : ''}, flagged ${flaggedBefore}/${flaggedAfter} [${heads.join(' ')}] (area used_idx ${areaUsedIdx}), ` +
          `exit ${rec.exitCode ?? rec.exitSignal}, drain ${rec.drainMs} ms, down ${rec.downMs} ms`);
      }
    } catch (err) {
      // The loop itself failed (a reconnect that never came, ...): end the guest now rather
      // than at its timeout.
      if (!unexpected.signal.aborted) unexpected.abort(err);
      throw err;
    } finally {
      // Whatever happened, let the guest finish its pass and report.
      writeFileSync(ctlImage, Buffer.from('STOP'), { flag: 'r+' });
    }
    opts.comment(`restart loop ended: ${stopReason}`);
    const guest = await guestRun;
    // The guest is done: stop the last back-end cleanly, then collect every instance's logs.
    const last: Backend = current;
    intended.add(last);
    await last.stop();
    for (const r of restarts) r.resubmitted = resubmittedIn(instances[r.n].logs());
    const kv = parseKeyValues(guest.output);
    const finalPass = Number(kv.get('RESTART.passes') ?? 0);
    const check = checkImage(readFileSync(image), patternSeed, finalPass);
    return { guest, kv, restarts, finalPass, image: check, backendLogs: instances.map((b) => b.logs()), stopReason };
  } catch (err) {
    opts.comment(logTails(instances));
    throw err;
  } finally {
    await guestSettled;
    if (inflightFd >= 0) closeSync(inflightFd);
    await Promise.all(instances.map((b) => b.stop()));
    work.cleanup();
  }
}
