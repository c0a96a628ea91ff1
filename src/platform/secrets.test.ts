import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { IsolaError } from '../errors.js';
import { SecretBox, redact } from './secrets.js';

const isIsolaError = (code: string) => (err: unknown) => {
  assert.ok(err instanceof IsolaError, `not an IsolaError: ${String(err)}`);
  assert.equal(err.code, code);
  return true;
};

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(path.join(os.tmpdir(), 'isola-test-unit-'));
  dirs.push(d);
  return d;
}
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('SecretBox seal/open', () => {
  const box = SecretBox.fromKey(randomBytes(32));

  test('round trip, with a fresh IV each time', () => {
    for (const plain of ['', 'p4ssw0rd', 'ünïcødé ✓', 'x'.repeat(10_000)]) {
      const a = box.seal(plain, 'fn1/DB_PASSWORD');
      const b = box.seal(plain, 'fn1/DB_PASSWORD');
      assert.notEqual(a, b);
      assert.ok(!a.includes(plain) || plain === '');
      assert.equal(box.open(a, 'fn1/DB_PASSWORD'), plain);
      assert.equal(box.open(b, 'fn1/DB_PASSWORD'), plain);
    }
  });

  test('open with another context (function or name) fails', () => {
    const sealed = box.seal('s3cret', 'fn1/DB_PASSWORD');
    assert.throws(() => box.open(sealed, 'fn2/DB_PASSWORD'), isIsolaError('E_INTERNAL'));
    assert.throws(() => box.open(sealed, 'fn1/API_TOKEN'), isIsolaError('E_INTERNAL'));
    assert.throws(() => box.open(sealed, ''), isIsolaError('E_INTERNAL'));
  });

  test('open with another master key fails', () => {
    const sealed = box.seal('s3cret', 'fn1/A');
    const other = SecretBox.fromKey(randomBytes(32));
    assert.throws(() => other.open(sealed, 'fn1/A'), isIsolaError('E_INTERNAL'));
  });

  test('a tampered ciphertext fails (any byte: IV, tag or data)', () => {
    const sealed = box.seal('s3cret value', 'fn1/A');
    const raw = Buffer.from(sealed, 'base64');
    for (let i = 0; i < raw.length; i++) {
      const t = Buffer.from(raw);
      t[i] = t[i]! ^ 0x01;
      assert.throws(() => box.open(t.toString('base64'), 'fn1/A'), isIsolaError('E_INTERNAL'));
    }
  });

  test('a truncated ciphertext fails with IsolaError (no shortened tag is accepted)', () => {
    const sealed = box.seal('s3cret value', 'fn1/A');
    const raw = Buffer.from(sealed, 'base64');
    for (let n = 0; n < raw.length; n++) {
      const t = raw.subarray(0, n).toString('base64');
      assert.throws(() => box.open(t, 'fn1/A'), isIsolaError('E_INTERNAL'), `length ${n}`);
    }
  });
});

describe('SecretBox.load', () => {
  test('creates DATA_DIR/master.key (0600) on first use and reuses it', () => {
    const dir = tempDir();
    const file = path.join(dir, 'master.key');
    assert.equal(existsSync(file), false);
    const a = SecretBox.load(dir, {});
    assert.ok(existsSync(file));
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const text = readFileSync(file, 'utf8');
    assert.match(text, /^[0-9a-f]{64}\n$/);

    const sealed = a.seal('v', 'f/N');
    const b = SecretBox.load(dir, {});
    assert.equal(readFileSync(file, 'utf8'), text, 'the key file was rewritten');
    assert.equal(b.open(sealed, 'f/N'), 'v');
  });

  test('another data dir means another key', () => {
    const a = SecretBox.load(tempDir(), {});
    const b = SecretBox.load(tempDir(), {});
    assert.throws(() => b.open(a.seal('v', 'f/N'), 'f/N'), isIsolaError('E_INTERNAL'));
  });

  test('a master.key that is not a 256-bit hex key is refused', () => {
    const dir = tempDir();
    writeFileSync(path.join(dir, 'master.key'), 'not a key\n', { mode: 0o600 });
    assert.throws(() => SecretBox.load(dir, {}), isIsolaError('E_INVALID_ARGUMENT'));
  });

  test('ISOLA_MASTER_KEY is used when set, and writes no key file', () => {
    const dir = tempDir();
    const hex = randomBytes(32).toString('hex');
    const a = SecretBox.load(dir, { ISOLA_MASTER_KEY: hex });
    const b = SecretBox.load(dir, { ISOLA_MASTER_KEY: hex.toUpperCase() });
    assert.equal(existsSync(path.join(dir, 'master.key')), false);
    assert.equal(b.open(a.seal('v', 'f/N'), 'f/N'), 'v');
    const c = SecretBox.fromKey(Buffer.from(hex, 'hex'));
    assert.equal(c.open(a.seal('w', 'f/N'), 'f/N'), 'w');
  });

  test('ISOLA_MASTER_KEY must be 64 hex digits', () => {
    const dir = tempDir();
    const hex = randomBytes(32).toString('hex');
    for (const bad of [hex.slice(1), `${hex}0`, `${hex.slice(1)}g`, ` ${hex.slice(1)}`, 'x']) {
      assert.throws(
        () => SecretBox.load(dir, { ISOLA_MASTER_KEY: bad }),
        isIsolaError('E_INVALID_ARGUMENT'),
        bad,
      );
    }
    assert.equal(existsSync(path.join(dir, 'master.key')), false);
  });
});

describe('redact', () => {
  test('replaces every occurrence of values of 4 or more characters', () => {
    assert.equal(
      redact('token=abcd1234; again abcd1234, pw hunter2', ['abcd1234', 'hunter2']),
      'token=[REDACTED]; again [REDACTED], pw [REDACTED]',
    );
    assert.equal(redact('key abcd here', ['abcd']), 'key [REDACTED] here');
  });

  test('leaves values shorter than 4 characters alone', () => {
    assert.equal(redact('a bc def', ['a', 'bc', 'def', '']), 'a bc def');
  });

  test('text without the values is unchanged', () => {
    assert.equal(redact('nothing to see', ['s3cret']), 'nothing to see');
    assert.equal(redact('nothing to see', []), 'nothing to see');
  });
});
