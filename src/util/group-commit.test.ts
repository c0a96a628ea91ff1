import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { GroupCommit } from './group-commit.js';

/** A store of numbers that refuses duplicates, and records how it was called. */
function store() {
  const rows: number[] = [];
  const calls: string[] = [];
  const add = (n: number) => {
    if (rows.includes(n)) throw new Error(`duplicate ${n}`);
    rows.push(n);
  };
  return {
    rows,
    calls,
    many: async (ns: number[]) => {
      calls.push(`many ${ns.join(',')}`);
      await new Promise((r) => setTimeout(r, 5));
      // all or none, like a transaction
      if (new Set(ns).size !== ns.length || ns.some((n) => rows.includes(n)))
        throw new Error('batch refused');
      for (const n of ns) add(n);
    },
    one: async (n: number) => {
      calls.push(`one ${n}`);
      add(n);
    },
  };
}

describe('GroupCommit', () => {
  test('records written in one turn go in one batch, in order, and each promise settles', async () => {
    const s = store();
    const g = new GroupCommit(s.many, s.one);
    await Promise.all([1, 2, 3].map((n) => g.write(n)));
    assert.deepEqual(s.calls, ['many 1,2,3']);
    assert.deepEqual(s.rows, [1, 2, 3]);
    assert.equal(g.pending, 0);
  });

  test('what arrives while a batch is written goes in the next batch', async () => {
    const s = store();
    const g = new GroupCommit(s.many, s.one);
    const first = g.write(1);
    await new Promise((r) => setImmediate(r)); // the first batch has started
    const later = [g.write(2), g.write(3)];
    await Promise.all([first, ...later]);
    assert.deepEqual(s.calls, ['many 1', 'many 2,3']);
    assert.deepEqual(s.rows, [1, 2, 3]);
  });

  test('a failing batch is retried one by one: only the bad record fails', async () => {
    const s = store();
    const g = new GroupCommit(s.many, s.one);
    await g.write(2);
    const results = await Promise.allSettled([g.write(1), g.write(2), g.write(3)]);
    assert.deepEqual(
      results.map((r) => r.status),
      ['fulfilled', 'rejected', 'fulfilled'],
    );
    assert.match(String((results[1] as PromiseRejectedResult).reason), /duplicate 2/);
    assert.deepEqual(s.rows, [2, 1, 3]);
  });

  test('batches are bounded', async () => {
    const s = store();
    const g = new GroupCommit(s.many, s.one, 2);
    await Promise.all([1, 2, 3, 4, 5].map((n) => g.write(n)));
    assert.deepEqual(s.calls, ['many 1,2', 'many 3,4', 'many 5']);
  });
});
