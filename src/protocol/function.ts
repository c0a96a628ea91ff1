// The function runtime contract, shared by the host (platform/instance.ts) and the in-guest
// Node.js runtime (guest/fn-runtime.ts): where the code is, which port the runtime serves, the
// shape of an invocation's reply, and how output lines carry their request id.
//
// Node.js functions: the runtime loads the handler and reads frames from a virtio-serial port
// of its own (FUNCTION_PORT_NAME), so invocations skip the agent; it multiplexes them as small
// length-prefixed frames, not HTTP: under TCG every byte of parsing in the guest costs.
//   frame = u32 header length | u32 body length | header | body
//   host -> runtime: {t:'health', id} | {t:'invoke', id, requestId, deadline}  body = event JSON
//   runtime -> host: {t:'health', id, ready, error?} | {t:'reply', id, ok, durationMs, error?}
//                    body = result JSON (ok replies)
// A header is JSON (first byte '{'), except for the two frames of every invocation, which have
// fixed binary headers when their fields fit: a few reads instead of JSON parse and stringify
// on every invocation (the decoder and encoder were among the largest items of the runtime's
// V8 profile under TCG; `npm run bench:guest` takes that profile):
//   invoke    0x01 | u32 id | f64 deadline | u8 n | requestId (n bytes UTF-8)
//   ok reply  0x02 | u32 id | f64 durationMs
// Both decode to the same objects as their JSON form; the JSON form stays valid.
// Image functions: the image's own HTTP server on IMAGE_PORT; requests pass through unchanged.

/** The virtio-serial port a Node.js function's runtime reads and writes frames on. */
export const FUNCTION_PORT_NAME = 'isola.fn';
export const IMAGE_PORT = 8080;
/** Where the code bundle's block device is mounted in the guest (read-only). */
export const TASK_DIR = '/var/task';
export const RUNTIME_SCRIPT = '/opt/isola/agent/src/guest/fn-runtime.js';

export const HEADER_REQUEST_ID = 'x-isola-request-id';
/** The request id of a snapshot template's warm-up invocations (their output is dropped). */
export const WARMUP_REQUEST_ID = 'warmup';

export interface HandlerError {
  type: string;
  message: string;
  stack?: string;
}

export type RuntimeRequest =
  | { t: 'health'; id: number }
  | { t: 'invoke'; id: number; requestId: string; deadline: number }
  // First frame to a runtime restored from a snapshot (no reply): fresh seed (hex) for what
  // cannot reseed itself (guest/clone-random.ts), and environment variables to add (secrets,
  // which snapshots never hold).
  | { t: 'restore'; id: number; seed: string; env: Record<string, string> }
  // A snapshot template's warm-up: the invocation path with a stand-in handler (a reply follows).
  | { t: 'warm'; id: number };

export type RuntimeReply =
  | { t: 'health'; id: number; ready: boolean; error?: HandlerError }
  | { t: 'reply'; id: number; ok: true; durationMs: number }
  | { t: 'reply'; id: number; ok: false; durationMs: number; error: HandlerError };

/** Largest frame either side accepts (events are at most 6 MiB at the gateway). */
export const MAX_RUNTIME_FRAME = 16 * 1024 * 1024;

export function encodeRuntimeFrame(header: object, body: Buffer | string = EMPTY): Buffer {
  // One allocation and no intermediate copies: under TCG every copy in the guest costs.
  const bl = typeof body === 'string' ? Buffer.byteLength(body) : body.length;
  const bin = binaryHeader(header as Record<string, unknown>);
  const h = bin === null ? JSON.stringify(header) : '';
  const hl = bin === null ? Buffer.byteLength(h) : bin.length;
  const out = Buffer.allocUnsafe(8 + hl + bl);
  out.writeUInt32BE(hl, 0);
  out.writeUInt32BE(bl, 4);
  if (bin === null) out.write(h, 8, 'utf8');
  else writeBinaryHeader(out, 8, bin);
  if (typeof body === 'string') out.write(body, 8 + hl, 'utf8');
  else body.copy(out, 8 + hl);
  return out;
}

const TAG_INVOKE = 0x01;
const TAG_OK_REPLY = 0x02;
const MAX_BINARY_REQUEST_ID = 255;

type BinaryHeader =
  | { length: number; tag: typeof TAG_INVOKE; id: number; f: number; requestId: string; n: number }
  | { length: number; tag: typeof TAG_OK_REPLY; id: number; f: number };

const isU32 = (v: unknown): v is number =>
  Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 0xffffffff;

/**
 * The binary form of a header, or null when it has none: exactly the fields of an invoke or of
 * an ok reply, in their order, each of a type that survives the trip (the JSON form keeps
 * everything else, and a header with an extra field).
 */
function binaryHeader(h: Record<string, unknown>): BinaryHeader | null {
  if (h.t === 'invoke') {
    const { id, deadline, requestId } = h;
    if (!isU32(id) || typeof deadline !== 'number' || !Number.isFinite(deadline)) return null;
    if (typeof requestId !== 'string' || requestId.length > MAX_BINARY_REQUEST_ID) return null;
    const n = Buffer.byteLength(requestId);
    if (n > MAX_BINARY_REQUEST_ID || !sameKeys(h, INVOKE_KEYS)) return null;
    return { length: 14 + n, tag: TAG_INVOKE, id, f: deadline, requestId, n };
  }
  if (h.t === 'reply' && h.ok === true) {
    const { id, durationMs } = h;
    if (!isU32(id) || typeof durationMs !== 'number' || !Number.isFinite(durationMs)) return null;
    if (!sameKeys(h, OK_REPLY_KEYS)) return null;
    return { length: 13, tag: TAG_OK_REPLY, id, f: durationMs };
  }
  return null;
}

const INVOKE_KEYS = ['t', 'id', 'requestId', 'deadline'];
const OK_REPLY_KEYS = ['t', 'id', 'ok', 'durationMs'];

function sameKeys(h: Record<string, unknown>, keys: string[]): boolean {
  let n = 0;
  for (const k in h) {
    if (k !== keys[n]) return false;
    n++;
  }
  return n === keys.length;
}

function writeBinaryHeader(out: Buffer, at: number, b: BinaryHeader): void {
  out[at] = b.tag;
  out.writeUInt32BE(b.id, at + 1);
  out.writeDoubleBE(b.f, at + 5);
  if (b.tag === TAG_INVOKE) {
    out[at + 13] = b.n;
    out.write(b.requestId, at + 14, 'utf8');
  }
}

/** The header of a binary frame at buf[at, at + hl), or a RuntimeFrameError. */
function readBinaryHeader(buf: Buffer, at: number, hl: number): Record<string, unknown> {
  const tag = buf[at];
  if (tag === TAG_OK_REPLY && hl === 13) {
    return {
      t: 'reply',
      id: buf.readUInt32BE(at + 1),
      ok: true,
      durationMs: buf.readDoubleBE(at + 5),
    };
  }
  if (tag === TAG_INVOKE && hl >= 14 && hl === 14 + buf[at + 13]!) {
    const deadline = buf.readDoubleBE(at + 5);
    if (Number.isFinite(deadline)) {
      return {
        t: 'invoke',
        id: buf.readUInt32BE(at + 1),
        requestId: buf.toString('utf8', at + 14, at + hl),
        deadline,
      };
    }
  }
  throw new RuntimeFrameError('E_AGENT_PROTOCOL', 'runtime frame has a malformed binary header');
}

const EMPTY = Buffer.alloc(0);

/**
 * What RuntimeFrameDecoder throws. The stream has no magic to resynchronise on, so after one the
 * connection is dropped; `code` is the error code the host reports it under.
 */
export class RuntimeFrameError extends Error {
  constructor(
    readonly code: 'E_FRAME_TOO_LARGE' | 'E_AGENT_PROTOCOL',
    message: string,
  ) {
    super(message);
    this.name = 'RuntimeFrameError';
  }
}

/**
 * Incremental decoder; throws RuntimeFrameError on a frame over MAX_RUNTIME_FRAME or a header
 * that is not a JSON object. Headers are checked to be objects here because both peers read
 * fields of them straight away: a `null` header from a misbehaving guest was a TypeError thrown
 * inside the host's socket listener (found by the fuzzer, src/fuzz/).
 */
export class RuntimeFrameDecoder {
  private buf: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Array<{ header: Record<string, unknown>; body: Buffer }> {
    const buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: Array<{ header: Record<string, unknown>; body: Buffer }> = [];
    let off = 0;
    while (buf.length - off >= 8) {
      const hl = buf.readUInt32BE(off);
      const bl = buf.readUInt32BE(off + 4);
      if (hl + bl > MAX_RUNTIME_FRAME)
        throw new RuntimeFrameError(
          'E_FRAME_TOO_LARGE',
          `runtime frame of ${hl + bl} bytes is too large`,
        );
      const end = off + 8 + hl + bl;
      if (buf.length < end) break;
      let header: unknown;
      const first = hl > 0 ? buf[off + 8] : undefined;
      if (first === TAG_INVOKE || first === TAG_OK_REPLY) {
        header = readBinaryHeader(buf, off + 8, hl);
      } else {
        try {
          header = JSON.parse(buf.toString('utf8', off + 8, off + 8 + hl));
        } catch {
          throw new RuntimeFrameError('E_AGENT_PROTOCOL', 'runtime frame header is not valid JSON');
        }
      }
      if (typeof header !== 'object' || header === null || Array.isArray(header))
        throw new RuntimeFrameError('E_AGENT_PROTOCOL', 'runtime frame header is not an object');
      // A copy: the caller may reuse the chunk it pushed.
      out.push({
        header: header as Record<string, unknown>,
        body: Buffer.from(buf.subarray(off + 8 + hl, end)),
      });
      off = end;
    }
    // What is left of a frame is kept; a copy when it is still the caller's chunk, which the
    // caller may reuse (as for bodies).
    this.buf =
      off === buf.length
        ? EMPTY
        : buf === chunk
          ? Buffer.from(buf.subarray(off))
          : buf.subarray(off);
    return out;
  }
}

/** Output of the runtime: one JSON line per write, tagged with the request it belongs to. */
export interface OutputLine {
  /** Request id, or null for output outside any invocation (module load, timers). */
  r: string | null;
  /** 'o' stdout, 'e' stderr. */
  s: 'o' | 'e';
  t: string;
}

export function encodeOutputLine(line: OutputLine): string {
  return `${JSON.stringify(line)}\n`;
}

/**
 * Parse one line of runtime output. Lines that are not ours (a child process, or Node's own
 * fatal error text written straight to the file descriptor) come back as raw text.
 */
export function decodeOutputLine(text: string): OutputLine | { raw: string } {
  if (text.startsWith('{"r":')) {
    try {
      const v = JSON.parse(text) as OutputLine;
      if ((v.r === null || typeof v.r === 'string') && typeof v.t === 'string') return v;
    } catch {
      // not ours after all
    }
  }
  return { raw: text };
}

/** Heap for the runtime's V8: guest memory less room for the kernel, the agent and buffers. */
export function heapLimitMiB(memoryMiB: number): number {
  return Math.max(32, Math.floor(memoryMiB - 112));
}
