// Aliases: names that point at a version, or split traffic between two by weight. Rollback is
// pointing `live` at an earlier version.

import { IsolaError } from '../../errors.js';
import { nameSchema } from '../../platform/config.js';
import { MAX_JSON_BYTES, parseJson, readBody, sendJson } from '../http.js';
import type { Ctx, Route } from '../router.js';
import { putAliasInput } from '../schemas.js';
import { aliasView, tenantOf } from '../views.js';

function aliasName(ctx: Ctx): string {
  const a = ctx.params.alias!;
  if (!nameSchema.safeParse(a).success || /^\d+$/.test(a)) {
    throw new IsolaError('E_INVALID_ARGUMENT', `invalid alias name "${a.slice(0, 80)}"`);
  }
  return a;
}

export const aliasRoutes: Route[] = [
  {
    method: 'GET',
    path: '/v1/functions/{name}/aliases',
    access: 'any',
    handler: async (ctx) => {
      const t = await tenantOf(ctx);
      const f = await ctx.platform.getFunction(t, ctx.params.name!);
      sendJson(ctx.res, 200, {
        aliases: (await ctx.platform.store.listAliases(f.id)).map(aliasView),
      });
    },
  },
  {
    method: 'GET',
    path: '/v1/functions/{name}/aliases/{alias}',
    access: 'any',
    handler: async (ctx) => {
      const t = await tenantOf(ctx);
      const f = await ctx.platform.getFunction(t, ctx.params.name!);
      const a = await ctx.platform.store.getAlias(f.id, aliasName(ctx));
      if (!a) throw new IsolaError('E_NOT_FOUND', `no alias named ${ctx.params.alias}`);
      sendJson(ctx.res, 200, aliasView(a));
    },
  },
  {
    method: 'PUT',
    path: '/v1/functions/{name}/aliases/{alias}',
    access: 'any',
    audit: 'alias.put',
    handler: async (ctx) => {
      const t = await tenantOf(ctx);
      // Not found before bad input: another tenant learns nothing from validation errors.
      await ctx.platform.getFunction(t, ctx.params.name!);
      const body = parseJson(await readBody(ctx.req, MAX_JSON_BYTES), putAliasInput);
      ctx.audit!.details = { ...body };
      const a = await ctx.platform.putAlias(t, ctx.params.name!, aliasName(ctx), body);
      sendJson(ctx.res, 200, aliasView(a));
    },
  },
  {
    method: 'DELETE',
    path: '/v1/functions/{name}/aliases/{alias}',
    access: 'any',
    audit: 'alias.delete',
    handler: async (ctx) => {
      const t = await tenantOf(ctx);
      const f = await ctx.platform.getFunction(t, ctx.params.name!);
      if (!(await ctx.platform.store.deleteAlias(f.id, aliasName(ctx))))
        throw new IsolaError('E_NOT_FOUND', `no alias named ${ctx.params.alias}`);
      ctx.platform.prewarmSoon(f);
      sendJson(ctx.res, 200, { ok: true });
    },
  },
];
