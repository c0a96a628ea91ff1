// API keys. Admin keys make keys for any tenant (or other admin keys); tenant keys make and
// revoke keys of their own tenant. The key text is in the creation response only.

import { IsolaError } from '../../errors.js';
import { MAX_JSON_BYTES, parseJson, readBody, sendJson } from '../http.js';
import type { Route } from '../router.js';
import { createKeyInput } from '../schemas.js';
import { keyView } from '../views.js';

export const keyRoutes: Route[] = [
  {
    method: 'POST',
    path: '/v1/keys',
    access: 'any',
    audit: 'key.create',
    handler: async (ctx) => {
      const body = parseJson(await readBody(ctx.req, MAX_JSON_BYTES), createKeyInput);
      const p = ctx.platform;
      ctx.audit!.tenant = body.tenant ?? null;
      const tenant =
        ctx.principal.role === 'tenant' || body.tenant !== undefined
          ? await p.tenantFor(ctx.principal, body.tenant)
          : null;
      const { key, record } = await p.createKey(tenant, body.description ?? '');
      // The key's id only: its text is in this response and nowhere else.
      ctx.audit!.tenant = tenant?.name ?? null;
      ctx.audit!.target = record.id;
      ctx.audit!.details = { role: record.role };
      sendJson(ctx.res, 201, { ...keyView(record, tenant?.name ?? null), key });
    },
  },
  {
    method: 'GET',
    path: '/v1/keys',
    access: 'any',
    handler: async (ctx) => {
      const p = ctx.platform;
      const names = new Map((await p.store.listTenants()).map((t) => [t.id, t.name]));
      // A tenant key naming another tenant gets 404, as everywhere (not its own list).
      const named = ctx.query.get('tenant') || undefined;
      const tenantId =
        ctx.principal.role === 'tenant' || named
          ? (await p.tenantFor(ctx.principal, named)).id
          : null;
      const keys = tenantId ? await p.store.listKeys(tenantId) : await p.store.listKeys(null);
      sendJson(ctx.res, 200, {
        keys: keys.map((k) => keyView(k, k.tenantId ? (names.get(k.tenantId) ?? null) : null)),
      });
    },
  },
  {
    method: 'DELETE',
    path: '/v1/keys/{id}',
    access: 'any',
    audit: 'key.revoke',
    handler: async (ctx) => {
      if (ctx.params.id === ctx.principal.keyId && ctx.query.get('self') !== '1') {
        throw new IsolaError(
          'E_INVALID_ARGUMENT',
          'this is the key making the request; add ?self=1 to revoke it anyway',
        );
      }
      const k = await ctx.platform.revokeKey(ctx.principal, ctx.params.id!);
      const t = k.tenantId ? await ctx.platform.store.getTenant(k.tenantId) : null;
      ctx.audit!.tenant = t?.name ?? null;
      ctx.audit!.details = { role: k.role };
      sendJson(ctx.res, 200, { ok: true });
    },
  },
];
