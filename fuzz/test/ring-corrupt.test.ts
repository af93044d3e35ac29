import t from 'tap';
import { ringCorrupt } from '../src/targets/ring-corrupt.js';
import { checkTarget, defaultSeed, failureReport, regressionsFor } from '../src/run.js';

t.test(`${ringCorrupt.name}: ${ringCorrupt.testRuns} random cases`, async (t) => {
  const seed = defaultSeed();
  t.comment(`seed ${seed} (set FUZZ_SEED to replay)`);
  const d = checkTarget(ringCorrupt, { seed });
  if (d.failed) t.fail(failureReport(ringCorrupt, d));
  else t.pass(`${d.numRuns} runs passed (seed ${seed})`);
});

for (const { file, reg } of regressionsFor(ringCorrupt.name)) {
  t.test(`regression: ${file}${reg.note ? ` — ${reg.note}` : ''}`, async (t) => {
    const d = checkTarget(ringCorrupt, { seed: reg.seed, path: reg.path, numRuns: reg.path ? 1 : 200 });
    t.notOk(d.failed, d.failed ? failureReport(ringCorrupt, d) : 'replays clean');
  });
}
