// Tenants: admin keys only.

import { IsolaError } from '../../errors.js';
import { MAX_JSON_BYTES, parseJson, readBody, sendJson } from '../http.js';
import type { Route } from '../router.js';
import { createTenantInput, tenantLimitsInput } from '../schemas.js';
import { tenantView } from '../views.js';

export const tenantRoutes: Route[] = [
  {
    method: 'POST',
    path: '/v1/tenants',
    access: 'admin',
    audit: 'tenant.create',
    handler: async (ctx) => {
      const body = parseJson(await readBody(ctx.req, MAX_JSON_BYTES), createTenantInput);
      const { name, ...limits } = body;
      ctx.audit!.tenant = ctx.audit!.target = name;
      ctx.audit!.details = { limits };
      const t = await ctx.platform.createTenant(name, limits);
      sendJson(ctx.res, 201, tenantView(t));
    },
  },
  {
    method: 'GET',
    path: '/v1/tenants',
    access: 'admin',
    handler: async (ctx) => {
      const all = await ctx.platform.store.listTenants();
      sendJson(ctx.res, 200, { tenants: all.map(tenantView) });
    },
  },
  {
    method: 'GET',
    path: '/v1/tenants/{tenant}',
    access: 'admin',
    handler: async (ctx) => {
      const t = await ctx.platform.store.getTenantByName(ctx.params.tenant!);
      if (!t) throw new IsolaError('E_NOT_FOUND', `no tenant named ${ctx.params.tenant}`);
      sendJson(ctx.res, 200, tenantView(t));
    },
  },
  {
    method: 'PATCH',
    path: '/v1/tenants/{tenant}',
    access: 'admin',
    audit: 'tenant.update',
    handler: async (ctx) => {
      const limits = parseJson(await readBody(ctx.req, MAX_JSON_BYTES), tenantLimitsInput);
      ctx.audit!.details = { limits };
      sendJson(
        ctx.res,
        200,
        tenantView(await ctx.platform.updateTenant(ctx.params.tenant!, limits)),
      );
    },
  },
  {
    method: 'DELETE',
    path: '/v1/tenants/{tenant}',
    access: 'admin',
    audit: 'tenant.delete',
    handler: async (ctx) => {
      await ctx.platform.deleteTenant(ctx.params.tenant!);
      sendJson(ctx.res, 200, { ok: true });
    },
  },
];
