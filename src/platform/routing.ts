// Which version serves an invocation: a qualifier (`fn:3` a version, `fn:beta` an alias,
// nothing: the alias `live`), and for an alias with a traffic split, a weighted draw. Pure; the
// random number is a parameter so tests can drive it.

import type { AliasRecord } from './store/types.js';

export const DEFAULT_ALIAS = 'live';

export type Qualifier = { kind: 'version'; version: number } | { kind: 'alias'; name: string };

/** `name`, `name:7` or `name:alias` -> the function name and what to resolve. */
export function parseTarget(target: string): { name: string; qualifier: Qualifier } {
  const i = target.indexOf(':');
  if (i < 0) return { name: target, qualifier: { kind: 'alias', name: DEFAULT_ALIAS } };
  const name = target.slice(0, i);
  const q = target.slice(i + 1);
  if (/^\d+$/.test(q)) return { name, qualifier: { kind: 'version', version: Number(q) } };
  return { name, qualifier: { kind: 'alias', name: q } };
}

/** The version an alias sends this request to; `rand` in [0, 1). */
export function pickVersion(alias: AliasRecord, rand: number): number {
  if (alias.additionalVersion === null || alias.additionalWeight <= 0) return alias.version;
  return rand * 100 < alias.additionalWeight ? alias.additionalVersion : alias.version;
}
