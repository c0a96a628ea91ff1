// Generators of frame headers for the decoder fuzzers: valid agent requests and guest messages,
// the same with one field made hostile (so the validators are driven across their boundaries),
// function-runtime messages, arbitrary JSON, and byte-level mutations of JSON text.

import { FRAME_BODY_CHUNK } from '../protocol/frame.js';
import { OPS, SIGNALS } from '../protocol/messages.js';
import type { Rng } from './rng.js';

type Obj = Record<string, unknown>;

/** Set an own enumerable property, even `__proto__` (plain assignment would set the prototype). */
export function setOwn(o: Obj, k: string, v: unknown): void {
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
}

export const HOSTILE_KEYS = [
  '__proto__',
  'constructor',
  'prototype',
  'toString',
  'valueOf',
  'hasOwnProperty',
  '__defineGetter__',
  '',
  ' ',
  'id ',
  'ID',
  'op\u0000',
  '\u202eop',
  'é',
  '\ud800',
  '1',
  '-1',
] as const;

const ODD_STRINGS = [
  '',
  ' ',
  '\u0000',
  'a\u0000b',
  '\ud800',
  '\udc00\ud800',
  '\ufeff',
  '\u202e',
  '\u200b',
  '𝕏',
  'é',
  'e\u0301',
  'IS',
  'ISIS',
  '\n',
  'abc\n',
  '"',
  '\\',
  '/',
  '/tmp',
  '/nonexistent',
  '-1',
  '1e309',
  'NaN',
  'null',
  '__proto__',
  'SIGKILL',
  'SIGKIL',
] as const;

const ODD_NUMBERS = [
  0,
  -0,
  1,
  -1,
  0.5,
  -0.5,
  1e-300,
  2 ** 31 - 1,
  2 ** 31,
  2 ** 32 - 2,
  2 ** 32 - 1,
  2 ** 32,
  Number.MAX_SAFE_INTEGER,
  Number.MAX_SAFE_INTEGER + 1,
  2 ** 64,
  1e308,
  -1e308,
  Number.MAX_VALUE,
  Number.MIN_VALUE,
  65535,
  65536,
  0o7777,
  0o10000,
  FRAME_BODY_CHUNK,
  FRAME_BODY_CHUNK + 1,
] as const;

export function oddString(r: Rng): string {
  if (r.chance(0.5)) return r.pick(ODD_STRINGS);
  return randomString(r, r.size(40));
}

/** Random string of up to n UTF-16 units: ASCII mostly, some multi-byte, lone surrogates, NUL. */
export function randomString(r: Rng, n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) {
    const k = r.int(16);
    if (k < 10) s += String.fromCharCode(0x20 + r.int(95));
    else if (k < 11) s += String.fromCharCode(r.int(0x20));
    else if (k < 12) s += 'IS';
    else if (k < 13) s += String.fromCharCode(0x80 + r.int(0x780));
    else if (k < 14)
      s += String.fromCharCode(0xd800 + r.int(0x800)); // lone surrogates
    else if (k < 15) s += String.fromCodePoint(0x10000 + r.int(0xfffff));
    else s += String.fromCharCode(0x800 + r.int(0xd000));
  }
  return s;
}

export function oddNumber(r: Rng): number {
  return r.chance(0.6) ? r.pick(ODD_NUMBERS) : (r.next() - 0.5) * 2 ** r.int(64);
}

/** Any JSON value, nested at most `depth` levels. */
export function jsonValue(r: Rng, depth = 3): unknown {
  const k = r.int(depth > 0 ? 8 : 5);
  switch (k) {
    case 0:
      return null;
    case 1:
      return r.chance(0.5);
    case 2:
      return oddNumber(r);
    case 3:
    case 4:
      return oddString(r);
    case 5:
    case 6: {
      const o: Obj = {};
      for (let i = r.int(4); i > 0; i--)
        setOwn(
          o,
          r.chance(0.3) ? r.pick(HOSTILE_KEYS) : randomString(r, 6),
          jsonValue(r, depth - 1),
        );
      return o;
    }
    default:
      return Array.from({ length: r.int(4) }, () => jsonValue(r, depth - 1));
  }
}

/** A value that is none of the expected type, or just outside its bounds. */
export function hostileValue(r: Rng): unknown {
  switch (r.int(6)) {
    case 0:
      return oddNumber(r);
    case 1:
      return oddString(r);
    case 2:
      return r.pick([null, true, false, [], {}, [1], ['a'], { a: 1 }]);
    case 3:
      return r.chance(0.5) ? 'x'.repeat(r.pick([255, 256, 257, 4095, 4096, 4097])) : [oddString(r)];
    default:
      return jsonValue(r, 2);
  }
}

const id = (r: Rng): number =>
  r.chance(0.1) ? r.pick([0, 1, Number.MAX_SAFE_INTEGER]) : r.int(1_000_000);
const absPath = (r: Rng): string =>
  r.chance(0.3) ? `/${oddString(r)}` : `/${['tmp', 'var', 'nonexistent'][r.int(3)]}/${r.int(100)}`;
const noNul = (s: string) => s.replaceAll('\0', '');

function envObject(r: Rng): Obj {
  const env: Obj = {};
  for (let i = r.int(4); i > 0; i--)
    setOwn(env, r.chance(0.8) ? `K${r.int(100)}` : noNul(oddString(r)) || 'K', noNul(oddString(r)));
  return env;
}

/** A valid agent request (messages.ts Request) for a random op. */
export function validRequest(r: Rng): Obj {
  const op = r.pick(OPS);
  const base: Obj = { id: id(r), op };
  const maybe = (k: string, v: () => unknown) => {
    if (r.chance(0.5)) base[k] = v();
  };
  switch (op) {
    case 'hello':
      base.version = r.int(10);
      base.nonce = r.chance(0.8) ? r.bytes(8).toString('hex') : randomString(r, r.size(256));
      break;
    case 'exec':
      base.argv = Array.from({ length: 1 + r.int(4) }, () =>
        r.chance(0.7) ? r.pick(['/bin/true', 'sh', '-c', 'echo IS']) : noNul(oddString(r)),
      );
      maybe('env', () => envObject(r));
      maybe('cwd', () => absPath(r).replaceAll('\0', ''));
      maybe('uid', () => r.pick([0, 1000, 0xfffffffe]));
      maybe('gid', () => r.pick([0, 1000, 0xfffffffe]));
      maybe('stdin', () => r.chance(0.5));
      break;
    case 'stdin':
    case 'send':
      base[op === 'stdin' ? 'execId' : 'connId'] = id(r);
      maybe('eof', () => r.chance(0.5));
      break;
    case 'signal':
      base.execId = id(r);
      base.signal = r.pick(SIGNALS);
      break;
    case 'wait':
      base.execId = id(r);
      break;
    case 'readFile':
      base.path = absPath(r);
      maybe('offset', () => id(r));
      maybe('length', () => r.pick([0, 1, 4096, FRAME_BODY_CHUNK]));
      break;
    case 'writeFile':
      base.path = absPath(r);
      maybe('mode', () => r.pick([0, 0o644, 0o7777]));
      maybe('append', () => r.chance(0.5));
      break;
    case 'connect':
      base.port = r.pick([1, 80, 8080, 65535]);
      break;
    case 'close':
      base.connId = id(r);
      break;
    case 'info':
    case 'shutdown':
      break;
  }
  return base;
}

/** A valid guest -> host message (messages.ts GuestMessage). */
export function validGuestMessage(r: Rng): Obj {
  switch (r.int(8)) {
    case 0:
      return { ev: 'ready', version: r.int(5), agentVersion: '0.3.0', bootUptimeSec: r.next() };
    case 1:
      return { ev: r.pick(['stdout', 'stderr']), execId: id(r) };
    case 2:
      return {
        ev: 'exit',
        execId: id(r),
        exitCode: r.chance(0.5) ? r.int(256) : null,
        signal: r.chance(0.5) ? null : r.pick(SIGNALS),
      };
    case 3:
      return r.chance(0.5)
        ? { ev: r.pick(['data', 'end']), connId: id(r) }
        : { ev: 'closed', connId: id(r), error: oddString(r) };
    case 4:
      return {
        id: r.chance(0.1) ? null : id(r),
        ok: false,
        error: { code: 'E_X', message: oddString(r) },
      };
    default:
      return r.chance(0.5)
        ? { id: id(r), ok: true }
        : { id: id(r), ok: true, result: jsonValue(r) };
  }
}

/** Function-runtime messages (function.ts RuntimeRequest / RuntimeReply). */
export function validRuntimeMessage(r: Rng): Obj {
  switch (r.int(6)) {
    case 0:
      return { t: 'health', id: id(r) };
    case 1:
      return {
        t: 'invoke',
        id: id(r),
        requestId: `req_${r.int(1e6)}`,
        deadline: Date.UTC(2030, 0),
      };
    case 2:
      return { t: 'restore', id: 0, seed: r.bytes(16).toString('hex'), env: envObject(r) };
    case 3:
      return { t: 'warm', id: id(r) };
    case 4:
      return { t: 'health', id: id(r), ready: r.chance(0.5) };
    default:
      return r.chance(0.5)
        ? { t: 'reply', id: id(r), ok: true, durationMs: r.next() * 100 }
        : {
            t: 'reply',
            id: id(r),
            ok: false,
            durationMs: 1,
            error: { type: 'E', message: oddString(r) },
          };
  }
}

/** The protocol's numeric limits and their neighbours (messages.ts). */
const LIMIT_NUMBERS = [
  -1,
  -0,
  0,
  0.5,
  1,
  4096,
  4097,
  0o7777,
  0o10000,
  65535,
  65536,
  FRAME_BODY_CHUNK,
  FRAME_BODY_CHUNK + 1,
  2 ** 32 - 2,
  2 ** 32 - 1,
  Number.MAX_SAFE_INTEGER,
  Number.MAX_SAFE_INTEGER + 1,
] as const;

/** Strings at the protocol's length limits, and paths that are nearly absolute. */
function limitString(r: Rng): string {
  return r.pick([
    () => 'x'.repeat(r.pick([255, 256, 257])),
    () => `/${'x'.repeat(r.pick([4094, 4095, 4096]))}`,
    () => 'x'.repeat(r.pick([4095, 4096, 4097])),
    () => r.pick(['', 'relative', ' /abs', '/a\u0000b', '\u0000', '/', 'SIGKILL ', 'sigkill']),
  ])();
}

/** Strings validators look inside of: NUL bytes, "=", and odd ones. */
const edgeString = (r: Rng): string =>
  r.chance(0.4) ? r.pick(['a\u0000b', '\u0000', 'K=V', '=', 'x'.repeat(65537)]) : oddString(r);

/** One element inside an array or object value changed, added or made hostile. */
function mutateInside(r: Rng, v: unknown): unknown {
  if (Array.isArray(v)) {
    const a = [...v];
    const at = r.int(a.length + 1);
    a[at] = r.chance(0.5) ? edgeString(r) : hostileValue(r);
    return a;
  }
  if (typeof v === 'object' && v !== null) {
    const o: Obj = { ...(v as Obj) };
    const keys = Object.keys(o);
    const k =
      keys.length > 0 && r.chance(0.5) ? r.pick(keys) : r.pick([...HOSTILE_KEYS, 'K=V', 'K']);
    setOwn(o, k, r.chance(0.6) ? edgeString(r) : hostileValue(r));
    return o;
  }
  return hostileValue(r);
}

/** A valid message with one thing wrong: a field's value or type, an extra or a missing key. */
export function nearlyValid(r: Rng, base: Obj): unknown {
  const keys = Object.keys(base);
  const o: Obj = { ...base };
  const k = keys.length > 0 ? r.pick(keys) : undefined;
  switch (r.int(8)) {
    case 0:
      if (k !== undefined) o[k] = hostileValue(r);
      break;
    case 1:
    case 2: {
      // A field of the same type, at or just past a limit.
      if (k === undefined) break;
      const v = o[k];
      o[k] =
        typeof v === 'number'
          ? r.pick(LIMIT_NUMBERS)
          : typeof v === 'string'
            ? limitString(r)
            : mutateInside(r, v);
      break;
    }
    case 3: {
      // Inside an array or object field (exec argv and env).
      const inner = keys.filter((x) => typeof o[x] === 'object' && o[x] !== null);
      if (inner.length > 0) {
        const x = r.pick(inner);
        o[x] = mutateInside(r, o[x]);
      }
      break;
    }
    case 4:
    case 5:
      setOwn(o, r.chance(0.5) ? r.pick(HOSTILE_KEYS) : randomString(r, 5), hostileValue(r));
      break;
    case 6:
      if (k !== undefined) delete o[k];
      break;
    default:
      return r.pick([null, 0, 'op', [base], [], true]);
  }
  return o;
}

/** A header for an agent-channel frame: mostly protocol messages, some hostile, some anything. */
export function agentHeader(r: Rng): unknown {
  return r.weighted<() => unknown>([
    [4, () => validRequest(r)],
    [2, () => validGuestMessage(r)],
    [4, () => nearlyValid(r, r.chance(0.7) ? validRequest(r) : validGuestMessage(r))],
    [1, () => jsonValue(r)],
  ])();
}

const TOKENS = [
  '{',
  '}',
  '[',
  ']',
  '"',
  '\\',
  ',',
  ':',
  'null',
  'true',
  '1e309',
  '-',
  '-0',
  '\\u',
  '\\ud800',
  '\\u0000',
  '"__proto__":{"polluted":1},',
  '"id":-1,',
  '"op":"shutdown",',
  ' ',
  '\t\n',
  'IS',
] as const;

const BAD_UTF8 = [
  Buffer.from([0xff]),
  Buffer.from([0xc0, 0x80]),
  Buffer.from([0xed, 0xa0, 0x80]),
  Buffer.from([0xf4, 0x90, 0x80, 0x80]),
  Buffer.from([0xe2, 0x82]),
  Buffer.from([0xef, 0xbb, 0xbf]),
];

/** Byte-level damage to JSON text: most results are not JSON, some are other JSON. */
export function mutateJson(r: Rng, text: Buffer): Buffer {
  const at = () => r.int(text.length + 1);
  switch (r.int(9)) {
    case 0: {
      const i = at();
      return Buffer.concat([text.subarray(0, i), text.subarray(i + 1 + r.int(4))]);
    }
    case 1: {
      const i = at();
      return Buffer.concat([text.subarray(0, i), Buffer.from(r.pick(TOKENS)), text.subarray(i)]);
    }
    case 2: {
      const b = Buffer.from(text);
      const i = r.int(b.length);
      if (b.length > 0) b[i] = b[i]! ^ (1 << r.int(8));
      return b;
    }
    case 3:
      return text.subarray(0, at());
    case 4: {
      const i = at();
      return Buffer.concat([text.subarray(0, i), r.pick(BAD_UTF8), text.subarray(i)]);
    }
    case 5:
      return text[0] === 0x7b // '{': inject a key at the front (duplicates, __proto__)
        ? Buffer.concat([Buffer.from('{'), Buffer.from(r.pick(TOKENS)), text.subarray(1)])
        : Buffer.from(r.pick(['null', '0', '"x"', '[]', 'true', '{}', '""', '-0', '1e999']));
    case 6: {
      const i = at();
      const j = i + r.int(text.length - i + 1);
      return Buffer.concat([text.subarray(0, j), text.subarray(i, j), text.subarray(j)]);
    }
    case 7:
      return Buffer.concat([
        Buffer.from(' \n\t'.slice(0, r.int(4))),
        text,
        Buffer.from(r.pick(['', ' ', 'x', '}', '\u0000'])),
      ]);
    default:
      return Buffer.from(deepNesting(r, 1 + r.size(500)));
  }
}

/** `[[[...]]]` or `{"a":{"a":...}}`, n levels. */
export function deepNesting(r: Rng, n: number): string {
  return r.chance(0.5) ? '['.repeat(n) + ']'.repeat(n) : '{"a":'.repeat(n) + '1' + '}'.repeat(n);
}
