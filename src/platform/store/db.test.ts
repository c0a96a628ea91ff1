import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { describePgUrl, toPgPlaceholders } from './db.js';

describe('toPgPlaceholders', () => {
  test('numbers placeholders in order', () => {
    assert.equal(
      toPgPlaceholders('SELECT a FROM t WHERE b = ? AND c IN (?, ?) LIMIT ?'),
      'SELECT a FROM t WHERE b = $1 AND c IN ($2, $3) LIMIT $4',
    );
  });

  test('leaves question marks in string literals and quoted identifiers alone', () => {
    assert.equal(
      toPgPlaceholders(`SELECT '?', 'it''s ?', "odd?col" FROM t WHERE x = ? AND y = '?'`),
      `SELECT '?', 'it''s ?', "odd?col" FROM t WHERE x = $1 AND y = '?'`,
    );
  });

  test('no placeholders: unchanged', () => {
    assert.equal(toPgPlaceholders('SELECT 1'), 'SELECT 1');
  });
});

describe('describePgUrl', () => {
  test('names host:port, database and user, with the default port', () => {
    const d = describePgUrl('postgres://me:pw%40x@db.example:6543/isola');
    assert.deepEqual(d, {
      where: 'db.example:6543',
      database: 'isola',
      user: 'me',
      password: 'pw@x',
    });
    assert.equal(describePgUrl('postgresql://db.example/x').where, 'db.example:5432');
  });
});
