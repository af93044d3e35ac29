/**
 * Crash recovery end to end: the guest writes and verifies a vhost-user-blk disk while the host
 * SIGKILLs our back-end at random moments (≥ 5 times with requests in flight) and starts it
 * again on the same socket and image. QEMU (chardev `reconnect=1`) reconnects and replays the
 * setup with SET_INFLIGHT_FD; the new back-end resubmits what the dead one had popped and not
 * completed (vhost-user.rst "Inflight I/O tracking"). The guest must see no I/O error, its
 * read-back must verify every pass, and the image must hold exactly the final pass.
 *
 * The guest has 2 vCPUs, so its 4 parallel writers overlap; back-end instances take turns with
 * buffered io_uring, O_DIRECT and inline image I/O.
 *
 * Replay a schedule with `E2E_RESTART_SEED=<seed>` (the seed is printed).
 */
import t from 'tap';
import { findVhostTsBlkCli } from './src/backends.js';
import { e2eTest } from './src/env.js';
import { runRestartChaos, timeScale } from './src/restart-chaos.js';
import { assertChaosOutcome, chaosSeed } from './src/restart-assert.js';

const TARGET_INFLIGHT_KILLS = 5;

/** Guest run budget, scaled for a loaded machine (CI shares 2 cores between test files). */
const RUN_TIMEOUT_MS = Math.round(240_000 * timeScale());
// The file as a whole: the run plus boot and image checks (tap's default, 120 s, is too short
// for a loaded CI runner).
t.setTimeout(RUN_TIMEOUT_MS + 60_000);

if (findVhostTsBlkCli() === null) {
  t.fail('vhost-user-blk CLI not found (packages/devices-blk/src/cli.ts or dist/cli.js)');
} else {
  t.test('SIGKILL restarts under I/O lose nothing', async (t) => {
    await e2eTest(t, 'guest run', { needs: ['qemu', 'kernel', 'busybox'], timeout: RUN_TIMEOUT_MS }, async (t) => {
      const seed = chaosSeed();
      t.comment(`restart schedule seed: ${seed} (E2E_RESTART_SEED=${seed} replays it)`);
      const res = await runRestartChaos({
        mode: 'kill', seed, targetDisruptive: TARGET_INFLIGHT_KILLS + 1, maxRestarts: 16,
        delayMs: [300, 1500], inflightWaitMs: 3000, budgetMs: 100_000, comment: (m) => t.comment(m),
        // Three engine modes in turn: the host page cache through io_uring (the default for a
        // disk image), O_DIRECT (requests stay in flight longer, several at once), and inline
        // I/O (what a tmpfs image gets; forced here on the disk image).
        backendArgs: (n) => [[], ['--direct'], ['--aio', 'inline']][n % 3],
        // Some kills land 0–50 ms after QEMU replayed its setup: while the new back-end is
        // resubmitting the previous one's requests. (Never inside the replay: QEMU 7.2 loses
        // the device for good then — README "Restarts", docs/protocol.md.)
        quickRestartChance: 0.25,
      });
      assertChaosOutcome(t, res);
      const inflightKills = res.restarts.filter((r) => r.resubmitted > 0);
      t.ok(res.restarts.length >= 5, `at least 5 SIGKILLs (${res.restarts.length})`);
      t.ok(inflightKills.length >= TARGET_INFLIGHT_KILLS,
        `≥ ${TARGET_INFLIGHT_KILLS} kills hit requests in flight, all resubmitted by the next back-end ` +
        `(${inflightKills.length}: ${inflightKills.map((r) => r.resubmitted).join(', ')} request(s))`);
      for (const r of res.restarts) {
        t.equal(r.exitSignal, 'SIGKILL', `restart ${r.n}: the back-end died of SIGKILL`);
        // What the new back-end resubmits can only be what the area flagged after the crash.
        t.ok(r.resubmitted <= r.flaggedAfter, `restart ${r.n}: resubmitted ${r.resubmitted} ≤ flagged ${r.flaggedAfter}`);
      }
    });
  });
}
