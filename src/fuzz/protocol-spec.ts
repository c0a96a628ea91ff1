// The agent protocol's message rules restated from their documentation (messages.ts), as an
// oracle the fuzzer holds the validators to: parseRequest must accept exactly what
// requestProblem finds nothing wrong with, parseGuestMessage what guestProblem accepts. Written
// separately and plainly on purpose; where the two disagree one of them is wrong.

import { FRAME_BODY_CHUNK } from '../protocol/frame.js';
import { OPS, SIGNALS } from '../protocol/messages.js';
import { isPlainObject } from './json.js';

const MAX_STRING = 64 * 1024;
const MAX_PATH = 4096;
const MAX_ARGV = 4096;
const MAX_UID = 2 ** 32 - 2;

const int = (v: unknown, min = 0, max = Number.MAX_SAFE_INTEGER): boolean =>
  typeof v === 'number' && Math.trunc(v) === v && v >= min && v <= max;
const str = (v: unknown, max = MAX_STRING): v is string => typeof v === 'string' && v.length <= max;
const absolute = (v: unknown): boolean => str(v, MAX_PATH) && v[0] === '/';
const optional = (o: Record<string, unknown>, k: string, ok: (v: unknown) => boolean) =>
  !Object.hasOwn(o, k) || ok(o[k]);
const bool = (v: unknown) => v === true || v === false;

/** Fields each op takes besides id and op. */
const FIELDS: Record<string, readonly string[]> = {
  hello: ['version', 'nonce'],
  info: [],
  exec: ['argv', 'env', 'cwd', 'uid', 'gid', 'stdin'],
  stdin: ['execId', 'eof'],
  signal: ['execId', 'signal'],
  wait: ['execId'],
  readFile: ['path', 'offset', 'length'],
  writeFile: ['path', 'mode', 'append'],
  shutdown: [],
  connect: ['port'],
  send: ['connId', 'eof'],
  close: ['connId'],
};

function envOk(env: unknown): boolean {
  if (!isPlainObject(env)) return false;
  for (const k of Object.keys(env)) {
    const v = env[k];
    if (k.length === 0 || /[=\0]/.test(k)) return false;
    if (!str(v) || v.includes('\0')) return false;
  }
  return true;
}

/** Why a value is not a valid request, or null when it is one. */
export function requestProblem(v: unknown): string | null {
  if (!isPlainObject(v)) return 'not an object';
  if (!int(v.id)) return 'bad id';
  const op = v.op;
  if (typeof op !== 'string' || !OPS.some((o) => o === op)) return 'unknown op';
  const fields = FIELDS[op]!;
  for (const k of Object.keys(v))
    if (k !== 'id' && k !== 'op' && !fields.includes(k)) return 'extra key';
  switch (op) {
    case 'hello':
      return int(v.version) && str(v.nonce, 256) ? null : 'hello';
    case 'exec': {
      const argv = v.argv;
      if (!Array.isArray(argv) || argv.length < 1 || argv.length > MAX_ARGV) return 'argv';
      if (argv.some((a) => !str(a) || a.includes('\0'))) return 'argv item';
      if (!optional(v, 'env', envOk)) return 'env';
      if (!optional(v, 'cwd', absolute)) return 'cwd';
      if (!optional(v, 'uid', (x) => int(x, 0, MAX_UID))) return 'uid';
      if (!optional(v, 'gid', (x) => int(x, 0, MAX_UID))) return 'gid';
      return optional(v, 'stdin', bool) ? null : 'stdin';
    }
    case 'stdin':
    case 'send':
      return int(op === 'stdin' ? v.execId : v.connId) && optional(v, 'eof', bool) ? null : op;
    case 'signal':
      return int(v.execId) && SIGNALS.some((s) => s === v.signal) ? null : 'signal';
    case 'wait':
      return int(v.execId) ? null : 'wait';
    case 'readFile':
      return absolute(v.path) &&
        optional(v, 'offset', (x) => int(x)) &&
        optional(v, 'length', (x) => int(x, 0, FRAME_BODY_CHUNK))
        ? null
        : 'readFile';
    case 'writeFile':
      return absolute(v.path) &&
        optional(v, 'mode', (x) => int(x, 0, 0o7777)) &&
        optional(v, 'append', bool)
        ? null
        : 'writeFile';
    case 'connect':
      return int(v.port, 1, 65535) ? null : 'connect';
    case 'close':
      return int(v.connId) ? null : 'close';
    default:
      return null; // info, shutdown
  }
}

/** Why a value is not a valid guest message (response or event), or null. */
export function guestProblem(v: unknown): string | null {
  if (!isPlainObject(v)) return 'not an object';
  if (Object.hasOwn(v, 'ev')) {
    const ev = v.ev;
    if (ev === 'ready') return int(v.version) ? null : 'ready';
    if (ev === 'stdout' || ev === 'stderr' || ev === 'exit') return int(v.execId) ? null : 'exec';
    if (ev === 'data' || ev === 'end' || ev === 'closed')
      return int(v.connId) && optional(v, 'error', (e) => str(e, 4096)) ? null : 'conn';
    return 'unknown event';
  }
  if (!bool(v.ok)) return 'ok';
  if (!(int(v.id) || (v.id === null && v.ok === false))) return 'id';
  if (v.ok === false) {
    const e = v.error;
    if (!isPlainObject(e) || typeof e.code !== 'string' || typeof e.message !== 'string')
      return 'error';
  }
  return null;
}
