import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { RequestIds } from './request-id.js';

/** The time (ms since the epoch) at the head of an id, or null for a string of another form. */
function requestIdTime(id: string): number | null {
  const m = /^req_([0-9a-f]{12})[0-9a-f]{8}$/.exec(id);
  return m ? Number.parseInt(m[1]!, 16) : null;
}

describe('request ids', () => {
  test('req_ and 20 hex digits, carrying the time they were made', () => {
    const before = Date.now();
    const id = new RequestIds().next();
    assert.match(id, /^req_[0-9a-f]{20}$/);
    const t = requestIdTime(id);
    assert.ok(t !== null && t >= before && t <= Date.now(), `time ${t}`);
  });

  test('unique and increasing, many in the same millisecond', () => {
    const ids = new RequestIds(() => 1_700_000_000_000);
    const made = Array.from({ length: 10_000 }, () => ids.next());
    assert.equal(new Set(made).size, made.length);
    for (let i = 1; i < made.length; i++) assert.ok(made[i - 1]! < made[i]!, `${i}`);
    assert.ok(made.every((id) => requestIdTime(id) === 1_700_000_000_000));
  });

  test('still increasing when the clock goes back', () => {
    let now = 2_000_000;
    const ids = new RequestIds(() => now);
    const a = ids.next();
    now -= 5_000;
    const b = ids.next();
    now += 10_000;
    const c = ids.next();
    assert.ok(a < b && b < c, `${a} ${b} ${c}`);
  });

  test('a new millisecond starts at a new random number', () => {
    let now = 5_000;
    const ids = new RequestIds(() => now);
    const seqs = new Set<string>();
    for (let i = 0; i < 50; i++) {
      now += 1;
      seqs.add(ids.next().slice(-8));
    }
    // 50 draws below 2^31: equal ones would be a broken generator, not chance.
    assert.ok(seqs.size >= 49, `${seqs.size} distinct`);
  });

  test('other strings carry no time', () => {
    assert.equal(requestIdTime('req_123'), null);
    assert.equal(requestIdTime('req_ZZZZZZZZZZZZ00000000'), null);
  });
});
