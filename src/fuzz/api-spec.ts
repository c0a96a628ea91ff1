// The API's request bodies restated from their documentation (gateway/schemas.ts, the bounds in
// platform/config.ts LIMITS, the egress policy rules of net/policy.ts), as plain field tables:
// the fuzzer generates bodies from them and holds the zod schemas to them. A body the table
// accepts must come back from parseJson as it went in (an egress policy normalised); one it
// refuses must be an E_INVALID_ARGUMENT (or E_JSON_TOO_DEEP past 64 levels of nesting).

import { LIMITS } from '../platform/config.js';
import { isPlainObject } from './json.js';

export type Kind =
  | { k: 'int'; min: number; max: number }
  | { k: 'num'; min: number; max: number }
  | { k: 'bool' }
  /** Function and tenant names: 1-63 of a-z 0-9 -, starting with a letter. */
  | { k: 'name' }
  /** Length in UTF-16 code units, as JavaScript counts it. */
  | { k: 'str'; min: number; max: number }
  | { k: 'nullableInt'; min: number; max: number }
  | { k: 'env' }
  /** An egress policy: normalised on the way in (see egressPolicy). */
  | { k: 'egress' };

export interface Shape {
  fields: Record<string, Kind>;
  required: readonly string[];
  /** A rule across fields, or null. */
  cross?: (v: Record<string, unknown>) => string | null;
}

const int = (min: number, max = Number.POSITIVE_INFINITY): Kind => ({ k: 'int', min, max });
const num = (min: number, max: number): Kind => ({ k: 'num', min, max });
const str = (min: number, max = Number.POSITIVE_INFINITY): Kind => ({ k: 'str', min, max });

const CONFIG: Record<string, Kind> = {
  memoryMiB: int(LIMITS.memoryMiB.min, LIMITS.memoryMiB.max),
  vcpus: int(LIMITS.vcpus.min, LIMITS.vcpus.max),
  timeoutS: num(LIMITS.timeoutS.min, LIMITS.timeoutS.max),
  concurrency: int(LIMITS.concurrency.min, LIMITS.concurrency.max),
  minInstances: int(LIMITS.instances.min, LIMITS.instances.max),
  maxInstances: int(1, LIMITS.instances.max),
  idleTimeoutS: num(LIMITS.idleTimeoutS.min, LIMITS.idleTimeoutS.max),
  public: { k: 'bool' },
  env: { k: 'env' },
  egress: { k: 'egress' },
};

const TENANT_LIMITS: Record<string, Kind> = {
  maxConcurrency: int(1, 100_000),
  maxMemoryMiB: int(LIMITS.memoryMiB.min, 16 * 1024 * 1024),
};

export const SHAPES = {
  tenantLimits: { fields: TENANT_LIMITS, required: [] },
  createTenant: { fields: { ...TENANT_LIMITS, name: { k: 'name' } }, required: ['name'] },
  createKey: { fields: { tenant: { k: 'name' }, description: str(0, 200) }, required: [] },
  createFunction: {
    fields: { ...CONFIG, name: { k: 'name' }, runtime: str(0) },
    required: ['name', 'runtime'],
  },
  configPatch: { fields: CONFIG, required: [] },
  deployImage: {
    fields: { ...CONFIG, image: str(1, 512), description: str(0, 500) },
    required: ['image'],
  },
  putAlias: {
    fields: {
      version: int(1),
      additionalVersion: { k: 'nullableInt', min: 1, max: Number.POSITIVE_INFINITY },
      additionalWeight: int(0, 100),
    },
    required: ['version'],
    cross: (v) =>
      v.additionalVersion != null && !Object.hasOwn(v, 'additionalWeight')
        ? 'a split needs additionalWeight'
        : null,
  },
  putSecret: { fields: { value: str(4, 32 * 1024) }, required: ['value'] },
} satisfies Record<string, Shape>;

export type ShapeName = keyof typeof SHAPES;

const LOWER = (c: number) => c >= 0x61 && c <= 0x7a;
const UPPER = (c: number) => c >= 0x41 && c <= 0x5a;
const DIGIT = (c: number) => c >= 0x30 && c <= 0x39;

export function nameOk(v: unknown): boolean {
  if (typeof v !== 'string' || v.length < 1 || v.length > 63 || !LOWER(v.charCodeAt(0)))
    return false;
  for (let i = 1; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (!(LOWER(c) || DIGIT(c) || c === 0x2d)) return false;
  }
  return true;
}

/** Environment names: a letter or _, then letters, digits and _, at most 128 in all. */
export function envNameOk(k: string): boolean {
  if (k.length < 1 || k.length > 128) return false;
  for (let i = 0; i < k.length; i++) {
    const c = k.charCodeAt(i);
    if (!(UPPER(c) || LOWER(c) || c === 0x5f || (i > 0 && DIGIT(c)))) return false;
  }
  // Names the platform sets itself.
  return !k.startsWith('ISOLA_') && k !== 'NODE_OPTIONS';
}

/** A key the API refuses anywhere in a body (gateway/http.ts parseJson). */
export const PROTO_KEY = '__proto__';

/** Whether a parsed body has an own `__proto__` key at any depth. */
export function hasProtoKey(v: unknown): boolean {
  if (v === null || typeof v !== 'object') return false;
  if (Array.isArray(v)) return v.some(hasProtoKey);
  if (Object.hasOwn(v, PROTO_KEY)) return true;
  return Object.values(v).some(hasProtoKey);
}

function envProblem(env: unknown): string | null {
  if (!isPlainObject(env)) return 'env is not an object';
  let bytes = 0;
  for (const k of Object.keys(env)) {
    const v = env[k];
    if (!envNameOk(k)) return `env name ${JSON.stringify(k.slice(0, 40))}`;
    if (typeof v !== 'string' || v.length > 4096) return `env value of ${k.slice(0, 40)}`;
    bytes += k.length + v.length;
  }
  return bytes > LIMITS.envBytes ? `environment of ${bytes} bytes` : null;
}

export function kindProblem(kind: Kind, v: unknown): string | null {
  const numberIn = (min: number, max: number) =>
    typeof v === 'number' && !Number.isNaN(v) && v >= min && v <= max;
  const integer = () => typeof v === 'number' && Number.isFinite(v) && Math.trunc(v) === v;
  switch (kind.k) {
    case 'int':
      return integer() && numberIn(kind.min, kind.max) ? null : 'not an integer in range';
    case 'nullableInt':
      return v === null || (integer() && numberIn(kind.min, kind.max)) ? null : 'not null or int';
    case 'num':
      return numberIn(kind.min, kind.max) ? null : 'not a number in range';
    case 'bool':
      return typeof v === 'boolean' ? null : 'not a boolean';
    case 'name':
      return nameOk(v) ? null : 'not a name';
    case 'str':
      return typeof v === 'string' && v.length >= kind.min && v.length <= kind.max
        ? null
        : 'not a string of the right length';
    case 'env':
      return envProblem(v);
    case 'egress': {
      const p = egressPolicy(v);
      return 'problem' in p ? p.problem : null;
    }
  }
}

/** Why a parsed body does not fit the shape, or null when it does. */
export function bodyProblem(shape: Shape, v: unknown): string | null {
  if (!isPlainObject(v)) return 'body is not an object';
  for (const k of Object.keys(v)) if (!Object.hasOwn(shape.fields, k)) return `unknown field ${k}`;
  for (const k of shape.required) if (!Object.hasOwn(v, k)) return `missing ${k}`;
  for (const [k, kind] of Object.entries(shape.fields)) {
    if (!Object.hasOwn(v, k)) continue;
    const p = kindProblem(kind, v[k]);
    if (p !== null) return `${k}: ${p}`;
  }
  return shape.cross?.(v) ?? null;
}

/** What parseJson must return for a body the shape accepts. */
export function expectedOutput(v: Record<string, unknown>): unknown {
  const out: Record<string, unknown> = { ...v };
  if (Object.hasOwn(v, 'egress')) {
    const p = egressPolicy(v.egress);
    if ('policy' in p) out.egress = p.policy;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Egress policies: { mode?: 'public' | 'allowlist' | 'none', allow?: rule[] }, null for the
// default. A rule is "CIDR[:PORT]" (surrounding whitespace ignored) or { cidr, port? }; a CIDR
// is a dotted quad without leading zeros, with an optional /0-/32 (no leading zero) and no
// host bits set; ports are 1-65535; at most 64 rules; 'none' takes no rules.

export interface EgressRule {
  cidr: string;
  port?: number;
}

export const MAX_EGRESS_RULES = 64;

function quad(text: string): number | null {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  let n = 0;
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > 255) return null;
    n = n * 256 + Number(p);
  }
  return n;
}

function cidrOk(text: string): boolean {
  const slash = text.indexOf('/');
  const addr = quad(slash < 0 ? text : text.slice(0, slash));
  if (addr === null) return false;
  if (slash < 0) return true;
  const prefix = text.slice(slash + 1);
  if (!/^(0|[1-9][0-9]?)$/.test(prefix) || Number(prefix) > 32) return false;
  const hostBits = 2 ** (32 - Number(prefix));
  return addr % hostBits === 0;
}

function ruleText(text: string): EgressRule | null {
  const t = text.trim();
  const colon = t.indexOf(':');
  const cidr = colon < 0 ? t : t.slice(0, colon);
  if (cidr.length === 0 || !cidrOk(cidr)) return null;
  if (colon < 0) return { cidr };
  const port = t.slice(colon + 1);
  if (!/^[0-9]{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535) return null;
  return { cidr, port: Number(port) };
}

const portOk = (p: unknown) => typeof p === 'number' && Number.isInteger(p) && p >= 1 && p <= 65535;

export function egressPolicy(
  v: unknown,
): { policy: { mode: string; allow: EgressRule[] } } | { problem: string } {
  if (v === null) return { policy: { mode: 'public', allow: [] } };
  if (!isPlainObject(v)) return { problem: 'egress is not an object' };
  for (const k of Object.keys(v))
    if (k !== 'mode' && k !== 'allow') return { problem: `egress.${k}` };
  const mode = v.mode ?? 'public';
  if (mode !== 'public' && mode !== 'allowlist' && mode !== 'none')
    return { problem: 'egress.mode' };
  const list = v.allow ?? [];
  if (!Array.isArray(list) || list.length > MAX_EGRESS_RULES) return { problem: 'egress.allow' };
  const allow: EgressRule[] = [];
  for (const r of list) {
    let rule: EgressRule | null = null;
    if (typeof r === 'string') rule = ruleText(r);
    else if (isPlainObject(r) && typeof r.cidr === 'string') {
      // Only `cidr` and `port`; a port in the cidr text and in `port` both is refused.
      if (Object.keys(r).some((k) => k !== 'cidr' && k !== 'port'))
        return { problem: 'egress rule field' };
      rule = ruleText(r.cidr);
      if (rule && Object.hasOwn(r, 'port'))
        rule =
          portOk(r.port) && rule.port === undefined
            ? { cidr: rule.cidr, port: r.port as number }
            : null;
    }
    if (!rule) return { problem: 'egress rule' };
    allow.push(rule);
  }
  if (mode === 'none' && allow.length > 0) return { problem: "egress 'none' with rules" };
  return { policy: { mode, allow } };
}

/** Nesting of arrays and objects in JSON text (brackets outside strings), for E_JSON_TOO_DEEP. */
export function textDepth(b: Buffer): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < b.length; i++) {
    const c = b[i];
    if (inString) {
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) max = Math.max(max, ++depth);
    else if (c === 0x5d || c === 0x7d) depth--;
  }
  return max;
}

/** The nesting the API refuses with E_JSON_TOO_DEEP beyond (docs/errors.md). */
export const MAX_BODY_DEPTH = 64;
