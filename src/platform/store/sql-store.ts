// PlatformStore over a Db: one implementation for SQLite and PostgreSQL, all SQL portable
// (`ON CONFLICT ... DO UPDATE`, `RETURNING`, plain joins and aggregates).
//
// Row locks on PostgreSQL: methods that change a function's children (versions, secrets) lock
// the function row first with an UPDATE, so concurrent callers queue on it in one order and
// never deadlock; that UPDATE is also what numbers versions without duplicates.

import { IsolaError } from '../../errors.js';
import { DEFAULT_EGRESS } from '../../net/policy.js';
import { type Db, type SqlValue, lockTx } from './db.js';
import type {
  AliasRecord,
  ApiKey,
  AuditFilter,
  AuditRecord,
  FunctionRecord,
  InvocationRecord,
  LogRecord,
  PlatformStore,
  SecretRecord,
  Tenant,
  TenantLimits,
  UsageRow,
  VersionRecord,
} from './types.js';

export const DEFAULT_INVOCATIONS_LIMIT = 100;
export const DEFAULT_LOGS_LIMIT = 1000;
export const DEFAULT_AUDIT_LIMIT = 100;
/** Log rows per INSERT: 6 parameters each keeps a statement far below both databases' limits. */
const LOG_ROWS_PER_INSERT = 200;
/**
 * Advisory lock key serializing log appends on PostgreSQL, so sequence numbers become visible
 * in commit order and a reader following `afterSeq` never skips a row committed late ("logs").
 */
const LOGS_LOCK_KEY = 0x6c6f6773;
/** What usage() calls a tenant that no longer exists. */
export const DELETED_TENANT_NAME = '(deleted)';

// ---------------------------------------------------------------------------------------------
// Rows and their mapping

interface TenantRow {
  id: string;
  name: string;
  max_concurrency: number;
  max_memory_mib: number;
  created_at: number;
}

interface KeyRow {
  id: string;
  role: ApiKey['role'];
  tenant_id: string | null;
  secret_hash: string;
  description: string;
  created_at: number;
  revoked_at: number | null;
}

interface FunctionRow {
  id: string;
  tenant_id: string;
  name: string;
  runtime: FunctionRecord['runtime'];
  created_at: number;
  updated_at: number;
  latest_version: number;
  secrets_rev: number;
}

interface VersionRow {
  function_id: string;
  version: number;
  runtime: VersionRecord['runtime'];
  source: string;
  config: string;
  description: string;
  created_at: number;
}

interface AliasRow {
  function_id: string;
  name: string;
  version: number;
  additional_version: number | null;
  additional_weight: number;
  updated_at: number;
}

interface SecretRow {
  function_id: string;
  name: string;
  ciphertext: string;
  updated_at: number;
}

interface InvocationRow {
  request_id: string;
  tenant_id: string;
  function_id: string;
  function_name: string;
  version: number;
  started_at: number;
  duration_ms: number;
  memory_mib: number;
  gb_seconds: number;
  status: InvocationRecord['status'];
  start_kind: InvocationRecord['startKind'];
  start_ms: number;
}

interface LogRow {
  seq: number;
  tenant_id: string;
  function_id: string;
  request_id: string | null;
  ts: number;
  stream: LogRecord['stream'];
  line: string;
}

interface AuditRow {
  seq: number;
  ts: number;
  key_id: string;
  role: AuditRecord['role'];
  tenant: string | null;
  action: string;
  target: string;
  request_id: string;
  source: string;
  result: string;
  status: number;
  details: string;
}

interface UsageDbRow {
  tenant_id: string;
  tenant_name: string;
  function_name: string;
  invocations: number;
  errors: number;
  duration_ms: number;
  gb_seconds: number;
}

const toTenant = (r: TenantRow): Tenant => ({
  id: r.id,
  name: r.name,
  maxConcurrency: r.max_concurrency,
  maxMemoryMiB: r.max_memory_mib,
  createdAt: r.created_at,
});

const toKey = (r: KeyRow): ApiKey => ({
  id: r.id,
  role: r.role,
  tenantId: r.tenant_id,
  secretHash: r.secret_hash,
  description: r.description,
  createdAt: r.created_at,
  revokedAt: r.revoked_at,
});

const toFunction = (r: FunctionRow): FunctionRecord => ({
  id: r.id,
  tenantId: r.tenant_id,
  name: r.name,
  runtime: r.runtime,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
  latestVersion: r.latest_version,
  secretsRev: r.secrets_rev,
});

const toVersion = (r: VersionRow): VersionRecord => ({
  functionId: r.function_id,
  version: r.version,
  runtime: r.runtime,
  source: JSON.parse(r.source) as VersionRecord['source'],
  config: withEgress(JSON.parse(r.config) as Partial<VersionRecord['config']>),
  description: r.description,
  createdAt: r.created_at,
});

const toAlias = (r: AliasRow): AliasRecord => ({
  functionId: r.function_id,
  name: r.name,
  version: r.version,
  additionalVersion: r.additional_version,
  additionalWeight: r.additional_weight,
  updatedAt: r.updated_at,
});

const toSecret = (r: SecretRow): SecretRecord => ({
  functionId: r.function_id,
  name: r.name,
  ciphertext: r.ciphertext,
  updatedAt: r.updated_at,
});

const toInvocation = (r: InvocationRow): InvocationRecord => ({
  requestId: r.request_id,
  tenantId: r.tenant_id,
  functionId: r.function_id,
  functionName: r.function_name,
  version: r.version,
  startedAt: r.started_at,
  durationMs: r.duration_ms,
  memoryMiB: r.memory_mib,
  gbSeconds: r.gb_seconds,
  status: r.status,
  startKind: r.start_kind,
  startMs: r.start_ms,
});

const toLog = (r: LogRow): LogRecord => ({
  seq: r.seq,
  tenantId: r.tenant_id,
  functionId: r.function_id,
  requestId: r.request_id,
  ts: r.ts,
  stream: r.stream,
  line: r.line,
});

const toAudit = (r: AuditRow): AuditRecord => ({
  seq: r.seq,
  ts: r.ts,
  keyId: r.key_id,
  role: r.role,
  tenant: r.tenant,
  action: r.action,
  target: r.target,
  requestId: r.request_id,
  source: r.source,
  result: r.result,
  status: r.status,
  details: JSON.parse(r.details) as Record<string, unknown>,
});

const toUsage = (r: UsageDbRow): UsageRow => ({
  tenantId: r.tenant_id,
  tenantName: r.tenant_name,
  functionName: r.function_name,
  invocations: r.invocations,
  errors: r.errors,
  durationMs: r.duration_ms,
  gbSeconds: r.gb_seconds,
});

// ---------------------------------------------------------------------------------------------
// SQL pieces

const TENANT_COLS = 'id, name, max_concurrency, max_memory_mib, created_at';
const KEY_COLS = 'id, role, tenant_id, secret_hash, description, created_at, revoked_at';
const FUNCTION_COLS =
  'id, tenant_id, name, runtime, created_at, updated_at, latest_version, secrets_rev';
const VERSION_COLS = 'function_id, version, runtime, source, config, description, created_at';
const ALIAS_COLS = 'function_id, name, version, additional_version, additional_weight, updated_at';
const SECRET_COLS = 'function_id, name, ciphertext, updated_at';
const INVOCATION_COLS =
  'request_id, tenant_id, function_id, function_name, version, started_at, duration_ms, memory_mib, gb_seconds, status, start_kind, start_ms';
const LOG_COLS = 'seq, tenant_id, function_id, request_id, ts, stream, line';
const AUDIT_INSERT_COLS =
  'ts, key_id, role, tenant, action, target, request_id, source, result, status, details';
const AUDIT_COLS = `seq, ${AUDIT_INSERT_COLS}`;

const UPSERT_ALIAS = `INSERT INTO aliases (${ALIAS_COLS}) VALUES (?, ?, ?, ?, ?, ?)
  ON CONFLICT (function_id, name) DO UPDATE SET version = excluded.version,
    additional_version = excluded.additional_version,
    additional_weight = excluded.additional_weight, updated_at = excluded.updated_at`;

/** `?, ?, ?` for n parameters. */
const marks = (n: number): string => Array.from({ length: n }, () => '?').join(', ');

/** A WHERE clause from the conditions that apply (each with its parameters). */
function where(conds: Array<[string, SqlValue[]] | null>): { sql: string; params: SqlValue[] } {
  const used = conds.filter((c): c is [string, SqlValue[]] => c !== null);
  if (used.length === 0) return { sql: '', params: [] };
  return {
    sql: ` WHERE ${used.map(([c]) => c).join(' AND ')}`,
    params: used.flatMap(([, p]) => p),
  };
}

const INSERT_INVOCATION = `INSERT INTO invocations (${INVOCATION_COLS}) VALUES (${marks(12)})`;

function invocationParams(r: InvocationRecord): SqlValue[] {
  return [
    r.requestId,
    r.tenantId,
    r.functionId,
    r.functionName,
    r.version,
    r.startedAt,
    r.durationMs,
    r.memoryMiB,
    r.gbSeconds,
    r.status,
    r.startKind,
    r.startMs,
  ];
}

/** Rethrows a unique violation with a message that names the resource. */
async function conflictAs<T>(p: Promise<T>, message: string): Promise<T> {
  try {
    return await p;
  } catch (err) {
    if (err instanceof IsolaError && err.code === 'E_CONFLICT')
      throw new IsolaError('E_CONFLICT', message, { cause: err });
    throw err;
  }
}

/** Locks the function row (PostgreSQL) and says whether it exists. */
async function lockFunction(tx: Db, functionId: string): Promise<boolean> {
  const r = await tx.run('UPDATE functions SET secrets_rev = secrets_rev WHERE id = ?', [
    functionId,
  ]);
  return r.changes > 0;
}

function noFunction(functionId: string): IsolaError {
  return new IsolaError('E_NOT_FOUND', `no function with id ${functionId}`);
}

// ---------------------------------------------------------------------------------------------

export class SqlPlatformStore implements PlatformStore {
  constructor(private readonly db: Db) {}

  get dialect(): 'sqlite' | 'postgres' {
    return this.db.dialect;
  }

  close(): Promise<void> {
    return this.db.close();
  }

  // --- tenants ---

  async createTenant(t: Tenant): Promise<void> {
    await conflictAs(
      this.db.run(`INSERT INTO tenants (${TENANT_COLS}) VALUES (?, ?, ?, ?, ?)`, [
        t.id,
        t.name,
        t.maxConcurrency,
        t.maxMemoryMiB,
        t.createdAt,
      ]),
      `a tenant named ${t.name} (or with id ${t.id}) already exists`,
    );
  }

  async getTenant(id: string): Promise<Tenant | null> {
    const r = await this.db.get<TenantRow>(`SELECT ${TENANT_COLS} FROM tenants WHERE id = ?`, [id]);
    return r ? toTenant(r) : null;
  }

  async getTenantByName(name: string): Promise<Tenant | null> {
    const r = await this.db.get<TenantRow>(`SELECT ${TENANT_COLS} FROM tenants WHERE name = ?`, [
      name,
    ]);
    return r ? toTenant(r) : null;
  }

  async listTenants(): Promise<Tenant[]> {
    const rows = await this.db.all<TenantRow>(
      `SELECT ${TENANT_COLS} FROM tenants ORDER BY name, id`,
    );
    return rows.map(toTenant);
  }

  updateTenantLimits(id: string, limits: Partial<TenantLimits>): Promise<Tenant | null> {
    return this.db.tx(async (tx) => {
      // COALESCE keeps a limit that `limits` leaves out.
      await tx.run(
        `UPDATE tenants SET max_concurrency = COALESCE(?, max_concurrency),
           max_memory_mib = COALESCE(?, max_memory_mib) WHERE id = ?`,
        [limits.maxConcurrency ?? null, limits.maxMemoryMiB ?? null, id],
      );
      const r = await tx.get<TenantRow>(`SELECT ${TENANT_COLS} FROM tenants WHERE id = ?`, [id]);
      return r ? toTenant(r) : null;
    });
  }

  async deleteTenant(id: string): Promise<boolean> {
    // Keys and functions go by ON DELETE CASCADE, and with the functions their children.
    return (await this.db.run('DELETE FROM tenants WHERE id = ?', [id])).changes > 0;
  }

  // --- keys ---

  async createKey(k: ApiKey): Promise<void> {
    await conflictAs(
      this.db.run(`INSERT INTO api_keys (${KEY_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)`, [
        k.id,
        k.role,
        k.tenantId,
        k.secretHash,
        k.description,
        k.createdAt,
        k.revokedAt,
      ]),
      `a key with id ${k.id} already exists`,
    );
  }

  async getKey(id: string): Promise<ApiKey | null> {
    const r = await this.db.get<KeyRow>(`SELECT ${KEY_COLS} FROM api_keys WHERE id = ?`, [id]);
    return r ? toKey(r) : null;
  }

  async listKeys(tenantId: string | null): Promise<ApiKey[]> {
    const rows =
      tenantId === null
        ? await this.db.all<KeyRow>(
            `SELECT ${KEY_COLS} FROM api_keys WHERE tenant_id IS NULL ORDER BY created_at, id`,
          )
        : await this.db.all<KeyRow>(
            `SELECT ${KEY_COLS} FROM api_keys WHERE tenant_id = ? ORDER BY created_at, id`,
            [tenantId],
          );
    return rows.map(toKey);
  }

  async revokeKey(id: string, at: number): Promise<boolean> {
    // Revoking twice keeps the first time.
    const r = await this.db.run(
      'UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?',
      [at, id],
    );
    return r.changes > 0;
  }

  async countKeys(): Promise<number> {
    const r = await this.db.get<{ n: number }>('SELECT COUNT(*) AS n FROM api_keys');
    return r?.n ?? 0;
  }

  // --- functions ---

  async createFunction(f: FunctionRecord): Promise<void> {
    await conflictAs(
      this.db.run(`INSERT INTO functions (${FUNCTION_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, [
        f.id,
        f.tenantId,
        f.name,
        f.runtime,
        f.createdAt,
        f.updatedAt,
        f.latestVersion,
        f.secretsRev,
      ]),
      `a function named ${f.name} (or with id ${f.id}) already exists`,
    );
  }

  async getFunction(tenantId: string, name: string): Promise<FunctionRecord | null> {
    const r = await this.db.get<FunctionRow>(
      `SELECT ${FUNCTION_COLS} FROM functions WHERE tenant_id = ? AND name = ?`,
      [tenantId, name],
    );
    return r ? toFunction(r) : null;
  }

  async getFunctionById(id: string): Promise<FunctionRecord | null> {
    const r = await this.db.get<FunctionRow>(
      `SELECT ${FUNCTION_COLS} FROM functions WHERE id = ?`,
      [id],
    );
    return r ? toFunction(r) : null;
  }

  async listFunctions(tenantId: string): Promise<FunctionRecord[]> {
    const rows = await this.db.all<FunctionRow>(
      `SELECT ${FUNCTION_COLS} FROM functions WHERE tenant_id = ? ORDER BY name`,
      [tenantId],
    );
    return rows.map(toFunction);
  }

  async deleteFunction(id: string): Promise<boolean> {
    return (await this.db.run('DELETE FROM functions WHERE id = ?', [id])).changes > 0;
  }

  // --- versions ---

  addVersion(
    functionId: string,
    v: Omit<VersionRecord, 'functionId' | 'version'>,
    moveAliases: string[],
  ): Promise<VersionRecord> {
    return this.db.tx(async (tx) => {
      // The increment locks the function row, so concurrent deploys get consecutive numbers.
      const bumped = await tx.get<{ latest_version: number }>(
        `UPDATE functions SET latest_version = latest_version + 1, updated_at = ?
           WHERE id = ? RETURNING latest_version`,
        [v.createdAt, functionId],
      );
      if (bumped === undefined) throw noFunction(functionId);
      const rec: VersionRecord = { ...v, functionId, version: bumped.latest_version };
      await tx.run(`INSERT INTO versions (${VERSION_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)`, [
        functionId,
        rec.version,
        rec.runtime,
        JSON.stringify(rec.source),
        JSON.stringify(rec.config),
        rec.description,
        rec.createdAt,
      ]);
      for (const name of moveAliases)
        await tx.run(UPSERT_ALIAS, [functionId, name, rec.version, null, 0, rec.createdAt]);
      return rec;
    });
  }

  async getVersion(functionId: string, version: number): Promise<VersionRecord | null> {
    const r = await this.db.get<VersionRow>(
      `SELECT ${VERSION_COLS} FROM versions WHERE function_id = ? AND version = ?`,
      [functionId, version],
    );
    return r ? toVersion(r) : null;
  }

  async listVersions(functionId: string): Promise<VersionRecord[]> {
    const rows = await this.db.all<VersionRow>(
      `SELECT ${VERSION_COLS} FROM versions WHERE function_id = ? ORDER BY version`,
      [functionId],
    );
    return rows.map(toVersion);
  }

  // --- aliases ---

  async putAlias(a: AliasRecord): Promise<void> {
    await this.db.run(UPSERT_ALIAS, [
      a.functionId,
      a.name,
      a.version,
      a.additionalVersion,
      a.additionalWeight,
      a.updatedAt,
    ]);
  }

  async getAlias(functionId: string, name: string): Promise<AliasRecord | null> {
    const r = await this.db.get<AliasRow>(
      `SELECT ${ALIAS_COLS} FROM aliases WHERE function_id = ? AND name = ?`,
      [functionId, name],
    );
    return r ? toAlias(r) : null;
  }

  async listAliases(functionId: string): Promise<AliasRecord[]> {
    const rows = await this.db.all<AliasRow>(
      `SELECT ${ALIAS_COLS} FROM aliases WHERE function_id = ? ORDER BY name`,
      [functionId],
    );
    return rows.map(toAlias);
  }

  async deleteAlias(functionId: string, name: string): Promise<boolean> {
    const r = await this.db.run('DELETE FROM aliases WHERE function_id = ? AND name = ?', [
      functionId,
      name,
    ]);
    return r.changes > 0;
  }

  // --- secrets ---

  putSecret(s: SecretRecord): Promise<void> {
    return this.db.tx(async (tx) => {
      const r = await tx.run('UPDATE functions SET secrets_rev = secrets_rev + 1 WHERE id = ?', [
        s.functionId,
      ]);
      if (r.changes === 0) throw noFunction(s.functionId);
      await tx.run(
        `INSERT INTO secrets (${SECRET_COLS}) VALUES (?, ?, ?, ?)
           ON CONFLICT (function_id, name) DO UPDATE SET ciphertext = excluded.ciphertext,
             updated_at = excluded.updated_at`,
        [s.functionId, s.name, s.ciphertext, s.updatedAt],
      );
    });
  }

  async listSecrets(functionId: string): Promise<SecretRecord[]> {
    const rows = await this.db.all<SecretRow>(
      `SELECT ${SECRET_COLS} FROM secrets WHERE function_id = ? ORDER BY name`,
      [functionId],
    );
    return rows.map(toSecret);
  }

  deleteSecret(functionId: string, name: string): Promise<boolean> {
    return this.db.tx(async (tx) => {
      if (!(await lockFunction(tx, functionId))) return false;
      const r = await tx.run('DELETE FROM secrets WHERE function_id = ? AND name = ?', [
        functionId,
        name,
      ]);
      if (r.changes === 0) return false;
      await tx.run('UPDATE functions SET secrets_rev = secrets_rev + 1 WHERE id = ?', [functionId]);
      return true;
    });
  }

  // --- invocations ---

  async recordInvocation(r: InvocationRecord): Promise<void> {
    await conflictAs(
      this.db.run(INSERT_INVOCATION, invocationParams(r)),
      `an invocation with request id ${r.requestId} is already recorded`,
    );
  }

  async recordInvocations(rs: readonly InvocationRecord[]): Promise<void> {
    if (rs.length === 0) return;
    await conflictAs(
      this.db.tx(async (tx) => {
        for (const r of rs) await tx.run(INSERT_INVOCATION, invocationParams(r));
      }),
      `an invocation of this batch of ${rs.length} is already recorded`,
    );
  }

  async getInvocation(requestId: string): Promise<InvocationRecord | null> {
    const r = await this.db.get<InvocationRow>(
      `SELECT ${INVOCATION_COLS} FROM invocations WHERE request_id = ?`,
      [requestId],
    );
    return r ? toInvocation(r) : null;
  }

  async listInvocations(filter: {
    tenantId?: string;
    functionId?: string;
    since?: number;
    limit?: number;
  }): Promise<InvocationRecord[]> {
    const w = where([
      filter.tenantId !== undefined ? ['tenant_id = ?', [filter.tenantId]] : null,
      filter.functionId !== undefined ? ['function_id = ?', [filter.functionId]] : null,
      filter.since !== undefined ? ['started_at >= ?', [filter.since]] : null,
    ]);
    const rows = await this.db.all<InvocationRow>(
      `SELECT ${INVOCATION_COLS} FROM invocations${w.sql}
         ORDER BY started_at DESC, request_id DESC LIMIT ?`,
      [...w.params, filter.limit ?? DEFAULT_INVOCATIONS_LIMIT],
    );
    return rows.map(toInvocation);
  }

  async usage(filter: { tenantId?: string; since?: number; until?: number }): Promise<UsageRow[]> {
    const w = where([
      filter.tenantId !== undefined ? ['i.tenant_id = ?', [filter.tenantId]] : null,
      filter.since !== undefined ? ['i.started_at >= ?', [filter.since]] : null,
      filter.until !== undefined ? ['i.started_at < ?', [filter.until]] : null,
    ]);
    // Grouped by function name, not id: a function deleted and made again is one line.
    const rows = await this.db.all<UsageDbRow>(
      `SELECT i.tenant_id AS tenant_id, COALESCE(t.name, ?) AS tenant_name,
          i.function_name AS function_name, COUNT(*) AS invocations,
          SUM(CASE WHEN i.status = 'ok' THEN 0 ELSE 1 END) AS errors,
          SUM(i.duration_ms) AS duration_ms, SUM(i.gb_seconds) AS gb_seconds
        FROM invocations i LEFT JOIN tenants t ON t.id = i.tenant_id${w.sql}
        GROUP BY i.tenant_id, t.name, i.function_name
        ORDER BY tenant_name, i.tenant_id, i.function_name`,
      [DELETED_TENANT_NAME, ...w.params],
    );
    return rows.map(toUsage);
  }

  // --- logs ---

  async appendLogs(rows: Array<Omit<LogRecord, 'seq'>>): Promise<void> {
    if (rows.length === 0) return;
    await this.db.tx(async (tx) => {
      await lockTx(tx, LOGS_LOCK_KEY);
      for (let i = 0; i < rows.length; i += LOG_ROWS_PER_INSERT) {
        const chunk = rows.slice(i, i + LOG_ROWS_PER_INSERT);
        // Rows of one INSERT get their seq in VALUES order on both databases.
        await tx.run(
          `INSERT INTO logs (tenant_id, function_id, request_id, ts, stream, line) VALUES ${chunk
            .map(() => `(${marks(6)})`)
            .join(', ')}`,
          chunk.flatMap((r) => [r.tenantId, r.functionId, r.requestId, r.ts, r.stream, r.line]),
        );
      }
    });
  }

  async readLogs(filter: {
    functionId: string;
    requestId?: string;
    afterSeq?: number;
    limit?: number;
  }): Promise<LogRecord[]> {
    const w = where([
      ['function_id = ?', [filter.functionId]],
      ['seq > ?', [filter.afterSeq ?? 0]],
      filter.requestId !== undefined ? ['request_id = ?', [filter.requestId]] : null,
    ]);
    const rows = await this.db.all<LogRow>(
      `SELECT ${LOG_COLS} FROM logs${w.sql} ORDER BY seq LIMIT ?`,
      [...w.params, filter.limit ?? DEFAULT_LOGS_LIMIT],
    );
    return rows.map(toLog);
  }

  // --- audit ---

  async appendAudit(r: Omit<AuditRecord, 'seq'>): Promise<void> {
    await this.db.run(`INSERT INTO audit_log (${AUDIT_INSERT_COLS}) VALUES (${marks(11)})`, [
      r.ts,
      r.keyId,
      r.role,
      r.tenant,
      r.action,
      r.target,
      r.requestId,
      r.source,
      r.result,
      r.status,
      JSON.stringify(r.details),
    ]);
  }

  async listAudit(filter: AuditFilter): Promise<AuditRecord[]> {
    const w = where([
      filter.tenant !== undefined ? ['tenant = ?', [filter.tenant]] : null,
      filter.action !== undefined ? ['action = ?', [filter.action]] : null,
      filter.keyId !== undefined ? ['key_id = ?', [filter.keyId]] : null,
      filter.since !== undefined ? ['ts >= ?', [filter.since]] : null,
      filter.until !== undefined ? ['ts < ?', [filter.until]] : null,
      filter.beforeSeq !== undefined ? ['seq < ?', [filter.beforeSeq]] : null,
    ]);
    const rows = await this.db.all<AuditRow>(
      `SELECT ${AUDIT_COLS} FROM audit_log${w.sql} ORDER BY seq DESC LIMIT ?`,
      [...w.params, filter.limit ?? DEFAULT_AUDIT_LIMIT],
    );
    return rows.map(toAudit);
  }
}

/** Versions stored before egress policies existed have none: the default applies to them. */
function withEgress(c: Partial<VersionRecord['config']>): VersionRecord['config'] {
  return { ...c, egress: c.egress ?? DEFAULT_EGRESS } as VersionRecord['config'];
}
