// Replays the crash corpus: every input the fuzzers ever failed on, kept in
// test/fixtures/fuzz-regressions/{decoder,api}/ as {target, found, error, input}. Each must now
// pass all of its target's properties. Add a file by letting a fuzz run fail (it writes one)
// and committing it with the fix.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { agentFrames } from './agent-frames.js';
import { apiBodies } from './api-bodies.js';
import { type FuzzTarget, loadCorpus } from './engine.js';
import { isPlainObject } from './json.js';
import { runtimeFrames } from './runtime-frames.js';

const TARGETS = new Map<string, FuzzTarget<unknown>>(
  ([agentFrames, runtimeFrames, apiBodies] as FuzzTarget<unknown>[]).map((t) => [t.name, t]),
);

for (const corpus of ['decoder', 'api'] as const) {
  describe(`fuzz regressions: ${corpus}`, () => {
    const entries = loadCorpus(corpus);
    test('the corpus is not empty', () => {
      assert.ok(entries.length > 0, `no files in test/fixtures/fuzz-regressions/${corpus}/`);
    });
    for (const { file, saved } of entries) {
      test(file, () => {
        assert.ok(isPlainObject(saved), 'corpus file is not an object');
        const target = TARGETS.get(String(saved.target));
        assert.ok(target, `unknown fuzz target ${String(saved.target)}`);
        assert.equal(target.corpus, corpus, `${target.name} cases belong in ${target.corpus}/`);
        target.check(target.load(saved.input));
      });
    }
  });
}
