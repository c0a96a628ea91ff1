import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { RateLimiter, retryAfterSeconds } from './rate-limit.js';

describe('RateLimiter (token bucket, injected clock)', () => {
  test('a full bucket allows `burst` at once, then refuses with the wait for one token', () => {
    const l = new RateLimiter({ ratePerS: 2, burst: 5 });
    for (let i = 0; i < 5; i++) assert.deepEqual(l.take('k', 0), { ok: true }, `request ${i}`);
    assert.deepEqual(l.take('k', 0), { ok: false, retryAfterMs: 500 });
    // 250 ms later half a token has come back: still refused, 250 ms to go.
    assert.deepEqual(l.take('k', 250), { ok: false, retryAfterMs: 250 });
    assert.deepEqual(l.take('k', 500), { ok: true });
    assert.equal(l.take('k', 500).ok, false);
  });

  test('refills at the rate, never above the burst', () => {
    const l = new RateLimiter({ ratePerS: 10, burst: 3 });
    for (let i = 0; i < 3; i++) l.take('k', 0);
    assert.equal(l.take('k', 0).ok, false);
    // An hour idle: still only 3 at once.
    const later = 3_600_000;
    for (let i = 0; i < 3; i++) assert.ok(l.take('k', later).ok);
    assert.equal(l.take('k', later).ok, false);
    // Sustained: one every 100 ms passes.
    for (let t = later + 100; t < later + 2000; t += 100) assert.ok(l.take('k', t).ok, `at ${t}`);
  });

  test('buckets are per name', () => {
    const l = new RateLimiter({ ratePerS: 1, burst: 1 });
    assert.ok(l.take('a', 0).ok);
    assert.equal(l.take('a', 0).ok, false);
    assert.ok(l.take('b', 0).ok, 'another key has its own bucket');
  });

  test('peek says whether a token is there without taking it', () => {
    const l = new RateLimiter({ ratePerS: 1, burst: 2 });
    assert.ok(l.peek('x', 0).ok, 'an unknown name has a full bucket');
    assert.equal(l.size, 0, 'peeking makes no bucket');
    l.take('x', 0);
    assert.ok(l.peek('x', 0).ok);
    assert.ok(l.peek('x', 0).ok, 'peek takes nothing');
    l.take('x', 0);
    assert.deepEqual(l.peek('x', 0), { ok: false, retryAfterMs: 1000 });
    assert.ok(l.peek('x', 1000).ok);
  });

  test('rate 0 turns the limit off', () => {
    const l = new RateLimiter({ ratePerS: 0, burst: 0 });
    assert.equal(l.enabled, false);
    for (let i = 0; i < 10_000; i++) assert.ok(l.take('k', 0).ok);
    assert.equal(l.size, 0);
  });

  test('a clock going backwards adds no tokens', () => {
    const l = new RateLimiter({ ratePerS: 1, burst: 1 });
    assert.ok(l.take('k', 10_000).ok);
    assert.equal(l.take('k', 5_000).ok, false);
  });

  test('memory is bounded: refilled buckets go first, then the least recently used', () => {
    const l = new RateLimiter({ ratePerS: 1, burst: 2 }, 10);
    for (let i = 0; i < 10; i++) l.take(`n${i}`, 0);
    assert.equal(l.size, 10);
    // At t=5 s every bucket has refilled (the same as having none): all go to make room.
    l.take('new', 5000);
    assert.equal(l.size, 1);

    // Empty buckets (burst 1, slow refill): an evicted one would read as full again.
    const e = new RateLimiter({ ratePerS: 0.001, burst: 1 }, 10);
    for (let i = 0; i < 10; i++) e.take(`m${i}`, 0);
    e.take('m0', 1); // refused, but m0 is now the most recently used
    e.take('x', 2); // full: the least recently used (m1) goes, down to 9, then x comes in
    assert.equal(e.size, 10);
    assert.ok(e.peek('m1', 3).ok, 'm1 was evicted');
    assert.equal(e.peek('m0', 3).ok, false, 'm0 was used recently and stays');
    assert.equal(e.peek('m2', 3).ok, false);
  });

  test('Retry-After is whole seconds, at least 1', () => {
    assert.equal(retryAfterSeconds(1), 1);
    assert.equal(retryAfterSeconds(0), 1);
    assert.equal(retryAfterSeconds(1000), 1);
    assert.equal(retryAfterSeconds(1001), 2);
  });
});
