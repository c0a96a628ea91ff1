import assert from 'node:assert/strict';
import { test } from 'node:test';
import { envNumber } from './env.js';

test('numeric settings: the value, or the default when unset, empty, not a number or negative', () => {
  assert.equal(envNumber('X', 7, { X: '12.5' }), 12.5);
  assert.equal(envNumber('X', 7, { X: '0' }), 0);
  for (const bad of [undefined, '', ' ', 'fast', '-1', 'Infinity', 'NaN']) {
    assert.equal(envNumber('X', 7, bad === undefined ? {} : { X: bad }), 7, String(bad));
  }
});
