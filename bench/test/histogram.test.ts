import t from 'tap';
import { Histogram } from '../src/common/histogram.js';

t.test('quantiles of a uniform 1..100000 ns spread are within a bucket (< 1 %)', async (tt) => {
  const h = new Histogram();
  for (let v = 1; v <= 100_000; v++) h.record(v);
  tt.equal(h.count, 100_000);
  for (const q of [0.5, 0.9, 0.99, 0.999]) {
    const want = q * 100_000;
    tt.ok(Math.abs(h.quantile(q) - want) / want < 0.01, `q${q}: ${h.quantile(q)} ≈ ${want}`);
  }
  tt.equal(h.max, 100_000);
  tt.ok(Math.abs(h.mean() - 50_000.5) < 1e-6);
});

t.test('small values are exact, huge ones clamp, negatives count as 0', async (tt) => {
  const h = new Histogram();
  h.record(7);
  tt.equal(h.quantile(0.5), 7);
  h.reset();
  tt.equal(h.count, 0);
  tt.equal(h.quantile(0.5), 0, 'empty → 0');
  h.record(-5);
  h.record(1e12);
  tt.equal(h.count, 2);
  tt.equal(h.quantile(0), 0);
  tt.ok(h.quantile(1) <= 1e12 && h.quantile(1) > 2e9, 'clamped into the last bucket, capped at max');
});

t.test('add() merges per-queue histograms', async (tt) => {
  const a = new Histogram();
  const b = new Histogram();
  for (let i = 0; i < 99; i++) a.record(1000);
  b.record(1_000_000);
  a.add(b);
  tt.equal(a.count, 100);
  tt.ok(Math.abs(a.quantile(0.5) - 1000) < 10);
  tt.ok(Math.abs(a.quantile(1) - 1_000_000) / 1_000_000 < 0.01);
});
