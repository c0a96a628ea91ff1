// The gateway's rate limits: defaults with the reason for each value, and the environment
// variables that change them (read once by `isola serve`; a bad value refuses to start).

import { IsolaError } from '../errors.js';
import type { BucketPolicy } from '../util/rate-limit.js';

export interface RateLimits {
  /** Per tenant key: every request it makes. */
  key: BucketPolicy;
  /** Per admin key (operators' scripts and dashboards may poll more). */
  adminKey: BucketPolicy;
  /** Per source address: failed authentications (no key, unknown, malformed or revoked). */
  authFailures: BucketPolicy;
}

export const RATE_LIMIT_DEFAULTS: RateLimits = {
  // A guard against a runaway client, not a quota: well above what one host serves (the warm
  // invoke benchmark reaches 6,000-8,500 requests/s at 32 connections on 2 cores under TCG; at
  // 5,000/s it met this limit), so a burst of invocations or a benchmark never meets it. Lower
  // it on shared deployments.
  key: { ratePerS: 50_000, burst: 100_000 },
  adminKey: { ratePerS: 100_000, burst: 200_000 },
  // Keys are 256-bit random secrets, so guessing is hopeless anyway; this keeps a scanner from
  // hammering the key lookup. A burst of 300 leaves room for a client retrying a stale key, or
  // a test walking every route without one.
  authFailures: { ratePerS: 10, burst: 300 },
};

/** Environment variable names, per limit: [rate per second, burst]. */
export const RATE_LIMIT_ENV: Record<keyof RateLimits, [string, string]> = {
  key: ['ISOLA_RATE_LIMIT_RPS', 'ISOLA_RATE_LIMIT_BURST'],
  adminKey: ['ISOLA_ADMIN_RATE_LIMIT_RPS', 'ISOLA_ADMIN_RATE_LIMIT_BURST'],
  authFailures: ['ISOLA_AUTH_FAILURE_RPS', 'ISOLA_AUTH_FAILURE_BURST'],
};

function number(env: NodeJS.ProcessEnv, name: string, def: number): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return def;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0)
    throw new IsolaError(
      'E_INVALID_ARGUMENT',
      `${name} must be a number >= 0 (0 turns the limit off), not "${raw.slice(0, 40)}"`,
    );
  return n;
}

/**
 * The limits, from the defaults and the environment. A rate of 0 turns that limit off; a burst
 * left out with a rate given is twice the rate (at least 1).
 */
export function rateLimitsFromEnv(env: NodeJS.ProcessEnv = process.env): RateLimits {
  const out = {} as RateLimits;
  for (const k of Object.keys(RATE_LIMIT_DEFAULTS) as Array<keyof RateLimits>) {
    const [rateVar, burstVar] = RATE_LIMIT_ENV[k];
    const def = RATE_LIMIT_DEFAULTS[k];
    const ratePerS = number(env, rateVar, def.ratePerS);
    const rateGiven = env[rateVar] !== undefined && env[rateVar]!.trim() !== '';
    const burst = number(env, burstVar, rateGiven ? Math.max(1, 2 * ratePerS) : def.burst);
    if (ratePerS > 0 && burst < 1)
      throw new IsolaError('E_INVALID_ARGUMENT', `${burstVar} must be at least 1`);
    out[k] = { ratePerS, burst };
  }
  return out;
}
