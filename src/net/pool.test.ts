import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { IsolaError } from '../errors.js';
import { DEFAULT_POOL, SlotAllocator, parsePool, uplinkFor } from './pool.js';

describe('address pool', () => {
  test('slot i owns the /30 at base + 4i: host end .1, namespace end .2', () => {
    const pool = parsePool(DEFAULT_POOL);
    assert.equal(pool.slots, 16384);
    assert.deepEqual(uplinkFor(pool, 0), {
      slot: 0,
      hostIf: 'isv0',
      hostIp: '10.213.0.1',
      nsIp: '10.213.0.2',
      prefix: 30,
    });
    assert.equal(uplinkFor(pool, 64).hostIp, '10.213.1.1');
    assert.equal(uplinkFor(pool, 16383).nsIp, '10.213.255.254');
    assert.throws(() => uplinkFor(pool, 16384), IsolaError);
  });

  test('pools must leave room for a /30 per sandbox', () => {
    assert.throws(() => parsePool('10.0.0.0/30'), /prefix/);
    assert.throws(() => parsePool('10.0.0.1/24'), /host bits/);
    assert.equal(parsePool('192.168.7.0/29').slots, 2);
  });

  test('allocation skips slots in use here or elsewhere, round-robin, and runs out cleanly', () => {
    const elsewhere = new Set([1]);
    const a = new SlotAllocator(parsePool('10.1.0.0/28'), (s) => elsewhere.has(s));
    assert.equal(a.allocate().slot, 0);
    assert.equal(a.allocate().slot, 2, 'slot 1 belongs to another process');
    a.release(0);
    assert.equal(a.allocate().slot, 3, 'a freed slot is reused last');
    assert.equal(a.allocate().slot, 0);
    assert.throws(
      () => a.allocate(),
      (e: unknown) => e instanceof IsolaError && e.code === 'E_NETWORK',
    );
    assert.equal(a.inUse, 3);
  });
});
