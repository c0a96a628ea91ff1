import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { IsolaError } from '../errors.js';
import { RateLimiter } from '../util/rate-limit.js';
import { RATE_LIMIT_DEFAULTS, rateLimitsFromEnv } from './limits.js';

describe('rateLimitsFromEnv', () => {
  test('no variables: the defaults', () => {
    assert.deepEqual(rateLimitsFromEnv({}), RATE_LIMIT_DEFAULTS);
  });

  test('each limit from its variables; a rate without a burst gets twice the rate', () => {
    const l = rateLimitsFromEnv({
      ISOLA_RATE_LIMIT_RPS: '50',
      ISOLA_ADMIN_RATE_LIMIT_RPS: '100',
      ISOLA_ADMIN_RATE_LIMIT_BURST: '7',
      ISOLA_AUTH_FAILURE_RPS: '0.5',
      ISOLA_AUTH_FAILURE_BURST: '3',
    });
    assert.deepEqual(l, {
      key: { ratePerS: 50, burst: 100 },
      adminKey: { ratePerS: 100, burst: 7 },
      authFailures: { ratePerS: 0.5, burst: 3 },
    });
    assert.deepEqual(rateLimitsFromEnv({ ISOLA_AUTH_FAILURE_RPS: '0.2' }).authFailures, {
      ratePerS: 0.2,
      burst: 1,
    });
  });

  test('0 turns a limit off; blank means the default', () => {
    const l = rateLimitsFromEnv({ ISOLA_RATE_LIMIT_RPS: '0', ISOLA_AUTH_FAILURE_RPS: ' ' });
    assert.equal(l.key.ratePerS, 0);
    assert.deepEqual(l.authFailures, RATE_LIMIT_DEFAULTS.authFailures);
  });

  test('bad values are E_INVALID_ARGUMENT naming the variable', () => {
    for (const env of [
      { ISOLA_RATE_LIMIT_RPS: 'fast' },
      { ISOLA_RATE_LIMIT_BURST: '-1' },
      { ISOLA_ADMIN_RATE_LIMIT_RPS: 'Infinity' },
      { ISOLA_AUTH_FAILURE_RPS: '5', ISOLA_AUTH_FAILURE_BURST: '0.5' },
    ]) {
      assert.throws(
        () => rateLimitsFromEnv(env),
        (e: unknown) =>
          e instanceof IsolaError &&
          e.code === 'E_INVALID_ARGUMENT' &&
          Object.keys(env).some((k) => e.message.includes(k)),
        JSON.stringify(env),
      );
    }
  });
});

test('the defaults let a burst of 100 requests of one key through at once', () => {
  for (const policy of [RATE_LIMIT_DEFAULTS.key, RATE_LIMIT_DEFAULTS.adminKey]) {
    const l = new RateLimiter(policy);
    for (let i = 0; i < 100; i++) assert.ok(l.take('k', 0).ok);
  }
  // And a sustained 2,000 requests/s for 10 s (above the warm-invoke benchmark's rate).
  const l = new RateLimiter(RATE_LIMIT_DEFAULTS.key);
  for (let i = 0; i < 20_000; i++) assert.ok(l.take('k', i / 2).ok, `request ${i}`);
});
