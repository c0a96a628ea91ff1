// Randomness that stays unique across clones of one snapshot, for the function runtime.
//
// A restored clone resumes the runtime process exactly as it was in the snapshot: every clone
// would draw the same numbers from whatever generator state the process held. Three layers:
//  - OpenSSL (crypto.randomBytes, getRandomValues, key generation, TLS): its generators reseed
//    from the kernel when the wall clock moved more than their reseed interval since they were
//    seeded. Snapshot templates run with the guest clock set back (SNAPSHOT_CLOCK_SKEW_MS), the
//    clone's clock is set right on restore, and the kernel's own generator was reseeded with host
//    entropy just before (guestctl identity), so the first draw in a clone reseeds from fresh
//    kernel entropy.
//  - Node's caches of pre-drawn bytes (crypto.randomUUID keeps 128 UUIDs' worth, randomInt
//    ~6 KiB): bypassed, so no draw made in the template is handed out again.
//  - V8's Math.random (seeded once per context, no reseed API): replaced after a restore by a
//    small generator seeded with bytes from the host.

import crypto from 'node:crypto';

/** How far templates' clocks run behind: above OpenSSL's longest reseed interval (1 h). */
export const SNAPSHOT_CLOCK_SKEW_MS = 2 * 60 * 60 * 1000;

/** Make randomUUID and randomInt draw fresh bytes every call (no cache filled before a snapshot). */
export function bypassEntropyCaches(): void {
  const uuid = crypto.randomUUID;
  const fresh = (o?: crypto.RandomUUIDOptions) => uuid({ ...o, disableEntropyCache: true });
  crypto.randomUUID = fresh as typeof crypto.randomUUID;
  const web = (globalThis as { crypto?: object }).crypto;
  if (web) {
    Object.defineProperty(web, 'randomUUID', {
      value: () => fresh(),
      configurable: true,
      writable: true,
    });
  }
  crypto.randomInt = randomInt as typeof crypto.randomInt;
}

/** crypto.randomInt without Node's byte cache: uniform in [min, max), by rejection sampling. */
function randomInt(
  a: number,
  b?: number | ((err: Error | null, n: number) => void),
  c?: (err: Error | null, n: number) => void,
): number | undefined {
  let min = 0;
  let max = a;
  let cb = c;
  if (typeof b === 'number') {
    min = a;
    max = b;
  } else if (typeof b === 'function') {
    cb = b;
  }
  if (!Number.isSafeInteger(min) || !Number.isSafeInteger(max) || max <= min) {
    throw new RangeError(`randomInt: need safe integers with min < max (got ${min}, ${max})`);
  }
  const range = max - min;
  if (range > 2 ** 48) throw new RangeError('randomInt: max - min must be at most 2^48');
  const limit = 2 ** 48 - (2 ** 48 % range);
  let x: number;
  do {
    x = crypto.randomBytes(6).readUIntBE(0, 6);
  } while (x >= limit);
  const n = min + (x % range);
  if (cb) {
    process.nextTick(cb, null, n);
    return undefined;
  }
  return n;
}

/**
 * Replace Math.random with sfc32 seeded from `seed` (>= 16 bytes). Not for secrets (neither is
 * Math.random); unique per clone, and fast.
 */
export function reseedMathRandom(seed: Buffer): void {
  if (seed.length < 16) throw new Error('seed must be at least 16 bytes');
  let a = seed.readUInt32LE(0);
  let b = seed.readUInt32LE(4);
  let c = seed.readUInt32LE(8);
  let d = seed.readUInt32LE(12);
  const next = (): number => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return t >>> 0;
  };
  for (let i = 0; i < 12; i++) next();
  Math.random = () => ((next() >>> 5) * 67108864 + (next() >>> 6)) / 9007199254740992;
}
