/**
 * Soak, short form (issue 6 §4): 25 s of mixed load — the bench load generator's workloads in
 * turn against vhost-user-blk (4k random read/write qd32 on 2 queues, 64k sequential), a full
 * session between runs, and frame bursts through vhost-user-net's loopback with a new session
 * every 3 s — with both processes' fds, memfd mappings and RSS sampled every second. Bounded:
 * fds and mappings within a live session's worth of the idle count, back to it at the end; RSS
 * trend after 5 s under 32 MiB. `npm run soak` runs the same for 10 minutes.
 */
import t from 'tap';
import { runMixed } from './src/soak.js';

const SECONDS = 25;

t.test(`${SECONDS} s mixed load: blk loadgen + net traffic, bounded fds/mappings/RSS`, { timeout: 180_000 }, async (t) => {
  const { reports, work } = await runMixed({ seconds: SECONDS, warmupSeconds: 5, rssTrendKiB: 32 * 1024, fdSlack: 32, phaseSeconds: 3 });
  t.comment(JSON.stringify(work));
  t.ok(work.blkRuns >= 2, `${work.blkRuns} loadgen runs`);
  t.ok(work.blkRequests > 0, `${work.blkRequests} blk requests completed`);
  t.equal(work.blkErrors, 0, 'no blk request failed, no loadgen run failed');
  t.ok(work.net.sessions >= 2, `${work.net.sessions} net sessions`);
  t.ok(work.net.framesSent > 0, `${work.net.framesSent} frames sent`);
  t.ok(work.net.framesEchoed >= work.net.framesSent * 0.95, `${work.net.framesEchoed} of ${work.net.framesSent} frames echoed back`);
  for (const r of reports) {
    for (const l of r.verdict.lines) t.comment(l);
    t.ok(r.samples.length >= SECONDS - 3, `${r.device}: ${r.samples.length} samples`);
    t.equal(r.idleFdsAfter, r.idleFdsBefore, `${r.device}: fds back to the idle ${r.idleFdsBefore} once the load ends`);
    t.ok(r.verdict.ok, `${r.device}: verdict`, { lines: r.verdict.lines });
    t.equal(r.exitCode, 0, `${r.device}: CLI exits 0 on SIGTERM`);
  }
});
