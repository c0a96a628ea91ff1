// GET /v1/audit: the audit log of state-changing calls (admin keys only), newest first, with
// filters and a cursor: `next` is the `before` of the following (older) page.

import { IsolaError } from '../../errors.js';
import type { AuditRecord } from '../../platform/store/types.js';
import { sendJson } from '../http.js';
import type { Ctx, Route } from '../router.js';
import { parseSince } from './usage.js';

export const AUDIT_PAGE_DEFAULT = 100;
export const AUDIT_PAGE_MAX = 1000;

function positiveInt(ctx: Ctx, name: string, max: number): number | undefined {
  const v = ctx.query.get(name);
  if (v === null || v === '') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > max)
    throw new IsolaError('E_INVALID_ARGUMENT', `${name} must be an integer in [1, ${max}]`);
  return n;
}

const text = (ctx: Ctx, name: string): string | undefined => ctx.query.get(name) || undefined;

export const auditView = (r: AuditRecord) => ({
  seq: r.seq,
  ts: r.ts,
  keyId: r.keyId,
  role: r.role,
  tenant: r.tenant,
  action: r.action,
  target: r.target,
  requestId: r.requestId,
  source: r.source,
  result: r.result,
  status: r.status,
  details: r.details,
});

export const auditRoutes: Route[] = [
  {
    method: 'GET',
    path: '/v1/audit',
    access: 'admin',
    handler: async (ctx) => {
      const limit = positiveInt(ctx, 'limit', AUDIT_PAGE_MAX) ?? AUDIT_PAGE_DEFAULT;
      const before = positiveInt(ctx, 'before', Number.MAX_SAFE_INTEGER);
      const since = parseSince(ctx.query.get('since'));
      const until = parseSince(ctx.query.get('until'));
      // Calls answered just before this one are in the log.
      await ctx.platform.audit.flush();
      const rows = await ctx.platform.store.listAudit({
        limit,
        ...(before !== undefined ? { beforeSeq: before } : {}),
        ...(since !== null ? { since } : {}),
        ...(until !== null ? { until } : {}),
        ...(text(ctx, 'tenant') ? { tenant: text(ctx, 'tenant')! } : {}),
        ...(text(ctx, 'action') ? { action: text(ctx, 'action')! } : {}),
        ...(text(ctx, 'key') ? { keyId: text(ctx, 'key')! } : {}),
      });
      sendJson(ctx.res, 200, {
        entries: rows.map(auditView),
        next: rows.length === limit ? rows.at(-1)!.seq : null,
      });
    },
  },
];
