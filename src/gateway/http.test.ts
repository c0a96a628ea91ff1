import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { z } from 'zod';
import { IsolaError } from '../errors.js';
import {
  MAX_JSON_DEPTH,
  jsonErrorMessage,
  jsonTooDeep,
  parseJson,
  parseJsonText,
  scrubKeys,
} from './http.js';

const code = (c: string) => (e: unknown) => e instanceof IsolaError && e.code === c;
const b = (s: string) => Buffer.from(s);

describe('jsonTooDeep', () => {
  test('counts nesting of arrays and objects, not brackets inside strings', () => {
    assert.equal(jsonTooDeep(b('{"a":[1,{"b":[]}]}'), 4), false);
    assert.equal(jsonTooDeep(b('{"a":[1,{"b":[]}]}'), 3), true);
    assert.equal(jsonTooDeep(b('{"a":"[[[[[[[[[["}'), 1), false);
    assert.equal(jsonTooDeep(b('{"a":"\\\\"}'), 1), false, 'an escaped backslash ends the escape');
    assert.equal(
      jsonTooDeep(b('{"a":"\\"[[[["}'), 1),
      false,
      'an escaped quote stays in the string',
    );
    assert.equal(jsonTooDeep(b('[[],[],[],[]]'), 2), false, 'siblings do not add up');
    assert.equal(jsonTooDeep(b('"ü[["'), 0), false, 'multi-byte characters');
  });

  test('the limit: MAX_JSON_DEPTH levels pass, one more does not', () => {
    const nest = (n: number) => b(`${'['.repeat(n)}${']'.repeat(n)}`);
    assert.equal(jsonTooDeep(nest(MAX_JSON_DEPTH)), false);
    assert.equal(jsonTooDeep(nest(MAX_JSON_DEPTH + 1)), true);
    assert.throws(() => parseJsonText(nest(100_000)), code('E_JSON_TOO_DEEP'));
    assert.deepEqual(parseJsonText(nest(3)), [[[]]]);
  });
});

describe('JSON errors never quote the input', () => {
  const secret = 'sup3r-s3cret-value';
  const bad = [
    `{"value": ${secret}}`,
    secret,
    `{"value": "${secret}"`,
    `{"value": "${secret}"}} trailing`,
    `{"value": "${secret}\u0001"}`,
    `{"value" "${secret}"}`,
    `['${secret}']`,
  ];
  for (const text of bad) {
    test(JSON.stringify(text), () => {
      assert.throws(
        () => parseJsonText(b(text)),
        (e: unknown) => {
          assert.ok(e instanceof IsolaError && e.code === 'E_INVALID_ARGUMENT');
          assert.ok(!e.message.includes('sup3r'), e.message);
          assert.match(e.message, /^malformed JSON: /);
          return true;
        },
      );
    });
  }

  test('messages keep the kind of error and its position', () => {
    const msg = (t: string) => {
      try {
        JSON.parse(t);
      } catch (err) {
        return jsonErrorMessage(err);
      }
      return '';
    };
    assert.equal(msg('{"a": 1'), "Expected ',' or '}' after property value at position 7");
    assert.equal(msg('{"a": "x'), 'Unterminated string at position 8');
    assert.equal(msg(''), 'unexpected end of input');
    assert.equal(msg('{"a": secret}'), 'unexpected token');
    assert.equal(jsonErrorMessage(new Error('something "quoted" odd')), 'syntax error');
  });

  test('schema problems name fields and expectations, never the values received', () => {
    const schema = z
      .object({ runtime: z.enum(['nodejs20', 'image']), kind: z.literal('x'), n: z.number() })
      .strict();
    assert.throws(
      () => parseJson(b(`{"runtime":"${secret}","kind":"${secret}","n":"${secret}"}`), schema),
      (e: unknown) => {
        assert.ok(e instanceof IsolaError && e.code === 'E_INVALID_ARGUMENT');
        assert.ok(!e.message.includes('sup3r'), e.message);
        assert.ok(!JSON.stringify(e.details).includes('sup3r'));
        assert.match(e.message, /runtime: expected one of 'nodejs20' \| 'image'/);
        assert.match(e.message, /kind: expected "x"/);
        assert.match(e.message, /n: Expected number, received string/);
        return true;
      },
    );
  });
});

describe('scrubKeys', () => {
  test('the secret part of anything shaped like an API key is redacted', () => {
    const key = `isola_abcdefghij12_${'A'.repeat(43)}`;
    assert.equal(scrubKeys(`no key named ${key}!`), 'no key named isola_abcdefghij12_[REDACTED]!');
    assert.equal(scrubKeys('no key named abcdefghij12'), 'no key named abcdefghij12');
  });
});
