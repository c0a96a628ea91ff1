// The control plane's records and the one interface over where they live. Two implementations
// (SQLite embedded, PostgreSQL when DATABASE_URL is set) share one schema and one contract test
// suite (test/70-platform-store.test.ts). Times are epoch milliseconds; ids are opaque strings.

import type { EgressPolicy } from '../../net/policy.js';

export interface TenantLimits {
  /** Invocations of this tenant running at once, across all its functions. */
  maxConcurrency: number;
  /** Memory of all this tenant's running instances together, MiB. */
  maxMemoryMiB: number;
}

export interface Tenant extends TenantLimits {
  id: string;
  name: string;
  createdAt: number;
}

export type KeyRole = 'admin' | 'tenant';

export interface ApiKey {
  /** Public part of the key (the key text is `isola_<id>_<secret>`). */
  id: string;
  role: KeyRole;
  /** null for admin keys. */
  tenantId: string | null;
  /** sha256 of the secret part, hex. */
  secretHash: string;
  description: string;
  createdAt: number;
  revokedAt: number | null;
}

export type Runtime = 'nodejs20' | 'image';

/** Per-function limits and pool settings (part of every version: versions are immutable). */
export interface FunctionConfig {
  memoryMiB: number;
  vcpus: number;
  timeoutS: number;
  /** Requests one instance serves at once. */
  concurrency: number;
  minInstances: number;
  maxInstances: number;
  /** Keep-alive: an instance idle this long is stopped (scale to zero). */
  idleTimeoutS: number;
  /** HTTP route /{tenant}/{function}/... answers without an API key. */
  public: boolean;
  env: Record<string, string>;
  /** Where the function's instances may connect (net/policy.ts). */
  egress: EgressPolicy;
}

export interface FunctionRecord {
  id: string;
  tenantId: string;
  name: string;
  runtime: Runtime;
  createdAt: number;
  updatedAt: number;
  /** Highest version number made so far (0 before the first deploy). */
  latestVersion: number;
  /** Bumped when a secret changes, so instances started with old values are replaced. */
  secretsRev: number;
}

/** Where a version's code comes from. */
export type VersionSource =
  | { kind: 'bundle'; digest: string; handler: string; sizeBytes: number }
  | { kind: 'image'; image: string; manifestDigest: string };

export interface VersionRecord {
  functionId: string;
  version: number;
  runtime: Runtime;
  source: VersionSource;
  config: FunctionConfig;
  description: string;
  createdAt: number;
}

export interface AliasRecord {
  functionId: string;
  name: string;
  version: number;
  /** Traffic split: this version gets `additionalWeight` percent (1..99), the rest `version`. */
  additionalVersion: number | null;
  additionalWeight: number;
  updatedAt: number;
}

export interface SecretRecord {
  functionId: string;
  name: string;
  /** AES-256-GCM ciphertext, base64 (iv | tag | data); the store never sees plain text. */
  ciphertext: string;
  updatedAt: number;
}

export type InvocationStatus = 'ok' | 'error' | 'timeout' | 'oom' | 'crash' | 'unavailable';
export type StartKind = 'warm' | 'restored' | 'booted';

/** One metering record per invocation that reached a function instance. */
export interface InvocationRecord {
  requestId: string;
  tenantId: string;
  functionId: string;
  functionName: string;
  version: number;
  startedAt: number;
  durationMs: number;
  memoryMiB: number;
  /** memoryMiB / 1024 * durationMs / 1000. */
  gbSeconds: number;
  status: InvocationStatus;
  startKind: StartKind;
  /** Time spent getting an instance (0 when warm). */
  startMs: number;
}

export type LogStream = 'stdout' | 'stderr' | 'system';

export interface LogRecord {
  /** Increasing; used as the cursor for --follow. */
  seq: number;
  tenantId: string;
  functionId: string;
  requestId: string | null;
  ts: number;
  stream: LogStream;
  line: string;
}

export interface UsageRow {
  tenantId: string;
  tenantName: string;
  functionName: string;
  invocations: number;
  errors: number;
  durationMs: number;
  gbSeconds: number;
}

/**
 * One state-changing API call (tenants, keys, functions, deploys, aliases, secrets), whatever
 * its outcome. Never holds a secret's value or a key's text: secrets by name, keys by id.
 */
export interface AuditRecord {
  /** Increasing; the cursor for paging. */
  seq: number;
  ts: number;
  /** The key that made the call, and its role. */
  keyId: string;
  role: KeyRole;
  /** Name of the tenant acted on or for (null: none, e.g. an admin key made). */
  tenant: string | null;
  /** e.g. tenant.create, key.revoke, function.deploy, secret.put. */
  action: string;
  /** What it acted on: a tenant, key id, function, function/alias or function/secret. */
  target: string;
  requestId: string;
  /** The client's address as the server saw it. */
  source: string;
  /** 'ok', or the error code it failed with. */
  result: string;
  /** The HTTP status answered. */
  status: number;
  /** A few facts about the change (limits set, version made); never values of secrets. */
  details: Record<string, unknown>;
}

export interface AuditFilter {
  tenant?: string;
  action?: string;
  keyId?: string;
  since?: number;
  until?: number;
  /** Only records older than this seq (paging backwards from the newest). */
  beforeSeq?: number;
  limit?: number;
}

/**
 * The control plane store. Every method is atomic; methods that change several rows run in one
 * transaction. Unique violations become IsolaError E_CONFLICT; missing rows return null (or
 * false) rather than throwing, so callers choose the error.
 */
export interface PlatformStore {
  readonly dialect: 'sqlite' | 'postgres';
  close(): Promise<void>;

  createTenant(t: Tenant): Promise<void>;
  getTenant(id: string): Promise<Tenant | null>;
  getTenantByName(name: string): Promise<Tenant | null>;
  listTenants(): Promise<Tenant[]>;
  updateTenantLimits(id: string, limits: Partial<TenantLimits>): Promise<Tenant | null>;
  /** Deletes the tenant and everything it owns (keys, functions, versions, aliases, secrets, logs; metering records stay). */
  deleteTenant(id: string): Promise<boolean>;

  createKey(k: ApiKey): Promise<void>;
  getKey(id: string): Promise<ApiKey | null>;
  listKeys(tenantId: string | null): Promise<ApiKey[]>;
  revokeKey(id: string, at: number): Promise<boolean>;
  countKeys(): Promise<number>;

  createFunction(f: FunctionRecord): Promise<void>;
  getFunction(tenantId: string, name: string): Promise<FunctionRecord | null>;
  getFunctionById(id: string): Promise<FunctionRecord | null>;
  listFunctions(tenantId: string): Promise<FunctionRecord[]>;
  /** Deletes the function with its versions, aliases, secrets and logs. */
  deleteFunction(id: string): Promise<boolean>;
  /**
   * In one transaction: latestVersion + 1 becomes the new version's number, the version row is
   * written, and each alias named in `moveAliases` is created or pointed at it (no split).
   */
  addVersion(
    functionId: string,
    v: Omit<VersionRecord, 'functionId' | 'version'>,
    moveAliases: string[],
  ): Promise<VersionRecord>;
  getVersion(functionId: string, version: number): Promise<VersionRecord | null>;
  listVersions(functionId: string): Promise<VersionRecord[]>;

  putAlias(a: AliasRecord): Promise<void>;
  getAlias(functionId: string, name: string): Promise<AliasRecord | null>;
  listAliases(functionId: string): Promise<AliasRecord[]>;
  deleteAlias(functionId: string, name: string): Promise<boolean>;

  /** Upsert; bumps the function's secretsRev in the same transaction. */
  putSecret(s: SecretRecord): Promise<void>;
  listSecrets(functionId: string): Promise<SecretRecord[]>;
  /** Bumps secretsRev when something was deleted. */
  deleteSecret(functionId: string, name: string): Promise<boolean>;

  recordInvocation(r: InvocationRecord): Promise<void>;
  /** All or none, in one transaction (E_CONFLICT when one of them is already recorded). */
  recordInvocations(rs: readonly InvocationRecord[]): Promise<void>;
  getInvocation(requestId: string): Promise<InvocationRecord | null>;
  listInvocations(filter: {
    tenantId?: string;
    functionId?: string;
    since?: number;
    limit?: number;
  }): Promise<InvocationRecord[]>;
  usage(filter: { tenantId?: string; since?: number; until?: number }): Promise<UsageRow[]>;

  /** Appends in order; seq is assigned by the store. */
  appendLogs(rows: Array<Omit<LogRecord, 'seq'>>): Promise<void>;
  /** Logs with seq > afterSeq, oldest first. */
  readLogs(filter: {
    functionId: string;
    requestId?: string;
    afterSeq?: number;
    limit?: number;
  }): Promise<LogRecord[]>;

  /** Appends one audit record; seq is assigned by the store. Records outlive tenants. */
  appendAudit(r: Omit<AuditRecord, 'seq'>): Promise<void>;
  /** Audit records matching every filter given, newest first (default limit 100). */
  listAudit(filter: AuditFilter): Promise<AuditRecord[]>;
}
