// Fuzzes the API's input validation in process: request bodies for every input schema of
// gateway/schemas.ts (through parseJson, as the routes call it), path names and `since` values,
// held to the rules restated in api-spec.ts (properties in api-bodies.ts). Seeded and printed
// like decoder.fuzz.test.ts, with the same ISOLA_FUZZ_* variables; failures are kept in
// test/fixtures/fuzz-regressions/api/.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { apiBodies } from './api-bodies.js';
import { failureReport, fuzzSettings, runFuzz, summary } from './engine.js';

const CASES = 100_000;
const SEED = 0x150a1;

test(`API validation holds on ${CASES} generated bodies`, (t) => {
  const r = runFuzz(apiBodies, fuzzSettings({ seed: SEED, cases: CASES }));
  t.diagnostic(summary(r));
  assert.equal(r.failure, null, failureReport(r));
});
