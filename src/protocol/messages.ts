// The host<->guest agent protocol, defined once and imported by both sides (the Kata way: one
// schema, two peers). Messages are the JSON headers of frames (frame.ts); bulk bytes ride in the
// frame body.
//
// Host -> guest: requests { id, op, ...args }. Guest -> host: responses { id, ok, result | error }
// and events { ev, ... } (process output, exit, agent ready). Many requests and exec streams are
// in flight at once on one channel; they are told apart by request id and exec id.
//
// The validators are hand-written and dependency-free because the guest image carries only
// Node.js and the agent, and because the fuzz tests drive them with millions of inputs.

import { FRAME_BODY_CHUNK } from './frame.js';

export const PROTOCOL_VERSION = 3;
/** Name of the virtio-serial port the host creates and the agent looks for. */
export const AGENT_PORT_NAME = 'isola.agent';
/**
 * The control port: `guestctl serve` reads one command per line ("ID CMD ARGS...") and answers
 * "ID STATUS". After a restore the host sets the clone's clock, hostname and entropy here, with
 * no JavaScript on the path (what runs first after a restore is slow under TCG).
 */
export const CONTROL_PORT_NAME = 'isola.ctl';
/** Version of the agent program; part of the guest image digest, reported by `info`. */
export const AGENT_VERSION = '0.3.0';

export type Signal =
  | 'SIGTERM'
  | 'SIGKILL'
  | 'SIGINT'
  | 'SIGHUP'
  | 'SIGQUIT'
  | 'SIGUSR1'
  | 'SIGUSR2'
  | 'SIGSTOP'
  | 'SIGCONT';
export const SIGNALS: readonly Signal[] = [
  'SIGTERM',
  'SIGKILL',
  'SIGINT',
  'SIGHUP',
  'SIGQUIT',
  'SIGUSR1',
  'SIGUSR2',
  'SIGSTOP',
  'SIGCONT',
];

export interface ExecArgs {
  argv: string[];
  env?: Record<string, string>;
  cwd?: string;
  uid?: number;
  gid?: number;
  /** When false, stdin is /dev/null; when true the host streams it with `stdin` requests. */
  stdin?: boolean;
}

/** Requests: `op` selects the shape; every request carries a numeric `id` chosen by the host. */
export type Request =
  | { id: number; op: 'hello'; version: number; nonce: string }
  | { id: number; op: 'info' }
  | ({ id: number; op: 'exec' } & ExecArgs)
  | { id: number; op: 'stdin'; execId: number; eof?: boolean } // body = bytes
  | { id: number; op: 'signal'; execId: number; signal: Signal }
  | { id: number; op: 'wait'; execId: number }
  | { id: number; op: 'readFile'; path: string; offset?: number; length?: number } // reply body = bytes
  | { id: number; op: 'writeFile'; path: string; mode?: number; append?: boolean } // body = bytes
  | { id: number; op: 'shutdown' }
  // A TCP connection to a port on the guest's loopback (a function's HTTP server), relayed as a
  // byte stream: `send` carries bytes host -> guest (eof half-closes), `data` events carry them
  // back, `end` says the guest side half-closed, `closed` that the connection is gone.
  | { id: number; op: 'connect'; port: number }
  | { id: number; op: 'send'; connId: number; eof?: boolean } // body = bytes
  | { id: number; op: 'close'; connId: number };

export type Op = Request['op'];
export const OPS: readonly Op[] = [
  'hello',
  'info',
  'exec',
  'stdin',
  'signal',
  'wait',
  'readFile',
  'writeFile',
  'shutdown',
  'connect',
  'send',
  'close',
];

export interface GuestInfo {
  agentVersion: string;
  protocolVersion: number;
  kernelRelease: string;
  kernelVersion: string;
  hostname: string;
  uptimeSec: number;
  memTotalBytes: number;
  memFreeBytes: number;
  cpus: number;
  nodeVersion: string;
}

export interface ExitStatus {
  /** Exit code, or null when the process ended by a signal. */
  exitCode: number | null;
  signal: string | null;
}

export interface WireError {
  code: string;
  message: string;
}

export type Response =
  | { id: number; ok: true; result?: unknown } // body may carry bytes (readFile)
  | { id: number | null; ok: false; error: WireError };

export type Event =
  | { ev: 'ready'; version: number; agentVersion: string; bootUptimeSec: number }
  | { ev: 'stdout' | 'stderr'; execId: number } // body = bytes
  | { ev: 'exit'; execId: number; exitCode: number | null; signal: string | null }
  | { ev: 'data'; connId: number } // body = bytes
  | { ev: 'end'; connId: number }
  | { ev: 'closed'; connId: number; error?: string };

export type GuestMessage = Response | Event;

// ---------------------------------------------------------------------------------------------
// Validation. Each returns the typed value or a string saying what is wrong.

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const isInt = (v: unknown, min = 0, max = Number.MAX_SAFE_INTEGER): v is number =>
  typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;
const isStr = (v: unknown, max = 64 * 1024): v is string =>
  typeof v === 'string' && v.length <= max;
const isUid = (v: unknown) => v === undefined || isInt(v, 0, 0xfffffffe);

/** Keys allowed per op, beyond `id` and `op`; anything else is rejected (like unknown fields). */
const ALLOWED: Record<Op, readonly string[]> = {
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

/**
 * A short description of an unknown op for error messages. Never JSON.stringify the whole value:
 * a deeply nested array from the wire makes it throw (stack overflow), and the agent must answer
 * malformed input with an error rather than die.
 */
function describeOp(op: unknown): string {
  if (typeof op === 'string') return JSON.stringify(op.slice(0, 64));
  if (Array.isArray(op)) return '(an array)';
  if (typeof op === 'object' && op !== null) return '(an object)';
  return String(op);
}

export function parseRequest(
  v: unknown,
): { ok: true; req: Request } | { ok: false; id: number | null; error: string } {
  if (!isObj(v)) return { ok: false, id: null, error: 'request must be a JSON object' };
  const id = isInt(v.id) ? v.id : null;
  if (id === null)
    return { ok: false, id: null, error: 'request id must be a non-negative integer' };
  const op = v.op;
  if (typeof op !== 'string' || !(OPS as readonly string[]).includes(op)) {
    return { ok: false, id, error: `unknown op ${describeOp(op)}` };
  }
  const allowed = ALLOWED[op as Op];
  for (const k of Object.keys(v)) {
    if (k !== 'id' && k !== 'op' && !allowed.includes(k)) {
      return { ok: false, id, error: `unknown field "${k.slice(0, 64)}" for op ${op}` };
    }
  }
  const bad = (error: string) => ({ ok: false as const, id, error });
  switch (op as Op) {
    case 'hello':
      if (!isInt(v.version)) return bad('hello.version must be an integer');
      if (!isStr(v.nonce, 256)) return bad('hello.nonce must be a string');
      break;
    case 'exec': {
      if (!Array.isArray(v.argv) || v.argv.length === 0 || v.argv.length > 4096) {
        return bad('exec.argv must be a non-empty array of strings');
      }
      if (!v.argv.every((a) => isStr(a) && !a.includes('\0')))
        return bad('exec.argv must hold strings without NUL');
      if (v.env !== undefined) {
        if (!isObj(v.env)) return bad('exec.env must be an object of strings');
        for (const [k, val] of Object.entries(v.env)) {
          if (
            k === '' ||
            k.includes('=') ||
            k.includes('\0') ||
            !isStr(val) ||
            val.includes('\0')
          ) {
            return bad(`exec.env entry "${k.slice(0, 64)}" is invalid`);
          }
        }
      }
      if (v.cwd !== undefined && (!isStr(v.cwd, 4096) || !v.cwd.startsWith('/'))) {
        return bad('exec.cwd must be an absolute path');
      }
      if (!isUid(v.uid) || !isUid(v.gid))
        return bad('exec.uid/gid must be integers in [0, 2^32-2]');
      if (v.stdin !== undefined && typeof v.stdin !== 'boolean')
        return bad('exec.stdin must be a boolean');
      break;
    }
    case 'stdin':
      if (!isInt(v.execId)) return bad('stdin.execId must be an integer');
      if (v.eof !== undefined && typeof v.eof !== 'boolean')
        return bad('stdin.eof must be a boolean');
      break;
    case 'signal':
      if (!isInt(v.execId)) return bad('signal.execId must be an integer');
      if (!(SIGNALS as readonly unknown[]).includes(v.signal))
        return bad('signal.signal is not a known signal');
      break;
    case 'wait':
      if (!isInt(v.execId)) return bad('wait.execId must be an integer');
      break;
    case 'readFile':
      if (!isStr(v.path, 4096) || !v.path.startsWith('/'))
        return bad('readFile.path must be an absolute path');
      if (v.offset !== undefined && !isInt(v.offset))
        return bad('readFile.offset must be a non-negative integer');
      if (v.length !== undefined && !isInt(v.length, 0, FRAME_BODY_CHUNK)) {
        return bad(`readFile.length must be in [0, ${FRAME_BODY_CHUNK}]`);
      }
      break;
    case 'writeFile':
      if (!isStr(v.path, 4096) || !v.path.startsWith('/'))
        return bad('writeFile.path must be an absolute path');
      if (v.mode !== undefined && !isInt(v.mode, 0, 0o7777))
        return bad('writeFile.mode must be in [0, 0o7777]');
      if (v.append !== undefined && typeof v.append !== 'boolean')
        return bad('writeFile.append must be a boolean');
      break;
    case 'connect':
      if (!isInt(v.port, 1, 65535)) return bad('connect.port must be an integer in [1, 65535]');
      break;
    case 'send':
      if (!isInt(v.connId)) return bad('send.connId must be an integer');
      if (v.eof !== undefined && typeof v.eof !== 'boolean')
        return bad('send.eof must be a boolean');
      break;
    case 'close':
      if (!isInt(v.connId)) return bad('close.connId must be an integer');
      break;
    case 'info':
    case 'shutdown':
      break;
  }
  return { ok: true, req: v as unknown as Request };
}

/** Host side: check a guest message's shape before trusting it. */
export function parseGuestMessage(
  v: unknown,
): { ok: true; msg: GuestMessage } | { ok: false; error: string } {
  if (!isObj(v)) return { ok: false, error: 'guest message must be a JSON object' };
  if ('ev' in v) {
    switch (v.ev) {
      case 'ready':
        if (!isInt(v.version)) return { ok: false, error: 'ready.version must be an integer' };
        return { ok: true, msg: v as unknown as Event };
      case 'stdout':
      case 'stderr':
        if (!isInt(v.execId)) return { ok: false, error: 'stream event needs execId' };
        return { ok: true, msg: v as unknown as Event };
      case 'exit':
        if (!isInt(v.execId)) return { ok: false, error: 'exit event needs execId' };
        return { ok: true, msg: v as unknown as Event };
      case 'data':
      case 'end':
      case 'closed':
        if (!isInt(v.connId)) return { ok: false, error: 'connection event needs connId' };
        if (v.error !== undefined && !isStr(v.error, 4096))
          return { ok: false, error: 'closed.error must be a string' };
        return { ok: true, msg: v as unknown as Event };
      default:
        return { ok: false, error: 'unknown event' };
    }
  }
  if (typeof v.ok !== 'boolean') return { ok: false, error: 'response needs ok' };
  if (!(isInt(v.id) || (v.id === null && v.ok === false)))
    return { ok: false, error: 'response needs id' };
  if (
    v.ok === false &&
    (!isObj(v.error) || typeof v.error.code !== 'string' || typeof v.error.message !== 'string')
  ) {
    return { ok: false, error: 'error response needs error.code and error.message' };
  }
  return { ok: true, msg: v as unknown as Response };
}
