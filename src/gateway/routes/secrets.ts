// Secrets: write-only values, encrypted at rest, given to new instances as environment
// variables; listed by name only, never returned, redacted from logs.

import { IsolaError } from '../../errors.js';
import { ENV_NAME_RE } from '../../platform/config.js';
import { MAX_JSON_BYTES, parseJson, readBody, sendJson } from '../http.js';
import type { Ctx, Route } from '../router.js';
import { putSecretInput } from '../schemas.js';
import { tenantOf } from '../views.js';

function secretName(ctx: Ctx): string {
  const s = ctx.params.secret!;
  if (!ENV_NAME_RE.test(s) || s.startsWith('ISOLA_')) {
    throw new IsolaError(
      'E_INVALID_ARGUMENT',
      `invalid secret name "${s.slice(0, 80)}": letters, digits and _ (ISOLA_* is reserved)`,
    );
  }
  return s;
}

export const secretRoutes: Route[] = [
  {
    method: 'GET',
    path: '/v1/functions/{name}/secrets',
    access: 'any',
    handler: async (ctx) => {
      const t = await tenantOf(ctx);
      const f = await ctx.platform.getFunction(t, ctx.params.name!);
      const list = await ctx.platform.store.listSecrets(f.id);
      sendJson(ctx.res, 200, {
        secrets: list.map((s) => ({ name: s.name, updatedAt: s.updatedAt })),
      });
    },
  },
  {
    method: 'PUT',
    path: '/v1/functions/{name}/secrets/{secret}',
    access: 'any',
    // The record names the secret (the target); its value is never recorded.
    audit: 'secret.put',
    handler: async (ctx) => {
      const t = await tenantOf(ctx);
      await ctx.platform.getFunction(t, ctx.params.name!);
      const name = secretName(ctx);
      const body = parseJson(await readBody(ctx.req, MAX_JSON_BYTES), putSecretInput);
      await ctx.platform.putSecret(t, ctx.params.name!, name, body.value);
      sendJson(ctx.res, 200, { ok: true });
    },
  },
  {
    method: 'DELETE',
    path: '/v1/functions/{name}/secrets/{secret}',
    access: 'any',
    audit: 'secret.delete',
    handler: async (ctx) => {
      const t = await tenantOf(ctx);
      const f = await ctx.platform.getFunction(t, ctx.params.name!);
      if (!(await ctx.platform.store.deleteSecret(f.id, secretName(ctx))))
        throw new IsolaError('E_NOT_FOUND', `no secret named ${ctx.params.secret}`);
      ctx.platform.prewarmSoon(f);
      sendJson(ctx.res, 200, { ok: true });
    },
  },
];
