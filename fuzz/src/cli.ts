/**
 * Long fuzz campaigns: `npm run fuzz -- --target ring --runs 100000` or `--time 600`.
 *
 * Options: --target NAME (a target, a group prefix such as `ring` or `vu`, or `all`; default ring), --runs N, --time SECONDS,
 * --seed S, --path P (replay one shrunk case), --save (write failures to fuzz/regressions/).
 * Exit code 1 on a failure.
 * @module
 */
import { parseArgs } from 'node:util';
import { TARGETS, selectTargets } from './targets/index.js';
import { checkTarget, defaultSeed, failureReport, saveRegression } from './run.js';

const { values } = parseArgs({
  options: {
    target: { type: 'string', default: 'ring' },
    runs: { type: 'string' },
    time: { type: 'string' },
    seed: { type: 'string' },
    path: { type: 'string' },
    save: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});

if (values.help) {
  console.log('usage: npm run fuzz -- [--target NAME|GROUP|all] [--runs N] [--time SECONDS] [--seed S] [--path P] [--save]');
  console.log(`targets: ${TARGETS.map((t) => `${t.name} (${t.description})`).join('; ')}`);
  process.exit(0);
}

const targets = selectTargets(values.target ?? 'ring');
if (targets.length === 0) {
  console.error(`unknown target ${values.target}; known: ${TARGETS.map((t) => t.name).join(', ')}`);
  process.exit(2);
}
const timeMs = values.time !== undefined ? Number(values.time) * 1000 : undefined;
// With only --time, run "forever" until the time limit; with neither, 10 000 runs.
const runs = values.runs !== undefined ? Number(values.runs) : timeMs !== undefined ? Number.MAX_SAFE_INTEGER : 10_000;
const baseSeed = values.seed !== undefined ? Number(values.seed) : defaultSeed();

let failed = false;
for (const target of targets) {
  const perTargetMs = timeMs !== undefined ? Math.max(1000, timeMs / targets.length) : undefined;
  const started = performance.now();
  console.log(`${target.name}: seed ${baseSeed}${runs !== Number.MAX_SAFE_INTEGER ? `, ${runs} runs` : ''}${perTargetMs ? `, ≤ ${perTargetMs / 1000}s` : ''}`);
  const d = await checkTarget(target, { numRuns: runs, seed: baseSeed, timeMs: perTargetMs, path: values.path });
  const secs = ((performance.now() - started) / 1000).toFixed(1);
  if (d.failed) {
    failed = true;
    console.error(failureReport(target, d));
    if (values.save) console.error(`saved ${saveRegression(target, d)}`);
  } else {
    console.log(`${target.name}: ok, ${d.numRuns} runs in ${secs}s${d.interrupted ? ' (time limit)' : ''}`);
  }
}
process.exit(failed ? 1 : 0);
