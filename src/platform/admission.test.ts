import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { IsolaError } from '../errors.js';
import { AdmissionGate, QUEUE_FACTOR } from './admission.js';

const tick = () => new Promise((r) => setImmediate(r));

describe('AdmissionGate', () => {
  test('admits up to the limit at once, queues the rest in order, never exceeds the limit', async () => {
    const g = new AdmissionGate();
    const order: number[] = [];
    const all = Array.from({ length: 10 }, (_, i) =>
      g.acquire('t', 3, 10_000).then(() => order.push(i)),
    );
    await tick();
    assert.deepEqual(order, [0, 1, 2]);
    assert.equal(g.running('t'), 3);
    for (let done = 3; done < 10; done++) {
      g.release('t', 3);
      await tick();
      assert.ok(g.running('t') <= 3);
    }
    await Promise.all(all);
    assert.deepEqual(order, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.equal(g.peak('t'), 3);
  });

  test('a full queue refuses at once with E_THROTTLED and Retry-After', async () => {
    const g = new AdmissionGate();
    await g.acquire('t', 1, 1000);
    const queued = Array.from({ length: QUEUE_FACTOR }, () => g.acquire('t', 1, 1000));
    await assert.rejects(g.acquire('t', 1, 1000), (e: unknown) => {
      assert.ok(e instanceof IsolaError);
      assert.equal(e.code, 'E_THROTTLED');
      assert.equal(e.details?.retryAfterS, 1);
      assert.match(e.message, /queue is full/);
      return true;
    });
    for (let i = 0; i <= QUEUE_FACTOR; i++) g.release('t', 1);
    await Promise.all(queued);
  });

  test('a waiter past its time bound is refused and leaves the queue', async () => {
    const g = new AdmissionGate();
    await g.acquire('t', 1, 1000);
    await assert.rejects(g.acquire('t', 1, 30), /no slot within 30 ms/);
    g.release('t', 1);
    assert.equal(g.running('t'), 0);
    await g.acquire('t', 1, 30);
    assert.equal(g.running('t'), 1);
  });

  test('tenants do not share quota', async () => {
    const g = new AdmissionGate();
    await g.acquire('a', 1, 1000);
    await g.acquire('b', 1, 1000);
    assert.equal(g.totalRunning(), 2);
  });
});
