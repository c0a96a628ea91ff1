import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ERROR_CODES, type ErrorCode, IsolaError, isErrorCode, toIsolaError } from './errors.js';

/** Repository root (this file compiles to dist/src/errors.test.js). */
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CODES = Object.keys(ERROR_CODES) as ErrorCode[];

describe('ERROR_CODES', () => {
  test('there are codes', () => {
    assert.ok(CODES.length >= 10);
  });

  for (const code of CODES) {
    test(code, () => {
      const e = ERROR_CODES[code];
      assert.match(code, /^E_[A-Z_]+$/);
      assert.ok(Number.isInteger(e.exit) && e.exit >= 1 && e.exit <= 255, `exit ${e.exit}`);
      assert.ok(Number.isInteger(e.http) && e.http >= 400 && e.http <= 599, `http ${e.http}`);
      assert.ok(e.doc.trim().length > 10, 'doc is missing or too short');
      assert.ok(isErrorCode(code));
    });
  }

  test('isErrorCode rejects everything else, including inherited keys', () => {
    for (const v of ['E_NOPE', 'e_internal', 'toString', '__proto__', '', 1, null, undefined]) {
      assert.equal(isErrorCode(v), false, String(v));
    }
  });
});

describe('IsolaError', () => {
  test('carries code, details, exit and HTTP status', () => {
    const e = new IsolaError('E_SANDBOX_NOT_FOUND', 'no sandbox x', { details: { id: 'x' } });
    assert.ok(e instanceof Error);
    assert.equal(e.name, 'IsolaError');
    assert.equal(e.code, 'E_SANDBOX_NOT_FOUND');
    assert.equal(e.message, 'no sandbox x');
    assert.equal(e.exitCode, ERROR_CODES.E_SANDBOX_NOT_FOUND.exit);
    assert.equal(e.httpStatus, 404);
    assert.deepEqual(e.toJSON(), {
      code: 'E_SANDBOX_NOT_FOUND',
      message: 'no sandbox x',
      details: { id: 'x' },
    });
    assert.deepEqual(JSON.parse(JSON.stringify(new IsolaError('E_QMP', 'm'))), {
      code: 'E_QMP',
      message: 'm',
    });
  });

  test('keeps a cause', () => {
    const cause = new Error('inner');
    assert.equal(new IsolaError('E_QMP', 'outer', { cause }).cause, cause);
    assert.equal(new IsolaError('E_QMP', 'outer').cause, undefined);
  });
});

describe('toIsolaError', () => {
  test('returns an IsolaError unchanged', () => {
    const e = new IsolaError('E_AGENT_TIMEOUT', 'slow');
    assert.equal(toIsolaError(e), e);
  });

  test('wraps an Error as E_INTERNAL with its message and the original as cause', () => {
    const orig = new TypeError('boom');
    const e = toIsolaError(orig);
    assert.ok(e instanceof IsolaError);
    assert.equal(e.code, 'E_INTERNAL');
    assert.equal(e.message, 'boom');
    assert.equal(e.cause, orig);
    assert.equal(e.exitCode, 70);
  });

  test('wraps non-Error throws as E_INTERNAL', () => {
    for (const v of ['str', 42, null, undefined, { a: 1 }]) {
      const e = toIsolaError(v);
      assert.equal(e.code, 'E_INTERNAL');
      assert.equal(e.message, String(v));
    }
  });
});

describe('docs/errors.md', () => {
  const doc = readFileSync(path.join(ROOT, 'docs/errors.md'), 'utf8');
  const rows = new Map<string, { exit: number; http: number; line: number }>();
  const duplicates: string[] = [];
  doc.split('\n').forEach((line, i) => {
    const m = /^\|\s*`([A-Za-z0-9_]+)`\s*\|\s*([^|]*?)\s*\|\s*([^|]*?)\s*\|/.exec(line);
    if (!m) return;
    const [, code = '', exit = '', http = ''] = m;
    if (rows.has(code)) duplicates.push(code);
    rows.set(code, { exit: Number(exit), http: Number(http), line: i + 1 });
  });

  test('lists each code once', () => {
    assert.deepEqual(duplicates, []);
  });

  test('lists every code in ERROR_CODES', () => {
    const missing = CODES.filter((c) => !rows.has(c));
    assert.deepEqual(missing, [], `codes missing from docs/errors.md: ${missing.join(', ')}`);
  });

  test('lists no code that does not exist', () => {
    const extra = [...rows.keys()].filter((c) => !isErrorCode(c));
    assert.deepEqual(extra, [], `docs/errors.md lists unknown codes: ${extra.join(', ')}`);
  });

  test('exit codes and HTTP statuses agree with ERROR_CODES', () => {
    for (const [code, row] of rows) {
      if (!isErrorCode(code)) continue;
      assert.equal(
        row.exit,
        ERROR_CODES[code].exit,
        `exit code of ${code} (docs/errors.md line ${row.line})`,
      );
      assert.equal(
        row.http,
        ERROR_CODES[code].http,
        `HTTP status of ${code} (docs/errors.md line ${row.line})`,
      );
    }
  });
});
