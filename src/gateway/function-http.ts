// HTTP routing to functions: ANY /{tenant}/{function}[/path][?query]. Image functions get the
// request passed through (method, path, query, headers, body) and their response streamed back.
// Node.js functions get an HTTP event (the shape of AWS's function URL events) and may answer
// {statusCode, headers, body, isBase64Encoded}; any other result is sent as JSON.
// A function that is not `public` needs a key of its own tenant (or an admin key); another
// tenant's key gets 404, as if the function did not exist. Without a valid key, a missing
// function is 401 like a private one, so existence is not learnt without a key either.

import type http from 'node:http';
import { IsolaError } from '../errors.js';
import type { Platform, Principal } from '../platform/platform.js';
import { MAX_INVOKE_BYTES, readBody, sendJson } from './http.js';
import { startHeaders } from './routes/invoke.js';

const STRIP_REQUEST_HEADERS = [
  'authorization',
  'host',
  'connection',
  'keep-alive',
  'transfer-encoding',
  'upgrade',
];

export async function serveFunctionHttp(
  platform: Platform,
  req: http.IncomingMessage,
  res: http.ServerResponse,
  url: URL,
  requestId: string,
  /** The gateway's authentication (key check and rate limits). */
  authenticate: () => Promise<Principal>,
): Promise<void> {
  const [, tenantName = '', target = '', ...rest] = url.pathname.split('/');
  const missing = async (): Promise<never> => {
    await authenticate();
    throw new IsolaError('E_NOT_FOUND', `no function ${tenantName}/${target}`);
  };
  const name = safeDecode(tenantName);
  const fnTarget = safeDecode(target);
  const tenant = name === null ? null : await platform.store.getTenantByName(name);
  if (!tenant || fnTarget === null) return missing();
  const resolved = await platform.resolveTarget(tenant, fnTarget).catch(() => null);
  if (!resolved) return missing();
  const { fn, version } = resolved;
  if (!version.config.public) {
    const p = await authenticate();
    if (p.role === 'tenant' && p.tenantId !== tenant.id)
      throw new IsolaError('E_NOT_FOUND', `no function ${tenantName}/${target}`);
  }
  const path = `/${rest.join('/')}`;
  const body = await readBody(req, MAX_INVOKE_BYTES);
  const headers: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (v !== undefined && !STRIP_REQUEST_HEADERS.includes(k)) headers[k] = v;
  }
  const timeoutMs = version.config.timeoutS * 1000;
  if (version.runtime === 'image') {
    const r = await platform.withInstance(tenant, fn, version, requestId, (lease) =>
      lease.instance.proxy(
        { method: req.method ?? 'GET', path: `${path}${url.search}`, headers, body },
        res,
        requestId,
        timeoutMs,
      ),
    );
    if (r.value.status !== 'ok' && r.value.error) {
      if (!res.headersSent)
        sendJson(res, r.value.error.httpStatus, { error: r.value.error.toJSON(), requestId });
      else res.destroy();
    }
    return;
  }
  const isText = isTextual(String(req.headers['content-type'] ?? ''));
  const event = {
    version: 'isola.http/1',
    requestId,
    method: req.method ?? 'GET',
    path,
    rawQuery: url.search.slice(1),
    query: Object.fromEntries(url.searchParams),
    headers,
    body: body.length === 0 ? null : isText ? body.toString('utf8') : body.toString('base64'),
    isBase64Encoded: body.length > 0 && !isText,
  };
  const r = await platform.invokeVersion(
    tenant,
    fn,
    version,
    Buffer.from(JSON.stringify(event)),
    requestId,
  );
  const o = r.outcome;
  const hdrs = {
    ...startHeaders(r),
    'x-isola-request-id': requestId,
  };
  if (o.status !== 'ok') {
    const e = o.error ?? new IsolaError('E_INTERNAL', 'invocation failed');
    sendJson(res, e.httpStatus, { error: e.toJSON(), requestId }, hdrs);
    return;
  }
  const result = o.result as {
    statusCode?: unknown;
    headers?: unknown;
    body?: unknown;
    isBase64Encoded?: unknown;
  } | null;
  if (result && typeof result === 'object' && typeof result.statusCode === 'number') {
    const status = Math.trunc(result.statusCode);
    const outHeaders: Record<string, string> = {};
    if (result.headers && typeof result.headers === 'object') {
      for (const [k, v] of Object.entries(result.headers as Record<string, unknown>))
        outHeaders[k.toLowerCase()] = String(v);
    }
    let out: Buffer;
    if (typeof result.body === 'string')
      out = Buffer.from(result.body, result.isBase64Encoded === true ? 'base64' : 'utf8');
    else if (result.body === undefined || result.body === null) out = Buffer.alloc(0);
    else {
      out = Buffer.from(JSON.stringify(result.body));
      outHeaders['content-type'] ??= 'application/json';
    }
    if (status < 100 || status > 599)
      throw new IsolaError(
        'E_FUNCTION_ERROR',
        `the function answered an invalid statusCode ${status}`,
      );
    res.writeHead(status, { ...outHeaders, ...hdrs, 'content-length': String(out.length) });
    res.end(out);
    return;
  }
  sendJson(res, 200, result, hdrs);
}

/** A path segment decoded; null when its %-escapes are malformed. */
function safeDecode(s: string): string | null {
  try {
    return decodeURIComponent(s);
  } catch {
    return null;
  }
}

function isTextual(type: string): boolean {
  return type === '' || /^text\/|json|xml|x-www-form-urlencoded|javascript/.test(type);
}
