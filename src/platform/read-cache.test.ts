import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ReadCache, cachingStore } from './read-cache.js';
import type { PlatformStore } from './store/types.js';

describe('ReadCache', () => {
  test('a value is loaded once within the TTL and again after it', async () => {
    let t = 0;
    const c = new ReadCache(1000, 100, () => t);
    let loads = 0;
    const load = async () => ++loads;
    assert.equal(await c.get('k', load), 1);
    t = 999;
    assert.equal(await c.get('k', load), 1);
    t = 1000;
    assert.equal(await c.get('k', load), 2);
  });

  test('a read under way across a clear is returned but not kept', async () => {
    const c = new ReadCache(1000, 100, () => 0);
    let release!: () => void;
    const slow = c.get(
      'k',
      () =>
        new Promise<string>((r) => {
          release = () => r('old');
        }),
    );
    c.clear();
    release();
    assert.equal(await slow, 'old');
    assert.equal(c.size, 0);
    assert.equal(await c.get('k', async () => 'new'), 'new');
  });

  test('bounded: past maxEntries it starts over', async () => {
    const c = new ReadCache(1000, 3, () => 0);
    for (const k of ['a', 'b', 'c', 'd']) await c.get(k, async () => k);
    assert.equal(c.size, 1);
  });
});

describe('cachingStore', () => {
  // Only the calls matter here: a store whose methods record their names.
  const calls: string[] = [];
  const fake = new Proxy(
    {},
    {
      get: (_t, prop) => async () => {
        calls.push(String(prop));
        return prop;
      },
    },
  ) as unknown as PlatformStore;

  test('reads and appends leave the cache alone; every other method clears it', async () => {
    const c = new ReadCache(60_000, 100, () => 0);
    const s = cachingStore(fake, c);
    const fill = () => c.get('x', async () => 1);
    await fill();
    await s.getKey('id');
    await s.listFunctions('t');
    await s.recordInvocations([]);
    await s.appendLogs([]);
    assert.equal(c.size, 1);
    for (const write of [
      () => s.revokeKey('id', 1),
      () => s.putAlias({} as never),
      () => s.addVersion({} as never, {} as never, {} as never),
      () => s.deleteFunction('f'),
      () => s.updateTenantLimits('t', {}),
      // a method the cache does not know of is taken for a write
      () => (s as unknown as { somethingNew: () => Promise<unknown> }).somethingNew(),
    ]) {
      await fill();
      assert.equal(c.size, 1);
      await write();
      assert.equal(c.size, 0, `after ${calls.at(-1)}`);
    }
  });
});
