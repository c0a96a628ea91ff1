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
    handler: async (ctx) => {
      const body = parseJson(await readBody(ctx.req, MAX_JSON_BYTES), createKeyInput);
      const p = ctx.platform;
      const tenant =
        ctx.principal.role === 'tenant' || body.tenant !== undefined
          ? await p.tenantFor(ctx.principal, body.tenant)
          : null;
      const { key, record } = await p.createKey(tenant, body.description ?? '');
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
      let tenantId: string | null = null;
      if (ctx.principal.role === 'tenant') tenantId = ctx.principal.tenantId;
      else if (ctx.query.get('tenant'))
        tenantId = (await p.tenantFor(ctx.principal, ctx.query.get('tenant')!)).id;
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
    handler: async (ctx) => {
      if (ctx.params.id === ctx.principal.keyId && ctx.query.get('self') !== '1') {
        throw new IsolaError(
          'E_INVALID_ARGUMENT',
          'this is the key making the request; add ?self=1 to revoke it anyway',
        );
      }
      await ctx.platform.revokeKey(ctx.principal, ctx.params.id!);
      sendJson(ctx.res, 200, { ok: true });
    },
  },
];
