import t from 'tap';
import { ringNotify } from '../src/targets/ring-notify.js';
import { checkTarget, defaultSeed, failureReport, regressionsFor } from '../src/run.js';

t.test(`${ringNotify.name}: ${ringNotify.testRuns} random cases`, async (t) => {
  const seed = defaultSeed();
  t.comment(`seed ${seed} (set FUZZ_SEED to replay)`);
  const d = checkTarget(ringNotify, { seed });
  if (d.failed) t.fail(failureReport(ringNotify, d));
  else t.pass(`${d.numRuns} runs passed (seed ${seed})`);
});

for (const { file, reg } of regressionsFor(ringNotify.name)) {
  t.test(`regression: ${file}${reg.note ? ` — ${reg.note}` : ''}`, async (t) => {
    const d = checkTarget(ringNotify, { seed: reg.seed, path: reg.path, numRuns: reg.path ? 1 : 200 });
    t.notOk(d.failed, d.failed ? failureReport(ringNotify, d) : 'replays clean');
  });
}
