// Fuzz target: the API's input validation. A case is one request body for one schema of
// gateway/schemas.ts (as parseJson sees it: raw bytes), a path name (nameSchema) or a `since`
// query value (parseSince). Bodies are built as JSON syntax trees from the field tables of
// api-spec.ts, then made hostile: wrong types, values at and past every bound, number literals
// JSON.parse rounds (1e309, 9007199254740993, 127.99999999999999999), huge strings, deep
// nesting, unknown and prototype keys (__proto__, constructor), duplicate keys, unicode oddities,
// broken JSON. Properties, on every case:
//   - validation returns or throws IsolaError E_INVALID_ARGUMENT, nothing else;
//   - it accepts exactly the bodies api-spec.ts accepts, and returns them unchanged;
//   - Object.prototype and Array.prototype are untouched, and returned objects are plain.

import { IsolaError } from '../errors.js';
import { parseJson } from '../gateway/http.js';
import { parseSince } from '../gateway/routes/usage.js';
import * as schemas from '../gateway/schemas.js';
import { LIMITS, configPatchSchema, nameSchema } from '../platform/config.js';
import {
  type Kind,
  MAX_BODY_DEPTH,
  SHAPES,
  type Shape,
  type ShapeName,
  bodyProblem,
  expectedOutput,
  hasProtoKey,
  nameOk,
  textDepth,
} from './api-spec.js';
import { type FuzzTarget, fail } from './engine.js';
import { HOSTILE_KEYS, deepNesting, mutateJson, oddString, randomString } from './headers.js';
import { isPlainObject, jsonEqual } from './json.js';
import type { Rng } from './rng.js';

const ZOD: Record<ShapeName, Parameters<typeof parseJson>[1]> = {
  tenantLimits: schemas.tenantLimitsInput,
  createTenant: schemas.createTenantInput,
  createKey: schemas.createKeyInput,
  createFunction: schemas.createFunctionInput,
  configPatch: configPatchSchema,
  deployImage: schemas.deployImageInput,
  putAlias: schemas.putAliasInput,
  putSecret: schemas.putSecretInput,
};

type Target = ShapeName | 'name' | 'since';
const TARGETS = [...(Object.keys(SHAPES) as ShapeName[]), 'name', 'since'] as const;

export interface ApiCase {
  target: Target;
  body: Buffer;
}

// ---------------------------------------------------------------------------------------------
// JSON syntax trees, so bodies can hold what JSON.stringify never writes: duplicate keys, number
// literals that round, escaped keys.

type Node =
  | { t: 'raw'; text: string }
  | { t: 'str'; s: string }
  | { t: 'arr'; items: Node[] }
  | { t: 'obj'; entries: Array<[string, Node]> };

const raw = (text: string): Node => ({ t: 'raw', text });
const str = (s: string): Node => ({ t: 'str', s });

function render(n: Node, r: Rng): string {
  switch (n.t) {
    case 'raw':
      return n.text;
    case 'str':
      return JSON.stringify(n.s);
    case 'arr':
      return `[${n.items.map((x) => render(x, r)).join(',')}]`;
    case 'obj':
      return `{${n.entries.map(([k, v]) => `${key(k, r)}:${render(v, r)}`).join(r.chance(0.1) ? ' , ' : ',')}}`;
  }
}

/** A key as JSON text, sometimes spelled with \u escapes (`"\u005f\u005fproto__"`). */
function key(k: string, r: Rng): string {
  if (k.length === 0 || !r.chance(0.05)) return JSON.stringify(k);
  const i = r.int(k.length);
  const esc = `\\u${k.charCodeAt(i).toString(16).padStart(4, '0')}`;
  return `"${JSON.stringify(k).slice(1, -1).replace(k[i]!, esc)}"`;
}

// ---------------------------------------------------------------------------------------------
// Values.

const ALNUM = 'abcdefghijklmnopqrstuvwxyz0123456789-';
const ENV_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_';

function validName(r: Rng): string {
  const n = r.chance(0.1) ? 63 : 1 + r.size(62);
  let s = String.fromCharCode(0x61 + r.int(26));
  for (let i = 1; i < n; i++) s += ALNUM[r.int(ALNUM.length)];
  return s;
}

function envName(r: Rng, n = 1 + r.size(127)): string {
  let s = r.chance(0.8) ? 'K' : '_';
  for (let i = 1; i < n; i++) s += ENV_CHARS[r.int(ENV_CHARS.length)];
  return s;
}

/** Sized strings are mostly ASCII so their length is what was asked for. */
function sized(r: Rng, n: number): string {
  return r.chance(0.8) ? 'x'.repeat(n) : randomString(r, n).slice(0, n);
}

function badName(r: Rng): string {
  return r.pick([
    '',
    'A',
    '1abc',
    '-abc',
    'abc-',
    'a'.repeat(64),
    'abc\n',
    '\nabc',
    'ab c',
    'ab_c',
    'ａbc',
    'аbc',
    'abc\u0000',
    '__proto__',
    'constructor',
    'prototype',
    validName(r) + oddString(r),
  ]);
}

function cidr(r: Rng): string {
  const prefix = r.pick([32, 32, 24, 16, 8, 0, r.int(33)]);
  const addr = prefix === 0 ? 0 : (r.int(2 ** 32) & (0xffffffff << (32 - prefix))) >>> 0;
  const text = [24, 16, 8, 0].map((b) => (addr >>> b) & 255).join('.');
  return prefix === 32 && r.chance(0.5) ? text : `${text}/${prefix}`;
}

function egressRule(r: Rng): Node {
  const c = cidr(r);
  const port = r.chance(0.5) ? r.pick([1, 80, 65535, 1 + r.int(65535)]) : null;
  if (r.chance(0.5))
    return str(`${r.chance(0.1) ? ' ' : ''}${c}${port === null ? '' : `:${port}`}`);
  return {
    t: 'obj',
    entries:
      port === null
        ? [['cidr', str(c)]]
        : [
            ['cidr', str(c)],
            ['port', raw(String(port))],
          ],
  };
}

const BAD_RULES = [
  '01.2.3.4',
  '1.2.3.256',
  '1.2.3',
  '1.2.3.4.5',
  '1.2.3.4/33',
  '1.2.3.4/8',
  '1.2.3.4/',
  '1.2.3.4/008',
  '1.0.0.0/08',
  '/8',
  '1.2.3.4:0',
  '1.2.3.4:65536',
  '1.2.3.4:080',
  '1.2.3.4:',
  ':80',
  '::1',
  '1.2.3.4:80:90',
  '1.2.3.4/32/32',
  '１.2.3.4',
  '1.2.3.4\n',
  '\t1.2.3.4 ',
  '1.2.3.4 :80',
  '0.0.0.0/0',
  '169.254.169.254',
  '',
];

function hostileEgress(r: Rng): Node {
  const rule = (): Node =>
    r.weighted<() => Node>([
      [3, () => str(r.pick(BAD_RULES))],
      [2, () => egressRule(r)],
      [
        2,
        () => ({
          t: 'obj',
          entries: [
            ['cidr', r.chance(0.8) ? str(cidr(r)) : raw(r.pick(['1', 'null', '[]']))],
            [
              r.pick(['port', 'prot', 'ports', '__proto__']),
              raw(r.pick(['0', '1', '65535', '65536', '1.5', '"80"', 'null', '-1', '80'])),
            ],
          ],
        }),
      ],
      [1, () => raw(r.pick(['null', '1', '[]', '{}', '["1.2.3.4"]']))],
      [
        2,
        // Host bits set under the prefix, mostly.
        () => str(`${[r.int(256), r.int(256), r.int(256), r.int(256)].join('.')}/${r.int(33)}`),
      ],
    ])();
  const mode = () =>
    r.pick<Node>([
      str('public'),
      str('allowlist'),
      str('none'),
      raw('null'),
      str('PUBLIC'),
      str(''),
      raw('1'),
    ]);
  const allow = (): Node =>
    r.chance(0.1)
      ? r.pick([raw('null'), str('1.2.3.4'), raw('{}')])
      : {
          t: 'arr',
          items: Array.from({ length: r.chance(0.05) ? 64 + r.int(2) : r.int(4) }, () =>
            r.chance(0.5) ? egressRule(r) : rule(),
          ),
        };
  const entries: Array<[string, Node]> = [];
  if (r.chance(0.7)) entries.push(['mode', mode()]);
  if (r.chance(0.7)) entries.push(['allow', allow()]);
  if (r.chance(0.1)) entries.push([r.pick(['allowed', 'rules', '__proto__', 'Mode']), raw('[]')]);
  return { t: 'obj', entries };
}

function validValue(kind: Kind, r: Rng): Node {
  switch (kind.k) {
    case 'int':
    case 'nullableInt': {
      if (kind.k === 'nullableInt' && r.chance(0.2)) return raw('null');
      const hi = Number.isFinite(kind.max) ? kind.max : kind.min + 1_000_000;
      return raw(String(r.pick([kind.min, hi, kind.min + r.int(hi - kind.min + 1)])));
    }
    case 'num':
      return raw(
        String(
          r.chance(0.5)
            ? r.pick([kind.min, kind.max])
            : kind.min + r.next() * (kind.max - kind.min),
        ),
      );
    case 'bool':
      return raw(r.chance(0.5) ? 'true' : 'false');
    case 'name':
      return str(validName(r));
    case 'str': {
      const hi = Math.min(kind.max, kind.min + 600);
      return str(
        sized(
          r,
          r.chance(0.2)
            ? r.pick([kind.min, kind.max <= 32 * 1024 ? kind.max : 4096])
            : kind.min + r.int(hi - kind.min + 1),
        ),
      );
    }
    case 'egress': {
      if (r.chance(0.1)) return raw('null');
      const mode = r.pick(['public', 'allowlist', 'none']);
      const entries: Array<[string, Node]> = [];
      if (mode !== 'public' || r.chance(0.5)) entries.push(['mode', str(mode)]);
      if (mode !== 'none' && r.chance(0.8))
        entries.push([
          'allow',
          { t: 'arr', items: Array.from({ length: r.int(4) }, () => egressRule(r)) },
        ]);
      return { t: 'obj', entries };
    }
    case 'env': {
      const entries: Array<[string, Node]> = [];
      if (r.chance(0.1)) {
        // Right at the size limit, or one byte over.
        const over = r.int(2);
        for (let left = LIMITS.envBytes + over, i = 0; left > 0; i++) {
          const k = `K${i}`;
          const n = Math.min(4096, left - k.length);
          entries.push([k, str('v'.repeat(Math.max(0, n)))]);
          left -= k.length + Math.max(0, n);
        }
      } else
        for (let i = r.int(5); i > 0; i--) entries.push([envName(r), str(sized(r, r.size(64)))]);
      return { t: 'obj', entries };
    }
  }
}

/** Number literals around a bound, including ones that parse to something else. */
function numberLiterals(r: Rng, b: number): string[] {
  return [
    String(b - 1),
    String(b + 1),
    `${b}.0`,
    `${b}.5`,
    `${b - 1}.99999999999999999`,
    `${b}.00000000000000001`,
    `${b}e0`,
    `${b * 10}E-1`,
    `${r.int(10)}e${r.pick([2, 3, 308, 309, -400])}`,
    '-0',
    '1e309',
    '-1e309',
    '9007199254740993',
    '0.1',
    String(-b),
  ];
}

function hostileValue(kind: Kind, r: Rng): Node {
  if (r.chance(0.3)) {
    // Wrong type, whatever the kind.
    return r.pick<Node>([
      raw('null'),
      raw('true'),
      raw('0'),
      raw('[]'),
      raw('{}'),
      str(''),
      str(oddString(r)),
      raw(deepNesting(r, 1 + r.size(5000))),
      { t: 'arr', items: [validValue(kind, r)] },
      { t: 'obj', entries: [['__proto__', raw('{"polluted":true}')]] },
    ]);
  }
  switch (kind.k) {
    case 'int':
    case 'nullableInt':
    case 'num':
      return raw(
        r.pick(
          numberLiterals(
            r,
            r.chance(0.5) ? kind.min : Number.isFinite(kind.max) ? kind.max : 2 ** 53,
          ),
        ),
      );
    case 'bool':
      return r.pick([raw('0'), raw('1'), str('true'), str('false'), raw('null')]);
    case 'name':
      return str(badName(r));
    case 'str':
      return str(
        r.chance(0.5)
          ? sized(
              r,
              r.pick([
                Math.max(0, kind.min - 1),
                Number.isFinite(kind.max) ? kind.max + 1 : r.chance(0.05) ? 256 * 1024 : 2000,
              ]),
            )
          : oddString(r),
      );
    case 'egress':
      return hostileEgress(r);
    case 'env': {
      const name = r.pick([
        '',
        '1A',
        'A-B',
        'A=B',
        'A B',
        'Ä',
        'ISOLA_X',
        'ISOLA_',
        'NODE_OPTIONS',
        'node_options',
        'NODE_OPTIONS_X',
        'XISOLA_',
        '__proto__',
        'constructor',
        'hasOwnProperty',
        'toString',
        envName(r, 128),
        envName(r, 129),
        'A\n',
      ]);
      const value = r.pick<Node>([
        str('v'),
        str('v'.repeat(4096)),
        str('v'.repeat(4097)),
        raw('1'),
        raw('null'),
        str('\u0000'),
        raw('{}'),
      ]);
      return r.chance(0.2)
        ? r.pick([raw('[]'), str('A=1'), raw('null')])
        : {
            t: 'obj',
            entries: [
              ...((validValue(kind, r) as { entries: Array<[string, Node]> }).entries ?? []),
              [name, value],
            ],
          };
    }
  }
}

function validBody(shape: Shape, r: Rng): Array<[string, Node]> {
  const entries: Array<[string, Node]> = [];
  for (const [k, kind] of Object.entries(shape.fields))
    if (shape.required.includes(k) || r.chance(0.4)) entries.push([k, validValue(kind, r)]);
  // putAlias: a split carries its weight (the cross-field rule), mostly.
  if (
    entries.some(([k]) => k === 'additionalVersion') &&
    !entries.some(([k]) => k === 'additionalWeight') &&
    r.chance(0.8)
  )
    entries.push(['additionalWeight', raw(String(r.int(101)))]);
  return entries;
}

function hostileBody(shape: Shape, r: Rng): Buffer {
  const entries = validBody(shape, r);
  const fields = Object.keys(shape.fields);
  for (let m = r.int(3); m > 0; m--) {
    switch (r.int(5)) {
      case 0:
      case 1: {
        // Fields with rules of their own (environment, egress policy) are picked more often.
        const k = r.weighted(fields.map((f) => [/^(env|egress)$/.test(f) ? 4 : 1, f] as const));
        const kind = shape.fields[k]!;
        const i = entries.findIndex(([x]) => x === k);
        if (i >= 0) entries[i] = [k, hostileValue(kind, r)];
        else entries.push([k, hostileValue(kind, r)]);
        break;
      }
      case 2:
        entries.push([
          r.chance(0.7) ? r.pick(HOSTILE_KEYS) : randomString(r, 6),
          r.pick([raw('1'), raw('{"polluted":true}'), str('x'), raw('null')]),
        ]);
        break;
      case 3:
        if (entries.length > 0) entries.splice(r.int(entries.length), 1);
        break;
      default: {
        // A duplicate key: JSON.parse keeps the last.
        const e = entries[r.int(entries.length)];
        const kind = e && Object.hasOwn(shape.fields, e[0]) ? shape.fields[e[0]] : undefined;
        if (e)
          entries.push([
            e[0],
            kind === undefined
              ? raw('2')
              : r.chance(0.5)
                ? validValue(kind, r)
                : hostileValue(kind, r),
          ]);
      }
    }
  }
  const body: Node = { t: 'obj', entries };
  const text = (t: string) => Buffer.from(t);
  return r.weighted<() => Buffer>([
    [20, () => text(render(body, r))],
    [1, () => text(render({ t: 'arr', items: [body] }, r))],
    [
      1,
      () =>
        text(
          r.pick([
            '',
            'null',
            '0',
            '"x"',
            'true',
            '[]',
            '{}',
            ' ',
            '\ufeff{}',
            '{}{}',
            'undefined',
            'NaN',
          ]),
        ),
    ],
    [0.5, () => text(deepNesting(r, 1 + r.size(100_000)))],
    [2, () => mutateJson(r, text(render(body, r)))],
  ])();
}

function sinceValue(r: Rng): string {
  return r.pick([
    () => `${r.int(1000)}${r.pick(['s', 'm', 'h', 'd'])}`,
    () => `${'9'.repeat(1 + r.size(400))}${r.pick(['s', 'm', 'h', 'd', ''])}`,
    () => String(Date.UTC(2024, 0) + r.int(1e10)),
    () => new Date(Date.UTC(2000, 0) + r.int(2e12)).toISOString(),
    () =>
      r.pick([
        '',
        ' ',
        '-1',
        '1.5',
        '15M',
        'now',
        '2024-02-30',
        '2024-13-01',
        '+275760-09-13T00:00:00.000Z',
        '1e3',
        '0x10',
        '7d\n',
      ]),
    () => oddString(r),
  ])();
}

function generate(r: Rng): ApiCase {
  const target = r.pick(TARGETS);
  if (target === 'name')
    return { target, body: Buffer.from(r.chance(0.5) ? validName(r) : badName(r)) };
  if (target === 'since') return { target, body: Buffer.from(sinceValue(r)) };
  const shape: Shape = SHAPES[target];
  const body = r.chance(0.3)
    ? Buffer.from(render({ t: 'obj', entries: validBody(shape, r) }, r))
    : hostileBody(shape, r);
  return { target, body };
}

// ---------------------------------------------------------------------------------------------
// Properties.

const PROTO_NAMES = Object.getOwnPropertyNames(Object.prototype).length;
const ARRAY_PROTO_NAMES = Object.getOwnPropertyNames(Array.prototype).length;

function checkPrototypes(): void {
  if (Object.getOwnPropertyNames(Object.prototype).length !== PROTO_NAMES)
    fail(
      `Object.prototype was modified: ${Object.getOwnPropertyNames(Object.prototype).join(',')}`,
    );
  if (Object.getOwnPropertyNames(Array.prototype).length !== ARRAY_PROTO_NAMES)
    fail('Array.prototype was modified');
  for (const k in {}) fail(`every object now has the enumerable key ${k}`);
}

/** Every object in an accepted value is a plain object or array, with no odd prototype. */
function checkPlain(v: unknown): void {
  if (typeof v !== 'object' || v === null) return;
  const proto = Object.getPrototypeOf(v);
  if (proto !== Object.prototype && proto !== Array.prototype)
    fail('accepted value has an odd prototype');
  for (const x of Object.values(v)) checkPlain(x);
}

function checkRefusal(
  err: unknown,
  what: string,
  codes: readonly string[] = ['E_INVALID_ARGUMENT'],
): void {
  if (!(err instanceof IsolaError) || !codes.includes(err.code))
    fail(
      `${what} threw something else than ${codes.join(' or ')}: ${(err as Error)?.stack ?? String(err)}`,
    );
}

function checkBody(name: ShapeName, body: Buffer): void {
  let parsed: unknown;
  let problem: string | null;
  const deep = textDepth(body) > MAX_BODY_DEPTH;
  try {
    parsed = body.length === 0 ? {} : deep ? null : JSON.parse(body.toString('utf8'));
    problem = deep
      ? 'too deep'
      : hasProtoKey(parsed)
        ? '__proto__ key'
        : bodyProblem(SHAPES[name], parsed);
  } catch {
    problem = 'not JSON';
  }
  let out: unknown;
  let thrown: unknown = null;
  try {
    out = parseJson(body, ZOD[name]);
  } catch (err) {
    thrown = err ?? new Error('threw a nullish value');
  }
  checkPrototypes();
  const shown = () => body.toString('utf8').slice(0, 300);
  if (thrown !== null) {
    checkRefusal(
      thrown,
      `parseJson(${name})`,
      deep ? ['E_INVALID_ARGUMENT', 'E_JSON_TOO_DEEP'] : ['E_INVALID_ARGUMENT'],
    );
    if (problem === null)
      fail(`${name} refused a valid body ${shown()}: ${(thrown as Error).message.slice(0, 300)}`);
    const problems = (thrown as IsolaError).details?.problems;
    if (
      problem !== 'not JSON' &&
      !deep &&
      (!Array.isArray(problems) || !problems.every((p) => typeof p === 'string'))
    )
      fail(`${name} refusal has no details.problems`);
    return;
  }
  if (problem !== null) fail(`${name} accepted ${shown()} (spec: ${problem})`);
  checkPlain(out);
  if (!jsonEqual(out, expectedOutput(parsed as Record<string, unknown>)))
    fail(`${name} returned ${JSON.stringify(out)?.slice(0, 300)} for ${shown()}`);
}

function check(c: ApiCase): void {
  const text = c.body.toString('utf8');
  if (c.target === 'name') {
    let ok: boolean;
    try {
      ok = nameSchema.safeParse(text).success;
    } catch (err) {
      fail(`nameSchema threw: ${(err as Error)?.stack ?? String(err)}`);
    }
    if (ok !== nameOk(text))
      fail(`nameSchema ${ok ? 'accepted' : 'refused'} ${JSON.stringify(text)}`);
    return;
  }
  if (c.target === 'since') {
    let v: number | null;
    try {
      v = parseSince(text, Date.UTC(2025, 0));
    } catch (err) {
      checkRefusal(err, 'parseSince');
      if ((err as Error).message.length > 200) fail('parseSince error message echoes its input');
      return;
    }
    if (v !== null && (typeof v !== 'number' || Number.isNaN(v)))
      fail(`parseSince(${JSON.stringify(text)}) = ${v}`);
    if (v === null && text !== '') fail(`parseSince(${JSON.stringify(text)}) = null`);
    return;
  }
  checkBody(c.target, c.body);
}

/** Shorter bodies: drop halves, quarters, ... single bytes. */
function* shrink(c: ApiCase): Generator<ApiCase> {
  const n = c.body.length;
  for (let size = n >> 1; size >= 1; size >>= 1)
    for (let at = 0; at + size <= n; at += size)
      yield {
        target: c.target,
        body: Buffer.concat([c.body.subarray(0, at), c.body.subarray(at + size)]),
      };
}

function save(c: ApiCase): unknown {
  const text = c.body.toString('utf8');
  return Buffer.from(text).equals(c.body)
    ? { target: c.target, text }
    : { target: c.target, hex: c.body.toString('hex') };
}

function load(v: unknown): ApiCase {
  if (!isPlainObject(v) || !TARGETS.some((t) => t === v.target))
    throw new Error('corpus entry has no known target');
  const body =
    typeof v.text === 'string'
      ? Buffer.from(v.text)
      : typeof v.hex === 'string'
        ? Buffer.from(v.hex, 'hex')
        : null;
  if (!body) throw new Error('corpus entry has neither text nor hex');
  return { target: v.target as Target, body };
}

export const apiBodies: FuzzTarget<ApiCase> = {
  name: 'api',
  corpus: 'api',
  generate,
  check,
  shrink,
  save,
  load,
};
