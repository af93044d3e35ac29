#!/usr/bin/env node
// Runs the whole suite with tap and closes with the one line CI reads:
// "N passed, N failed[, N skipped]". tap's own summary counts assertions
// (and subtests); we re-print it in the plain form.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const tapBin = require.resolve('tap/package.json').replace(/package\.json$/, 'dist/esm/run.mjs');
const args = ['--reporter=tap', ...process.argv.slice(2)];
const child = spawn(process.execPath, [tapBin, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });

let tail = '';
child.stdout.on('data', (chunk) => {
  process.stdout.write(chunk);
  tail = (tail + chunk.toString('utf8')).slice(-4096);
});
child.on('close', (code, signal) => {
  const m = /# \{ total: (\d+)(?:, pass: (\d+))?(?:, fail: (\d+))?(?:, skip: (\d+))?(?:, todo: (\d+))?/.exec(tail);
  let passed = 0, failed = 0, skipped = 0;
  if (m) {
    passed = Number(m[2] ?? 0);
    failed = Number(m[3] ?? 0);
    skipped = Number(m[4] ?? 0) + Number(m[5] ?? 0);
  } else {
    failed = 1; // no summary means the runner itself broke
  }
  if ((code !== 0 || signal) && failed === 0) failed = 1;
  console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
  process.exit(failed > 0 ? 1 : 0);
});
