// Percentiles and result files for the benchmarks (JSON + a markdown table side by side).
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const s = [...values].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[i]!;
}

export interface Summary {
  n: number;
  p50: number;
  p95: number;
  p99: number;
  min: number;
  max: number;
}

export function summarize(values: readonly number[]): Summary {
  const r = (x: number) => Math.round(x * 100) / 100;
  return {
    n: values.length,
    p50: r(percentile(values, 50)),
    p95: r(percentile(values, 95)),
    p99: r(percentile(values, 99)),
    min: r(Math.min(...values)),
    max: r(Math.max(...values)),
  };
}

export function writeResults(
  dir: string,
  name: string,
  json: unknown,
  markdown: string,
): { json: string; md: string } {
  mkdirSync(dir, { recursive: true });
  const j = path.join(dir, `${name}.json`);
  const m = path.join(dir, `${name}.md`);
  writeFileSync(j, `${JSON.stringify(json, null, 2)}\n`);
  writeFileSync(m, markdown);
  return { json: j, md: m };
}
