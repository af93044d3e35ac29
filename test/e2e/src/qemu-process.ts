/**
 * A long-lived QEMU process the test steps through (unlike {@link runGuest}, which runs one
 * guest script to its end): live migration needs two of them at once, a QMP socket on each and
 * the console of each read while they run.
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { hasExited, stopChild, track } from './children.js';
import { QmpClient } from './qmp.js';
import { diesWithParent } from './child-guard.js';

/** A running QEMU with its console text and a QMP connection. */
export interface QemuProcess {
  readonly name: string;
  readonly argv: readonly string[];
  readonly child: ChildProcess;
  readonly qmp: QmpClient;
  /** Serial console + QEMU's own stderr so far, `\r` removed. */
  console(): string;
  exited(): boolean;
  /** Resolves with the exit code/signal once QEMU is gone. */
  readonly exit: Promise<{ code: number | null; signal: string | null }>;
  /** Waits until `re` matches the console; rejects on exit, abort or timeout (with the console tail). */
  waitConsole(re: RegExp, timeoutMs: number, signal?: AbortSignal): Promise<RegExpMatchArray>;
  /** Closes QMP, SIGTERM then SIGKILL. Idempotent. */
  stop(): Promise<void>;
}

/**
 * Spawns `qemu argv... -qmp unix:QMP,server=on,wait=off` and connects to its QMP socket.
 * The process is tracked ({@link track}): it never outlives the test process.
 */
export async function startQemu(name: string, qemu: string, argv: readonly string[], qmpPath: string): Promise<QemuProcess> {
  const full = [...argv, '-qmp', `unix:${qmpPath},server=on,wait=off`];
  const child = spawn(...diesWithParent(qemu, full), { stdio: ['pipe', 'pipe', 'pipe'] });
  track(child);
  let text = '';
  const onData = (c: string): void => {
    text += c.replace(/\r/g, '');
  };
  child.stdout.setEncoding('utf8').on('data', onData);
  child.stderr.setEncoding('utf8').on('data', onData);
  const exit = new Promise<{ code: number | null; signal: string | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', () => resolve({ code: null, signal: null }));
  });
  const tail = (): string => text.slice(-3000);
  let qmp: QmpClient;
  try {
    qmp = await Promise.race([
      QmpClient.connect(qmpPath, 20_000),
      exit.then((e) => {
        throw new Error(`${name} QEMU exited at start (code ${e.code}, signal ${e.signal}):\n${tail()}`);
      }),
    ]);
  } catch (err) {
    await stopChild(child, 1000);
    throw err;
  }
  return {
    name,
    argv: [qemu, ...full],
    child,
    qmp,
    console: () => text,
    exited: () => hasExited(child),
    exit,
    async waitConsole(re, timeoutMs, signal) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const m = re.exec(text);
        if (m !== null) return m;
        if (signal?.aborted === true) {
          const r: unknown = signal.reason;
          throw new Error(`${name}: aborted waiting for ${re}: ${r instanceof Error ? r.message : String(r)}`);
        }
        if (hasExited(child)) throw new Error(`${name} QEMU exited while waiting for ${re}; console tail:\n${tail()}`);
        if (Date.now() > deadline) throw new Error(`${name}: ${re} not seen within ${timeoutMs} ms; console tail:\n${tail()}`);
        await sleep(50);
      }
    },
    async stop() {
      qmp.close();
      await stopChild(child, 2000);
    },
  };
}
