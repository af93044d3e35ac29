/**
 * Crash recovery end to end on packed virtqueues: restart-kill.test.ts with
 * `vhost-user-blk-pci,packed=on`. The guest writes and verifies the disk while the host
 * SIGKILLs our back-end at random moments and starts it again; QEMU 7.2 (`reconnect=1`) replays
 * the setup with SET_INFLIGHT_FD, now an area in the packed format (vhost-user.rst
 * QueueRegionPacked). Two things differ from split rings, both handled by the back-end:
 *
 * - QEMU does not restore a packed ring's position when the back-end dies
 *   (virtio_queue_restore_last_avail_idx is a no-op for packed rings), so SET_VRING_BASE after a
 *   crash repeats the value of the previous start. The new back-end resumes from the area: the
 *   committed used position, and avail past the descriptors of the chains still in flight.
 * - Used descriptors overwrite ring slots of chains still in flight, so resubmitted chains are
 *   re-walked from the descriptor copies the area holds.
 *
 * The guest must see no I/O error, its read-back must verify every pass, and the image must
 * hold exactly the final pass. Replay a schedule with `E2E_RESTART_SEED=<seed>`.
 */
import t from 'tap';
import { findVhostTsBlkCli } from './src/backends.js';
import { e2eTest } from './src/env.js';
import { runRestartChaos, timeScale } from './src/restart-chaos.js';
import { assertChaosOutcome, chaosSeed } from './src/restart-assert.js';

const TARGET_INFLIGHT_KILLS = 4;

/** Guest run budget, scaled for a loaded machine (as restart-kill.test.ts). */
const RUN_TIMEOUT_MS = Math.round(240_000 * timeScale());
t.setTimeout(RUN_TIMEOUT_MS + 60_000);

if (findVhostTsBlkCli() === null) {
  t.fail('vhost-user-blk CLI not found (packages/devices-blk/src/cli.ts or dist/cli.js)');
} else {
  t.test('packed rings: SIGKILL restarts under I/O lose nothing', async (t) => {
    await e2eTest(t, 'guest run', { needs: ['qemu', 'kernel', 'busybox'], timeout: RUN_TIMEOUT_MS }, async (t) => {
      const seed = chaosSeed();
      t.comment(`restart schedule seed: ${seed} (E2E_RESTART_SEED=${seed} replays it)`);
      const res = await runRestartChaos({
        mode: 'kill', seed, packed: true, targetDisruptive: TARGET_INFLIGHT_KILLS + 1, maxRestarts: 14,
        delayMs: [300, 1500], inflightWaitMs: 3000, budgetMs: 90_000, comment: (m) => t.comment(m),
        backendArgs: (n) => (n % 2 === 1 ? ['--direct'] : []),
        // Some kills 0–50 ms after QEMU replayed its setup, while the new back-end resubmits.
        quickRestartChance: 0.2,
      });
      assertChaosOutcome(t, res);
      // The back-ends ran packed rings with the packed area (not a split area ignored).
      const logs = res.backendLogs.join('\n');
      t.notOk(/inflight area is in the split format/.test(logs), 'the area was in the packed format');
      t.ok(/packed position 0x[0-9a-f]+ from the inflight area/.test(logs),
        "at least one restart corrected QEMU's stale SET_VRING_BASE from the area");
      const inflightKills = res.restarts.filter((r) => r.resubmitted > 0);
      t.ok(res.restarts.length >= 5, `at least 5 SIGKILLs (${res.restarts.length})`);
      t.ok(inflightKills.length >= TARGET_INFLIGHT_KILLS,
        `≥ ${TARGET_INFLIGHT_KILLS} kills hit requests in flight, all resubmitted by the next back-end ` +
        `(${inflightKills.length}: ${inflightKills.map((r) => r.resubmitted).join(', ')} request(s))`);
      for (const r of res.restarts) {
        t.equal(r.exitSignal, 'SIGKILL', `restart ${r.n}: the back-end died of SIGKILL`);
        t.ok(r.resubmitted <= r.flaggedAfter, `restart ${r.n}: resubmitted ${r.resubmitted} ≤ flagged ${r.flaggedAfter}`);
      }
    });
  });
}
