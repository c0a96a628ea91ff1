// Usage report from the metering records: invocations, errors, time and GB-seconds per tenant
// and function. Tenant keys see their own tenant; admin keys all, or one with ?tenant=.

import { IsolaError } from '../../errors.js';
import { sendJson } from '../http.js';
import type { Route } from '../router.js';

/** `since`: epoch ms, an ISO date, or a duration back from now (90s, 15m, 24h, 7d). */
export function parseSince(v: string | null, now = Date.now()): number | null {
  if (v === null || v === '') return null;
  const d = /^(\d+)(s|m|h|d)$/.exec(v);
  const bad = () =>
    new IsolaError(
      'E_INVALID_ARGUMENT',
      `since: "${v.slice(0, 40)}" is not a time (epoch ms, ISO date, or 15m/24h/7d)`,
    );
  // Times a Date can hold (about 275,000 years either side of 1970); anything beyond is no time.
  const inRange = (t: number) => Number.isFinite(t) && Math.abs(t) <= 8.64e15;
  if (d) {
    const t =
      now - Number(d[1]) * { s: 1e3, m: 6e4, h: 36e5, d: 864e5 }[d[2] as 's' | 'm' | 'h' | 'd'];
    if (!inRange(t)) throw bad();
    return t;
  }
  if (/^\d+$/.test(v)) {
    if (!inRange(Number(v))) throw bad();
    return Number(v);
  }
  const t = Date.parse(v);
  if (Number.isNaN(t))
    throw new IsolaError(
      'E_INVALID_ARGUMENT',
      `since: "${v.slice(0, 40)}" is not a time (epoch ms, ISO date, or 15m/24h/7d)`,
    );
  return t;
}

export const usageRoutes: Route[] = [
  {
    method: 'GET',
    path: '/v1/usage',
    access: 'any',
    handler: async (ctx) => {
      const p = ctx.platform;
      const since = parseSince(ctx.query.get('since'));
      // A tenant key naming another tenant gets 404, as everywhere (not its own usage).
      const named = ctx.query.get('tenant') || undefined;
      const tenantId =
        ctx.principal.role === 'tenant' || named
          ? (await p.tenantFor(ctx.principal, named)).id
          : undefined;
      const rows = await p.store.usage({
        ...(tenantId ? { tenantId } : {}),
        ...(since !== null ? { since } : {}),
      });
      const out = rows.map((r) => ({
        tenant: r.tenantName,
        function: r.functionName,
        invocations: r.invocations,
        errors: r.errors,
        durationMs: r.durationMs,
        gbSeconds: r.gbSeconds,
      }));
      sendJson(ctx.res, 200, {
        since,
        rows: out,
        totals: {
          invocations: out.reduce((a, r) => a + r.invocations, 0),
          gbSeconds: out.reduce((a, r) => a + r.gbSeconds, 0),
          durationMs: out.reduce((a, r) => a + r.durationMs, 0),
        },
      });
    },
  },
  {
    method: 'GET',
    path: '/v1/instances',
    access: 'any',
    handler: async (ctx) => {
      const p = ctx.platform;
      const tenantId = ctx.principal.role === 'tenant' ? ctx.principal.tenantId : null;
      const now = Date.now();
      const list = [];
      for (const { spec, instance } of p.pool.instances()) {
        if (tenantId && spec.tenantId !== tenantId) continue;
        const f = await p.store.getFunctionById(spec.functionId);
        list.push({
          id: instance.id,
          function: f?.name ?? '(deleted)',
          version: spec.version,
          state: instance.state,
          inflight: instance.inflight,
          memoryMiB: spec.memoryMiB,
          startMs: Math.round(instance.startMs),
          idleMs: instance.inflight > 0 ? 0 : now - instance.lastUsed,
        });
      }
      sendJson(ctx.res, 200, { instances: list });
    },
  },
];
