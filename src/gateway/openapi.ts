// The OpenAPI 3.0 document of the /v1 API, generated from the route table (server.ts) and the
// zod schemas (schemas.ts), so the contract cannot drift from the code. It is committed as
// src/gateway/openapi.json (node scripts/gen-openapi.mjs) and served at /v1/openapi.json;
// a test checks the file is current, and the API tests validate responses against it.

import type { ZodTypeAny } from 'zod';
import { z } from 'zod';
import { zodToJsonSchema } from 'zod-to-json-schema';
import { configPatchSchema } from '../platform/config.js';
import type { Route } from './router.js';
import * as S from './schemas.js';

interface Doc {
  summary: string;
  request?: ZodTypeAny | 'bundle' | 'event';
  /** Success status and schema (null: no JSON body, e.g. metrics text). */
  ok: [number, ZodTypeAny | null];
  query?: Array<[name: string, description: string]>;
}

const list = <T extends ZodTypeAny>(key: string, item: T) => z.object({ [key]: z.array(item) });

/** One entry per route in the table; a unit test fails when a route has none. */
export const ROUTE_DOCS: Record<string, Doc> = {
  'GET /v1/health': { summary: 'Server health (no key needed).', ok: [200, S.health] },
  'GET /v1/openapi.json': { summary: 'This document.', ok: [200, null] },
  'GET /metrics': { summary: 'Prometheus metrics (admin key).', ok: [200, null] },
  'POST /v1/tenants': {
    summary: 'Create a tenant (admin).',
    request: S.createTenantInput,
    ok: [201, S.tenant],
  },
  'GET /v1/tenants': { summary: 'List tenants (admin).', ok: [200, list('tenants', S.tenant)] },
  'GET /v1/tenants/{tenant}': { summary: 'Get a tenant (admin).', ok: [200, S.tenant] },
  'PATCH /v1/tenants/{tenant}': {
    summary: "Change a tenant's limits (admin).",
    request: S.tenantLimitsInput,
    ok: [200, S.tenant],
  },
  'DELETE /v1/tenants/{tenant}': {
    summary: 'Delete a tenant and everything it owns (admin).',
    ok: [200, S.okBody],
  },
  'POST /v1/keys': {
    summary: 'Create an API key; the key text is in this response only.',
    request: S.createKeyInput,
    ok: [201, S.createdKey],
  },
  'GET /v1/keys': {
    summary: 'List keys (never their secrets).',
    ok: [200, list('keys', S.apiKey)],
    query: [['tenant', 'admin keys: one tenant']],
  },
  'DELETE /v1/keys/{id}': {
    summary: 'Revoke a key.',
    ok: [200, S.okBody],
    query: [['self', '1 to revoke the key making the request']],
  },
  'GET /v1/functions': {
    summary: "List the tenant's functions.",
    ok: [200, list('functions', S.fn)],
  },
  'POST /v1/functions': {
    summary: 'Create a function without code (deploy adds versions).',
    request: S.createFunctionInput,
    ok: [201, S.fn],
  },
  'GET /v1/functions/{name}': {
    summary: 'Get a function (secrets by name only).',
    ok: [200, S.fn],
  },
  'PATCH /v1/functions/{name}': {
    summary:
      'Change settings (env, limits): makes a new version with the same code and moves live.',
    request: configPatchSchema,
    ok: [200, S.deployResult],
  },
  'DELETE /v1/functions/{name}': {
    summary: 'Delete a function, its versions, aliases, secrets and logs.',
    ok: [200, S.okBody],
  },
  'GET /v1/functions/{name}/versions': {
    summary: 'List versions.',
    ok: [200, list('versions', S.version)],
  },
  'GET /v1/functions/{name}/versions/{version}': {
    summary: 'Get a version.',
    ok: [200, S.version],
  },
  'POST /v1/functions/{name}/versions': {
    summary:
      'Deploy a new version: a Node.js bundle (zip, tar or tar.gz body; settings as JSON in X-Isola-Config) or {"image": REF} (JSON). Creates the function on first deploy.',
    request: 'bundle',
    ok: [201, S.deployResult],
    query: [
      [
        'promote',
        'aliases to move to the new version, comma-separated (default live; empty: none)',
      ],
      ['runtime', 'nodejs20 or image'],
      ['description', 'version description (bundle uploads)'],
    ],
  },
  'GET /v1/functions/{name}/aliases': {
    summary: 'List aliases.',
    ok: [200, list('aliases', S.alias)],
  },
  'GET /v1/functions/{name}/aliases/{alias}': { summary: 'Get an alias.', ok: [200, S.alias] },
  'PUT /v1/functions/{name}/aliases/{alias}': {
    summary:
      'Point an alias at a version, or split traffic between two (rollback: point live back).',
    request: S.putAliasInput,
    ok: [200, S.alias],
  },
  'DELETE /v1/functions/{name}/aliases/{alias}': {
    summary: 'Delete an alias.',
    ok: [200, S.okBody],
  },
  'GET /v1/functions/{name}/secrets': {
    summary: 'List secret names (values are never returned).',
    ok: [200, list('secrets', z.object({ name: z.string(), updatedAt: z.number() }))],
  },
  'PUT /v1/functions/{name}/secrets/{secret}': {
    summary: 'Set a secret (encrypted at rest; new instances get it as an environment variable).',
    request: S.putSecretInput,
    ok: [200, S.okBody],
  },
  'DELETE /v1/functions/{name}/secrets/{secret}': {
    summary: 'Delete a secret.',
    ok: [200, S.okBody],
  },
  'POST /v1/functions/{name}/invoke': {
    summary:
      'Invoke with a JSON event (max 6 MiB); name may be NAME:VERSION or NAME:ALIAS. Headers: X-Isola-Start (warm|restored|booted), X-Isola-Start-Ms, X-Isola-Version.',
    request: 'event',
    ok: [200, S.invokeResult],
  },
  'GET /v1/functions/{name}/logs': {
    summary: 'Function output, each line with its request id; follow=1 streams NDJSON.',
    ok: [200, S.logsResult],
    query: [
      ['request', 'only this request id'],
      ['after', 'lines after this sequence number'],
      ['limit', 'at most this many lines'],
      ['follow', '1: keep streaming new lines (application/x-ndjson)'],
    ],
  },
  'GET /v1/functions/{name}/invocations': {
    summary: 'Metering records of recent invocations.',
    ok: [200, list('invocations', S.invocation)],
    query: [['limit', 'at most this many']],
  },
  'GET /v1/usage': {
    summary: 'Usage per tenant and function: invocations, errors, duration, GB-seconds.',
    ok: [200, S.usageResult],
    query: [
      ['tenant', 'admin keys: one tenant'],
      ['since', 'epoch ms, ISO date, or 15m/24h/7d'],
    ],
  },
  'GET /v1/instances': {
    summary: 'Running function instances (tenant keys: their own).',
    ok: [200, list('instances', S.instanceInfo)],
  },
  'GET /v1/audit': {
    summary:
      'Audit log of state-changing calls (admin): tenants, keys, functions, deploys, aliases, secrets (names only); time, key id, action, target, request id, source address, result. Newest first; next is the before of the following page.',
    ok: [200, S.auditResult],
    query: [
      ['tenant', 'only calls on or for this tenant'],
      ['action', 'only this action, e.g. tenant.create, key.revoke, secret.put'],
      ['key', 'only calls made with this key id'],
      ['since', 'epoch ms, ISO date, or 15m/24h/7d'],
      ['until', 'epoch ms, ISO date, or 15m/24h/7d'],
      ['before', 'only records with a smaller seq (paging)'],
      ['limit', 'at most this many (default 100, max 1000)'],
    ],
  },
};

const schema = (s: ZodTypeAny) =>
  zodToJsonSchema(s, { target: 'openApi3', $refStrategy: 'none' }) as Record<string, unknown>;

const ERROR_STATUSES: Record<string, string> = {
  '400': 'Invalid input (E_INVALID_ARGUMENT, E_JSON_TOO_DEEP, E_BAD_BUNDLE, E_FUNCTION_RUNTIME).',
  '401': 'No key, unknown key or revoked key (E_UNAUTHORIZED).',
  '403': 'A tenant key on an admin route (E_FORBIDDEN).',
  '404': "No such resource, or another tenant's (E_NOT_FOUND).",
  '409': 'Already exists (E_CONFLICT).',
  '413': 'Body over the limit (E_PAYLOAD_TOO_LARGE).',
  '414': 'URL over the limit (E_URI_TOO_LONG).',
  '429':
    'A limit is reached; see Retry-After: the key over its request rate or its address over its rate of failed authentications (E_RATE_LIMITED), or a concurrency, instance or memory limit (E_THROTTLED).',
  '431': 'Request line and headers over the limit (E_HEADERS_TOO_LARGE).',
  '500': 'Handler error (E_FUNCTION_ERROR) or internal error.',
  '502': 'Function crashed, ran out of memory or failed to load.',
  '503': 'No instance could start, or shutting down.',
  '504': 'Function timeout (E_FUNCTION_TIMEOUT).',
};

const errorRef = { $ref: '#/components/schemas/Error' };

export function buildOpenApi(routes: Route[]): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const id = `${r.method} ${r.path}`;
    const d = ROUTE_DOCS[id];
    if (!d) throw new Error(`route ${id} has no entry in ROUTE_DOCS`);
    const params = [...r.path.matchAll(/\{(\w+)\}/g)].map((m) => ({
      name: m[1],
      in: 'path',
      required: true,
      schema: { type: 'string' },
    }));
    const query = (d.query ?? []).map(([name, description]) => ({
      name,
      in: 'query',
      required: false,
      description,
      schema: { type: 'string' },
    }));
    const op: Record<string, unknown> = {
      operationId: `${r.method.toLowerCase()}${r.path.replace(/[{}]/g, '').replace(/[^a-zA-Z0-9]+(.)?/g, (_m, c: string | undefined) => (c ?? '').toUpperCase())}`,
      summary: d.summary,
      security: r.access === 'public' ? [] : [{ bearer: [] }],
      'x-isola-access': r.access,
      parameters: [...params, ...query],
      responses: {
        [String(d.ok[0])]: d.ok[1]
          ? {
              description: 'Success.',
              content: { 'application/json': { schema: schema(d.ok[1]) } },
            }
          : { description: 'Success.' },
        ...Object.fromEntries(
          Object.keys(ERROR_STATUSES).map((code) => [
            code,
            { $ref: `#/components/responses/E${code}` },
          ]),
        ),
      },
    };
    if (d.request === 'bundle') {
      op.requestBody = {
        required: true,
        content: {
          'application/octet-stream': { schema: { type: 'string', format: 'binary' } },
          'application/json': { schema: schema(S.deployImageInput) },
        },
      };
    } else if (d.request === 'event') {
      op.requestBody = { required: false, content: { 'application/json': { schema: {} } } };
    } else if (d.request) {
      op.requestBody = {
        required: true,
        content: { 'application/json': { schema: schema(d.request) } },
      };
    }
    paths[r.path] ??= {};
    paths[r.path]![r.method.toLowerCase()] = op;
  }
  return {
    openapi: '3.0.3',
    info: {
      title: 'isola',
      version: '1',
      description:
        "Multi-tenant serverless platform where every function instance runs in its own micro-VM. Keys travel as Authorization: Bearer KEY; admin keys act for a tenant with X-Isola-Tenant. Every operation but health and this document needs a key (x-isola-access: admin or any); another tenant's resources are 404. Each key has a request rate (429 E_RATE_LIMITED with Retry-After), and so has each address for failed authentications. State-changing calls are in the audit log (GET /v1/audit). HTTP routing to functions is ANY /{tenant}/{function}/... (outside /v1).",
    },
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      schemas: { Error: schema(S.errorBody) },
      responses: Object.fromEntries(
        Object.entries(ERROR_STATUSES).map(([code, description]) => [
          `E${code}`,
          { description, content: { 'application/json': { schema: errorRef } } },
        ]),
      ),
    },
    paths,
  };
}
