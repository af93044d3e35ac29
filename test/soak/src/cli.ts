/**
 * `npm run soak`: the long soak. Prints every sample of the back-end processes (fds, memfd
 * mappings, RSS) and a verdict per device; exit status 0 when every verdict holds.
 *
 *   npm run soak                                   # 10 min mixed load, then 1000 connect/disconnect cycles
 *   npm run soak -- --seconds 120 --cycles 0       # 2 min mixed load only
 *   npm run soak -- --seconds 0 --cycles 5000      # cycles only
 *
 * Flags: --seconds N (mixed load, default 600), --cycles N (per device, default 1000),
 * --rss-limit-mib N (largest RSS growth the post-warm-up trend may predict, default 32 for the
 * mixed load, 16 for the cycles), --json FILE (write all samples and verdicts).
 * @module
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type { ProcSample } from './proc-stats.js';
import { runCycles, runMixed, type DeviceReport } from './soak.js';

function fmt(device: string, s: ProcSample): string {
  return `${device.padEnd(3)} t=${(s.t / 1000).toFixed(1).padStart(6)}s at=${String(s.at).padStart(5)} fds=${s.fds} memfd-maps=${s.memfdMaps} rss=${(s.rssKiB / 1024).toFixed(1)}MiB`;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string', default: '600' },
      cycles: { type: 'string', default: '1000' },
      'rss-limit-mib': { type: 'string' },
      json: { type: 'string' },
    },
    strict: true,
  });
  const seconds = Number(values.seconds);
  const cycles = Number(values.cycles);
  const limit = values['rss-limit-mib'] !== undefined ? Number(values['rss-limit-mib']) : null;
  const out: { mixed?: { reports: DeviceReport[]; work: unknown }; cycles?: DeviceReport[] } = {};
  let ok = true;
  const log = (l: string) => process.stdout.write(`${l}\n`);
  if (seconds > 0) {
    log(`# mixed load for ${seconds} s (blk: bench loadgen workloads in turn + a full session between them; net: frame bursts, a new session every 5 s)`);
    const r = await runMixed({ seconds, warmupSeconds: Math.min(60, Math.ceil(seconds / 5)), rssTrendKiB: (limit ?? 32) * 1024, fdSlack: 32,
      phaseSeconds: 5, onSample: (d, s) => log(fmt(d, s)) });
    out.mixed = r;
    for (const d of r.reports) {
      log(`# ${d.device}: ${d.work}; idle fds ${d.idleFdsBefore} before, ${d.idleFdsAfter} after; exit ${d.exitCode}`);
      for (const l of d.verdict.lines) log(`# ${l}`);
      ok &&= d.verdict.ok && d.idleFdsAfter === d.idleFdsBefore && d.exitCode === 0;
    }
    ok &&= r.work.blkErrors === 0 && r.work.blkRequests > 0 && r.work.net.framesEchoed > 0;
  }
  if (cycles > 0) {
    log(`# ${cycles} connect/disconnect cycles of a full session per device`);
    const r = await runCycles({ devices: ['blk', 'net'], cycles, every: Math.max(1, Math.floor(cycles / 40)), warmupCycles: Math.floor(cycles / 5),
      rssTrendKiB: (limit ?? 16) * 1024, onSample: (d, s) => log(fmt(d, s)) });
    out.cycles = r;
    for (const d of r) {
      log(`# ${d.device}: ${d.work}; idle fds ${d.idleFdsBefore} before, ${d.idleFdsAfter} after; exit ${d.exitCode}`);
      for (const l of d.verdict.lines) log(`# ${l}`);
      ok &&= d.verdict.ok && d.idleFdsAfter === d.idleFdsBefore && d.exitCode === 0;
    }
  }
  if (values.json !== undefined) writeFileSync(values.json, JSON.stringify(out, null, 1));
  log(`# verdict: ${ok ? 'PASS — no fd, mapping or memory growth beyond the tolerances' : 'FAIL'}`);
  return ok ? 0 : 1;
}

main().then((code) => process.exit(code), (e: unknown) => {
  process.stderr.write(`soak: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(2);
});
