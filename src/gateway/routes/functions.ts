// Functions and their versions. Deploy (POST .../versions) takes a code bundle (zip, tar or
// tar.gz body; settings in the X-Isola-Config header as JSON) or JSON {image, ...settings};
// it creates the function on first deploy and moves the `live` alias unless ?promote= says
// otherwise (an empty value moves nothing).

import { IsolaError } from '../../errors.js';
import { configPatchSchema, nameSchema } from '../../platform/config.js';
import { checkRuntime } from '../../platform/platform.js';
import type { VersionRecord } from '../../platform/store/types.js';
import { MAX_JSON_BYTES, MAX_UPLOAD_BYTES, parseJson, readBody, sendJson } from '../http.js';
import type { Ctx, Route } from '../router.js';
import { createFunctionInput, deployImageInput } from '../schemas.js';
import { functionView, tenantOf, versionView } from '../views.js';

function fnName(ctx: Ctx): string {
  const n = ctx.params.name!;
  const r = nameSchema.safeParse(n);
  if (!r.success)
    throw new IsolaError(
      'E_INVALID_ARGUMENT',
      `invalid function name "${n.slice(0, 80)}": ${r.error.issues[0]?.message}`,
    );
  return n;
}

function promoteList(ctx: Ctx): string[] | undefined {
  const p = ctx.query.get('promote');
  if (p === null) return undefined;
  return p.split(',').filter(Boolean);
}

export const functionRoutes: Route[] = [
  {
    method: 'GET',
    path: '/v1/functions',
    access: 'any',
    handler: async (ctx) => {
      const t = await tenantOf(ctx);
      const fns = await ctx.platform.store.listFunctions(t.id);
      sendJson(ctx.res, 200, {
        functions: await Promise.all(fns.map((f) => functionView(ctx, f))),
      });
    },
  },
  {
    method: 'POST',
    path: '/v1/functions',
    access: 'any',
    audit: 'function.create',
    handler: async (ctx) => {
      const t = await tenantOf(ctx);
      const body = parseJson(await readBody(ctx.req, MAX_JSON_BYTES), createFunctionInput);
      ctx.audit!.target = body.name;
      checkRuntime(body.runtime);
      ctx.audit!.details = { runtime: body.runtime };
      const f = await ctx.platform.createFunction(t, body.name, body.runtime);
      sendJson(ctx.res, 201, await functionView(ctx, f));
    },
  },
  {
    method: 'GET',
    path: '/v1/functions/{name}',
    access: 'any',
    handler: async (ctx) => {
      const t = await tenantOf(ctx);
      sendJson(
        ctx.res,
        200,
        await functionView(ctx, await ctx.platform.getFunction(t, fnName(ctx))),
      );
    },
  },
  {
    method: 'PATCH',
    path: '/v1/functions/{name}',
    access: 'any',
    audit: 'function.update',
    handler: async (ctx) => {
      const t = await tenantOf(ctx);
      await ctx.platform.getFunction(t, fnName(ctx));
      const patch = parseJson(await readBody(ctx.req, MAX_JSON_BYTES), configPatchSchema);
      // Which settings changed, not their values (environment values may be sensitive).
      ctx.audit!.details = { fields: Object.keys(patch).sort() };
      const v = await ctx.platform.updateConfig(t, fnName(ctx), patch);
      ctx.audit!.details.version = v.version;
      sendJson(ctx.res, 200, { function: ctx.params.name!, version: versionView(v) });
    },
  },
  {
    method: 'DELETE',
    path: '/v1/functions/{name}',
    access: 'any',
    audit: 'function.delete',
    handler: async (ctx) => {
      const t = await tenantOf(ctx);
      await ctx.platform.deleteFunction(t, fnName(ctx));
      sendJson(ctx.res, 200, { ok: true });
    },
  },
  {
    method: 'GET',
    path: '/v1/functions/{name}/versions',
    access: 'any',
    handler: async (ctx) => {
      const t = await tenantOf(ctx);
      const f = await ctx.platform.getFunction(t, fnName(ctx));
      const vs = await ctx.platform.store.listVersions(f.id);
      sendJson(ctx.res, 200, { versions: vs.map(versionView) });
    },
  },
  {
    method: 'GET',
    path: '/v1/functions/{name}/versions/{version}',
    access: 'any',
    handler: async (ctx) => {
      const t = await tenantOf(ctx);
      const f = await ctx.platform.getFunction(t, fnName(ctx));
      const n = Number(ctx.params.version);
      if (!Number.isInteger(n) || n < 1)
        throw new IsolaError('E_INVALID_ARGUMENT', 'version must be a positive integer');
      sendJson(ctx.res, 200, versionView(await ctx.platform.getVersion(f, n)));
    },
  },
  {
    method: 'POST',
    path: '/v1/functions/{name}/versions',
    access: 'any',
    audit: 'function.deploy',
    handler: async (ctx) => {
      const t = await tenantOf(ctx);
      const name = fnName(ctx);
      const type = String(ctx.req.headers['content-type'] ?? '')
        .split(';')[0]!
        .trim();
      const promote = promoteList(ctx);
      const opts = promote === undefined ? {} : { promote };
      let r: { fn: { name: string }; version: VersionRecord };
      if (type === 'application/json') {
        const body = parseJson(await readBody(ctx.req, MAX_JSON_BYTES), deployImageInput);
        const runtime = ctx.query.get('runtime');
        if (runtime !== null) checkRuntime(runtime);
        const { image, description, ...patch } = body;
        r = await ctx.platform.deployImage(t, name, image, patch, {
          ...opts,
          ...(description ? { description } : {}),
        });
      } else {
        const runtime = ctx.query.get('runtime') ?? 'nodejs20';
        checkRuntime(runtime);
        if (runtime !== 'nodejs20')
          throw new IsolaError(
            'E_INVALID_ARGUMENT',
            'an image deploy is a JSON body {"image": "..."}',
          );
        const header = ctx.req.headers['x-isola-config'];
        const patch = header ? parseJson(Buffer.from(String(header)), configPatchSchema) : {};
        const data = await readBody(ctx.req, MAX_UPLOAD_BYTES);
        if (data.length === 0)
          throw new IsolaError(
            'E_BAD_BUNDLE',
            'empty upload: send a zip, tar or tar.gz of the bundle',
          );
        const description = ctx.query.get('description') ?? undefined;
        r = await ctx.platform.deployBundle(t, name, { kind: 'archive', data }, patch, {
          ...opts,
          ...(description ? { description } : {}),
        });
      }
      ctx.audit!.details = {
        version: r.version.version,
        source:
          r.version.source.kind === 'bundle' ? r.version.source.digest : r.version.source.image,
      };
      sendJson(ctx.res, 201, { function: r.fn.name, version: versionView(r.version) });
    },
  },
];
