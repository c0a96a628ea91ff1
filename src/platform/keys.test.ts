import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DUMMY_HASH, hashSecret, newKey, parseKey, secretMatches } from './keys.js';

describe('newKey', () => {
  test('has the form isola_<12 id chars>_<43 secret chars>', () => {
    for (let i = 0; i < 50; i++) {
      const k = newKey();
      assert.match(k.text, /^isola_[a-z0-9]{12}_[A-Za-z0-9_-]{43}$/);
      assert.match(k.id, /^[a-z0-9]{12}$/);
      assert.ok(k.text.startsWith(`isola_${k.id}_`));
      assert.match(k.secretHash, /^[0-9a-f]{64}$/);
      // The stored hash is of the secret, not of the whole key, and the key holds no hash.
      const secret = k.text.slice(`isola_${k.id}_`.length);
      assert.equal(k.secretHash, hashSecret(secret));
      assert.ok(!k.text.includes(k.secretHash));
    }
  });

  test('keys, ids and hashes differ between keys', () => {
    const keys = Array.from({ length: 20 }, () => newKey());
    assert.equal(new Set(keys.map((k) => k.text)).size, keys.length);
    assert.equal(new Set(keys.map((k) => k.id)).size, keys.length);
    assert.equal(new Set(keys.map((k) => k.secretHash)).size, keys.length);
  });
});

describe('parseKey', () => {
  test('accepts a key made by newKey', () => {
    const k = newKey();
    const p = parseKey(k.text);
    assert.ok(p);
    assert.equal(p.id, k.id);
    assert.equal(`isola_${p.id}_${p.secret}`, k.text);
    assert.ok(secretMatches(p.secret, k.secretHash));
  });

  test('rejects anything not shaped like a key', () => {
    const k = newKey().text;
    const id = 'abcdefghij12';
    const secret = 'A'.repeat(43);
    const bad = [
      '',
      'isola_',
      `isolb_${id}_${secret}`,
      `ISOLA_${id}_${secret}`,
      `xisola_${id}_${secret}`,
      `isola_${id}_${secret.slice(1)}`, // secret one char short
      `isola_${id}_${secret}A`, // secret one char long
      `isola_${id.slice(1)}_${secret}`, // id short
      `isola_ABCDEFGHIJ12_${secret}`, // id upper case
      `isola_${id}-${secret}`,
      `isola_${id}_${secret.slice(1)}=`, // not base64url
      `${k} `,
      ` ${k}`,
      `${k}\n`,
      `Bearer ${k}`,
    ];
    for (const b of bad) assert.equal(parseKey(b), null, JSON.stringify(b));
    assert.deepEqual(parseKey(`isola_${id}_${secret}`), { id, secret });
  });
});

describe('secretMatches', () => {
  test('true for the right secret, false otherwise', () => {
    const a = newKey();
    const b = newKey();
    const sa = parseKey(a.text)!.secret;
    const sb = parseKey(b.text)!.secret;
    assert.equal(secretMatches(sa, a.secretHash), true);
    assert.equal(secretMatches(sb, b.secretHash), true);
    assert.equal(secretMatches(sa, b.secretHash), false);
    assert.equal(secretMatches(sb, a.secretHash), false);
    assert.equal(secretMatches('', a.secretHash), false);
    assert.equal(secretMatches(`${sa}x`, a.secretHash), false);
  });

  test('false (no throw) for a stored hash of the wrong length or not hex', () => {
    const a = newKey();
    const sa = parseKey(a.text)!.secret;
    assert.equal(secretMatches(sa, ''), false);
    assert.equal(secretMatches(sa, a.secretHash.slice(0, 32)), false);
    assert.equal(secretMatches(sa, `${a.secretHash}00`), false);
    assert.equal(secretMatches(sa, 'z'.repeat(64)), false);
  });
});

describe('constant-time verification', () => {
  test('a malformed stored hash is a mismatch, not a throw', () => {
    const k = newKey();
    const secret = k.text.slice(`isola_${k.id}_`.length);
    assert.equal(secretMatches(secret, k.secretHash), true);
    assert.equal(secretMatches(secret, 'abcd'), false);
    assert.equal(secretMatches(secret, ''), false);
    assert.equal(secretMatches(secret, 'zz'.repeat(32)), false);
  });

  test('the dummy hash of unknown ids is a well-formed hash no secret of ours matches', () => {
    assert.match(DUMMY_HASH, /^[0-9a-f]{64}$/);
    for (let i = 0; i < 20; i++) {
      const k = newKey();
      assert.equal(secretMatches(parseKey(k.text)!.secret, DUMMY_HASH), false);
    }
  });
});
