/**
 * Assertions shared by the restart e2e tests (restart-kill, restart-term).
 * @module
 */
import type { Test } from 'tap';
import type { RestartChaosResult } from './restart-chaos.js';

/** The schedule seed: `E2E_RESTART_SEED` when set (replay), else a fresh one. */
export function chaosSeed(): number {
  const env = process.env.E2E_RESTART_SEED;
  if (env !== undefined && env !== '') return Number(env) >>> 0;
  return (Date.now() ^ (process.pid << 16)) >>> 0;
}

/** What every restart run must show: the guest saw no error, verified every pass, the image is exact. */
export function assertChaosOutcome(t: Test, res: RestartChaosResult): void {
  const { guest, kv } = res;
  const diag = { output: guest.output.slice(-6000), lastBackend: res.backendLogs.at(-1)?.slice(-2000) };
  t.comment(`guest ran ${guest.durationMs} ms, ${res.finalPass} passes, ${res.restarts.length} restarts (${res.stopReason})`);
  t.same(guest.insmodFailures, [], 'all modules loaded');
  t.equal(kv.get('RESTART.result'), 'ok', 'guest: every write succeeded and every pass verified', diag);
  t.equal(guest.rc, 0, 'guest script exit status 0', diag);
  t.equal(kv.get('RESTART.ioerrors'), '0', 'guest kernel log has no I/O error', diag);
  t.ok(res.finalPass >= 2, `guest completed ≥ 2 passes (${res.finalPass})`);
  const lines = guest.output.split('\n');
  t.same(lines.filter((l) => /^(WRITE_FAIL|VERIFY_FAIL|DMESG:)/.test(l)), [], 'no write, verify or kernel-log failure lines');
  for (let p = 1; p <= res.finalPass; p++) {
    if (!/,ok$/.test(kv.get(`PASS.${p}`) ?? '')) t.fail(`pass ${p} did not verify (${kv.get(`PASS.${p}`)})`);
  }
  const img = res.image;
  t.equal(img.good, img.blocks, `host: all ${img.blocks} blocks hold pass ${res.finalPass}`, {
    stale: img.stale.slice(0, 20), torn: img.torn.slice(0, 20), foreign: img.foreign.slice(0, 20),
  });
  t.same({ stale: img.stale.length, torn: img.torn.length, foreign: img.foreign.length },
    { stale: 0, torn: 0, foreign: 0 }, 'host: no stale, torn or lost block');
}
