/**
 * Children that die with the test: a test process killed by tap's timeout (SIGTERM/SIGKILL)
 * runs no cleanup, and a QEMU or back-end it started would live on, holding CPU and sockets for
 * the rest of the suite. `setpriv --pdeathsig KILL` (util-linux) makes the kernel SIGKILL the
 * child when its parent dies; it execs the command, so the pid is the command's own.
 * @module
 */
import { existsSync } from 'node:fs';

const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p)) ?? null;

/** `[command, args]` to spawn so that the child is killed when this process dies. */
export function diesWithParent(cmd: string, args: readonly string[]): [string, string[]] {
  if (SETPRIV === null) return [cmd, [...args]];
  return [SETPRIV, ['--pdeathsig', 'KILL', '--', cmd, ...args]];
}
