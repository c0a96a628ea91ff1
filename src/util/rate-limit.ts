// Token buckets: named buckets under one policy. The gateway keeps one per API key (every
// request it makes) and one per source address (failed authentications only, so guessing keys is
// throttled); the log sink one per function (output lines). Pure: the clock is a parameter
// (milliseconds, monotonic), so tests run without waiting.

export interface BucketPolicy {
  /** Tokens added per second: the sustained rate. 0 turns the limit off. */
  ratePerS: number;
  /** Bucket size: how many requests may come at once after a quiet spell. */
  burst: number;
}

export type Take = { ok: true } | { ok: false; retryAfterMs: number };

interface Bucket {
  tokens: number;
  /** When `tokens` was last brought up to date. */
  at: number;
}

/**
 * Buckets held at once per limiter. Past it, buckets that have refilled are dropped (a full
 * bucket is the same as none), then the least recently used: memory stays bounded whatever
 * number of keys or addresses a client cycles through.
 */
export const MAX_BUCKETS = 50_000;

const OK: Take = { ok: true };

/** Named token buckets under one policy. */
export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    readonly policy: BucketPolicy,
    private readonly maxBuckets = MAX_BUCKETS,
  ) {}

  get enabled(): boolean {
    return this.policy.ratePerS > 0;
  }

  /** Buckets held now (for tests and the bound). */
  get size(): number {
    return this.buckets.size;
  }

  /** Takes one token from `name`'s bucket; when it has none, says how long until it will. */
  take(name: string, now: number): Take {
    if (!this.enabled) return OK;
    const b = this.refill(name, now);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return OK;
    }
    return { ok: false, retryAfterMs: this.waitMs(b) };
  }

  /** Whether `name`'s bucket has a token, without taking it. */
  peek(name: string, now: number): Take {
    if (!this.enabled) return OK;
    const b = this.buckets.get(name);
    if (!b) return OK;
    const tokens = this.level(b, now);
    return tokens >= 1 ? OK : { ok: false, retryAfterMs: this.waitMs({ tokens, at: now }) };
  }

  private level(b: Bucket, now: number): number {
    const elapsed = Math.max(0, now - b.at);
    return Math.min(this.policy.burst, b.tokens + (elapsed * this.policy.ratePerS) / 1000);
  }

  private waitMs(b: Bucket): number {
    return Math.ceil(((1 - b.tokens) * 1000) / this.policy.ratePerS);
  }

  private refill(name: string, now: number): Bucket {
    let b = this.buckets.get(name);
    if (b) {
      b.tokens = this.level(b, now);
      b.at = now;
      // Map order is insertion order: re-inserting keeps the least recently used first.
      this.buckets.delete(name);
    } else {
      if (this.buckets.size >= this.maxBuckets) this.evict(now);
      b = { tokens: this.policy.burst, at: now };
    }
    this.buckets.set(name, b);
    return b;
  }

  /** Makes room down to 90 % of the bound, so the scan is paid once per many new names. */
  private evict(now: number): void {
    for (const [name, b] of this.buckets) {
      if (this.level(b, now) >= this.policy.burst) this.buckets.delete(name);
    }
    const target = Math.floor(this.maxBuckets * 0.9);
    while (this.buckets.size > target) {
      const oldest = this.buckets.keys().next().value;
      if (oldest === undefined) break;
      this.buckets.delete(oldest);
    }
  }
}

/** Retry-After is whole seconds, at least 1. */
export function retryAfterSeconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
}
