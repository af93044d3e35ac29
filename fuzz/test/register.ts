/**
 * Registers the standard tests of a fuzz target: one bounded random campaign (seed printed,
 * FUZZ_SEED replays) plus every saved regression of the target.
 */
import t from 'tap';
import type { FuzzTarget } from '../src/targets/index.js';
import { checkTarget, defaultSeed, failureReport, regressionsFor } from '../src/run.js';

export function registerTarget(target: FuzzTarget): void {
  t.test(`${target.name}: ${target.testRuns} random cases`, async (t) => {
    const seed = defaultSeed();
    t.comment(`seed ${seed} (set FUZZ_SEED to replay)`);
    const d = await checkTarget(target, { seed });
    if (d.failed) t.fail(failureReport(target, d));
    else t.equal(d.numRuns, target.testRuns, `${d.numRuns} runs passed (seed ${seed})`);
  });

  for (const { file, reg } of regressionsFor(target.name)) {
    t.test(`regression: ${file}${reg.note ? ` — ${reg.note}` : ''}`, async (t) => {
      const d = await checkTarget(target, { seed: reg.seed, path: reg.path, numRuns: reg.path ? 1 : 200 });
      t.notOk(d.failed, d.failed ? failureReport(target, d) : 'replays clean');
    });
  }
}
