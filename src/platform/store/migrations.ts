// The control plane's schema, as an ordered list of migrations written once for both dialects.
// Applied versions are recorded in schema_migrations; migrate() applies the missing ones in one
// transaction. Two processes starting at once against one PostgreSQL database are serialized by
// an advisory lock taken before anything is read (DDL is transactional there, so the second sees
// the first's tables and applies nothing); on SQLite the transaction's write lock does the same.
//
// Portable types: TEXT (ids, names, JSON documents), INTEGER (small counts), BIGINT (epoch ms),
// DOUBLE PRECISION (measured amounts). Only the auto-increment key differs between dialects.
//
// Invocations and audit records carry no foreign keys on purpose: metering and audit records
// outlive the functions and tenants they describe.

import { IsolaError } from '../../errors.js';
import { type Db, type Dialect, lockTx } from './db.js';

export interface Migration {
  version: number;
  description: string;
  statements(d: Dialect): string[];
}

/** Advisory lock key for migrations ("isola" in ASCII); any constant shared by all processes. */
export const MIGRATION_LOCK_KEY = 0x69736f6c61;

const AUTO_ID: Record<Dialect, string> = {
  sqlite: 'INTEGER PRIMARY KEY AUTOINCREMENT',
  postgres: 'BIGSERIAL PRIMARY KEY',
};

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: 'tenants, keys, functions, versions, aliases, secrets, invocations, logs',
    statements: (d) => [
      `CREATE TABLE tenants (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        max_concurrency INTEGER NOT NULL,
        max_memory_mib INTEGER NOT NULL,
        created_at BIGINT NOT NULL
      )`,
      `CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        tenant_id TEXT REFERENCES tenants(id) ON DELETE CASCADE,
        secret_hash TEXT NOT NULL,
        description TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        revoked_at BIGINT
      )`,
      'CREATE INDEX api_keys_tenant ON api_keys (tenant_id)',
      `CREATE TABLE functions (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        runtime TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        latest_version INTEGER NOT NULL DEFAULT 0,
        secrets_rev INTEGER NOT NULL DEFAULT 0,
        UNIQUE (tenant_id, name)
      )`,
      `CREATE TABLE versions (
        function_id TEXT NOT NULL REFERENCES functions(id) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        runtime TEXT NOT NULL,
        source TEXT NOT NULL,
        config TEXT NOT NULL,
        description TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (function_id, version)
      )`,
      `CREATE TABLE aliases (
        function_id TEXT NOT NULL REFERENCES functions(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        additional_version INTEGER,
        additional_weight INTEGER NOT NULL DEFAULT 0,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (function_id, name)
      )`,
      `CREATE TABLE secrets (
        function_id TEXT NOT NULL REFERENCES functions(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        ciphertext TEXT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (function_id, name)
      )`,
      `CREATE TABLE invocations (
        request_id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        function_id TEXT NOT NULL,
        function_name TEXT NOT NULL,
        version INTEGER NOT NULL,
        started_at BIGINT NOT NULL,
        duration_ms DOUBLE PRECISION NOT NULL,
        memory_mib INTEGER NOT NULL,
        gb_seconds DOUBLE PRECISION NOT NULL,
        status TEXT NOT NULL,
        start_kind TEXT NOT NULL,
        start_ms DOUBLE PRECISION NOT NULL
      )`,
      'CREATE INDEX invocations_tenant_started ON invocations (tenant_id, started_at)',
      'CREATE INDEX invocations_function_started ON invocations (function_id, started_at)',
      `CREATE TABLE logs (
        seq ${AUTO_ID[d]},
        tenant_id TEXT NOT NULL,
        function_id TEXT NOT NULL REFERENCES functions(id) ON DELETE CASCADE,
        request_id TEXT,
        ts BIGINT NOT NULL,
        stream TEXT NOT NULL,
        line TEXT NOT NULL
      )`,
      'CREATE INDEX logs_function_seq ON logs (function_id, seq)',
      'CREATE INDEX logs_request ON logs (request_id)',
    ],
  },
  {
    version: 2,
    description: 'audit log of state-changing API calls',
    // No foreign keys: the record of a tenant's deletion must outlive the tenant.
    statements: (d) => [
      `CREATE TABLE audit_log (
        seq ${AUTO_ID[d]},
        ts BIGINT NOT NULL,
        key_id TEXT NOT NULL,
        role TEXT NOT NULL,
        tenant TEXT,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        request_id TEXT NOT NULL,
        source TEXT NOT NULL,
        result TEXT NOT NULL,
        status INTEGER NOT NULL,
        details TEXT NOT NULL
      )`,
      'CREATE INDEX audit_log_ts ON audit_log (ts)',
      'CREATE INDEX audit_log_tenant_seq ON audit_log (tenant, seq)',
    ],
  },
];

/** The newest schema version this code knows. */
export const LATEST_SCHEMA_VERSION = Math.max(...MIGRATIONS.map((m) => m.version));

/** Applies the migrations `db` lacks; returns the versions applied (empty when up to date). */
export function migrate(db: Db, now: () => number = Date.now): Promise<number[]> {
  return db.tx(async (tx) => {
    await lockTx(tx, MIGRATION_LOCK_KEY);
    await tx.run(
      'CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)',
    );
    const rows = await tx.all<{ version: number }>('SELECT version FROM schema_migrations');
    const done = new Set(rows.map((r) => r.version));
    const newest = Math.max(0, ...done);
    if (newest > LATEST_SCHEMA_VERSION)
      throw new IsolaError(
        'E_DB',
        `the database schema is version ${newest}, newer than this isola knows (${LATEST_SCHEMA_VERSION}); upgrade isola`,
      );
    const applied: number[] = [];
    for (const m of [...MIGRATIONS].sort((a, b) => a.version - b.version)) {
      if (done.has(m.version)) continue;
      for (const sql of m.statements(tx.dialect)) await tx.run(sql);
      await tx.run('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)', [
        m.version,
        now(),
      ]);
      applied.push(m.version);
    }
    return applied;
  });
}
