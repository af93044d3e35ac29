import t from 'tap';
import { ringModel } from '../src/targets/ring-model.js';
import { checkTarget, defaultSeed, failureReport, regressionsFor } from '../src/run.js';

t.test(`${ringModel.name}: ${ringModel.testRuns} random cases`, async (t) => {
  const seed = defaultSeed();
  t.comment(`seed ${seed} (set FUZZ_SEED to replay)`);
  const d = checkTarget(ringModel, { seed });
  if (d.failed) t.fail(failureReport(ringModel, d));
  else t.pass(`${d.numRuns} runs passed (seed ${seed})`);
});

for (const { file, reg } of regressionsFor(ringModel.name)) {
  t.test(`regression: ${file}${reg.note ? ` — ${reg.note}` : ''}`, async (t) => {
    const d = checkTarget(ringModel, { seed: reg.seed, path: reg.path, numRuns: reg.path ? 1 : 200 });
    t.notOk(d.failed, d.failed ? failureReport(ringModel, d) : 'replays clean');
  });
}
