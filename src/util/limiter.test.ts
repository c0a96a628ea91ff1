import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Limiter } from './limiter.js';

describe('Limiter', () => {
  test('at most max at once, the rest in arrival order', async () => {
    const l = new Limiter(2);
    let now = 0;
    let peak = 0;
    const order: number[] = [];
    await Promise.all(
      [0, 1, 2, 3, 4].map((i) =>
        l.run(async () => {
          order.push(i);
          now++;
          peak = Math.max(peak, now);
          await new Promise((r) => setTimeout(r, 5));
          now--;
        }),
      ),
    );
    assert.equal(peak, 2);
    assert.deepEqual(order, [0, 1, 2, 3, 4]);
  });

  test('a failing holder gives its place back', async () => {
    const l = new Limiter(1);
    await assert.rejects(l.run(async () => Promise.reject(new Error('x'))));
    assert.equal(await l.run(async () => 7), 7);
  });
});
