// The store reads every invocation makes (its key, function, alias, version), kept briefly in
// memory. Under load the same few rows are read thousands of times a second, each read a trip
// through the database's lock (or to PostgreSQL).
//
// Staleness is bounded two ways. Any write this process makes through the store clears the
// whole cache, before and after it (cachingStore below), and a read that was under way across a
// write is not kept: a key revoked, an alias moved or a version deployed here is seen by the
// next request. Writes by another server on the same database are seen within `ttlMs`.

import type { PlatformStore } from './store/types.js';

/**
 * Store methods that change nothing the cache holds: reads, and the appends of records no
 * cached read returns. Any other call (a method added later included) clears it.
 */
const PURE = new Set([
  'getTenant',
  'getTenantByName',
  'listTenants',
  'getKey',
  'listKeys',
  'countKeys',
  'getFunction',
  'getFunctionById',
  'listFunctions',
  'getVersion',
  'listVersions',
  'getAlias',
  'listAliases',
  'listSecrets',
  'getInvocation',
  'listInvocations',
  'usage',
  'readLogs',
  'listAudit',
  'recordInvocation',
  'recordInvocations',
  'appendLogs',
  'appendAudit',
]);

export class ReadCache {
  private readonly map = new Map<string, { at: number; value: unknown }>();
  private generation = 0;

  constructor(
    private readonly ttlMs = 1000,
    private readonly maxEntries = 10_000,
    private readonly now: () => number = () => performance.now(),
  ) {}

  async get<T>(key: string, load: () => Promise<T>): Promise<T> {
    const hit = this.map.get(key);
    const t = this.now();
    if (hit && t - hit.at < this.ttlMs) return hit.value as T;
    const gen = this.generation;
    const value = await load();
    // A write came while this read was under way: the value may predate it.
    if (gen === this.generation) {
      if (this.map.size >= this.maxEntries) this.map.clear();
      this.map.set(key, { at: t, value });
    }
    return value;
  }

  clear(): void {
    this.generation++;
    this.map.clear();
  }

  get size(): number {
    return this.map.size;
  }
}

/** The store, with every call that may write clearing `cache` before it runs and once it settles. */
export function cachingStore(store: PlatformStore, cache: ReadCache): PlatformStore {
  const methods = new Map<string | symbol, unknown>();
  return new Proxy(store, {
    get(target, prop) {
      const v = Reflect.get(target, prop, target) as unknown;
      if (typeof v !== 'function') return v;
      let m = methods.get(prop);
      if (m === undefined) {
        const fn = v as (...a: unknown[]) => unknown;
        m =
          typeof prop === 'string' && PURE.has(prop)
            ? fn.bind(target)
            : (...args: unknown[]) => {
                cache.clear();
                const out = fn.apply(target, args);
                if (out instanceof Promise) return out.finally(() => cache.clear());
                cache.clear();
                return out;
              };
        methods.set(prop, m);
      }
      return m;
    },
  });
}
