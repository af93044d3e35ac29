/**
 * Bookkeeping of the child processes the e2e harness starts (QEMU, backends), so none
 * outlives the test process — not even when a test throws or tap kills the file on timeout.
 */
import type { ChildProcess } from 'node:child_process';

const live = new Set<ChildProcess>();
let hooked = false;

function killAll(): void {
  for (const c of live) {
    try {
      c.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  live.clear();
}

/** Registers a child to be SIGKILLed when this process exits; unregisters it when it exits first. */
export function track(child: ChildProcess): void {
  if (!hooked) {
    hooked = true;
    process.on('exit', killAll);
    // tap sends SIGTERM on timeout, and death by signal skips 'exit' listeners: kill the
    // children, then re-raise with the default action if nobody else handles the signal.
    for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
      process.once(sig, () => {
        killAll();
        if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
      });
    }
  }
  live.add(child);
  child.once('exit', () => live.delete(child));
}

/** True once the child has exited (or was never started). */
export function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/**
 * Stops a child: SIGTERM, then SIGKILL after `graceMs`; resolves when it has exited.
 */
export async function stopChild(child: ChildProcess, graceMs = 3000): Promise<void> {
  if (hasExited(child) || child.pid === undefined) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => {
    if (!hasExited(child)) child.kill('SIGKILL');
  }, graceMs);
  await exited;
  clearTimeout(timer);
}
