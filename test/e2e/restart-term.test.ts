/**
 * Graceful restarts end to end: as restart-kill.test.ts, but the back-end gets SIGTERM (it stops
 * popping, drains its in-flight requests, publishes them and exits 0) and is started again.
 * At least 3 restarts (5 are done, some right after the reconnect), 2 request queues; nothing
 * may be left for the next back-end to resubmit.
 *
 * Regression: the CLI used to close the socket first and drain afterwards; QEMU snapshots
 * used.idx when the connection drops, so a request answered during the drain was executed a
 * second time by the next back-end and the guest failed with "id N is not a head".
 *
 * Replay a schedule with `E2E_RESTART_SEED=<seed>` (the seed is printed).
 */
import t from 'tap';
import { findVhostTsBlkCli } from './src/backends.js';
import { e2eTest } from './src/env.js';
import { runRestartChaos, timeScale } from './src/restart-chaos.js';
import { assertChaosOutcome, chaosSeed } from './src/restart-assert.js';

const TARGET_RESTARTS = 3;
/** Restarts done (more than the minimum: the quick ones rarely find requests in flight). */
const RESTARTS = 5;

/** Guest run budget, scaled for a loaded machine (CI shares 2 cores between test files). */
const RUN_TIMEOUT_MS = Math.round(240_000 * timeScale());
// The file as a whole: the run plus boot and image checks (tap's default, 120 s, is too short
// for a loaded CI runner).
t.setTimeout(RUN_TIMEOUT_MS + 60_000);

if (findVhostTsBlkCli() === null) {
  t.fail('vhost-user-blk CLI not found (packages/devices-blk/src/cli.ts or dist/cli.js)');
} else {
  t.test('SIGTERM restarts under I/O drain and lose nothing', async (t) => {
    await e2eTest(t, 'guest run', { needs: ['qemu', 'kernel', 'busybox'], timeout: RUN_TIMEOUT_MS }, async (t) => {
      const seed = chaosSeed();
      t.comment(`restart schedule seed: ${seed} (E2E_RESTART_SEED=${seed} replays it)`);
      const res = await runRestartChaos({
        mode: 'term', seed, targetDisruptive: RESTARTS, maxRestarts: RESTARTS,
        // Signal at an instant with requests in flight, so the drain has something to do; now
        // and then 0–50 ms after QEMU replayed its setup (not inside the replay: QEMU 7.2 loses
        // the device for good then — README "Restarts", docs/protocol.md).
        delayMs: [300, 1500], inflightWaitMs: 3000, quickRestartChance: 0.4, budgetMs: 80_000,
        comment: (m) => t.comment(m),
        backendArgs: (n) => (n % 2 === 1 ? ['--direct'] : []),
        // Two request queues (the guest has 2 vCPUs): both rings must be drained and resumed.
        numQueues: 2,
        guestWriteThrough: true,
      });
      assertChaosOutcome(t, res);
      t.ok(res.restarts.length >= TARGET_RESTARTS, `at least ${TARGET_RESTARTS} graceful restarts (${res.restarts.length})`);
      const busy = res.restarts.filter((r) => r.flaggedBefore > 0).length;
      t.ok(busy >= 1, `≥ 1 SIGTERM arrived with requests marked in flight (${busy} of ${res.restarts.length})`);
      // The guest chose writethrough once; QEMU never says so again, yet every back-end after the
      // first must run writethrough (else writes are acknowledged before they are durable).
      t.equal(res.kv.get('RESTART.cache'), 'write through', 'the guest switched the disk to writethrough');
      t.match(res.backendLogs[0], /cache mode: writethrough/, 'the first back-end took the guest\'s choice');
      for (let n = 1; n < res.backendLogs.length; n++) {
        t.match(res.backendLogs[n], /cache mode: the driver chose writethrough, kept from the previous back-end/,
          `back-end #${n} found the choice in the inflight area`);
      }
      for (const r of res.restarts) {
        t.equal(r.exitCode, 0, `restart ${r.n}: the back-end drained and exited 0 (${r.drainMs} ms)`);
        t.equal(r.flaggedAfter, 0, `restart ${r.n}: nothing left marked in flight after the drain`);
        t.equal(r.resubmitted, 0, `restart ${r.n}: nothing to resubmit`);
      }
    });
  });
}
