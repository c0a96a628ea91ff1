// The fuzz loop shared by every target: generate case after case from a seeded generator, check
// the target's properties on each, and on the first failure shrink the input, keep it in the
// crash corpus (test/fixtures/fuzz-regressions/<corpus>/, replayed by regressions.test.ts) and
// say how to replay it. Pure apart from writing that one file.

import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from '../assets/paths.js';
import { Rng, caseSeed } from './rng.js';

/** A property of the code under test did not hold. */
export class FuzzFailure extends Error {
  override name = 'FuzzFailure';
}

export function fail(message: string): never {
  throw new FuzzFailure(message);
}

export interface FuzzTarget<I> {
  /** Label in output and in corpus files. */
  readonly name: string;
  /** Folder of the crash corpus its failures are kept in. */
  readonly corpus: 'decoder' | 'api';
  /** Called once per run before the first case, with the run's seed (to build shared pools). */
  prepare?(seed: number): void;
  generate(rng: Rng): I;
  /** Throws (a FuzzFailure, or whatever escaped the code under test) when a property fails. */
  check(input: I): void;
  /** Smaller variants of a failing input, most aggressive first. */
  shrink(input: I): Iterable<I>;
  /** JSON-able form for the corpus file, and back. */
  save(input: I): unknown;
  load(saved: unknown): I;
}

export const CORPUS_DIR = path.join(REPO_ROOT, 'test/fixtures/fuzz-regressions');

/** Check calls spent on shrinking one failure, so a slow shrink cannot hang a test run. */
const SHRINK_BUDGET = 5000;

export interface FuzzSettings {
  seed: number;
  cases: number;
  /** Run only this case index (replay of one failure). */
  only: number | null;
}

function envNumber(name: string): number | null {
  const v = process.env[name];
  if (v === undefined || v.trim() === '') return null;
  const n = Number(v.replaceAll('_', ''));
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${name}=${v} is not a whole number`);
  return n;
}

/**
 * Seed and case count: ISOLA_FUZZ_SEED (decimal or 0x...) replays a run, ISOLA_FUZZ_CASES
 * overrides the count, ISOLA_FUZZ_CASE runs the one case of that index.
 */
export function fuzzSettings(defaults: { seed: number; cases: number }): FuzzSettings {
  return {
    seed: (envNumber('ISOLA_FUZZ_SEED') ?? defaults.seed) >>> 0,
    cases: envNumber('ISOLA_FUZZ_CASES') ?? defaults.cases,
    only: envNumber('ISOLA_FUZZ_CASE'),
  };
}

export interface FuzzResult {
  target: string;
  seed: number;
  cases: number;
  ms: number;
  failure: {
    index: number;
    message: string;
    /** The shrunk input as saved. */
    saved: unknown;
    /** Where it was kept, or null when writing failed. */
    file: string | null;
  } | null;
}

const hex32 = (n: number) => `0x${n.toString(16).padStart(8, '0')}`;

function errorText(err: unknown): string {
  if (err instanceof FuzzFailure) return err.message;
  if (err instanceof Error) return `${err.name}: ${err.message}\n${err.stack ?? ''}`;
  return `threw a non-error: ${String(err)}`;
}

function failsWith<I>(target: FuzzTarget<I>, input: I): string | null {
  try {
    target.check(input);
    return null;
  } catch (err) {
    return errorText(err);
  }
}

/** Greedy shrinking: take the first smaller variant that still fails, until none does. */
export function shrinkFailure<I>(
  target: FuzzTarget<I>,
  input: I,
  message: string,
): { input: I; message: string } {
  let cur = input;
  let msg = message;
  let budget = SHRINK_BUDGET;
  for (let improved = true; improved && budget > 0; ) {
    improved = false;
    for (const cand of target.shrink(cur)) {
      if (--budget < 0) break;
      const m = failsWith(target, cand);
      if (m !== null) {
        cur = cand;
        msg = m;
        improved = true;
        break;
      }
    }
  }
  return { input: cur, message: msg };
}

function keep(target: FuzzTarget<unknown>, seed: number, index: number, body: object): string {
  const dir = path.join(CORPUS_DIR, target.corpus);
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${target.name}-${hex32(seed)}-${index}.json`);
  writeFileSync(file, `${JSON.stringify(body, null, 2)}\n`);
  return file;
}

export interface RunOptions {
  /** Called every `every` cases with the count so far (progress of long runs). */
  progress?: { every: number; report: (done: number, ms: number) => void };
  /** Keep a failure in the corpus (default true). */
  keep?: boolean;
}

export function runFuzz<I>(
  target: FuzzTarget<I>,
  settings: FuzzSettings,
  opts: RunOptions = {},
): FuzzResult {
  const t0 = performance.now();
  const first = settings.only ?? 0;
  const end = settings.only === null ? settings.cases : settings.only + 1;
  let done = 0;
  target.prepare?.(settings.seed);
  for (let i = first; i < end; i++) {
    const input = target.generate(new Rng(caseSeed(settings.seed, i)));
    const message = failsWith(target, input);
    done++;
    if (opts.progress && done % opts.progress.every === 0)
      opts.progress.report(done, performance.now() - t0);
    if (message === null) continue;
    const small = shrinkFailure(target, input, message);
    const saved = target.save(small.input);
    let file: string | null = null;
    if (opts.keep !== false) {
      try {
        file = keep(target as FuzzTarget<unknown>, settings.seed, i, {
          target: target.name,
          found: { seed: hex32(settings.seed), case: i },
          error: small.message.split('\n')[0],
          input: saved,
        });
      } catch {
        file = null;
      }
    }
    return {
      target: target.name,
      seed: settings.seed,
      cases: done,
      ms: performance.now() - t0,
      failure: { index: i, message: small.message, saved, file },
    };
  }
  return {
    target: target.name,
    seed: settings.seed,
    cases: done,
    ms: performance.now() - t0,
    failure: null,
  };
}

/** One line for the test log and the fuzz script. */
export function summary(r: FuzzResult): string {
  const rate = r.ms > 0 ? Math.round((r.cases / r.ms) * 1000) : 0;
  return `fuzz ${r.target}: seed ${hex32(r.seed)}, ${r.cases} cases in ${(r.ms / 1000).toFixed(1)} s (${rate} cases/s)`;
}

/** What a test prints when a run failed: the property, the input and how to replay it. */
export function failureReport(r: FuzzResult): string {
  const f = r.failure;
  if (!f) return summary(r);
  const input = JSON.stringify(f.saved);
  return [
    `fuzz ${r.target}: case ${f.index} of seed ${hex32(r.seed)} failed: ${f.message}`,
    `input (shrunk): ${input.length > 4000 ? `${input.slice(0, 4000)}...` : input}`,
    f.file
      ? `kept as ${path.relative(REPO_ROOT, f.file)} (commit it: regressions.test.ts replays it)`
      : 'could not write it to the corpus; save the input above by hand',
    `replay: ISOLA_FUZZ_SEED=${hex32(r.seed)} ISOLA_FUZZ_CASE=${f.index} node dist/src/fuzz/main.js ${r.target}`,
  ].join('\n');
}

/** The saved inputs of one corpus folder, with their file names. */
export function loadCorpus(corpus: 'decoder' | 'api'): Array<{ file: string; saved: unknown }> {
  const dir = path.join(CORPUS_DIR, corpus);
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => n.endsWith('.json'));
  } catch {
    return [];
  }
  return names.sort().map((n) => ({
    file: n,
    saved: JSON.parse(readFileSync(path.join(dir, n), 'utf8')) as unknown,
  }));
}
