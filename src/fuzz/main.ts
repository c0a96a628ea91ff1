// `npm run fuzz`: long fuzz runs outside the test suite, printing progress and cases per second.
//   node dist/src/fuzz/main.js [agent-frames|runtime-frames|api|all] [--cases N] [--seed S]
// Without --seed (or ISOLA_FUZZ_SEED) each run takes a fresh random seed, so long runs explore
// new inputs; the seed is printed so any run can be replayed. A failure is shrunk, kept in
// test/fixtures/fuzz-regressions/ and ends the run with exit code 1.

import { randomInt } from 'node:crypto';
import { agentFrames } from './agent-frames.js';
import { apiBodies } from './api-bodies.js';
import { type FuzzTarget, failureReport, fuzzSettings, runFuzz, summary } from './engine.js';
import { runtimeFrames } from './runtime-frames.js';

/** Default cases per target: decoders are the hot path, API bodies are cheaper to cover. */
const DEFAULT_CASES: Record<string, number> = {
  'agent-frames': 20_000_000,
  'runtime-frames': 2_000_000,
  api: 2_000_000,
};
const TARGETS = [agentFrames, runtimeFrames, apiBodies] as ReadonlyArray<FuzzTarget<unknown>>;

function main(argv: string[]): number {
  const flag = (name: string): string | undefined => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const which = argv.find((a, i) => !a.startsWith('--') && !argv[i - 1]?.startsWith('--')) ?? 'all';
  const targets = TARGETS.filter((t) => which === 'all' || t.name === which);
  if (targets.length === 0) {
    process.stderr.write(
      `fuzz: unknown target ${which} (${TARGETS.map((t) => t.name).join(', ')}, all)\n`,
    );
    return 2;
  }
  const seedArg = flag('--seed');
  const casesArg = flag('--cases');
  for (const t of targets) {
    const s = fuzzSettings({ seed: randomInt(2 ** 32 - 1), cases: DEFAULT_CASES[t.name]! });
    if (seedArg !== undefined) s.seed = Number(seedArg) >>> 0;
    else if (process.env.ISOLA_FUZZ_SEED === undefined && s.only !== null)
      throw new Error('ISOLA_FUZZ_CASE needs the seed of its run (ISOLA_FUZZ_SEED or --seed)');
    if (casesArg !== undefined) s.cases = Number(casesArg.replaceAll('_', ''));
    process.stdout.write(
      `fuzz ${t.name}: seed 0x${s.seed.toString(16).padStart(8, '0')}, ${s.only === null ? `${s.cases} cases` : `case ${s.only}`}\n`,
    );
    const every = Math.max(1, Math.min(1_000_000, Math.floor(s.cases / 10)));
    const r = runFuzz(t, s, {
      progress: {
        every,
        report: (done, ms) =>
          process.stdout.write(
            `  ${done} cases, ${(ms / 1000).toFixed(1)} s, ${Math.round((done / ms) * 1000)} cases/s\n`,
          ),
      },
    });
    if (r.failure) {
      process.stdout.write(`${failureReport(r)}\n`);
      return 1;
    }
    process.stdout.write(`${summary(r)}\n`);
  }
  return 0;
}

process.exitCode = main(process.argv.slice(2));
