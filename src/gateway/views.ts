// Records to API shapes (what the schemas in schemas.ts describe). Secrets appear by name only.

import type {
  AliasRecord,
  ApiKey,
  FunctionRecord,
  Tenant,
  VersionRecord,
} from '../platform/store/types.js';
import type { Ctx } from './router.js';

export const tenantView = (t: Tenant) => ({
  id: t.id,
  name: t.name,
  createdAt: t.createdAt,
  maxConcurrency: t.maxConcurrency,
  maxMemoryMiB: t.maxMemoryMiB,
});

export const keyView = (k: ApiKey, tenantName: string | null) => ({
  id: k.id,
  role: k.role,
  tenant: tenantName,
  description: k.description,
  createdAt: k.createdAt,
  revokedAt: k.revokedAt,
});

export const versionView = (v: VersionRecord) => ({
  version: v.version,
  runtime: v.runtime,
  source: v.source,
  config: v.config,
  description: v.description,
  createdAt: v.createdAt,
});

export const aliasView = (a: AliasRecord) => ({
  name: a.name,
  version: a.version,
  additionalVersion: a.additionalVersion,
  additionalWeight: a.additionalWeight,
  updatedAt: a.updatedAt,
});

export async function functionView(ctx: Ctx, f: FunctionRecord) {
  const store = ctx.platform.store;
  const [aliases, latest, secrets] = await Promise.all([
    store.listAliases(f.id),
    f.latestVersion > 0 ? store.getVersion(f.id, f.latestVersion) : Promise.resolve(null),
    store.listSecrets(f.id),
  ]);
  return {
    name: f.name,
    runtime: f.runtime,
    createdAt: f.createdAt,
    updatedAt: f.updatedAt,
    latestVersion: f.latestVersion,
    aliases: aliases.map(aliasView),
    config: latest?.config ?? null,
    secrets: secrets.map((s) => s.name),
    snapshot: latest ? ctx.platform.snapshotState(f, latest) : 'none',
  };
}

/**
 * The tenant a request acts for (admin keys name it with X-Isola-Tenant or ?tenant=); it is
 * also the tenant of the call's audit record.
 */
export async function tenantOf(ctx: Ctx) {
  const h = ctx.req.headers['x-isola-tenant'];
  const name = (Array.isArray(h) ? h[0] : h) ?? ctx.query.get('tenant') ?? undefined;
  if (ctx.audit && name !== undefined) ctx.audit.tenant = name;
  const t = await ctx.platform.tenantFor(ctx.principal, name);
  if (ctx.audit) ctx.audit.tenant = t.name;
  return t;
}
