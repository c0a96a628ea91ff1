// Small HTTP helpers of the gateway: bounded body reading, JSON replies, and the one place an
// error becomes an HTTP response (status from the error code registry, body {error, requestId}).

import type http from 'node:http';
import type { ZodType, ZodTypeDef } from 'zod';
import { IsolaError, toIsolaError } from '../errors.js';

/** Invocation payloads, as AWS Lambda's synchronous limit. */
export const MAX_INVOKE_BYTES = 6 * 1024 * 1024;
/** API bodies other than invocations and uploads. */
export const MAX_JSON_BYTES = 256 * 1024;
/** Code bundle uploads (compressed). */
export const MAX_UPLOAD_BYTES = 50 * 1024 * 1024;

export const REQUEST_ID_HEADER = 'x-isola-request-id';

export async function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? -1);
  if (declared > limit) {
    req.resume();
    throw tooLarge(limit);
  }
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).length;
    if (n > limit) {
      req.resume();
      throw tooLarge(limit);
    }
    parts.push(c as Buffer);
  }
  return Buffer.concat(parts);
}

function tooLarge(limit: number): IsolaError {
  return new IsolaError(
    'E_PAYLOAD_TOO_LARGE',
    `request body is over the limit of ${limit} bytes (${(limit / 2 ** 20).toFixed(0)} MiB)`,
    { details: { limitBytes: limit } },
  );
}

/** Parse a JSON body with a schema; unknown fields and wrong types are one clear 400. */
export function parseJson<T>(buf: Buffer, schema: ZodType<T, ZodTypeDef, unknown>): T {
  let v: unknown;
  if (buf.length === 0) v = {};
  else {
    try {
      v = JSON.parse(buf.toString('utf8'));
    } catch (err) {
      throw new IsolaError('E_INVALID_ARGUMENT', `malformed JSON: ${(err as Error).message}`);
    }
  }
  const r = schema.safeParse(v);
  if (!r.success) {
    const problems = r.error.issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`);
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

export function sendError(res: http.ServerResponse, err: unknown, requestId: string): void {
  const e = toIsolaError(err);
  if (e.code === 'E_INTERNAL')
    process.stderr.write(`isola: internal error ${requestId}: ${e.stack ?? e.message}\n`);
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const headers: Record<string, string> = {};
  const retry = (e.details as { retryAfterS?: number } | undefined)?.retryAfterS;
  if (e.code === 'E_THROTTLED' || e.code === 'E_SHUTTING_DOWN')
    headers['retry-after'] = String(retry ?? 1);
  if (e.code === 'E_UNAUTHORIZED') headers['www-authenticate'] = 'Bearer realm="isola"';
  sendJson(res, e.httpStatus, { error: e.toJSON(), requestId }, headers);
}
