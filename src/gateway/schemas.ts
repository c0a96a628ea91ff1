// One schema per request and response shape of the /v1 API. Requests are validated with them
// (unknown fields refused); the OpenAPI document is generated from all of them (openapi.ts), and
// the tests validate real responses against that document.

import { z } from 'zod';
import { LIMITS, configPatchSchema, nameSchema } from '../platform/config.js';

export const errorBody = z.object({
  error: z.object({
    code: z.string(),
    message: z.string(),
    details: z.record(z.unknown()).optional(),
  }),
  requestId: z.string(),
});

export const tenantLimitsInput = z
  .object({
    maxConcurrency: z.number().int().min(1).max(100_000),
    maxMemoryMiB: z
      .number()
      .int()
      .min(LIMITS.memoryMiB.min)
      .max(16 * 1024 * 1024),
  })
  .partial()
  .strict();

export const createTenantInput = tenantLimitsInput.extend({ name: nameSchema }).strict();

export const tenant = z.object({
  id: z.string(),
  name: z.string(),
  createdAt: z.number(),
  maxConcurrency: z.number(),
  maxMemoryMiB: z.number(),
});

export const createKeyInput = z
  .object({
    /** Tenant name; admin keys only. Without it an admin key makes another admin key. */
    tenant: nameSchema.optional(),
    description: z.string().max(200).optional(),
  })
  .strict();

export const apiKey = z.object({
  id: z.string(),
  role: z.enum(['admin', 'tenant']),
  tenant: z.string().nullable(),
  description: z.string(),
  createdAt: z.number(),
  revokedAt: z.number().nullable(),
});

export const createdKey = apiKey.extend({ key: z.string() });

export const functionConfig = z.object({
  memoryMiB: z.number(),
  vcpus: z.number(),
  timeoutS: z.number(),
  concurrency: z.number(),
  minInstances: z.number(),
  maxInstances: z.number(),
  idleTimeoutS: z.number(),
  public: z.boolean(),
  env: z.record(z.string()),
  egress: z.object({
    mode: z.enum(['public', 'allowlist', 'none']),
    allow: z.array(z.object({ cidr: z.string(), port: z.number().int().optional() })),
  }),
});

export const createFunctionInput = configPatchSchema
  .extend({ name: nameSchema, runtime: z.string() })
  .strict();

export const deployImageInput = configPatchSchema
  .extend({
    image: z.string().min(1).max(512),
    description: z.string().max(500).optional(),
  })
  .strict();

export const versionSource = z.union([
  z.object({
    kind: z.literal('bundle'),
    digest: z.string(),
    handler: z.string(),
    sizeBytes: z.number(),
  }),
  z.object({ kind: z.literal('image'), image: z.string(), manifestDigest: z.string() }),
]);

export const version = z.object({
  version: z.number(),
  runtime: z.enum(['nodejs20', 'image']),
  source: versionSource,
  config: functionConfig,
  description: z.string(),
  createdAt: z.number(),
});

export const alias = z.object({
  name: z.string(),
  version: z.number(),
  additionalVersion: z.number().nullable(),
  additionalWeight: z.number(),
  updatedAt: z.number(),
});

export const putAliasInput = z
  .object({
    version: z.number().int().min(1),
    additionalVersion: z.number().int().min(1).nullable().optional(),
    additionalWeight: z.number().int().min(0).max(100).optional(),
  })
  .strict()
  .refine((a) => a.additionalVersion == null || a.additionalWeight !== undefined, {
    message: 'a split needs additionalWeight (percent of traffic for additionalVersion)',
  });

export const fn = z.object({
  name: z.string(),
  runtime: z.enum(['nodejs20', 'image']),
  createdAt: z.number(),
  updatedAt: z.number(),
  latestVersion: z.number(),
  aliases: z.array(alias),
  config: functionConfig.nullable(),
  secrets: z.array(z.string()),
  /**
   * The latest version's start snapshot: ready (instances restore from it), building, failed
   * (instances boot), none (image functions, no version), off (snapshots disabled).
   */
  snapshot: z.enum(['ready', 'building', 'failed', 'none', 'off']),
});

export const deployResult = z.object({ function: z.string(), version });

export const putSecretInput = z
  .object({
    value: z
      .string()
      .min(4)
      .max(32 * 1024),
  })
  .strict();

export const invokeResult = z.object({
  requestId: z.string(),
  function: z.string(),
  version: z.number(),
  start: z.enum(['warm', 'restored', 'booted']),
  startMs: z.number(),
  durationMs: z.number(),
  result: z.unknown(),
});

export const logLine = z.object({
  seq: z.number(),
  ts: z.number(),
  requestId: z.string().nullable(),
  stream: z.enum(['stdout', 'stderr', 'system']),
  line: z.string(),
});

export const logsResult = z.object({ lines: z.array(logLine), next: z.number() });

export const usageRow = z.object({
  tenant: z.string(),
  function: z.string(),
  invocations: z.number(),
  errors: z.number(),
  durationMs: z.number(),
  gbSeconds: z.number(),
});

export const usageResult = z.object({
  since: z.number().nullable(),
  rows: z.array(usageRow),
  totals: z.object({ invocations: z.number(), gbSeconds: z.number(), durationMs: z.number() }),
});

export const invocation = z.object({
  requestId: z.string(),
  function: z.string(),
  version: z.number(),
  startedAt: z.number(),
  durationMs: z.number(),
  memoryMiB: z.number(),
  gbSeconds: z.number(),
  status: z.string(),
  start: z.string(),
  startMs: z.number(),
});

export const instanceInfo = z.object({
  id: z.string(),
  function: z.string(),
  version: z.number(),
  state: z.string(),
  inflight: z.number(),
  memoryMiB: z.number(),
  startMs: z.number(),
  idleMs: z.number(),
});

export const health = z.object({ ok: z.boolean(), version: z.string(), draining: z.boolean() });
export const okBody = z.object({ ok: z.literal(true) });

/** One audit record (GET /v1/audit): who changed what, from where, with what result. */
export const auditEntry = z.object({
  seq: z.number(),
  ts: z.number(),
  keyId: z.string(),
  role: z.enum(['admin', 'tenant']),
  tenant: z.string().nullable(),
  action: z.string(),
  target: z.string(),
  requestId: z.string(),
  source: z.string(),
  /** ok, or the error code the call failed with. */
  result: z.string(),
  status: z.number(),
  details: z.record(z.unknown()),
});

export const auditResult = z.object({ entries: z.array(auditEntry), next: z.number().nullable() });
