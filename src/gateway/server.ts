// The gateway's HTTP server: request ids, request size limits, authentication with per-key
// and per-address rate limits, the route table, the audit record of every state-changing call,
// HTTP function routing, and the one place errors become responses. Graceful stop: new
// requests get 503, running invocations finish (up to a grace period), then every instance is
// stopped.

import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { IsolaError, toIsolaError } from '../errors.js';
import { Counter } from '../platform/metrics.js';
import type { Platform, Principal } from '../platform/platform.js';
import { RateLimiter, retryAfterSeconds } from '../util/rate-limit.js';
import { serveFunctionHttp } from './function-http.js';
import {
  MAX_HEADER_BYTES,
  MAX_UPLOAD_BYTES,
  MAX_URL_BYTES,
  REQUEST_ID_HEADER,
  scrubKeys,
  sendError,
} from './http.js';
import { RATE_LIMIT_DEFAULTS, type RateLimits } from './limits.js';
import { RequestIds } from './request-id.js';
import { type Ctx, type Route, compile, match } from './router.js';
import { aliasRoutes } from './routes/aliases.js';
import { auditRoutes } from './routes/audit.js';
import { functionRoutes } from './routes/functions.js';
import { invokeRoutes } from './routes/invoke.js';
import { keyRoutes } from './routes/keys.js';
import { logRoutes } from './routes/logs.js';
import { secretRoutes } from './routes/secrets.js';
import { systemRoutes } from './routes/system.js';
import { tenantRoutes } from './routes/tenants.js';
import { usageRoutes } from './routes/usage.js';

export const ROUTES: Route[] = [
  ...systemRoutes,
  ...tenantRoutes,
  ...keyRoutes,
  ...functionRoutes,
  ...aliasRoutes,
  ...secretRoutes,
  ...invokeRoutes,
  ...logRoutes,
  ...usageRoutes,
  ...auditRoutes,
];

/** An audit record's target and tenant are cut here (names are 63 characters, key ids 12). */
const AUDIT_TEXT_MAX = 256;

/** Time running invocations get to finish on shutdown before their instances are stopped. */
export const SHUTDOWN_GRACE_MS = 30_000;

const requestIds = new RequestIds();

export function newRequestId(): string {
  return requestIds.next();
}

/**
 * What public routes see as the caller: a tenant key of no tenant, so a public handler that
 * wrongly asked for the caller's tenant would get 401, never an admin's powers.
 */
const NOBODY: Principal = { role: 'tenant', keyId: '', tenantId: null };

export interface GatewayOptions {
  rateLimits?: RateLimits;
}

export class Gateway {
  private readonly server: http.Server;
  private readonly routes = compile(ROUTES);
  private readonly keyLimiter: RateLimiter;
  private readonly adminLimiter: RateLimiter;
  private readonly failureLimiter: RateLimiter;
  private readonly m;

  constructor(
    private readonly platform: Platform,
    opts: GatewayOptions = {},
  ) {
    const limits = opts.rateLimits ?? RATE_LIMIT_DEFAULTS;
    this.keyLimiter = new RateLimiter(limits.key);
    this.adminLimiter = new RateLimiter(limits.adminKey);
    this.failureLimiter = new RateLimiter(limits.authFailures);
    this.m = {
      authFailures: platform.metrics.add(
        new Counter(
          'isola_auth_failures_total',
          'Requests refused with 401 (no, unknown or revoked key).',
        ),
      ),
      rateLimited: platform.metrics.add(
        new Counter(
          'isola_rate_limited_total',
          'Requests refused with 429 E_RATE_LIMITED, by reason (key, auth_failures).',
        ),
      ),
    };
    this.server = http.createServer(
      { maxHeaderSize: MAX_HEADER_BYTES },
      (req, res) => void this.handle(req, res),
    );
    // Invocations can run up to the largest function timeout; node's default would cut them.
    this.server.requestTimeout = 0;
    this.server.headersTimeout = 60_000;
    this.server.keepAliveTimeout = 65_000;
    // Requests node cannot parse (headers over the limit, malformed): a typed JSON error.
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) =>
      rejectUnparsed(err, socket),
    );
  }

  listen(host: string, port: number): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', (err) =>
        reject(
          new IsolaError('E_INVALID_ARGUMENT', `cannot listen on ${host}:${port}: ${err.message}`),
        ),
      );
      this.server.listen(port, host, () => resolve(this.server.address() as AddressInfo));
    });
  }

  async close(graceMs = SHUTDOWN_GRACE_MS): Promise<void> {
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    this.server.closeIdleConnections();
    await this.platform.shutdown(graceMs);
    this.server.closeAllConnections();
    await closed;
  }

  /**
   * The caller of a request: its key checked (constant-time, keys.ts), then its rate. An address
   * over its rate of failed authentications is refused before any key is looked at, so guessing
   * is throttled whatever is guessed.
   */
  private async authenticate(req: http.IncomingMessage, source: string): Promise<Principal> {
    const now = performance.now();
    const blocked = this.failureLimiter.peek(source, now);
    if (!blocked.ok) {
      this.m.rateLimited.inc({ reason: 'auth_failures' });
      throw rateLimited(
        blocked.retryAfterMs,
        'too many failed authentications from this address; retry later',
      );
    }
    let p: Principal;
    try {
      p = await this.platform.authenticate(req.headers.authorization);
    } catch (err) {
      if (toIsolaError(err).code === 'E_UNAUTHORIZED') {
        this.m.authFailures.inc();
        this.failureLimiter.take(source, now);
      }
      throw err;
    }
    const t = (p.role === 'admin' ? this.adminLimiter : this.keyLimiter).take(p.keyId, now);
    if (!t.ok) {
      this.m.rateLimited.inc({ reason: 'key' });
      throw rateLimited(t.retryAfterMs, `key ${p.keyId} is over its request rate`);
    }
    return p;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const t0 = performance.now();
    const requestId = newRequestId();
    res.setHeader(REQUEST_ID_HEADER, requestId);
    const source = req.socket.remoteAddress ?? 'unknown';
    // A chunked body nobody read: node would read it to its end, however long, to reuse the
    // connection; a declared length is bounded (checkSize), so only those are left to node.
    res.once('finish', () => {
      if (!req.complete && req.headers['content-length'] === undefined) req.socket.destroy();
    });
    try {
      checkSize(req);
      const url = new URL(req.url ?? '/', 'http://gateway');
      const method = req.method ?? 'GET';
      const found = match(this.routes, method, url.pathname);
      if (found && 'route' in found) {
        const { route, params } = found;
        const principal = route.access === 'public' ? NOBODY : await this.authenticate(req, source);
        const ctx: Ctx = {
          req,
          res,
          params,
          query: url.searchParams,
          principal,
          requestId,
          platform: this.platform,
          t0,
          source,
          audit: route.audit
            ? {
                action: route.audit,
                tenant: params.tenant ?? null,
                target: Object.values(params).join('/'),
                details: {},
              }
            : null,
        };
        try {
          if (route.access === 'admin') this.platform.requireAdmin(principal);
          await route.handler(ctx);
          this.audit(ctx, 'ok', res.statusCode);
        } catch (err) {
          const e = toIsolaError(err);
          this.audit(ctx, e.code, e.httpStatus);
          throw err;
        }
        return;
      }
      if (url.pathname.startsWith('/v1/') || url.pathname === '/v1' || url.pathname === '/') {
        // Auth first, so an unauthenticated caller learns nothing about which routes exist.
        await this.authenticate(req, source);
        if (found && 'methods' in found) {
          res.setHeader('allow', found.methods.join(', '));
          throw new IsolaError(
            'E_INVALID_ARGUMENT',
            `${method} is not allowed on ${url.pathname} (allowed: ${found.methods.join(', ')})`,
          );
        }
        throw new IsolaError('E_NOT_FOUND', `no route ${method} ${url.pathname}`);
      }
      if (found && 'methods' in found) {
        // /metrics with another method: not a function route either.
        await this.authenticate(req, source);
        res.setHeader('allow', found.methods.join(', '));
        throw new IsolaError(
          'E_INVALID_ARGUMENT',
          `${method} is not allowed on ${url.pathname} (allowed: ${found.methods.join(', ')})`,
        );
      }
      if (this.platform.isDraining)
        throw new IsolaError('E_SHUTTING_DOWN', 'the server is shutting down');
      await serveFunctionHttp(this.platform, req, res, url, requestId, () =>
        this.authenticate(req, source),
      );
    } catch (err) {
      sendError(res, err, requestId);
    }
  }

  /** The audit record of a call on an audited route (never for unauthenticated ones). */
  private audit(ctx: Ctx, result: string, status: number): void {
    if (!ctx.audit) return;
    // Target and tenant come from the request (a path may hold anything, even a key's text).
    const clean = (s: string) => scrubKeys(s).slice(0, AUDIT_TEXT_MAX);
    this.platform.audit.record({
      ts: Date.now(),
      keyId: ctx.principal.keyId,
      role: ctx.principal.role,
      tenant: ctx.audit.tenant === null ? null : clean(ctx.audit.tenant),
      action: ctx.audit.action,
      target: clean(ctx.audit.target),
      requestId: ctx.requestId,
      source: ctx.source,
      result,
      status,
      details: ctx.audit.details,
    });
  }
}

function rateLimited(retryAfterMs: number, message: string): IsolaError {
  const retryAfterS = retryAfterSeconds(retryAfterMs);
  return new IsolaError('E_RATE_LIMITED', `${message} (retry after ${retryAfterS} s)`, {
    details: { retryAfterS },
  });
}

/** Limits node does not check itself: the URL's length, and a body no route would take. */
function checkSize(req: http.IncomingMessage): void {
  const urlBytes = Buffer.byteLength(req.url ?? '');
  if (urlBytes > MAX_URL_BYTES)
    throw new IsolaError(
      'E_URI_TOO_LONG',
      `the URL is ${urlBytes} bytes, over the limit of ${MAX_URL_BYTES}`,
      { details: { limitBytes: MAX_URL_BYTES } },
    );
  // Each route bounds the body it reads (http.ts readBody); a route that reads none must not
  // let a client stream gigabytes at it either.
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > MAX_UPLOAD_BYTES)
    throw new IsolaError(
      'E_PAYLOAD_TOO_LARGE',
      `request body is over the limit of ${MAX_UPLOAD_BYTES} bytes`,
      { details: { limitBytes: MAX_UPLOAD_BYTES } },
    );
}

/**
 * A request node's parser refused: headers over MAX_HEADER_BYTES get 431 E_HEADERS_TOO_LARGE,
 * anything else unparsable 400 E_INVALID_ARGUMENT; both as the API's JSON error, then the
 * connection is closed (what follows on it cannot be trusted to start a request).
 */
function rejectUnparsed(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || !socket.writable) {
    socket.destroy();
    return;
  }
  const e =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? new IsolaError(
          'E_HEADERS_TOO_LARGE',
          `the request line and headers are over the limit of ${MAX_HEADER_BYTES} bytes`,
          { details: { limitBytes: MAX_HEADER_BYTES } },
        )
      : new IsolaError('E_INVALID_ARGUMENT', 'malformed HTTP request');
  const requestId = newRequestId();
  const body = JSON.stringify({ error: e.toJSON(), requestId });
  const reason = e.httpStatus === 431 ? 'Request Header Fields Too Large' : 'Bad Request';
  socket.end(
    `HTTP/1.1 ${e.httpStatus} ${reason}\r\ncontent-type: application/json; charset=utf-8\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\n${REQUEST_ID_HEADER}: ${requestId}\r\n` +
      `connection: close\r\n\r\n${body}`,
  );
}
