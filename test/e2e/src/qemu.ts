/**
 * Boots a throw-away QEMU guest (TCG, q35) on the e2e initramfs, with vhost-user devices
 * attached, and returns what the test script printed and its exit status.
 *
 * Guest RAM is a shared memfd: vhost-user backends map guest memory from the fds QEMU sends
 * in SET_MEM_TABLE, which only works for shareable memory (QEMU docs/interop/vhost-user.rst,
 * "Memory access").
 */
import { spawn } from 'node:child_process';
import { track, hasExited } from './children.js';
import { detectEnv, type KernelInfo } from './env.js';
import { MARKER_BEGIN, MARKER_INSMOD_FAILED, MARKER_RESULT } from './initramfs.js';
import { diesWithParent } from './child-guard.js';

/** A vhost-user-blk disk: QEMU connects to `socket` (the backend listens there). */
export interface VhostUserBlkDisk {
  readonly socket: string;
  /** `num-queues` of vhost-user-blk-pci. When unset QEMU 7.2 uses one per vCPU, which fails against a backend offering fewer. */
  readonly numQueues?: number;
  /** QEMU's `queue-size` (default QEMU's own). */
  readonly queueSize?: number;
  /** `packed=on`: offer VIRTIO_F_RING_PACKED to the guest (packed virtqueues, virtio 1.2 §2.8). */
  readonly packed?: boolean;
}

/** A vhost-user net device: `-netdev vhost-user` + `virtio-net-pci`. */
export interface VhostUserNetDev {
  readonly socket: string;
  readonly mac?: string;
  /** Queue pairs (`queues=` on the netdev, `mq=on,vectors=0` on the device when > 1). */
  readonly queuePairs?: number;
  /** Further `virtio-net-pci` properties, e.g. `mrg_rxbuf=off,packed=on`. */
  readonly deviceProps?: string;
}

/** A disk QEMU itself serves (built-in virtio-blk) — a trusted side channel, e.g. for test data. */
export interface RawDisk {
  readonly path: string;
  readonly readOnly?: boolean;
}

/** Options of {@link runGuest}. */
export interface GuestOptions {
  readonly kernel: KernelInfo;
  readonly initrd: string;
  /** vhost-user-blk disks; in the guest they are vda, vdb, ... in this order. */
  readonly blkDisks?: readonly VhostUserBlkDisk[];
  /** QEMU-served virtio-blk disks; they come after the vhost-user-blk disks (vdX following them). */
  readonly rawDisks?: readonly RawDisk[];
  readonly netDevs?: readonly VhostUserNetDev[];
  readonly smp?: number;
  readonly memoryMiB?: number;
  /** Hard limit for the whole boot + script; QEMU is SIGKILLed after it (default 90 s). */
  readonly timeoutMs?: number;
  /** Appended to the kernel command line. */
  readonly append?: string;
  /** Extra QEMU arguments. */
  readonly extraArgs?: readonly string[];
  /** QEMU binary (default: the detected qemu-system-x86_64). */
  readonly qemu?: string;
  /**
   * Aborts the run (QEMU is killed, {@link GuestError} `ABORTED`) unless the result is already
   * in — e.g. {@link abortOnExit} of the backends, so a crashed backend fails the test at once
   * instead of leaving the guest hanging until the timeout.
   */
  readonly signal?: AbortSignal;
}

/** What the guest run produced. */
export interface GuestResult {
  /** Exit status of /test.sh. */
  readonly rc: number;
  /** The script's stdout+stderr (between the markers), `\r` removed. */
  readonly output: string;
  /** Everything QEMU printed (serial console + its own stderr). */
  readonly console: string;
  /** Modules whose insmod failed. */
  readonly insmodFailures: readonly string[];
  readonly durationMs: number;
  /** The QEMU command line used (for diagnostics). */
  readonly argv: readonly string[];
}

/** Why a guest run did not produce a result. */
export class GuestError extends Error {
  override readonly name = 'GuestError';
  constructor(
    readonly code: 'TIMEOUT' | 'NO_RESULT' | 'SPAWN_FAILED' | 'NO_QEMU' | 'ABORTED',
    message: string,
    readonly consoleTail: string,
  ) {
    super(`${message}\n--- console tail ---\n${consoleTail}`);
  }
}

const RESULT_RE = new RegExp(`${MARKER_RESULT}(\\d+)@@`);
const TAIL_CHARS = 4000;

/** PCI slot of the first vhost-user-blk disk; QEMU-served disks and NICs follow in fixed ranges. */
const SLOT_BLK = 0x04;
const SLOT_RAW = 0x0c;
const SLOT_NET = 0x14;

function slot(n: number): string {
  return `0x${n.toString(16)}`;
}

/** Builds the QEMU argv for {@link runGuest} (exported for diagnostics and tests). */
export function qemuArgs(opts: GuestOptions): string[] {
  const mem = opts.memoryMiB ?? 512;
  const args = [
    '-machine', 'q35,accel=tcg',
    '-cpu', 'max',
    '-smp', String(opts.smp ?? 1),
    '-m', `${mem}M`,
    '-object', `memory-backend-memfd,id=mem,size=${mem}M,share=on`,
    '-numa', 'node,memdev=mem',
    // No default NIC/VGA/etc.: keeps PCI enumeration (and so vdX naming) fully ours.
    '-nodefaults',
    '-display', 'none',
    '-serial', 'stdio',
    '-no-reboot',
    '-kernel', opts.kernel.vmlinuz,
    '-initrd', opts.initrd,
    '-append', `console=ttyS0 quiet panic=-1 ${opts.append ?? ''}`.trim(),
  ];
  (opts.blkDisks ?? []).forEach((d, i) => {
    args.push('-chardev', `socket,id=blk${i},path=${d.socket}`);
    let dev = `vhost-user-blk-pci,chardev=blk${i},addr=${slot(SLOT_BLK + i)}`;
    if (d.numQueues !== undefined) dev += `,num-queues=${d.numQueues}`;
    if (d.queueSize !== undefined) dev += `,queue-size=${d.queueSize}`;
    if (d.packed) dev += ',packed=on';
    args.push('-device', dev);
  });
  (opts.rawDisks ?? []).forEach((d, i) => {
    args.push('-drive', `file=${d.path},if=none,id=raw${i},format=raw,readonly=${d.readOnly === false ? 'off' : 'on'}`);
    args.push('-device', `virtio-blk-pci,drive=raw${i},addr=${slot(SLOT_RAW + i)}`);
  });
  (opts.netDevs ?? []).forEach((n, i) => {
    const qp = n.queuePairs ?? 1;
    args.push('-chardev', `socket,id=net${i},path=${n.socket}`);
    args.push('-netdev', `vhost-user,id=n${i},chardev=net${i}${qp > 1 ? `,queues=${qp}` : ''}`);
    // vectors=0: with MSI-X under TCG, QEMU 7.2's vhost-user-net misses interrupts; INTx works.
    let dev = `virtio-net-pci,netdev=n${i},romfile=,vectors=0,addr=${slot(SLOT_NET + i)}`;
    if (n.mac !== undefined) dev += `,mac=${n.mac}`;
    if (qp > 1) dev += ',mq=on';
    if (n.deviceProps !== undefined && n.deviceProps !== '') dev += `,${n.deviceProps}`;
    args.push('-device', dev);
  });
  args.push(...(opts.extraArgs ?? []));
  return args;
}

/** Splits the console into the script output, or returns null while the result line is missing. */
export function parseConsole(text: string): { rc: number; output: string; insmodFailures: string[] } | null {
  const clean = text.replace(/\r/g, '');
  const insmodFailures: string[] = [];
  for (const line of clean.split('\n')) {
    const i = line.indexOf(MARKER_INSMOD_FAILED);
    if (i >= 0) insmodFailures.push(line.slice(i + MARKER_INSMOD_FAILED.length).replace(/@@.*$/, ''));
  }
  const begin = clean.indexOf(`${MARKER_BEGIN}\n`);
  if (begin < 0) return null;
  const rest = clean.slice(begin + MARKER_BEGIN.length + 1);
  const m = RESULT_RE.exec(rest);
  if (m === null) return null;
  let output = rest.slice(0, m.index);
  // The result line starts on its own line; drop a partial line the script left without "\n".
  if (!output.endsWith('\n') && output.length > 0) output += '\n';
  return { rc: Number(m[1]), output, insmodFailures };
}

/**
 * Boots the guest and waits for the script's result. Rejects with {@link GuestError} when QEMU
 * cannot start, exits without a result, or exceeds the timeout (QEMU is killed; the error
 * carries the console tail). The QEMU process never outlives this call.
 */
export async function runGuest(opts: GuestOptions): Promise<GuestResult> {
  const qemu = opts.qemu ?? detectEnv().qemu;
  if (qemu === null) throw new GuestError('NO_QEMU', 'qemu-system-x86_64 not found', '');
  const argv = qemuArgs(opts);
  const timeoutMs = opts.timeoutMs ?? 90_000;
  const started = Date.now();
  const child = spawn(...diesWithParent(qemu, argv), { stdio: ['pipe', 'pipe', 'pipe'] });
  track(child);
  let consoleText = '';
  let result: ReturnType<typeof parseConsole> = null;
  const onData = (chunk: string): void => {
    consoleText += chunk;
    if (result === null && consoleText.includes(MARKER_RESULT)) result = parseConsole(consoleText);
  };
  // setEncoding keeps multi-byte characters split across chunks intact.
  child.stdout.setEncoding('utf8').on('data', onData);
  child.stderr.setEncoding('utf8').on('data', onData);

  const tail = (): string => consoleText.replace(/\r/g, '').slice(-TAIL_CHARS);
  return new Promise<GuestResult>((resolve, reject) => {
    let timedOut = false;
    let spawnError: Error | null = null;
    // After the result arrives the guest powers off within a second; don't wait forever for it.
    let graceTimer: NodeJS.Timeout | null = null;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    const poll = setInterval(() => {
      if (result !== null && graceTimer === null) {
        graceTimer = setTimeout(() => {
          if (!hasExited(child)) child.kill('SIGKILL');
        }, 10_000);
      }
    }, 200);
    child.once('error', (err) => {
      spawnError = err;
    });
    let abortReason: string | null = null;
    const onAbort = (): void => {
      if (result !== null || hasExited(child)) return;
      const r: unknown = opts.signal?.reason;
      abortReason = r instanceof Error ? r.message : String(r ?? 'aborted');
      child.kill('SIGKILL');
    };
    if (opts.signal?.aborted === true) onAbort();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      clearInterval(poll);
      if (graceTimer !== null) clearTimeout(graceTimer);
      opts.signal?.removeEventListener('abort', onAbort);
      const durationMs = Date.now() - started;
      result ??= parseConsole(consoleText);
      if (result !== null) {
        resolve({ ...result, console: consoleText.replace(/\r/g, ''), durationMs, argv: [qemu, ...argv] });
      } else if (spawnError !== null) {
        reject(new GuestError('SPAWN_FAILED', `cannot start ${qemu}: ${(spawnError as Error).message}`, tail()));
      } else if (abortReason !== null) {
        reject(new GuestError('ABORTED', `guest run aborted: ${abortReason}`, tail()));
      } else if (timedOut) {
        reject(new GuestError('TIMEOUT', `guest did not finish within ${timeoutMs} ms (killed)`, tail()));
      } else {
        reject(new GuestError('NO_RESULT', `QEMU exited (code ${code}, signal ${signal}) without a result marker`, tail()));
      }
    });
  });
}

/**
 * Collects `KEY=value` lines from a script's output (later lines win) — the convention e2e
 * scripts use to report values to the host.
 */
export function parseKeyValues(output: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of output.split('\n')) {
    const m = /^([A-Za-z_][A-Za-z0-9_.-]*)=(.*)$/.exec(line);
    if (m !== null) out.set(m[1], m[2]);
  }
  return out;
}
