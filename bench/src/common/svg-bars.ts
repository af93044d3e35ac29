/**
 * A small hand-written SVG grouped bar chart (no dependencies): one group per category, one
 * bar per series, values on a log or linear axis, a legend. Enough for benchmark pages.
 * @module
 */

/** Chart input. */
export interface BarChart {
  title: string;
  /** Axis label, e.g. "IOPS (log scale)". */
  unit: string;
  categories: readonly string[];
  series: readonly { name: string; color: string; values: readonly (number | null)[] }[];
  log?: boolean;
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function fmt(v: number): string {
  if (v >= 1e6) return `${(v / 1e6).toFixed(2)}M`;
  if (v >= 1e4) return `${Math.round(v / 1e3)}k`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)}k`;
  return String(Math.round(v));
}

/** Renders the chart as an SVG document. */
export function renderBarChart(c: BarChart): string {
  const barW = 16, gap = 26, left = 70, top = 50, plotH = 260, bottom = 110;
  const groupW = c.series.length * barW + gap;
  const width = Math.max(480, left + c.categories.length * groupW + 20);
  const height = top + plotH + bottom;
  const all = c.series.flatMap((s) => s.values.filter((v): v is number => v !== null && v > 0));
  const max = all.length === 0 ? 1 : Math.max(...all);
  const min = all.length === 0 ? 1 : Math.min(...all);
  const log = c.log ?? false;
  const lo = log ? 10 ** Math.floor(Math.log10(min)) : 0;
  const hi = log ? 10 ** Math.ceil(Math.log10(max)) : max * 1.1;
  const y = (v: number): number => {
    const f = log ? (Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo)) : (v - lo) / (hi - lo);
    return top + plotH - Math.max(0, Math.min(1, f)) * plotH;
  };
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect width="100%" height="100%" fill="white"/>`);
  out.push(`<text x="${width / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${esc(c.title)}</text>`);
  // Grid and axis ticks.
  const ticks: number[] = [];
  if (log) for (let t = lo; t <= hi * 1.0001; t *= 10) ticks.push(t);
  else for (let i = 0; i <= 5; i++) ticks.push(lo + ((hi - lo) * i) / 5);
  for (const t of ticks) {
    const ty = y(t).toFixed(1);
    out.push(`<line x1="${left}" x2="${width - 10}" y1="${ty}" y2="${ty}" stroke="#ddd"/>`);
    out.push(`<text x="${left - 6}" y="${ty}" text-anchor="end" dominant-baseline="middle">${fmt(t)}</text>`);
  }
  out.push(`<text transform="translate(16 ${top + plotH / 2}) rotate(-90)" text-anchor="middle">${esc(c.unit)}</text>`);
  c.categories.forEach((cat, ci) => {
    const gx = left + gap / 2 + ci * groupW;
    c.series.forEach((s, si) => {
      const v = s.values[ci];
      if (v === null || v <= 0) return;
      const x = gx + si * barW;
      const by = y(v);
      out.push(`<rect x="${x}" y="${by.toFixed(1)}" width="${barW - 2}" height="${(top + plotH - by).toFixed(1)}" fill="${s.color}">` +
        `<title>${esc(`${s.name} ${cat}: ${fmt(v)}`)}</title></rect>`);
    });
    const cx = gx + (c.series.length * barW) / 2;
    out.push(`<text transform="translate(${cx} ${top + plotH + 8}) rotate(40)" text-anchor="start">${esc(cat)}</text>`);
  });
  out.push(`<line x1="${left}" x2="${width - 10}" y1="${top + plotH}" y2="${top + plotH}" stroke="#333"/>`);
  // Legend.
  c.series.forEach((s, si) => {
    const lx = left + si * 130;
    const ly = height - 18;
    out.push(`<rect x="${lx}" y="${ly - 9}" width="10" height="10" fill="${s.color}"/>`);
    out.push(`<text x="${lx + 14}" y="${ly}">${esc(s.name)}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
