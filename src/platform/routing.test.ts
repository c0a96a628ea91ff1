import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DEFAULT_ALIAS, parseTarget, pickVersion } from './routing.js';
import type { AliasRecord } from './store/types.js';

function alias(version: number, additionalVersion: number | null, weight: number): AliasRecord {
  return {
    functionId: 'f1',
    name: 'live',
    version,
    additionalVersion,
    additionalWeight: weight,
    updatedAt: 0,
  };
}

describe('parseTarget', () => {
  test('a bare name resolves the default alias', () => {
    assert.equal(DEFAULT_ALIAS, 'live');
    assert.deepEqual(parseTarget('fn'), {
      name: 'fn',
      qualifier: { kind: 'alias', name: 'live' },
    });
  });

  test('a numeric qualifier is a version', () => {
    assert.deepEqual(parseTarget('fn:3'), {
      name: 'fn',
      qualifier: { kind: 'version', version: 3 },
    });
    assert.deepEqual(parseTarget('my-fn:42'), {
      name: 'my-fn',
      qualifier: { kind: 'version', version: 42 },
    });
  });

  test('any other qualifier is an alias', () => {
    assert.deepEqual(parseTarget('fn:beta'), {
      name: 'fn',
      qualifier: { kind: 'alias', name: 'beta' },
    });
    // Not all digits: an alias, not a version.
    assert.deepEqual(parseTarget('fn:3a'), {
      name: 'fn',
      qualifier: { kind: 'alias', name: '3a' },
    });
  });
});

describe('pickVersion', () => {
  const rands = [0, 0.2999, 0.3, 0.5, 0.9999];

  test('no split: always the main version', () => {
    for (const r of rands) assert.equal(pickVersion(alias(1, null, 0), r), 1);
    // A weight without a version, or a version without weight, is no split either.
    for (const r of rands) assert.equal(pickVersion(alias(1, null, 50), r), 1);
    for (const r of rands) assert.equal(pickVersion(alias(1, 2, 0), r), 1);
  });

  test('weight 30: rand below 0.3 picks the additional version', () => {
    const a = alias(1, 2, 30);
    assert.equal(pickVersion(a, 0), 2);
    assert.equal(pickVersion(a, 0.2999), 2);
    assert.equal(pickVersion(a, 0.3), 1);
    assert.equal(pickVersion(a, 0.9999), 1);
  });

  test('weight 100: always the additional version', () => {
    const a = alias(1, 2, 100);
    for (const r of rands) assert.equal(pickVersion(a, r), 2);
  });

  test('weight 30 sends about 30% of a uniform sweep to the additional version', () => {
    const a = alias(1, 2, 30);
    let n = 0;
    for (let i = 0; i < 10_000; i++) if (pickVersion(a, i / 10_000) === 2) n++;
    assert.equal(n, 3000);
  });
});
