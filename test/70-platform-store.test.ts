// The platform store's contract: one suite, run against SQLite (a temp dir) and against a real
// PostgreSQL server on loopback (test/pg-helpers.ts). Every test gets a fresh database.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { IsolaError } from '../src/errors.js';
import { type Db, openPostgresDb, openSqliteDb } from '../src/platform/store/db.js';
import { LATEST_SCHEMA_VERSION, MIGRATIONS, migrate } from '../src/platform/store/migrations.js';
import { SQLITE_FILE, openPlatformStore } from '../src/platform/store/open.js';
import type {
  AuditRecord,
  FunctionConfig,
  FunctionRecord,
  InvocationRecord,
  LogRecord,
  PlatformStore,
  Tenant,
  VersionRecord,
} from '../src/platform/store/types.js';
import { type TestPostgres, createDatabase, postgresBinDir, startPostgres } from './pg-helpers.js';

const base = mkdtempSync(path.join(os.tmpdir(), 'isola-test-store-'));
after(() => rmSync(base, { recursive: true, force: true }));

const code = (c: string) => (e: unknown) => {
  if (e instanceof IsolaError && e.code === c) return true;
  throw e;
};

// ---------------------------------------------------------------------------------------------
// Fixtures

const T0 = 1_700_000_000_000;

const tenant = (id: string, over: Partial<Tenant> = {}): Tenant => ({
  id,
  name: `tenant-${id}`,
  maxConcurrency: 10,
  maxMemoryMiB: 2048,
  createdAt: T0,
  ...over,
});

const fnRecord = (id: string, tenantId: string, name = `fn-${id}`): FunctionRecord => ({
  id,
  tenantId,
  name,
  runtime: 'nodejs20',
  createdAt: T0,
  updatedAt: T0,
  latestVersion: 0,
  secretsRev: 0,
});

const CONFIG: FunctionConfig = {
  memoryMiB: 256,
  vcpus: 1,
  timeoutS: 30,
  concurrency: 4,
  minInstances: 0,
  maxInstances: 5,
  idleTimeoutS: 300,
  public: true,
  env: { GREETING: 'hello', EMPTY: '' },
  egress: { mode: 'allowlist', allow: [{ cidr: '10.99.0.0/24', port: 5432 }] },
};

type NewVersion = Omit<VersionRecord, 'functionId' | 'version'>;

const bundleVersion = (createdAt = T0 + 1, description = 'first'): NewVersion => ({
  runtime: 'nodejs20',
  source: {
    kind: 'bundle',
    digest: `sha256:${'a'.repeat(64)}`,
    handler: 'index.handler',
    sizeBytes: 1234,
  },
  config: CONFIG,
  description,
  createdAt,
});

const imageVersion = (createdAt = T0 + 2): NewVersion => ({
  runtime: 'image',
  source: {
    kind: 'image',
    image: 'docker.io/library/alpine:3.20',
    manifestDigest: `sha256:${'b'.repeat(64)}`,
  },
  config: { ...CONFIG, public: false, env: {} },
  description: 'an image',
  createdAt,
});

const invocation = (requestId: string, over: Partial<InvocationRecord> = {}): InvocationRecord => ({
  requestId,
  tenantId: 't1',
  functionId: 'f1',
  functionName: 'hello',
  version: 1,
  startedAt: T0,
  durationMs: 100,
  memoryMiB: 512,
  gbSeconds: 0.05,
  status: 'ok',
  startKind: 'warm',
  startMs: 0,
  ...over,
});

const logLine = (line: string, over: Partial<Omit<LogRecord, 'seq'>> = {}) => ({
  tenantId: 't1',
  functionId: 'f1',
  requestId: null,
  ts: T0,
  stream: 'stdout' as const,
  line,
  ...over,
});

/** Two tenants and one function (f1 "hello") in the first. */
async function seed(store: PlatformStore): Promise<void> {
  await store.createTenant(tenant('t1', { name: 'acme' }));
  await store.createTenant(tenant('t2', { name: 'beta' }));
  await store.createFunction(fnRecord('f1', 't1', 'hello'));
}

// ---------------------------------------------------------------------------------------------
// The contract

interface Target {
  /** A store over this target's database; the same data every time. */
  open(): Promise<PlatformStore>;
  /** A raw handle on the same database. */
  openDb(): Promise<Db>;
}

function contract(newTarget: () => Promise<Target>): void {
  const opened: Array<{ close(): Promise<void> }> = [];
  afterEach(async () => {
    for (const s of opened.splice(0)) await s.close();
  });
  const open = async (t: Target): Promise<PlatformStore> => {
    const s = await t.open();
    opened.push(s);
    return s;
  };
  const fresh = async (): Promise<{ store: PlatformStore; target: Target }> => {
    const target = await newTarget();
    return { store: await open(target), target };
  };

  test('tenants: create, get, list, update limits, unique names', async () => {
    const { store } = await fresh();
    await store.createTenant(tenant('t2', { name: 'zeta' }));
    await store.createTenant(tenant('t1', { name: 'acme', maxConcurrency: 3 }));
    assert.deepEqual(
      await store.getTenant('t1'),
      tenant('t1', { name: 'acme', maxConcurrency: 3 }),
    );
    assert.equal((await store.getTenantByName('zeta'))?.id, 't2');
    assert.equal(await store.getTenant('nope'), null);
    assert.equal(await store.getTenantByName('nope'), null);
    assert.deepEqual(
      (await store.listTenants()).map((t) => t.name),
      ['acme', 'zeta'],
    );
    await assert.rejects(store.createTenant(tenant('t3', { name: 'acme' })), code('E_CONFLICT'));
    await assert.rejects(store.createTenant(tenant('t1', { name: 'other' })), code('E_CONFLICT'));

    const updated = await store.updateTenantLimits('t1', { maxMemoryMiB: 4096 });
    assert.deepEqual(
      updated,
      tenant('t1', { name: 'acme', maxConcurrency: 3, maxMemoryMiB: 4096 }),
    );
    const both = await store.updateTenantLimits('t1', { maxConcurrency: 7, maxMemoryMiB: 1024 });
    assert.equal(both?.maxConcurrency, 7);
    assert.equal(both?.maxMemoryMiB, 1024);
    assert.equal(await store.updateTenantLimits('nope', { maxConcurrency: 1 }), null);

    assert.equal(await store.deleteTenant('t2'), true);
    assert.equal(await store.deleteTenant('t2'), false);
    assert.deepEqual(
      (await store.listTenants()).map((t) => t.id),
      ['t1'],
    );
  });

  test('api keys: create, get, list by tenant and admin, revoke, count', async () => {
    const { store } = await fresh();
    await seed(store);
    const admin = {
      id: 'kadmin',
      role: 'admin' as const,
      tenantId: null,
      secretHash: 'h0',
      description: 'bootstrap',
      createdAt: T0,
      revokedAt: null,
    };
    const k1 = { ...admin, id: 'k1', role: 'tenant' as const, tenantId: 't1', secretHash: 'h1' };
    const k2 = { ...k1, id: 'k2', secretHash: 'h2', createdAt: T0 + 1 };
    assert.equal(await store.countKeys(), 0);
    for (const k of [admin, k2, k1]) await store.createKey(k);
    await assert.rejects(store.createKey(k1), code('E_CONFLICT'));
    await assert.rejects(
      store.createKey({ ...k1, id: 'k9', tenantId: 'nope' }),
      code('E_NOT_FOUND'),
    );
    assert.deepEqual(await store.getKey('k1'), k1);
    assert.equal(await store.getKey('nope'), null);
    assert.deepEqual(await store.listKeys('t1'), [k1, k2]);
    assert.deepEqual(await store.listKeys(null), [admin]);
    assert.deepEqual(await store.listKeys('t2'), []);
    assert.equal(await store.countKeys(), 3);

    assert.equal(await store.revokeKey('k1', T0 + 50), true);
    assert.equal(await store.revokeKey('k1', T0 + 99), true);
    assert.equal((await store.getKey('k1'))?.revokedAt, T0 + 50, 'the first revocation stays');
    assert.equal(await store.revokeKey('nope', T0), false);
    assert.equal(await store.countKeys(), 3);
  });

  test('functions: create, get, list, delete; names unique within a tenant', async () => {
    const { store } = await fresh();
    await seed(store);
    await store.createFunction(fnRecord('f0', 't1', 'aaa'));
    await assert.rejects(store.createFunction(fnRecord('f9', 't1', 'hello')), code('E_CONFLICT'));
    await store.createFunction(fnRecord('f2', 't2', 'hello'));
    await assert.rejects(store.createFunction(fnRecord('f3', 'nope', 'x')), code('E_NOT_FOUND'));

    assert.deepEqual(await store.getFunction('t1', 'hello'), fnRecord('f1', 't1', 'hello'));
    assert.equal((await store.getFunction('t2', 'hello'))?.id, 'f2');
    assert.equal(await store.getFunction('t2', 'aaa'), null);
    assert.deepEqual(await store.getFunctionById('f2'), fnRecord('f2', 't2', 'hello'));
    assert.equal(await store.getFunctionById('nope'), null);
    assert.deepEqual(
      (await store.listFunctions('t1')).map((f) => f.name),
      ['aaa', 'hello'],
    );

    assert.equal(await store.deleteFunction('f0'), true);
    assert.equal(await store.deleteFunction('f0'), false);
    assert.deepEqual(
      (await store.listFunctions('t1')).map((f) => f.id),
      ['f1'],
    );
  });

  test('addVersion numbers versions and moves aliases in one transaction', async () => {
    const { store } = await fresh();
    await seed(store);
    const v1 = await store.addVersion('f1', bundleVersion(), ['live', 'stable']);
    assert.deepEqual(v1, { ...bundleVersion(), functionId: 'f1', version: 1 });
    await store.putAlias({
      functionId: 'f1',
      name: 'live',
      version: 1,
      additionalVersion: 1,
      additionalWeight: 10,
      updatedAt: T0 + 1,
    });
    const v2 = await store.addVersion('f1', imageVersion(), ['live']);
    assert.equal(v2.version, 2);

    assert.deepEqual(await store.getVersion('f1', 1), v1);
    assert.deepEqual(await store.getVersion('f1', 2), v2);
    assert.equal(await store.getVersion('f1', 3), null);
    assert.deepEqual(await store.listVersions('f1'), [v1, v2]);
    const f = await store.getFunctionById('f1');
    assert.equal(f?.latestVersion, 2);
    assert.equal(f?.updatedAt, imageVersion().createdAt);

    assert.deepEqual(await store.getAlias('f1', 'live'), {
      functionId: 'f1',
      name: 'live',
      version: 2,
      additionalVersion: null,
      additionalWeight: 0,
      updatedAt: imageVersion().createdAt,
    });
    assert.equal((await store.getAlias('f1', 'stable'))?.version, 1);

    await assert.rejects(store.addVersion('nope', bundleVersion(), []), code('E_NOT_FOUND'));
  });

  test('20 concurrent addVersion calls get versions 1..20', async () => {
    const { store } = await fresh();
    await seed(store);
    const made = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        store.addVersion('f1', bundleVersion(T0 + i, `v${i}`), ['live']),
      ),
    );
    const numbers = made.map((v) => v.version).sort((a, b) => a - b);
    assert.deepEqual(
      numbers,
      Array.from({ length: 20 }, (_, i) => i + 1),
    );
    assert.equal((await store.listVersions('f1')).length, 20);
    assert.equal((await store.getFunctionById('f1'))?.latestVersion, 20);
    assert.equal((await store.getAlias('f1', 'live'))?.version, 20, 'the last deploy wins');
  });

  test('aliases: put with a traffic split, move, list, delete', async () => {
    const { store } = await fresh();
    await seed(store);
    await store.addVersion('f1', bundleVersion(), []);
    await store.addVersion('f1', bundleVersion(T0 + 2, 'second'), []);
    const canary = {
      functionId: 'f1',
      name: 'prod',
      version: 1,
      additionalVersion: 2,
      additionalWeight: 25,
      updatedAt: T0 + 3,
    };
    await store.putAlias(canary);
    await store.putAlias({ ...canary, name: 'beta', additionalVersion: null, additionalWeight: 0 });
    assert.deepEqual(await store.getAlias('f1', 'prod'), canary);
    const moved = { ...canary, version: 2, additionalVersion: null, additionalWeight: 0 };
    await store.putAlias({ ...moved, updatedAt: T0 + 4 });
    assert.deepEqual(await store.getAlias('f1', 'prod'), { ...moved, updatedAt: T0 + 4 });
    assert.deepEqual(
      (await store.listAliases('f1')).map((a) => a.name),
      ['beta', 'prod'],
    );
    assert.equal(await store.getAlias('f1', 'nope'), null);
    assert.equal(await store.deleteAlias('f1', 'beta'), true);
    assert.equal(await store.deleteAlias('f1', 'beta'), false);
    await assert.rejects(store.putAlias({ ...canary, functionId: 'nope' }), code('E_NOT_FOUND'));
  });

  test('secrets: upsert and delete bump secretsRev in the same transaction', async () => {
    const { store } = await fresh();
    await seed(store);
    const rev = async () => (await store.getFunctionById('f1'))?.secretsRev;
    await store.putSecret({ functionId: 'f1', name: 'TOKEN', ciphertext: 'c1', updatedAt: T0 });
    assert.equal(await rev(), 1);
    await store.putSecret({ functionId: 'f1', name: 'TOKEN', ciphertext: 'c2', updatedAt: T0 + 1 });
    await store.putSecret({ functionId: 'f1', name: 'API', ciphertext: 'c3', updatedAt: T0 + 2 });
    assert.equal(await rev(), 3);
    assert.deepEqual(await store.listSecrets('f1'), [
      { functionId: 'f1', name: 'API', ciphertext: 'c3', updatedAt: T0 + 2 },
      { functionId: 'f1', name: 'TOKEN', ciphertext: 'c2', updatedAt: T0 + 1 },
    ]);
    assert.equal(await store.deleteSecret('f1', 'TOKEN'), true);
    assert.equal(await rev(), 4);
    assert.equal(await store.deleteSecret('f1', 'TOKEN'), false);
    assert.equal(await store.deleteSecret('nope', 'TOKEN'), false);
    assert.equal(await rev(), 4, 'deleting nothing leaves secretsRev alone');
    await assert.rejects(
      store.putSecret({ functionId: 'nope', name: 'X', ciphertext: 'c', updatedAt: T0 }),
      code('E_NOT_FOUND'),
    );
    assert.deepEqual(await store.listSecrets('nope'), []);
  });

  test('deleteFunction removes versions, aliases, secrets and logs; invocations stay', async () => {
    const { store } = await fresh();
    await seed(store);
    await store.createFunction(fnRecord('f2', 't1', 'other'));
    for (const id of ['f1', 'f2']) {
      await store.addVersion(id, bundleVersion(), ['live']);
      await store.putSecret({ functionId: id, name: 'S', ciphertext: 'c', updatedAt: T0 });
      await store.appendLogs([logLine(`from ${id}`, { functionId: id })]);
    }
    await store.recordInvocation(invocation('r1'));
    assert.equal(await store.deleteFunction('f1'), true);

    assert.equal(await store.getFunctionById('f1'), null);
    assert.deepEqual(await store.listVersions('f1'), []);
    assert.deepEqual(await store.listAliases('f1'), []);
    assert.deepEqual(await store.listSecrets('f1'), []);
    assert.deepEqual(await store.readLogs({ functionId: 'f1' }), []);
    assert.deepEqual(await store.getInvocation('r1'), invocation('r1'));
    // The other function is untouched.
    assert.equal((await store.listVersions('f2')).length, 1);
    assert.equal((await store.listSecrets('f2')).length, 1);
    assert.equal((await store.readLogs({ functionId: 'f2' })).length, 1);
  });

  test('deleteTenant removes keys and functions with their children; metering stays', async () => {
    const { store } = await fresh();
    await seed(store);
    await store.createFunction(fnRecord('f2', 't2', 'hello'));
    for (const [fid, tid] of [
      ['f1', 't1'],
      ['f2', 't2'],
    ] as const) {
      await store.createKey({
        id: `key-${tid}`,
        role: 'tenant',
        tenantId: tid,
        secretHash: 'h',
        description: '',
        createdAt: T0,
        revokedAt: null,
      });
      await store.addVersion(fid, bundleVersion(), ['live']);
      await store.putSecret({ functionId: fid, name: 'S', ciphertext: 'c', updatedAt: T0 });
      await store.appendLogs([logLine('x', { functionId: fid, tenantId: tid })]);
      await store.recordInvocation(invocation(`r-${tid}`, { tenantId: tid, functionId: fid }));
    }
    assert.equal(await store.deleteTenant('t1'), true);

    assert.equal(await store.getTenant('t1'), null);
    assert.equal(await store.getKey('key-t1'), null);
    assert.deepEqual(await store.listFunctions('t1'), []);
    assert.equal(await store.getFunctionById('f1'), null);
    assert.deepEqual(await store.listVersions('f1'), []);
    assert.deepEqual(await store.listAliases('f1'), []);
    assert.deepEqual(await store.listSecrets('f1'), []);
    assert.deepEqual(await store.readLogs({ functionId: 'f1' }), []);
    assert.ok(await store.getInvocation('r-t1'), 'metering records outlive the tenant');
    // The other tenant is untouched.
    assert.ok(await store.getKey('key-t2'));
    assert.equal((await store.listVersions('f2')).length, 1);
    assert.equal((await store.readLogs({ functionId: 'f2' })).length, 1);
    assert.equal(await store.countKeys(), 1);
  });

  test('invocations: record, get, list with filters, newest first, default limit 100', async () => {
    const { store } = await fresh();
    const a = invocation('ra', { startedAt: T0 + 10, durationMs: 12.5, startKind: 'booted' });
    const b = invocation('rb', { startedAt: T0 + 20, functionId: 'f2', status: 'timeout' });
    const c = invocation('rc', { startedAt: T0 + 30, tenantId: 't2', functionId: 'f3' });
    for (const r of [b, a, c]) await store.recordInvocation(r);
    await assert.rejects(store.recordInvocation(a), code('E_CONFLICT'));
    assert.deepEqual(await store.getInvocation('ra'), a);
    assert.equal(await store.getInvocation('nope'), null);
    assert.deepEqual(await store.listInvocations({}), [c, b, a]);
    assert.deepEqual(await store.listInvocations({ tenantId: 't1' }), [b, a]);
    assert.deepEqual(await store.listInvocations({ functionId: 'f2' }), [b]);
    assert.deepEqual(await store.listInvocations({ since: T0 + 20 }), [c, b]);
    assert.deepEqual(await store.listInvocations({ tenantId: 't1', limit: 1 }), [b]);

    for (let i = 0; i < 105; i++)
      await store.recordInvocation(invocation(`bulk-${i}`, { startedAt: T0 + 1000 + i }));
    const page = await store.listInvocations({});
    assert.equal(page.length, 100);
    assert.equal(page[0]?.requestId, 'bulk-104');
  });

  test('invocations in a batch: all in one transaction, none when one conflicts', async () => {
    const { store } = await fresh();
    const batch = ['b1', 'b2', 'b3'].map((id, i) => invocation(id, { startedAt: T0 + i }));
    await store.recordInvocations(batch);
    await store.recordInvocations([]);
    assert.deepEqual(await store.listInvocations({}), [...batch].reverse());
    // b2 is already there: the whole batch is refused, b4 included.
    await assert.rejects(
      store.recordInvocations([invocation('b4'), invocation('b2')]),
      code('E_CONFLICT'),
    );
    assert.equal(await store.getInvocation('b4'), null);
    // A duplicate inside the batch itself: refused too.
    await assert.rejects(
      store.recordInvocations([invocation('b5'), invocation('b5')]),
      code('E_CONFLICT'),
    );
    assert.equal(await store.getInvocation('b5'), null);
    assert.equal((await store.listInvocations({})).length, 3);
  });

  test('usage groups by tenant and function name, with since, until and tenant filters', async () => {
    const { store } = await fresh();
    await seed(store);
    const rows: InvocationRecord[] = [
      invocation('r1', { startedAt: T0, durationMs: 100, gbSeconds: 0.5 }),
      invocation('r2', { startedAt: T0 + 10, durationMs: 300, gbSeconds: 0.25, status: 'error' }),
      invocation('r3', { startedAt: T0 + 20, durationMs: 50, gbSeconds: 0.125, status: 'oom' }),
      invocation('r4', { startedAt: T0 + 20, functionName: 'other', functionId: 'f9' }),
      // A function deleted and made again under the same name: one line.
      invocation('r5', { startedAt: T0 + 30, functionId: 'f1-new', gbSeconds: 1 }),
      invocation('r6', { startedAt: T0 + 5, tenantId: 't2', functionId: 'f2', gbSeconds: 2 }),
      invocation('r7', { startedAt: T0, tenantId: 'gone', functionId: 'fg', functionName: 'g' }),
    ];
    for (const r of rows) await store.recordInvocation(r);
    const all = await store.usage({});
    assert.deepEqual(all, [
      {
        tenantId: 'gone',
        tenantName: '(deleted)',
        functionName: 'g',
        invocations: 1,
        errors: 0,
        durationMs: 100,
        gbSeconds: 0.05,
      },
      {
        tenantId: 't1',
        tenantName: 'acme',
        functionName: 'hello',
        invocations: 4,
        errors: 2,
        durationMs: 550,
        gbSeconds: 1.875,
      },
      {
        tenantId: 't1',
        tenantName: 'acme',
        functionName: 'other',
        invocations: 1,
        errors: 0,
        durationMs: 100,
        gbSeconds: 0.05,
      },
      {
        tenantId: 't2',
        tenantName: 'beta',
        functionName: 'hello',
        invocations: 1,
        errors: 0,
        durationMs: 100,
        gbSeconds: 2,
      },
    ]);
    const window = await store.usage({ tenantId: 't1', since: T0 + 10, until: T0 + 30 });
    assert.deepEqual(
      window.map((u) => [u.functionName, u.invocations, u.errors, u.durationMs]),
      [
        ['hello', 2, 2, 350],
        ['other', 1, 0, 100],
      ],
    );
    assert.deepEqual(await store.usage({ since: T0 + 1000 }), []);

    // Deleting a tenant keeps its usage, under '(deleted)'.
    await store.deleteTenant('t2');
    const after = await store.usage({ tenantId: 't2' });
    assert.equal(after.length, 1);
    assert.equal(after[0]?.tenantName, '(deleted)');
  });

  test('logs: appended in order, read after a cursor, by request, with limits', async () => {
    const { store } = await fresh();
    await seed(store);
    await store.createFunction(fnRecord('f2', 't1', 'other'));
    await store.appendLogs([]);
    await store.appendLogs([
      logLine('one', { requestId: 'r1' }),
      logLine('two', { requestId: 'r2', stream: 'stderr' }),
      logLine('three', { requestId: 'r1', stream: 'system', ts: T0 + 1 }),
    ]);
    await store.appendLogs([logLine('elsewhere', { functionId: 'f2' })]);
    await store.appendLogs([logLine('four')]);
    const all = await store.readLogs({ functionId: 'f1' });
    assert.deepEqual(
      all.map((l) => l.line),
      ['one', 'two', 'three', 'four'],
    );
    for (let i = 1; i < all.length; i++) assert.ok(all[i]!.seq > all[i - 1]!.seq);
    assert.deepEqual(all[1], {
      ...logLine('two', { requestId: 'r2', stream: 'stderr' }),
      seq: all[1]!.seq,
    });
    assert.equal(all[3]?.requestId, null);

    const after = await store.readLogs({ functionId: 'f1', afterSeq: all[1]!.seq });
    assert.deepEqual(
      after.map((l) => l.line),
      ['three', 'four'],
    );
    const r1 = await store.readLogs({ functionId: 'f1', requestId: 'r1' });
    assert.deepEqual(
      r1.map((l) => l.line),
      ['one', 'three'],
    );
    assert.deepEqual(
      (await store.readLogs({ functionId: 'f1', limit: 2 })).map((l) => l.line),
      ['one', 'two'],
    );
    assert.deepEqual(await store.readLogs({ functionId: 'f1', afterSeq: all[3]!.seq }), []);
    await assert.rejects(
      store.appendLogs([logLine('x', { functionId: 'nope' })]),
      code('E_NOT_FOUND'),
    );

    // Batches appended at once stay whole and in order; the default page is 1000 lines.
    const batches = Array.from({ length: 5 }, (_, b) =>
      Array.from({ length: 201 }, (_, i) => logLine(`b${b}-${i}`, { functionId: 'f2' })),
    );
    await Promise.all(batches.map((rows) => store.appendLogs(rows)));
    const page = await store.readLogs({ functionId: 'f2' });
    assert.equal(page.length, 1000);
    const rest = await store.readLogs({ functionId: 'f2', afterSeq: page.at(-1)!.seq });
    const lines = [...page, ...rest].map((l) => l.line).slice(1);
    assert.equal(lines.length, 1005);
    for (let b = 0; b < 5; b++) {
      const at = lines.indexOf(`b${b}-0`);
      assert.deepEqual(
        lines.slice(at, at + 201),
        batches[b]!.map((r) => r.line),
      );
    }
  });

  test('audit log: appended in order, newest first, filters, paging; outlives tenants', async () => {
    const { store } = await fresh();
    await seed(store);
    const entry = (over: Partial<Omit<AuditRecord, 'seq'>> = {}): Omit<AuditRecord, 'seq'> => ({
      ts: T0,
      keyId: 'kadmin',
      role: 'admin',
      tenant: 'acme',
      action: 'tenant.create',
      target: 'acme',
      requestId: 'req_1',
      source: '127.0.0.1',
      result: 'ok',
      status: 201,
      details: { limits: { maxConcurrency: 5 } },
      ...over,
    });
    assert.deepEqual(await store.listAudit({}), []);
    await store.appendAudit(entry());
    await store.appendAudit(
      entry({ ts: T0 + 1, action: 'secret.put', target: 'hello/TOKEN', requestId: 'req_2' }),
    );
    await store.appendAudit(
      entry({
        ts: T0 + 2,
        keyId: 'k1',
        role: 'tenant',
        action: 'function.delete',
        target: 'hello',
        requestId: 'req_3',
        result: 'E_NOT_FOUND',
        status: 404,
        details: {},
      }),
    );
    await store.appendAudit(
      entry({ ts: T0 + 3, tenant: null, action: 'key.create', target: 'k9', requestId: 'req_4' }),
    );
    await store.appendAudit(
      entry({ ts: T0 + 4, tenant: 'beta', action: 'tenant.delete', target: 'beta' }),
    );

    const all = await store.listAudit({});
    assert.equal(all.length, 5);
    for (let i = 1; i < all.length; i++) assert.ok(all[i]!.seq < all[i - 1]!.seq, 'newest first');
    assert.deepEqual(all.at(-1), { ...entry(), seq: all.at(-1)!.seq });
    assert.deepEqual(all[2]?.details, {});
    assert.equal(all[1]?.tenant, null);
    assert.equal(all[2]?.status, 404);

    const reqs = (rows: AuditRecord[]) => rows.map((r) => r.requestId);
    assert.deepEqual(reqs(await store.listAudit({ tenant: 'acme' })), ['req_3', 'req_2', 'req_1']);
    assert.deepEqual(reqs(await store.listAudit({ action: 'secret.put' })), ['req_2']);
    assert.deepEqual(reqs(await store.listAudit({ keyId: 'k1' })), ['req_3']);
    assert.deepEqual(reqs(await store.listAudit({ since: T0 + 1, until: T0 + 3 })), [
      'req_3',
      'req_2',
    ]);
    assert.deepEqual(reqs(await store.listAudit({ tenant: 'acme', keyId: 'kadmin' })), [
      'req_2',
      'req_1',
    ]);

    // Paging backwards: each page starts below the last seq of the one before.
    const page1 = await store.listAudit({ limit: 2 });
    const page2 = await store.listAudit({ limit: 2, beforeSeq: page1.at(-1)!.seq });
    const page3 = await store.listAudit({ limit: 2, beforeSeq: page2.at(-1)!.seq });
    assert.deepEqual(
      [...page1, ...page2, ...page3].map((r) => r.seq),
      all.map((r) => r.seq),
    );
    assert.equal(page3.length, 1);

    // Records outlive the tenants they name, and a function's deletion.
    await store.deleteTenant('t1');
    assert.equal((await store.listAudit({ tenant: 'acme' })).length, 3);
    for (let i = 0; i < 105; i++) await store.appendAudit(entry({ requestId: `bulk-${i}` }));
    assert.equal((await store.listAudit({})).length, 100, 'default limit 100');
  });

  test('a schema-1 database upgrades to the audit log, keeping its data', async () => {
    const target = await newTarget();
    const db = await target.openDb();
    try {
      // What an isola before the audit log made: migration 1 only.
      const v1 = MIGRATIONS.find((m) => m.version === 1)!;
      await db.tx(async (tx) => {
        await tx.run(
          'CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)',
        );
        for (const sql of v1.statements(tx.dialect)) await tx.run(sql);
        await tx.run('INSERT INTO schema_migrations (version, applied_at) VALUES (1, ?)', [T0]);
        await tx.run(
          'INSERT INTO tenants (id, name, max_concurrency, max_memory_mib, created_at) VALUES (?, ?, ?, ?, ?)',
          ['t1', 'acme', 10, 2048, T0],
        );
      });
      assert.deepEqual(await migrate(db), [2]);
    } finally {
      await db.close();
    }
    const store = await open(target);
    assert.equal((await store.getTenant('t1'))?.name, 'acme');
    await store.appendAudit({
      ts: T0,
      keyId: 'k',
      role: 'admin',
      tenant: 'acme',
      action: 'tenant.update',
      target: 'acme',
      requestId: 'r',
      source: '::1',
      result: 'ok',
      status: 200,
      details: {},
    });
    assert.equal((await store.listAudit({ tenant: 'acme' })).length, 1);
  });

  test('migrations are idempotent, also when two processes start at once', async () => {
    const { store, target } = await fresh();
    await seed(store);
    const [s2, s3] = await Promise.all([open(target), open(target)]);
    assert.equal((await s2!.getTenant('t1'))?.name, 'acme');
    assert.equal((await s3!.listFunctions('t1')).length, 1);
    const db = await target.openDb();
    try {
      assert.deepEqual(await migrate(db), []);
      const rows = await db.all<{ version: number }>(
        'SELECT version FROM schema_migrations ORDER BY version',
      );
      assert.deepEqual(
        rows.map((r) => r.version),
        MIGRATIONS.map((m) => m.version),
      );
      assert.equal(rows.at(-1)?.version, LATEST_SCHEMA_VERSION);
    } finally {
      await db.close();
    }
  });

  test('a fresh database migrates in parallel opens without errors', async () => {
    const target = await newTarget();
    const stores = await Promise.all([open(target), open(target), open(target)]);
    await stores[0]!.createTenant(tenant('t1'));
    assert.equal((await stores[2]!.getTenant('t1'))?.name, 'tenant-t1');
  });

  test('a database newer than this code is refused with E_DB', async () => {
    const target = await newTarget();
    const db = await target.openDb();
    try {
      await migrate(db);
      await db.run('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)', [
        LATEST_SCHEMA_VERSION + 1,
        T0,
      ]);
    } finally {
      await db.close();
    }
    await assert.rejects(target.open(), (e: unknown) => {
      code('E_DB')(e);
      assert.match((e as Error).message, /newer than this isola/);
      return true;
    });
  });

  test('a reopened store keeps its data', async () => {
    const { store, target } = await fresh();
    await seed(store);
    await store.addVersion('f1', bundleVersion(), ['live']);
    await store.putSecret({ functionId: 'f1', name: 'S', ciphertext: 'c', updatedAt: T0 });
    await store.appendLogs([logLine('kept')]);
    await store.close();
    const again = await open(target);
    assert.equal((await again.getFunction('t1', 'hello'))?.latestVersion, 1);
    assert.equal((await again.getFunctionById('f1'))?.secretsRev, 1);
    assert.equal((await again.getAlias('f1', 'live'))?.version, 1);
    assert.deepEqual(
      (await again.readLogs({ functionId: 'f1' })).map((l) => l.line),
      ['kept'],
    );
    // A transaction that fails part-way leaves nothing behind.
    await assert.rejects(
      again.appendLogs([logLine('a'), logLine('b', { functionId: 'nope' })]),
      code('E_NOT_FOUND'),
    );
    assert.equal((await again.readLogs({ functionId: 'f1' })).length, 1);
  });
}

// ---------------------------------------------------------------------------------------------
// SQLite

let sqliteN = 0;

describe('platform store contract: SQLite', () => {
  contract(async () => {
    const dataDir = path.join(base, `sqlite-${sqliteN++}`);
    // openDb may come first, and SQLite makes no directories.
    mkdirSync(dataDir, { recursive: true });
    return {
      open: () => openPlatformStore({ dataDir }),
      openDb: async () => openSqliteDb(path.join(dataDir, SQLITE_FILE)),
    };
  });

  test('the data directory is made owner-only and holds isola.db', async () => {
    const dataDir = path.join(base, 'made', 'here');
    const store = await openPlatformStore({ dataDir });
    try {
      assert.equal(store.dialect, 'sqlite');
      assert.equal(statSync(dataDir).mode & 0o777, 0o700);
      assert.ok(existsSync(path.join(dataDir, SQLITE_FILE)));
    } finally {
      await store.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// PostgreSQL

const pgMissing = postgresBinDir() === null;
let server: TestPostgres | undefined;
let pgN = 0;

describe(
  'platform store contract: PostgreSQL',
  {
    skip: pgMissing
      ? 'PostgreSQL IS NOT INSTALLED: run scripts/setup.sh (it installs postgresql)'
      : false,
  },
  () => {
    before(async () => {
      server = await startPostgres();
    });
    after(async () => {
      await server?.stop();
    });

    contract(async () => {
      const url = await createDatabase(server!.adminUrl, `contract_${pgN++}`);
      return {
        open: () => openPlatformStore({ dataDir: path.join(base, 'unused'), databaseUrl: url }),
        openDb: () => openPostgresDb(url),
      };
    });

    test('opens the store named by the URL', async () => {
      const store = await openPlatformStore({ dataDir: base, databaseUrl: server!.url });
      try {
        assert.equal(store.dialect, 'postgres');
      } finally {
        await store.close();
      }
    });

    test('a wrong password is E_DB naming the server, without the password', async () => {
      const u = new URL(server!.url);
      u.password = 'wrong-password-1234';
      await assert.rejects(openPlatformStore({ dataDir: base, databaseUrl: u.toString() }), (e) => {
        code('E_DB')(e);
        const msg = (e as Error).message;
        assert.ok(msg.includes(`127.0.0.1:${u.port}`), msg);
        assert.ok(!msg.includes('wrong-password-1234'), msg);
        return true;
      });
    });
  },
);

// ---------------------------------------------------------------------------------------------
// Opening, whatever the backend

describe('openPlatformStore', () => {
  test('unreachable PostgreSQL is E_DB naming host:port, never the password', async () => {
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    const url = 'postgres://isola:s3cret-password@127.0.0.1:1/isola';
    await assert.rejects(openPlatformStore({ dataDir: base, databaseUrl: url }), (e) => {
      code('E_DB')(e);
      const msg = (e as Error).message;
      assert.ok(msg.includes('127.0.0.1:1'), msg);
      assert.ok(!msg.includes('s3cret-password'), msg);
      return true;
    });
  });

  test('a DATABASE_URL that is not postgres:// is E_INVALID_ARGUMENT', async () => {
    await assert.rejects(
      openPlatformStore({ dataDir: base, databaseUrl: 'mysql://x@localhost/db' }),
      code('E_INVALID_ARGUMENT'),
    );
  });
});
