import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { describe, test } from 'node:test';
import { bypassEntropyCaches, reseedMathRandom } from './clone-random.js';

describe('clone randomness', () => {
  test('Math.random after a reseed: in [0, 1), the same seed gives the same stream, another seed another', () => {
    const original = Math.random;
    try {
      const draw = (seed: Buffer) => {
        reseedMathRandom(seed);
        return Array.from({ length: 1000 }, () => Math.random());
      };
      const a = draw(Buffer.alloc(32, 1));
      const b = draw(Buffer.alloc(32, 1));
      const c = draw(Buffer.alloc(32, 2));
      assert.deepEqual(a, b);
      assert.notDeepEqual(a, c);
      for (const x of a) assert.ok(x >= 0 && x < 1);
      const mean = a.reduce((s, x) => s + x, 0) / a.length;
      assert.ok(Math.abs(mean - 0.5) < 0.05, `mean ${mean}`);
      assert.throws(() => reseedMathRandom(Buffer.alloc(8)), /16 bytes/);
    } finally {
      Math.random = original;
    }
  });

  test('randomUUID and randomInt keep their contract without the entropy caches', () => {
    const uuid = crypto.randomUUID;
    const int = crypto.randomInt;
    try {
      bypassEntropyCaches();
      const ids = new Set(Array.from({ length: 200 }, () => crypto.randomUUID()));
      assert.equal(ids.size, 200);
      for (const id of ids)
        assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      for (let i = 0; i < 500; i++) {
        const n = crypto.randomInt(10, 13);
        assert.ok(n >= 10 && n < 13 && Number.isInteger(n));
      }
      const seen = new Set(Array.from({ length: 300 }, () => crypto.randomInt(3)));
      assert.deepEqual([...seen].sort(), [0, 1, 2]);
      assert.throws(() => crypto.randomInt(5, 5), RangeError);
      return new Promise<void>((resolve) => {
        crypto.randomInt(7, (err, n) => {
          assert.equal(err, null);
          assert.ok(n >= 0 && n < 7);
          resolve();
        });
      });
    } finally {
      crypto.randomUUID = uuid;
      crypto.randomInt = int;
      // The web Crypto object got an own randomUUID; its prototype's comes back.
      Reflect.deleteProperty((globalThis as { crypto: object }).crypto, 'randomUUID');
    }
  });
});
