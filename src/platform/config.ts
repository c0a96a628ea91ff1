// Function settings: one schema, unknown fields refused, every default and bound in one place
// with the reason for its value. Versions snapshot the whole config (they are immutable).

import { z } from 'zod';
import { DEFAULT_EGRESS, egressSchema } from '../net/policy.js';
import type { FunctionConfig, TenantLimits } from './store/types.js';

export const FUNCTION_DEFAULTS: FunctionConfig = {
  /** Guest kernel + agent + Node.js runtime leave about 140 MiB of a 256 MiB VM for the handler. */
  memoryMiB: 256,
  vcpus: 1,
  /** Lambda's default is 3 s; under TCG a cold Node start alone is ~1 s, so allow more. */
  timeoutS: 30,
  /** One request per instance, as Lambda: the simplest model for handlers with global state. */
  concurrency: 1,
  minInstances: 0,
  maxInstances: 10,
  /** Keep-alive after the last request before the instance is stopped (scale to zero). */
  idleTimeoutS: 300,
  public: false,
  env: {},
  /** The public internet only: not the node, its networks, the metadata address or other sandboxes. */
  egress: DEFAULT_EGRESS,
};

export const TENANT_DEFAULTS: TenantLimits = {
  maxConcurrency: 100,
  /** 8 GiB: 32 instances of 256 MiB. */
  maxMemoryMiB: 8192,
};

/** Bounds of the settings; the API refuses values outside them. */
export const LIMITS = {
  memoryMiB: { min: 128, max: 8192 },
  vcpus: { min: 1, max: 8 },
  timeoutS: { min: 1, max: 900 },
  concurrency: { min: 1, max: 1000 },
  instances: { min: 0, max: 1000 },
  idleTimeoutS: { min: 1, max: 86_400 },
  envBytes: 4096 * 4,
} as const;

export const NAME_RE = /^[a-z][a-z0-9-]{0,62}$/;
export const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
/** Names the platform sets itself in the function's environment. */
const RESERVED_ENV = /^(ISOLA_|NODE_OPTIONS$)/;

export const nameSchema = z
  .string()
  .regex(
    NAME_RE,
    'must be 1-63 characters: lowercase letters, digits and -, starting with a letter',
  );

export const envSchema = z
  .record(
    z
      .string()
      .regex(ENV_NAME_RE, 'environment names are letters, digits and _')
      .refine((k) => !RESERVED_ENV.test(k), 'ISOLA_* and NODE_OPTIONS are reserved'),
    z.string().max(4096),
  )
  .refine(
    (env) =>
      Object.entries(env).reduce((n, [k, v]) => n + k.length + v.length, 0) <= LIMITS.envBytes,
    `environment is larger than ${LIMITS.envBytes} bytes`,
  );

export const configPatchSchema = z
  .object({
    memoryMiB: z.number().int().min(LIMITS.memoryMiB.min).max(LIMITS.memoryMiB.max),
    vcpus: z.number().int().min(LIMITS.vcpus.min).max(LIMITS.vcpus.max),
    timeoutS: z.number().min(LIMITS.timeoutS.min).max(LIMITS.timeoutS.max),
    concurrency: z.number().int().min(LIMITS.concurrency.min).max(LIMITS.concurrency.max),
    minInstances: z.number().int().min(LIMITS.instances.min).max(LIMITS.instances.max),
    maxInstances: z.number().int().min(1).max(LIMITS.instances.max),
    idleTimeoutS: z.number().min(LIMITS.idleTimeoutS.min).max(LIMITS.idleTimeoutS.max),
    public: z.boolean(),
    env: envSchema,
    egress: egressSchema,
  })
  .partial()
  .strict();

export type ConfigPatch = z.infer<typeof configPatchSchema>;

/** Lay a patch over a config; checks cross-field rules. */
export function applyConfig(base: FunctionConfig, patch: ConfigPatch): FunctionConfig {
  const out: FunctionConfig = {
    ...base,
    ...stripUndefined(patch),
    env: patch.env ?? base.env,
    egress: patch.egress ?? base.egress ?? DEFAULT_EGRESS,
  };
  if (out.minInstances > out.maxInstances) {
    throw new RangeError(
      `minInstances (${out.minInstances}) is above maxInstances (${out.maxInstances})`,
    );
  }
  return out;
}

/** The entries whose value is not undefined (for spreads under exactOptionalPropertyTypes). */
export function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
