/**
 * Replaces one `## heading` section of a markdown page (docs/benchmarks.md), leaving every
 * other section byte for byte: each bench owns its section.
 * @module
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

/**
 * Replaces the section starting at the line `## {heading}` (up to the next `## ` heading) with
 * `section` (which carries its own heading line), or appends it; creates the page with a title
 * when missing.
 */
export function replaceSection(path: string, heading: string, section: string): void {
  const text = existsSync(path) ? readFileSync(path, 'utf8') : '# Benchmarks\n\nResults with the exact commands that produced them.\n';
  const lines = text.split('\n');
  const start = lines.findIndex((l) => l.trim() === `## ${heading}`);
  let next: string;
  if (start < 0) {
    next = `${text.replace(/\n*$/, '')}\n\n${section}`;
  } else {
    let end = lines.findIndex((l, i) => i > start && l.startsWith('## '));
    if (end < 0) end = lines.length;
    const before = lines.slice(0, start).join('\n');
    const after = lines.slice(end).join('\n');
    next = `${before}${before === '' ? '' : '\n'}${section}${after === '' ? '' : `\n${after}`}`;
  }
  writeFileSync(path, next.endsWith('\n') ? next : `${next}\n`);
}
