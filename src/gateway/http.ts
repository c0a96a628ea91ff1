// Small HTTP helpers of the gateway: bounded body reading, JSON replies, and the one place an
// error becomes an HTTP response (status from the error code registry, body {error, requestId}).

import type http from 'node:http';
import type { ZodErrorMap, ZodType, ZodTypeDef } from 'zod';
import { IsolaError, toIsolaError } from '../errors.js';

/** Invocation payloads, as AWS Lambda's synchronous limit. */
export const MAX_INVOKE_BYTES = 6 * 1024 * 1024;
/** API bodies other than invocations and uploads. */
export const MAX_JSON_BYTES = 256 * 1024;
/** Code bundle uploads (compressed). The largest body any route takes. */
export const MAX_UPLOAD_BYTES = 50 * 1024 * 1024;
/** Path and query: route parameters are names (63 characters), so this is ample. */
export const MAX_URL_BYTES = 8 * 1024;
/**
 * Request line and headers together (node's maxHeaderSize; its default is 16 KiB). A deploy's
 * settings travel in X-Isola-Config, whose environment alone may be 16 KiB before JSON escaping.
 */
export const MAX_HEADER_BYTES = 64 * 1024;
/** Nesting of arrays and objects in a JSON body: API bodies nest 3 levels, events rarely 10. */
export const MAX_JSON_DEPTH = 64;

export const REQUEST_ID_HEADER = 'x-isola-request-id';

/**
 * Past a body's limit, this much more is read and dropped, so a client that sent a little too
 * much gets its 413 on a connection it can keep using; beyond it the connection is closed.
 */
export const DRAIN_BYTES = 8 * 1024 * 1024;

/** The request body, at most `limit` bytes; over it E_PAYLOAD_TOO_LARGE (413). */
export function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? -1);
  if (declared > limit) {
    discardRest(req);
    return Promise.reject(tooLarge(limit));
  }
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let n = 0;
    const done = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
    };
    const onData = (c: Buffer) => {
      n += c.length;
      if (n <= limit) {
        parts.push(c);
        return;
      }
      done();
      discardRest(req);
      reject(tooLarge(limit));
    };
    const onEnd = () => {
      done();
      resolve(Buffer.concat(parts));
    };
    const onError = (err: Error) => {
      done();
      reject(err);
    };
    const onClose = () => {
      done();
      reject(new IsolaError('E_INVALID_ARGUMENT', 'the client went away before the body ended'));
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
}

/** Reads and drops the rest of a refused body, up to DRAIN_BYTES; then closes the connection. */
function discardRest(req: http.IncomingMessage): void {
  let n = 0;
  req.on('data', (c: Buffer) => {
    n += c.length;
    if (n > DRAIN_BYTES) req.socket.destroy();
  });
  req.resume();
}

function tooLarge(limit: number): IsolaError {
  return new IsolaError(
    'E_PAYLOAD_TOO_LARGE',
    `request body is over the limit of ${limit} bytes (${limit >= 2 ** 20 ? `${limit / 2 ** 20} MiB` : `${limit / 1024} KiB`})`,
    { details: { limitBytes: limit } },
  );
}

/** Whether arrays and objects nest deeper than `max` (a scan of the bytes, no parsing). */
export function jsonTooDeep(buf: Buffer, max = MAX_JSON_DEPTH): boolean {
  let depth = 0;
  let inString = false;
  let escaped = false;
  for (let i = 0; i < buf.length; i++) {
    const c = buf[i];
    if (inString) {
      if (escaped) escaped = false;
      else if (c === 0x5c) escaped = true;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return true;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return false;
}

/**
 * Parse JSON from a request (bounded depth). V8's messages quote the text around a bad token,
 * which may be a secret the client meant to send: the error keeps only the position.
 */
export function parseJsonText(buf: Buffer, what = 'JSON'): unknown {
  if (jsonTooDeep(buf))
    throw new IsolaError(
      'E_JSON_TOO_DEEP',
      `${what} nests deeper than ${MAX_JSON_DEPTH} levels of arrays and objects`,
      { details: { maxDepth: MAX_JSON_DEPTH } },
    );
  try {
    return JSON.parse(buf.toString('utf8'));
  } catch (err) {
    throw new IsolaError('E_INVALID_ARGUMENT', `malformed ${what}: ${jsonErrorMessage(err)}`);
  }
}

/** A JSON.parse error's message without any of the input's text. */
export function jsonErrorMessage(err: unknown): string {
  const m = err instanceof Error ? err.message : '';
  if (/^Unexpected end of JSON input$/.test(m)) return 'unexpected end of input';
  const at = /at position (\d+)/.exec(m)?.[1];
  if (/^Unexpected token/.test(m) || /is not valid JSON/.test(m))
    return at ? `unexpected token at position ${at}` : 'unexpected token';
  // The other messages name the grammar rule and a position: "Unterminated string in JSON at
  // position 12", "Expected ',' or '}' after property value in JSON at position 29".
  return /^[A-Za-z ,'{}[\]:"]+ (in|after) JSON at position \d+$/.test(m)
    ? m.replace(/ (in|after) JSON/, '')
    : at
      ? `syntax error at position ${at}`
      : 'syntax error';
}

/**
 * zod's messages for enums and literals quote the value received; request bodies may carry
 * secrets, so problems name the field and what was expected, never what came.
 */
const noEcho: ZodErrorMap = (issue, ctx) => {
  if (issue.code === 'invalid_enum_value')
    return { message: `expected one of ${issue.options.map((o) => `'${o}'`).join(' | ')}` };
  if (issue.code === 'invalid_literal')
    return { message: `expected ${JSON.stringify(issue.expected)}` };
  return { message: ctx.defaultError };
};

/** Whether a parsed JSON value has an own key "__proto__" anywhere (depth is bounded before). */
export function hasProtoKey(v: unknown): boolean {
  if (v === null || typeof v !== 'object') return false;
  if (Array.isArray(v)) return v.some(hasProtoKey);
  if (Object.hasOwn(v, '__proto__')) return true;
  return Object.values(v).some(hasProtoKey);
}

/** Problems listed in one validation error, and the length of each. */
const MAX_PROBLEMS = 10;
const MAX_PROBLEM_CHARS = 200;

function clip(s: string, n: number): string {
  return s.length <= n ? s : `${s.slice(0, n - 3)}...`;
}

/** Parse a JSON body with a schema; unknown fields and wrong types are one clear 400. */
export function parseJson<T>(buf: Buffer, schema: ZodType<T, ZodTypeDef, unknown>): T {
  const v: unknown = buf.length === 0 ? {} : parseJsonText(buf);
  if (hasProtoKey(v)) {
    // JSON.parse makes "__proto__" an own key; schemas would drop it silently (zod's guard
    // against prototype pollution), so an environment variable named so would just vanish.
    throw new IsolaError('E_INVALID_ARGUMENT', 'invalid request: a key named __proto__', {
      details: { problems: ['a key named __proto__ is not allowed'] },
    });
  }
  const r = schema.safeParse(v, { errorMap: noEcho });
  if (!r.success) {
    // Bounded: paths and messages can carry the input (an unknown key of 100 KB, say).
    const problems = r.error.issues
      .slice(0, MAX_PROBLEMS)
      .map((i) => clip(`${i.path.join('.') || '(body)'}: ${i.message}`, MAX_PROBLEM_CHARS));
    if (r.error.issues.length > MAX_PROBLEMS) {
      problems.push(`... and ${r.error.issues.length - MAX_PROBLEMS} more`);
    }
    throw new IsolaError('E_INVALID_ARGUMENT', `invalid request: ${problems.join('; ')}`, {
      details: { problems },
    });
  }
  return r.data;
}

export function sendJson(
  res: http.ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

/** Anything shaped like an API key: its secret part never goes into an error or a log line. */
const KEY_TEXT_RE = /\b(isola_[a-z0-9]{12}_)[A-Za-z0-9_-]+/g;

export function scrubKeys(text: string): string {
  return text.replace(KEY_TEXT_RE, '$1[REDACTED]');
}

/**
 * Whether the connection closes after this error: the rest of the request is not read when
 * the URL or headers are over their limits, or a body is too large to drain (DRAIN_BYTES past
 * the limit, or of unknown length).
 */
function closesConnection(res: http.ServerResponse, e: IsolaError): boolean {
  if (e.code === 'E_URI_TOO_LONG' || e.code === 'E_HEADERS_TOO_LARGE') return true;
  if (e.code !== 'E_PAYLOAD_TOO_LARGE') return false;
  const declared = Number(res.req?.headers['content-length'] ?? Number.NaN);
  const limit = Number((e.details as { limitBytes?: number } | undefined)?.limitBytes ?? 0);
  return !(declared <= limit + DRAIN_BYTES);
}

export function sendError(res: http.ServerResponse, err: unknown, requestId: string): void {
  const e = toIsolaError(err);
  if (e.code === 'E_INTERNAL')
    process.stderr.write(
      `isola: internal error ${requestId}: ${scrubKeys(e.stack ?? e.message)}\n`,
    );
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const headers: Record<string, string> = {};
  const retry = (e.details as { retryAfterS?: number } | undefined)?.retryAfterS;
  if (e.code === 'E_THROTTLED' || e.code === 'E_SHUTTING_DOWN' || e.code === 'E_RATE_LIMITED')
    headers['retry-after'] = String(retry ?? 1);
  if (e.code === 'E_UNAUTHORIZED') headers['www-authenticate'] = 'Bearer realm="isola"';
  if (closesConnection(res, e)) headers.connection = 'close';
  const body = e.toJSON();
  body.message = scrubKeys(body.message);
  sendJson(res, e.httpStatus, { error: body, requestId }, headers);
}
