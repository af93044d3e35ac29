/**
 * Drives `dpdk-testpmd` for the virtio-net bench: the front-end ("guest") with the virtio-user
 * PMD in interactive mode, so port counters can be read at chosen instants, and the reference
 * back-end with the vhost PMD.
 *
 * Both run with `--no-huge -m 256`: DPDK 22.11 then backs its memory with memfd, which
 * virtio-user shares over vhost-user, so no hugetlbfs is needed. Each process gets its own
 * `--file-prefix` and `--no-shconf`, and both of its lcores (main + forwarding) are mapped onto
 * ONE CPU with `--lcores 0@C,1@C`: the main lcore only sleeps in the command line, so each side
 * really has one core.
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { which } from '../common/machine.js';

/** Path of dpdk-testpmd, or null. */
export function findTestpmd(): string | null {
  return which('dpdk-testpmd');
}

/** A port's counters as `show port stats` prints them. */
export interface PortCounters {
  rxPackets: number;
  txPackets: number;
  rxBytes: number;
  txBytes: number;
}

/** Forward statistics printed by `stop` / quit. */
export interface ForwardStats {
  rx: number;
  tx: number;
  txDropped: number;
}

/** Common EAL + testpmd arguments. */
export interface TestpmdOptions {
  /** CPU both lcores run on. */
  cpu: number;
  /** Unique per process. */
  filePrefix: string;
  /** The one `--vdev` string. */
  vdev: string;
  forwardMode: 'txonly' | 'rxonly' | 'io';
  /** Frame length in bytes for txonly (`--txpkts`), Ethernet header included, CRC excluded. */
  frameSize: number;
  /** Ring size (`--txd` / `--rxd`). */
  ringSize: number;
  /** Interactive: forwarding starts on {@link Testpmd.start}; else at once. */
  interactive: boolean;
}

const FWD_RE = /Forward statistics for port (\d+)\s+-+\s+RX-packets:\s+(\d+)\s+RX-dropped:\s+\d+\s+RX-total:\s+\d+\s+TX-packets:\s+(\d+)\s+TX-dropped:\s+(\d+)/g;
const STATS_RE = /NIC statistics for port \d+\s+#+\s+RX-packets:\s+(\d+)\s+RX-missed:\s+\d+\s+RX-bytes:\s+(\d+)[\s\S]*?TX-packets:\s+(\d+)\s+TX-errors:\s+\d+\s+TX-bytes:\s+(\d+)[\s\S]*?Tx-pps:[^\n]*\n\s*#+/;

/** One testpmd process. */
export class Testpmd {
  readonly child: ChildProcess;
  /** stdout + stderr, for logs. */
  private out = '';
  /** stdout alone: prompts and answers are matched here, where stderr lines cannot split them. */
  private stdout = '';
  private readonly exitP: Promise<number | null>;
  private exitCode: number | null | undefined = undefined;

  constructor(bin: string, o: TestpmdOptions) {
    const args = [
      '--lcores', `0@${o.cpu},1@${o.cpu}`, '--no-huge', '-m', '256', '--no-pci', '--no-shconf', '--no-telemetry',
      '--file-prefix', o.filePrefix, '--vdev', o.vdev, '--log-level', 'lib.eal:error',
      '--',
      ...(o.interactive ? ['-i'] : []),
      `--forward-mode=${o.forwardMode}`, `--txpkts=${o.frameSize}`,
      `--txd=${o.ringSize}`, `--rxd=${o.ringSize}`, '--burst=32',
      // Without this, `start` first reads and frees whatever the back-end already put in the RX
      // ring, outside the counters — the back-end's count would then exceed testpmd's by that.
      '--no-flush-rx',
      // mbufs for two full rings plus per-lcore caches and bursts in flight; the default pool
      // (~155k × 2 KiB) does not fit `-m 256`.
      `--total-num-mbufs=${Math.max(4096, 4 * o.ringSize + 1024)}`,
    ];
    // stdout is a pipe, so libc would block-buffer testpmd's answers; stdbuf makes it line-buffered.
    const stdbuf = which('stdbuf');
    this.child = stdbuf === null
      ? spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'] })
      : spawn(stdbuf, ['-oL', bin, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout!.setEncoding('utf8').on('data', (s: string) => { this.out += s; this.stdout += s; });
    this.child.stderr!.setEncoding('utf8').on('data', (s: string) => { this.out += s; });
    this.child.stdin!.on('error', () => { /* exited; reported through the exit code */ });
    this.exitP = new Promise((resolve) => {
      this.child.once('error', (e) => { this.out += String(e); });
      this.child.once('close', (code) => { this.exitCode = code; resolve(code); });
    });
  }

  /** Everything printed so far. */
  get output(): string {
    return this.out;
  }

  get exited(): boolean {
    return this.exitCode !== undefined;
  }

  private send(line: string): void {
    if (!this.exited) this.child.stdin!.write(`${line}\n`);
  }

  /** Waits until stdout after `from` matches `re`; rejects on exit or timeout. */
  private async waitFor(re: RegExp, from: number, timeoutMs: number): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = this.stdout.slice(from).match(re);
      if (m !== null) return m;
      if (this.exited) throw new Error(`testpmd exited (${this.exitCode}): ${this.out.slice(-1500)}`);
      if (Date.now() > deadline) throw new Error(`testpmd: timed out waiting for ${re.source.slice(0, 40)}: ${this.out.slice(-1500)}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** Waits for the interactive prompt (EAL and ports are up). */
  async ready(timeoutMs = 20_000): Promise<void> {
    await this.waitFor(/testpmd> /, 0, timeoutMs);
  }

  /** Starts forwarding (interactive mode). */
  async start(): Promise<void> {
    const from = this.stdout.length;
    this.send('start');
    await this.waitFor(/testpmd> /, from, 10_000);
  }

  /** Reads port 0's counters now (interactive mode); `at` is when the command was sent. */
  async stats(): Promise<PortCounters & { at: number }> {
    const from = this.stdout.length;
    const at = performance.now();
    this.send('show port stats 0');
    const m = await this.waitFor(STATS_RE, from, 10_000);
    return { rxPackets: Number(m[1]), rxBytes: Number(m[2]), txPackets: Number(m[3]), txBytes: Number(m[4]), at };
  }

  /**
   * Stops forwarding and exits (interactive: `quit`; otherwise the Enter testpmd waits for).
   * Resolves with the forward statistics of port 0 (null if none printed) and the exit code.
   */
  async quit(timeoutMs = 15_000): Promise<{ fwd: ForwardStats | null; code: number | null }> {
    this.send('quit');
    this.child.stdin!.end();
    const t = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    const code = await this.exitP;
    clearTimeout(t);
    let fwd: ForwardStats | null = null;
    for (const m of this.out.matchAll(FWD_RE)) {
      if (m[1] === '0') fwd = { rx: Number(m[2]), tx: Number(m[3]), txDropped: Number(m[4]) };
    }
    return { fwd, code };
  }

  /** Kills the process (error paths). */
  async kill(): Promise<void> {
    if (this.exited) return;
    this.child.kill('SIGKILL');
    await this.exitP;
  }
}
