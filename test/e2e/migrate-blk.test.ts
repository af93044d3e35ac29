/**
 * Live migration with vhost-user-blk on our back-end: a guest writing and verifying its disk is
 * migrated (QMP `migrate`, precopy over TCP) from a source QEMU whose disk is served by back-end
 * A to a destination QEMU (`-incoming`) whose disk is served by back-end B on the same image
 * (shared storage). While migration runs, back-end A must log every guest page it writes (read
 * data, used rings) in the SET_LOG_BASE bitmap (VHOST_F_LOG_ALL, vhost-user.rst "Migration");
 * a page it misses reaches the destination stale and the guest's re-verification of data held in
 * RAM fails. See src/blk-migration.ts for the workload.
 *
 * Replay with `E2E_MIGRATE_SEED=<seed>` (printed).
 */
import t from 'tap';
import { findVhostTsBlkCli } from './src/backends.js';
import { runBlkMigration, HELD_SIZE, MIGRATE_DISK_SIZE } from './src/blk-migration.js';
import { e2eTest } from './src/env.js';
import { timeScale } from './src/restart-chaos.js';

const seed = Number(process.env.E2E_MIGRATE_SEED ?? Math.floor(Math.random() * 2 ** 31));
// ~60 s on an idle 2-core box; waits scale with the load (1x to 3x, E2E_TIME_SCALE overrides).
const BUDGET_MS = Math.round(110_000 * timeScale());
t.setTimeout(BUDGET_MS + 30_000);

if (findVhostTsBlkCli() === null) {
  t.fail('vhost-user-blk CLI not found (packages/devices-blk/src/cli.ts or dist/cli.js)');
} else {
  t.test('live migration of a guest on vhost-user-blk (shared image, back-end A → back-end B)', async (t) => {
    await e2eTest(t, 'guest run', { needs: ['qemu', 'kernel', 'busybox'], timeout: BUDGET_MS + 20_000 }, async (t) => {
      t.comment(`seed: ${seed} (E2E_MIGRATE_SEED=${seed} replays it)`);
      const r = await runBlkMigration({
        seed, passesBefore: 1, passesAfter: 1, startDelayMs: [0, 1500], budgetMs: BUDGET_MS, comment: (m) => t.comment(m),
        // ≈ 100 MiB at 48 MiB/s: the dirty-logging window (≥ 2 s) outlasts a dmahold cycle
        // (≈ 1.6 s, one O_DIRECT read into guest memory), so back-end A always has pages to
        // mark even when the switch-over falls in the loop's CPU-only checks (at 1 GiB/s one
        // CI run migrated in 0.9 s with no request on A).
        maxBandwidth: 48 * 1024 * 1024,
      });
      const diag = { output: r.output.slice(-3000), logsA: r.logsA.slice(-2000), logsB: r.logsB.slice(-2000) };
      // QEMU side: the migration really happened and the guest runs on the destination.
      t.equal(r.migration.status, 'completed', 'query-migrate: completed');
      t.equal(r.sourceStatusAfter, 'postmigrate', 'source VM stopped after the switch-over');
      t.equal(r.destStatus, 'running', 'destination VM running');
      t.ok((r.migration.ram?.['dirty-sync-count'] ?? 0) >= 2, `precopy synced the dirty bitmap ${r.migration.ram?.['dirty-sync-count']} times`);
      // The console continues on the destination: the guest's loop went on there.
      t.ok(r.lastSourcePass >= 1, `source console: passes up to ${r.lastSourcePass}`);
      t.ok(r.destPasses.length >= 1, `destination console: passes ${r.destPasses.join(',')}`);
      t.ok(r.destPasses.every((p) => p > r.lastSourcePass), 'destination passes follow the source ones');
      t.match(r.destConsole, /@@E2E-RESULT rc=\d+@@/, 'the result line is printed on the destination console');
      // Guest side: every read (direct, page cache filled during migration, held across it) verified.
      t.equal(r.kv.get('MIG.size'), String((MIGRATE_DISK_SIZE + HELD_SIZE) / 512), 'guest saw the disk');
      // dmahold: one buffer, filled by the CPU, then overwritten by the back-end (O_DIRECT
      // read) and checked again and again — across the switch-over only the dirty log carries
      // those writes to the destination.
      t.ok(r.dmaholdCycles.source > 0 && r.dmaholdCycles.destination > 0,
        `dmahold cycled on both sides (source ${r.dmaholdCycles.source}, destination ${r.dmaholdCycles.destination})`);
      t.equal(r.kv.get('DMAHOLD.bad'), '0', `dmahold: no stale page in ${r.kv.get('DMAHOLD.checks')} checks`, diag);
      t.equal(r.kv.get('MIG.holder_rc'), '0', 'dmahold exit status 0', diag);
      t.notMatch(r.output, /VERIFY_FAIL|WRITE_FAIL/, 'no verification or write failure in the guest', diag);
      t.equal(r.kv.get('MIG.fails'), '0', 'guest counted no failure', diag);
      t.equal(r.kv.get('MIG.ioerrors'), '0', 'no I/O error in the guest kernel log', diag);
      t.equal(r.rc, 0, 'guest script exit status 0', diag);
      t.equal(r.kv.get('MIG.state'), r.expectedState, 'RAM-resident digest list (/tmp/state) survived the migration');
      // Host side: the shared image holds exactly the final pass.
      t.ok(r.finalPass > r.lastSourcePass, `final pass ${r.finalPass} ran on the destination`);
      t.same({ stale: r.image.stale, torn: r.image.torn, foreign: r.image.foreign }, { stale: [], torn: [], foreign: [] },
        `image holds pass ${r.finalPass} in all ${r.image.blocks} blocks`);
      t.ok(r.heldIntact, 'held area of the image unchanged');
      // Back-end side: A logged dirty pages while LOG_ALL was on; B served the destination.
      t.match(r.logsA, /dirty log base set/, 'back-end A received SET_LOG_BASE', diag);
      t.match(r.logsA, /dirty logging on/, 'back-end A logged with VHOST_F_LOG_ALL', diag);
      const marked = [...r.logsA.matchAll(/(\d+) dirty page marks/g)].map((m) => Number(m[1]));
      t.ok(marked.length > 0 && Math.max(...marked) > 0, `back-end A marked pages in the log (${marked.join(', ')})`, diag);
      t.match(r.logsB, /front-end connected/, 'back-end B served the destination', diag);
    });
  });
}
