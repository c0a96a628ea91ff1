import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  FUNCTION_DEFAULTS,
  LIMITS,
  applyConfig,
  configPatchSchema,
  envSchema,
  nameSchema,
} from './config.js';

const ok = (v: unknown) => configPatchSchema.safeParse(v).success;

describe('configPatchSchema', () => {
  test('accepts an empty patch, a full config and values at the bounds', () => {
    assert.ok(ok({}));
    assert.ok(ok(FUNCTION_DEFAULTS));
    assert.ok(
      ok({
        memoryMiB: LIMITS.memoryMiB.min,
        vcpus: LIMITS.vcpus.max,
        timeoutS: LIMITS.timeoutS.max,
        concurrency: LIMITS.concurrency.max,
        minInstances: 0,
        maxInstances: 1,
        idleTimeoutS: LIMITS.idleTimeoutS.min,
        public: true,
        env: { A: '1', _b2: '' },
      }),
    );
  });

  test('rejects unknown fields', () => {
    assert.equal(ok({ memory: 256 }), false);
    assert.equal(ok({ memoryMiB: 256, extra: true }), false);
  });

  test('rejects out-of-range and mistyped values', () => {
    const bad: object[] = [
      { memoryMiB: LIMITS.memoryMiB.min - 1 },
      { memoryMiB: LIMITS.memoryMiB.max + 1 },
      { memoryMiB: 256.5 },
      { memoryMiB: '256' },
      { vcpus: 0 },
      { vcpus: 9 },
      { timeoutS: 0 },
      { timeoutS: 901 },
      { concurrency: 0 },
      { concurrency: 1.5 },
      { minInstances: -1 },
      { maxInstances: 0 },
      { maxInstances: 1001 },
      { idleTimeoutS: 0.5 },
      { idleTimeoutS: 86_401 },
      { public: 'yes' },
      { env: [] },
      { env: { A: 1 } },
    ];
    for (const b of bad) assert.equal(ok(b), false, JSON.stringify(b));
  });

  test('rejects reserved and malformed environment names', () => {
    for (const name of ['ISOLA_X', 'ISOLA_', 'NODE_OPTIONS', '1A', 'A-B', 'A B', '']) {
      assert.equal(ok({ env: { [name]: 'v' } }), false, name);
    }
    // Only the exact name NODE_OPTIONS and the ISOLA_ prefix are reserved.
    for (const name of ['NODE_OPTIONS_X', 'MY_ISOLA_X', 'isola_x', 'NODE_ENV']) {
      assert.ok(ok({ env: { [name]: 'v' } }), name);
    }
  });

  test('rejects an oversized environment', () => {
    assert.equal(envSchema.safeParse({ A: 'x'.repeat(4097) }).success, false);
    assert.ok(envSchema.safeParse({ A: 'x'.repeat(4096) }).success);
    // Each value is allowed, but together they are over LIMITS.envBytes.
    const big: Record<string, string> = {};
    for (let i = 0; i < 5; i++) big[`V${i}`] = 'x'.repeat(4000);
    assert.equal(ok({ env: big }), false);
    // Exactly at the limit (names count too) is allowed.
    const edge: Record<string, string> = {};
    for (let i = 0; i < 4; i++) edge[`V${i}`] = 'x'.repeat(LIMITS.envBytes / 4 - 2);
    assert.ok(ok({ env: edge }));
    edge.V0 = `${edge.V0}x`;
    assert.equal(ok({ env: edge }), false);
  });
});

describe('applyConfig', () => {
  test('keeps untouched fields and replaces env as a whole', () => {
    const base = { ...FUNCTION_DEFAULTS, env: { A: '1', B: '2' } };
    const out = applyConfig(base, { memoryMiB: 512, env: { C: '3' } });
    assert.deepEqual(out, { ...base, memoryMiB: 512, env: { C: '3' } });
    assert.deepEqual(base.env, { A: '1', B: '2' }, 'base was modified');
  });

  test('no env in the patch keeps the old env; undefined fields are ignored', () => {
    const base = { ...FUNCTION_DEFAULTS, env: { A: '1' } };
    const out = applyConfig(base, { timeoutS: 5, vcpus: undefined });
    assert.deepEqual(out, { ...base, timeoutS: 5 });
    assert.deepEqual(applyConfig(base, {}), base);
  });

  test('throws when minInstances is above maxInstances', () => {
    assert.throws(
      () => applyConfig(FUNCTION_DEFAULTS, { minInstances: FUNCTION_DEFAULTS.maxInstances + 1 }),
      RangeError,
    );
    assert.throws(
      () => applyConfig({ ...FUNCTION_DEFAULTS, minInstances: 3 }, { maxInstances: 2 }),
      /minInstances \(3\) is above maxInstances \(2\)/,
    );
    assert.equal(
      applyConfig(FUNCTION_DEFAULTS, { minInstances: 2, maxInstances: 2 }).minInstances,
      2,
    );
  });
});

describe('nameSchema', () => {
  test('accepts lowercase names starting with a letter, up to 63 characters', () => {
    for (const n of ['a', 'hello-world', 'fn2', 'a-', `a${'b'.repeat(62)}`]) {
      assert.ok(nameSchema.safeParse(n).success, n);
    }
  });

  test('rejects everything else', () => {
    for (const n of ['', 'Hello', '1abc', 'a_b', '-a', 'a b', 'a.b', 'é', `a${'b'.repeat(63)}`]) {
      assert.equal(nameSchema.safeParse(n).success, false, n);
    }
  });
});
