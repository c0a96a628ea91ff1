// The route table: method, path pattern and who may call, for every /v1 route. Handlers get a
// context with the matched parameters, the caller (already authenticated) and the request id.
// Routes that change state name their audit action; the server records each call's outcome.
// The OpenAPI document (openapi.ts) describes the same routes; a test walks both.

import type http from 'node:http';
import { IsolaError } from '../errors.js';
import type { Platform, Principal } from '../platform/platform.js';

/** public: no key; admin: admin keys only; any: any valid key (tenancy checked in the handler). */
export type Access = 'public' | 'admin' | 'any';

/** What the audit record of a call says; handlers fill in what only they know. */
export interface AuditDraft {
  action: string;
  /** Tenant name acted on or for (tenantOf sets it). */
  tenant: string | null;
  target: string;
  details: Record<string, unknown>;
}

export interface Ctx {
  req: http.IncomingMessage;
  res: http.ServerResponse;
  params: Record<string, string>;
  query: URLSearchParams;
  principal: Principal;
  requestId: string;
  platform: Platform;
  /** performance.now() when the request arrived (for Server-Timing). */
  t0: number;
  /** The client's address. */
  source: string;
  /** Present on audited routes. */
  audit: AuditDraft | null;
}

export interface Route {
  method: string;
  /** OpenAPI-style path, e.g. /v1/functions/{name}. */
  path: string;
  access: Access;
  /** Audit action (e.g. tenant.create) of a route that changes state; absent on reads. */
  audit?: string;
  handler: (ctx: Ctx) => Promise<void>;
}

export interface CompiledRoute extends Route {
  re: RegExp;
  names: string[];
}

export function compile(routes: Route[]): CompiledRoute[] {
  return routes.map((r) => {
    const names: string[] = [];
    const src = r.path
      .replace(/[.*+?^$()|[\]\\]/g, '\\$&')
      .replace(/\{(\w+)\}/g, (_m, n: string) => {
        names.push(n);
        return '([^/]+)';
      });
    return { ...r, re: new RegExp(`^${src}$`), names };
  });
}

export function match(
  routes: CompiledRoute[],
  method: string,
  pathname: string,
): { route: CompiledRoute; params: Record<string, string> } | { methods: string[] } | null {
  const methods: string[] = [];
  for (const r of routes) {
    const m = r.re.exec(pathname);
    if (!m) continue;
    if (r.method !== method) {
      methods.push(r.method);
      continue;
    }
    const params: Record<string, string> = {};
    r.names.forEach((n, i) => {
      try {
        params[n] = decodeURIComponent(m[i + 1]!);
      } catch {
        // A malformed %-escape is the client's error (400), not an internal one (500).
        throw new IsolaError('E_INVALID_ARGUMENT', `malformed percent-encoding in ${pathname}`);
      }
    });
    return { route: r, params };
  }
  return methods.length > 0 ? { methods } : null;
}
