// API keys: `isola_<id>_<secret>`. The id is public (it names the key in listings and audit
// lines); only sha256(secret) is stored, so a leaked database yields no usable key. Keys are
// random 256-bit secrets, so a fast hash is enough (no password stretching needed), and the
// comparison is constant-time.

import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

const KEY_RE = /^isola_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$/;

export interface NewKey {
  id: string;
  secretHash: string;
  /** The whole key; shown once, never stored. */
  text: string;
}

export function newKey(): NewKey {
  const id = randomBytes(9)
    .toString('base64url')
    .toLowerCase()
    .replace(/[^a-z0-9]/g, '0')
    .slice(0, 12);
  const secret = randomBytes(32).toString('base64url');
  return { id, secretHash: hashSecret(secret), text: `isola_${id}_${secret}` };
}

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

/** Split a presented key; null when it is not shaped like one of ours. */
export function parseKey(text: string): { id: string; secret: string } | null {
  const m = KEY_RE.exec(text);
  return m ? { id: m[1]!, secret: m[2]! } : null;
}

/**
 * What a presented key is checked against when its id is unknown (or it is not shaped like a
 * key): the hash of a random secret nobody holds, so the check does the same work, a hash and
 * a constant-time comparison, and its timing does not tell whether an id exists.
 */
export const DUMMY_HASH = hashSecret(randomBytes(32).toString('base64url'));

/** Constant-time check of a presented secret against a stored hash. */
export function secretMatches(secret: string, storedHash: string): boolean {
  const a = Buffer.from(hashSecret(secret), 'hex');
  const b = Buffer.from(storedHash, 'hex');
  // timingSafeEqual needs equal lengths; a malformed stored hash still costs one comparison.
  if (a.length !== b.length) {
    timingSafeEqual(a, a);
    return false;
  }
  return timingSafeEqual(a, b);
}
