/**
 * Live migration of a guest whose disk is vhost-user-blk served by our back-end, the way real
 * deployments do it: shared storage (both back-ends serve the SAME image file), precopy over
 * TCP, QMP on both QEMUs.
 *
 * ```
 *  host                                      source QEMU (TCG, memfd RAM share=on)
 *  ─────────────────────────────────────     ├─ vda  vhost-user-blk ── back-end A ─┐
 *  src.img  = pass 1 | pass 2 | ... | MAX    ├─ vdb  virtio-blk ro: pass patterns  ├─ disk.img
 *  ctl.img  = "STOP" when the test is done   └─ vdc  virtio-blk ro: control block  │  (shared)
 *                                                      │ migrate tcp:127.0.0.1:PORT │
 *                                             destination QEMU -incoming (same devices)
 *                                            └─ vda  vhost-user-blk ── back-end B ─┘
 * ```
 *
 * The guest runs two things at once (every 4 KiB block of every pass is distinct, see
 * {@link passPattern}):
 *  - the loop, pass p: re-hash pass p-1's data still in the page cache ("kept"); write pass p
 *    from vdb onto the first 4 MiB of vda (4 parallel O_DIRECT writers, which also drop that
 *    range from the page cache); read it back three ways, SHA-256 per region against the host's
 *    digests: O_DIRECT into user buffers, buffered (the back-end fills fresh page-cache pages),
 *    buffered again (the same pages from RAM); append the digests to /tmp/state (RAM-resident
 *    state the CPU writes, compared at the end);
 *  - `dmahold` (see dma-hold.ts) on the held area behind it: one buffer, filled by the CPU,
 *    overwritten by an O_DIRECT read, checked again and again.
 *
 * Why this can fail: while migration runs, the back-end writes guest RAM (data read from disk,
 * used rings, status bytes) behind QEMU's back. Only the dirty log (VHOST_F_LOG_ALL +
 * SET_LOG_BASE) tells QEMU to send those pages again; a page missing from the log arrives at
 * the destination with the content QEMU copied earlier, and a check that runs after the
 * switch-over on data the back-end wrote before it sees stale bytes. (Run with data pages left
 * out of the log, the loop's O_DIRECT check failed on the destination.)
 * @module
 */
import { closeSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { makeWorkDir, startBlkBackend, type Backend, type BlkBackendKind } from './backends.js';
import { patternBytes, sha256 } from './blk-checks.js';
import { detectEnv } from './env.js';
import { buildInitramfs, MARKER_RESULT } from './initramfs.js';
import { parseConsole, parseKeyValues, qemuArgs } from './qemu.js';
import { startQemu, type QemuProcess } from './qemu-process.js';
import { waitMigration, type MigrationInfo } from './qmp.js';
import { buildDmaHold, heldBytes } from './dma-hold.js';
import { checkImage, passPattern, seededRandom, type ImageCheck } from './restart-chaos.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Size of the area the loop rewrites every pass (a multiple of REGIONS * DD_BS). */
export const MIGRATE_DISK_SIZE = 4 * MiB;
/** The held area after it: never written; dmahold reads it into one buffer again and again. */
export const HELD_SIZE = 4 * MiB;
const REGIONS = 4;
const DD_BS = 64 * KiB;
const DEFAULT_MAX_PASSES = 24;

/** Options of {@link runBlkMigration}. */
export interface BlkMigrationOptions {
  /** Seed of the patterns and of the migration start delay (printed by the caller). */
  readonly seed: number;
  /** Passes the guest completes on the source before migration starts. */
  readonly passesBefore: number;
  /** Passes the guest completes on the destination before the test stops it. */
  readonly passesAfter: number;
  /** Extra random delay after {@link passesBefore} before `migrate`, ms range. */
  readonly startDelayMs: readonly [number, number];
  /** QMP `max-bandwidth` in bytes/s (QEMU 7.2 defaults to 128 MiB/s). */
  readonly maxBandwidth?: number;
  readonly memoryMiB?: number;
  /** Guest vCPUs (default 2). */
  readonly smp?: number;
  readonly maxPasses?: number;
  /**
   * Who serves vda (default `vhost-ts`): a vhost-user-blk back-end pair, or `qemu` = QEMU's own
   * virtio-blk on the image (no vhost-user at all: the control run for QEMU's migration itself).
   */
  readonly backend?: BlkBackendKind | 'qemu';
  /** Further flags for both back-ends. */
  readonly backendArgs?: readonly string[];
  readonly comment: (msg: string) => void;
  /** Time budget for the whole run (ms). */
  readonly budgetMs: number;
}

/** What a migration run produced. */
export interface BlkMigrationResult {
  readonly rc: number;
  /** Script output (source console up to the switch-over + destination console). */
  readonly output: string;
  readonly kv: Map<string, string>;
  readonly sourceConsole: string;
  readonly destConsole: string;
  readonly migration: MigrationInfo;
  /** Highest pass number printed on the source console before the switch-over. */
  readonly lastSourcePass: number;
  /** Pass lines that appeared on the destination console. */
  readonly destPasses: readonly number[];
  readonly finalPass: number;
  /** SHA-256 the guest's /tmp/state must have after `finalPass` passes. */
  readonly expectedState: string;
  readonly image: ImageCheck;
  readonly logsA: string;
  readonly logsB: string;
  readonly destStatus: string;
  readonly sourceStatusAfter: string;
  /** dmahold cycles printed on each console (both > 0: it ran across the switch-over). */
  readonly dmaholdCycles: { readonly source: number; readonly destination: number };
  /** The held area of the image, compared with what the host wrote (it is never written). */
  readonly heldIntact: boolean;
}

function guestScript(maxPasses: number, heldSeed: number): string {
  const rb = MIGRATE_DISK_SIZE / REGIONS / DD_BS;
  return `
DISK=${MIGRATE_DISK_SIZE}; BS=${DD_BS}; REGIONS=${REGIONS}; RB=${rb}; MAX=${maxPasses}; HSEED=${heldSeed}
echo "MIG.size=$(cat /sys/block/vda/size)"
echo "write back" > /sys/block/vda/queue/write_cache 2>/dev/null
ctl() { dd if=/dev/vdc bs=512 skip=$1 count=1 iflag=direct status=none | head -c 4; }
# dmahold (see dma-hold.ts) cycles over the held area behind the disk until told to stop.
cp /dmahold /tmp/dmahold && chmod +x /tmp/dmahold
/tmp/dmahold /dev/vda $DISK ${HELD_SIZE} $HSEED /tmp/dmahold.stop &
holder=$!
fails=0; last=0; p=1; : > /tmp/state
# check PASS LABEL [DDFLAG]: SHA-256 of every region (parallel readers) against /hashes
check() {
  cpids=""; r=0
  while [ $r -lt $REGIONS ]; do
    ( dd if=/dev/vda bs=$BS skip=$((r * RB)) count=$RB $3 status=none | sha256sum > /tmp/h$r ) &
    cpids="$cpids $!"; r=$((r + 1))
  done
  for pid in $cpids; do wait $pid; done
  r=0
  while [ $r -lt $REGIONS ]; do
    got=$(cut -d" " -f1 /tmp/h$r); want=$(grep "^$1 $r " /hashes | cut -d" " -f3)
    if [ "$got" != "$want" ]; then echo "VERIFY_FAIL pass=$1 region=$r check=$2"; fails=$((fails + 1)); fi
    r=$((r + 1))
  done
}
while [ $p -le $MAX ]; do
  [ $last -gt 0 ] && check $last kept
  # O_DIRECT writes drop the written range from the page cache (and only it: the held area stays).
  pids=""; r=0
  while [ $r -lt $REGIONS ]; do
    dd if=/dev/vdb of=/dev/vda bs=$BS skip=$(( (p - 1) * REGIONS * RB + r * RB )) seek=$((r * RB)) count=$RB \\
      iflag=direct oflag=direct conv=notrunc status=none &
    pids="$pids $!"; r=$((r + 1))
  done
  for pid in $pids; do
    wait $pid || { echo "WRITE_FAIL pass=$p"; fails=$((fails + 1)); }
  done
  check $p direct iflag=direct
  check $p fresh
  check $p cached
  echo "$p $(cat /tmp/h0 /tmp/h1 /tmp/h2 /tmp/h3 | cut -d" " -f1 | tr '\\n' ' ')" >> /tmp/state
  echo "PASS.$p=fails:$fails"
  last=$p
  [ "$(ctl 0)" = STOP ] && break
  p=$((p + 1))
done
check $last final
touch /tmp/dmahold.stop; wait $holder; hrc=$?
echo "MIG.holder_rc=$hrc"
fails=$((fails + hrc))
dmesg | grep -iE "i/o error|blk_update_request|critical (medium|target)|not a head|buffer i/o|virtio_blk.*(error|broken|fail)" > /tmp/ioerr
echo "MIG.ioerrors=$(wc -l < /tmp/ioerr)"
sed 's/^/DMESG: /' /tmp/ioerr
echo "MIG.state=$(sha256sum /tmp/state | cut -d" " -f1)"
echo "MIG.passes=$last"
echo "MIG.fails=$fails"
exit $fails
`;
}

/** Writes a 4-byte command into sector `sector` of the control disk (the guest polls it with O_DIRECT). */
function writeCtl(path: string, sector: number, text: string): void {
  const buf = Buffer.alloc(512);
  buf.write(text);
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, buf, 0, 512, sector * 512);
  } finally {
    closeSync(fd);
  }
}

/** A free TCP port on 127.0.0.1 (closed again before QEMU binds it; the race is harmless here). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Pass numbers of the `PASS.N=` lines in a console text. */
function passesIn(text: string): number[] {
  return [...text.matchAll(/^PASS\.(\d+)=/gm)].map((m) => Number(m[1]));
}

/** The digest lines `/hashes` holds and the /tmp/state the guest builds for passes 1..n. */
function expectedState(digests: readonly string[][], n: number): string {
  let s = '';
  for (let p = 1; p <= n; p++) s += `${p} ${digests[p - 1].join(' ')} \n`;
  return sha256(Buffer.from(s));
}

/**
 * Boots the guest on the source, lets it run `passesBefore` passes, migrates it to the
 * destination while its loop runs, lets it run `passesAfter` passes there, stops it and checks
 * the shared image on the host.
 */
export async function runBlkMigration(opts: BlkMigrationOptions): Promise<BlkMigrationResult> {
  const env = detectEnv();
  const dmahold = buildDmaHold();
  if (dmahold === null) throw new Error('no C compiler (gcc/cc) to build the dmahold guest program');
  const qemu = env.qemu!;
  const maxPasses = opts.maxPasses ?? DEFAULT_MAX_PASSES;
  const work = makeWorkDir('vtmig-');
  const rand = seededRandom(opts.seed);
  const patternSeed = `migrate-${opts.seed}`;
  const image = join(work.dir, 'disk.img');
  const srcImage = join(work.dir, 'src.img');
  const ctlImage = join(work.dir, 'ctl.img');
  const backends: Backend[] = [];
  const qemus: QemuProcess[] = [];
  try {
    const heldSeed = opts.seed >>> 0;
    const held = heldBytes(HELD_SIZE, heldSeed);
    writeFileSync(image, Buffer.concat([patternBytes(`${patternSeed}/initial`, MIGRATE_DISK_SIZE), held]));
    writeFileSync(ctlImage, Buffer.alloc(4096));
    const hashes: string[] = [];
    const digests: string[][] = [];
    const srcFd = openSync(srcImage, 'w');
    try {
      const regionBytes = MIGRATE_DISK_SIZE / REGIONS;
      for (let p = 1; p <= maxPasses; p++) {
        const data = passPattern(patternSeed, p, MIGRATE_DISK_SIZE);
        writeSync(srcFd, data);
        const d: string[] = [];
        for (let r = 0; r < REGIONS; r++) {
          d.push(sha256(data.subarray(r * regionBytes, (r + 1) * regionBytes)));
          hashes.push(`${p} ${r} ${d[r]}`);
        }
        digests.push(d);
      }
    } finally {
      closeSync(srcFd);
    }
    const initrd = buildInitramfs({
      kernel: env.kernel!, busybox: env.busybox!, script: guestScript(maxPasses, heldSeed),
      files: { hashes: `${hashes.join('\n')}\n`, dmahold: readFileSync(dmahold) },
    });

    const unexpected = new AbortController();
    const startBackend = async (name: string): Promise<Backend> => {
      const b = await startBlkBackend(opts.backend === 'qemu-storage-daemon' ? 'qemu-storage-daemon' : 'vhost-ts', {
        image, socket: join(work.dir, `${name}.sock`), numQueues: 1, startTimeoutMs: 30_000,
        extraArgs: ['--log-level', 'debug', ...(opts.backendArgs ?? [])],
      });
      backends.push(b);
      b.process.once('exit', (code, signal) => {
        if (!unexpected.signal.aborted) unexpected.abort(new Error(`back-end ${name} exited (code ${code}, signal ${signal}):\n${b.logs().slice(-3000)}`));
      });
      return b;
    };
    const builtin = opts.backend === 'qemu';
    const [a, b] = builtin ? [null, null] : await Promise.all([startBackend('A'), startBackend('B')]);
    const port = await freePort();
    const base = {
      kernel: env.kernel!, initrd, smp: opts.smp ?? 2, memoryMiB: opts.memoryMiB ?? 512,
      rawDisks: [{ path: srcImage }, { path: ctlImage }],
    };
    // QEMU's own disk at the first slot (vda); both QEMUs open the image, so no file locking.
    const ownDisk = ['-drive', `file=${image},if=none,id=own0,format=raw,file.locking=off,cache=none`,
      '-device', 'virtio-blk-pci,drive=own0,addr=0x04'];
    const incoming = ['-incoming', `tcp:127.0.0.1:${port}`];
    const srcArgs = a === null ? qemuArgs({ ...base, extraArgs: ownDisk }) : qemuArgs({ ...base, blkDisks: [{ socket: a.socket, numQueues: 1 }] });
    const dstArgs = b === null ? qemuArgs({ ...base, extraArgs: [...ownDisk, ...incoming] })
      : qemuArgs({ ...base, blkDisks: [{ socket: b.socket, numQueues: 1 }], extraArgs: incoming });
    const [src, dst] = await Promise.all([
      startQemu('source', qemu, srcArgs, join(work.dir, 'src.qmp')),
      startQemu('destination', qemu, dstArgs, join(work.dir, 'dst.qmp')),
    ]);
    qemus.push(src, dst);
    const deadline = Date.now() + opts.budgetMs;
    const left = (): number => Math.max(1000, deadline - Date.now());

    // 1. The guest's loop runs on the source.
    await src.waitConsole(new RegExp(`^PASS\\.${opts.passesBefore}=`, 'm'), left(), unexpected.signal);
    // dmahold must have finished a cycle on the source before the switch-over (a cycle takes
    // ≈ 1.6 s of naps; a fast first pass plus a short random delay could migrate before it).
    await src.waitConsole(/DMAHOLD\.cycle=\d+/, left(), unexpected.signal);
    const [lo, hi] = opts.startDelayMs;
    const delay = lo + Math.floor(rand() * (hi - lo));
    opts.comment(`source completed pass ${opts.passesBefore}; migrating in ${delay} ms`);
    await sleep(delay);

    // 2. Precopy migration while the loop and dmahold run.
    await src.qmp.execute('migrate-set-parameters', { 'max-bandwidth': opts.maxBandwidth ?? 1024 * MiB });
    const startedAt = Date.now();
    await src.qmp.execute('migrate', { uri: `tcp:127.0.0.1:${port}` });
    let polls = 0;
    const migration = await waitMigration(src.qmp, left(), () => { polls++; });
    opts.comment(`migration completed in ${Date.now() - startedAt} ms (${polls} polls): ${JSON.stringify({
      total: migration['total-time'], downtime: migration.downtime, setup: migration['setup-time'],
      transferredMiB: Math.round((migration.ram?.transferred ?? 0) / MiB), dirtySyncs: migration.ram?.['dirty-sync-count'],
      normalPages: migration.ram?.normal,
    })}`);
    const lastSourcePass = Math.max(0, ...passesIn(src.console()));
    const sourceCycles = [...src.console().matchAll(/DMAHOLD\.cycle=(\d+)/g)].length;
    const sourceStatusAfter = (await src.qmp.execute<{ status: string }>('query-status')).status;
    // The destination runs the guest now (no -S: it resumes by itself after the stream ends).
    let destStatus = '';
    for (let i = 0; i < 50; i++) {
      destStatus = (await dst.qmp.execute<{ status: string }>('query-status')).status;
      if (destStatus === 'running') break;
      await sleep(100);
    }
    // The source is done: QEMU leaves the VM paused in 'postmigrate'; quit it like a real
    // management stack would (back-end A sees the front-end leave).
    await src.qmp.execute('quit').catch(() => {});
    await src.exit;

    // 3. The guest continues on the destination; then STOP.
    const target = lastSourcePass + opts.passesAfter;
    await dst.waitConsole(new RegExp(`^PASS\\.(${target}|${target + 1})=`, 'm'), left(), unexpected.signal);
    writeCtl(ctlImage, 0, 'STOP');
    await dst.waitConsole(new RegExp(`${MARKER_RESULT}\\d+@@`), left(), unexpected.signal);
    await Promise.race([dst.exit, sleep(10_000)]);
    await dst.stop();

    const srcConsole = src.console();
    const dstConsole = dst.console();
    // The script's output starts on the source and continues on the destination.
    const parsed = parseConsole(`${srcConsole}\n${dstConsole}`);
    const output = parsed?.output ?? '';
    const kv = parseKeyValues(output);
    const finalPass = Number(kv.get('MIG.passes') ?? 0);
    // Unexpected back-end exits are failures only until here; stopping them is ours.
    unexpected.abort(new Error('test finished'));
    await Promise.all(backends.map((x) => x.stop()));
    return {
      rc: parsed?.rc ?? -1,
      output,
      kv,
      sourceConsole: srcConsole,
      destConsole: dstConsole,
      migration,
      lastSourcePass,
      destPasses: passesIn(dstConsole),
      finalPass,
      expectedState: expectedState(digests, finalPass),
      image: checkImage(readFileSync(image).subarray(0, MIGRATE_DISK_SIZE), patternSeed, finalPass, MIGRATE_DISK_SIZE),
      logsA: a?.logs() ?? '',
      logsB: b?.logs() ?? '',
      destStatus,
      sourceStatusAfter,
      dmaholdCycles: { source: sourceCycles, destination: [...dstConsole.matchAll(/DMAHOLD\.cycle=(\d+)/g)].length },
      heldIntact: Buffer.compare(readFileSync(image).subarray(MIGRATE_DISK_SIZE), held) === 0,
    };
  } catch (err) {
    for (const q of qemus) opts.comment(`${q.name} console tail:\n${q.console().slice(-6000)}`);
    for (const x of backends) opts.comment(`back-end ${x.socket} logs:\n${x.logs().slice(-2000)}`);
    throw err;
  } finally {
    await Promise.all(qemus.map((q) => q.stop()));
    await Promise.all(backends.map((x) => x.stop()));
    work.cleanup();
  }
}
