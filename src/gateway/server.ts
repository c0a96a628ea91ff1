// The gateway's HTTP server: request ids, authentication, the route table, HTTP function
// routing, and the one place errors become responses. Graceful stop: new requests get 503,
// running invocations finish (up to a grace period), then every instance is stopped.

import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { IsolaError } from '../errors.js';
import type { Platform } from '../platform/platform.js';
import { serveFunctionHttp } from './function-http.js';
import { REQUEST_ID_HEADER, sendError } from './http.js';
import { type Route, compile, match } from './router.js';
import { aliasRoutes } from './routes/aliases.js';
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
];

/** Time running invocations get to finish on shutdown before their instances are stopped. */
export const SHUTDOWN_GRACE_MS = 30_000;

export function newRequestId(): string {
  return `req_${randomBytes(10).toString('hex')}`;
}

export class Gateway {
  private readonly server: http.Server;
  private readonly routes = compile(ROUTES);

  constructor(private readonly platform: Platform) {
    this.server = http.createServer((req, res) => void this.handle(req, res));
    // Invocations can run up to the largest function timeout; node's default would cut them.
    this.server.requestTimeout = 0;
    this.server.headersTimeout = 60_000;
    this.server.keepAliveTimeout = 65_000;
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

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const t0 = performance.now();
    const requestId = newRequestId();
    res.setHeader(REQUEST_ID_HEADER, requestId);
    try {
      const url = new URL(req.url ?? '/', 'http://gateway');
      const method = req.method ?? 'GET';
      const found = match(this.routes, method, url.pathname);
      if (found && 'route' in found) {
        const { route, params } = found;
        const principal =
          route.access === 'public'
            ? { role: 'admin' as const, keyId: '', tenantId: null }
            : await this.platform.authenticate(req.headers.authorization);
        if (route.access === 'admin') this.platform.requireAdmin(principal);
        await route.handler({
          req,
          res,
          params,
          query: url.searchParams,
          principal,
          requestId,
          platform: this.platform,
          t0,
        });
        return;
      }
      if (found && 'methods' in found) {
        res.setHeader('allow', found.methods.join(', '));
        throw new IsolaError(
          'E_INVALID_ARGUMENT',
          `${method} is not allowed on ${url.pathname} (allowed: ${found.methods.join(', ')})`,
        );
      }
      if (url.pathname.startsWith('/v1/') || url.pathname === '/v1' || url.pathname === '/') {
        // Auth first, so an unauthenticated caller learns nothing about which routes exist.
        await this.platform.authenticate(req.headers.authorization);
        throw new IsolaError('E_NOT_FOUND', `no route ${method} ${url.pathname}`);
      }
      if (this.platform.isDraining)
        throw new IsolaError('E_SHUTTING_DOWN', 'the server is shutting down');
      await serveFunctionHttp(this.platform, req, res, url, requestId);
    } catch (err) {
      sendError(res, err, requestId);
    }
  }
}
