// A small async database handle with two backends, so the control plane's SQL is written once:
// SQLite (better-sqlite3, embedded) and PostgreSQL (pg, when DATABASE_URL is set).
//
// SQL uses `?` placeholders; the PostgreSQL backend rewrites them to $1..$n. Every driver
// failure becomes an IsolaError: unique violations E_CONFLICT, foreign-key violations
// E_NOT_FOUND (the row referred to does not exist), everything else E_DB.
//
// better-sqlite3 is synchronous, but transaction callbacks are async (they await each
// statement), so one SQLite connection could otherwise interleave another caller's statements
// into an open transaction. An async mutex, shared by every handle on the same file in this
// process, serializes them: a transaction holds it from BEGIN to COMMIT, and single statements
// outside a transaction wait for it. Other processes are kept out by SQLite's own write lock
// (BEGIN IMMEDIATE, waiting up to SQLITE_BUSY_TIMEOUT_MS).

import path from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { IsolaError } from '../../errors.js';
import {
  DEFAULT_WAL_CHECKPOINTER,
  WalCheckpointer,
  type WalCheckpointerOptions,
} from './wal-checkpointer.js';

export type Dialect = 'sqlite' | 'postgres';
export type SqlValue = string | number | null;

export interface Db {
  readonly dialect: Dialect;
  all<T>(sql: string, params?: readonly SqlValue[]): Promise<T[]>;
  get<T>(sql: string, params?: readonly SqlValue[]): Promise<T | undefined>;
  run(sql: string, params?: readonly SqlValue[]): Promise<{ changes: number }>;
  /**
   * Runs fn in one transaction: committed when it resolves, rolled back when it throws. Use only
   * the handle fn receives inside it (the outer one waits for the transaction to end). A tx
   * inside a tx joins the outer one.
   */
  tx<T>(fn: (db: Db) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** Other processes holding SQLite's write lock are waited for this long before E_DB. */
export const SQLITE_BUSY_TIMEOUT_MS = 10_000;
/** SQLite's own default, for a connection that checkpoints by itself again. */
const SQLITE_AUTOCHECKPOINT_PAGES = 1000;
/** A write-ahead log larger than this is truncated when it starts over. */
const WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024;
/** Opening a PostgreSQL connection gives up after this long. */
export const PG_CONNECT_TIMEOUT_MS = 10_000;
/** Connections in the PostgreSQL pool. */
export const PG_POOL_SIZE = 10;

// ---------------------------------------------------------------------------------------------
// Errors

const SQLITE_UNIQUE = new Set(['SQLITE_CONSTRAINT_UNIQUE', 'SQLITE_CONSTRAINT_PRIMARYKEY']);
const PG_UNIQUE_VIOLATION = '23505';
const PG_FOREIGN_KEY_VIOLATION = '23503';

function driverCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Maps a driver error to an IsolaError; `redact` scrubs secrets from the message. */
function toDbError(err: unknown, redact: (s: string) => string = (s) => s): IsolaError {
  if (err instanceof IsolaError) return err;
  const code = driverCode(err);
  const msg = redact(messageOf(err));
  if (code !== undefined && (SQLITE_UNIQUE.has(code) || code === PG_UNIQUE_VIOLATION))
    return new IsolaError('E_CONFLICT', `already exists (${msg})`, { cause: err });
  if (code === 'SQLITE_CONSTRAINT_FOREIGNKEY' || code === PG_FOREIGN_KEY_VIOLATION)
    return new IsolaError('E_NOT_FOUND', `refers to a row that does not exist (${msg})`, {
      cause: err,
    });
  return new IsolaError('E_DB', `database: ${msg}`, { cause: err });
}

// ---------------------------------------------------------------------------------------------
// Placeholders

/**
 * Rewrites `?` placeholders to PostgreSQL's $1..$n, leaving question marks inside '...'
 * string literals and "..." quoted identifiers alone (a doubled quote inside them is an escaped
 * quote, which the toggling below handles by leaving and re-entering the literal).
 */
export function toPgPlaceholders(sql: string): string {
  let out = '';
  let quote: '"' | "'" | null = null;
  let n = 0;
  for (const ch of sql) {
    if (quote !== null) {
      if (ch === quote) quote = null;
      out += ch;
    } else if (ch === "'" || ch === '"') {
      quote = ch;
      out += ch;
    } else if (ch === '?') {
      n += 1;
      out += `$${n}`;
    } else {
      out += ch;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Async mutex

class Mutex {
  private tail: Promise<void> = Promise.resolve();

  /** Waits for the holders before us; resolves to the function that lets the next one in. */
  async acquire(): Promise<() => void> {
    let release!: () => void;
    const mine = new Promise<void>((r) => {
      release = r;
    });
    const before = this.tail;
    this.tail = before.then(() => mine);
    await before;
    return release;
  }

  async with<T>(fn: () => Promise<T> | T): Promise<T> {
    const release = await this.acquire();
    try {
      return await fn();
    } finally {
      release();
    }
  }
}

// Every handle on one SQLite file in this process shares a mutex: two handles would otherwise
// each begin a transaction, and the second's synchronous busy wait would block the event loop
// the first needs to finish.
const fileMutexes = new Map<string, { mutex: Mutex; refs: number }>();

function takeFileMutex(file: string): Mutex {
  const entry = fileMutexes.get(file) ?? { mutex: new Mutex(), refs: 0 };
  entry.refs += 1;
  fileMutexes.set(file, entry);
  return entry.mutex;
}

function dropFileMutex(file: string): void {
  const entry = fileMutexes.get(file);
  if (entry === undefined) return;
  entry.refs -= 1;
  if (entry.refs <= 0) fileMutexes.delete(file);
}

// ---------------------------------------------------------------------------------------------
// SQLite

/** Statements on a connection, no locking: used inside a transaction that holds the mutex. */
class SqliteConn implements Db {
  readonly dialect = 'sqlite' as const;
  private readonly statements = new Map<string, Database.Statement>();

  constructor(readonly raw: Database.Database) {}

  private prepare(sql: string): Database.Statement {
    let st = this.statements.get(sql);
    if (st === undefined) {
      st = this.raw.prepare(sql);
      this.statements.set(sql, st);
    }
    return st;
  }

  private exec<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      throw toDbError(err);
    }
  }

  async all<T>(sql: string, params: readonly SqlValue[] = []): Promise<T[]> {
    return this.exec(() => this.prepare(sql).all(...params) as T[]);
  }

  async get<T>(sql: string, params: readonly SqlValue[] = []): Promise<T | undefined> {
    return this.exec(() => this.prepare(sql).get(...params) as T | undefined);
  }

  async run(sql: string, params: readonly SqlValue[] = []): Promise<{ changes: number }> {
    return this.exec(() => ({ changes: this.prepare(sql).run(...params).changes }));
  }

  /** Already inside the transaction: join it. */
  tx<T>(fn: (db: Db) => Promise<T>): Promise<T> {
    return fn(this);
  }

  /** Begins, runs fn, commits (or rolls back when fn throws). The caller holds the mutex. */
  async transaction<T>(fn: (db: Db) => Promise<T>): Promise<T> {
    // IMMEDIATE takes the write lock up front, so two processes never both read and then fail
    // to upgrade to writing.
    this.exec(() => this.raw.exec('BEGIN IMMEDIATE'));
    try {
      const result = await fn(this);
      this.exec(() => this.raw.exec('COMMIT'));
      return result;
    } catch (err) {
      // SQLite rolls back by itself after some errors (SQLITE_FULL, ...); the first error is
      // the one worth reporting, not a failing ROLLBACK after it.
      try {
        if (this.raw.inTransaction) this.raw.exec('ROLLBACK');
      } catch {}
      throw toDbError(err);
    }
  }

  async close(): Promise<void> {
    this.raw.close();
  }
}

class SqliteDb implements Db {
  readonly dialect = 'sqlite' as const;
  private closed = false;

  constructor(
    private readonly conn: SqliteConn,
    private readonly mutex: Mutex,
    private readonly file: string,
    private readonly wal: WalCheckpointer | null,
  ) {}

  all<T>(sql: string, params?: readonly SqlValue[]): Promise<T[]> {
    return this.mutex.with(() => this.conn.all<T>(sql, params));
  }

  get<T>(sql: string, params?: readonly SqlValue[]): Promise<T | undefined> {
    return this.mutex.with(() => this.conn.get<T>(sql, params));
  }

  run(sql: string, params?: readonly SqlValue[]): Promise<{ changes: number }> {
    return this.mutex.with(() => this.write(() => this.conn.run(sql, params)));
  }

  tx<T>(fn: (db: Db) => Promise<T>): Promise<T> {
    return this.mutex.with(() => this.write(() => this.conn.transaction(fn)));
  }

  walStats(): WalCheckpointer['stats'] | null {
    return this.wal?.stats ?? null;
  }

  /** A write, with the mutex held: the log is started over first when due (wal-checkpointer.ts). */
  private async write<T>(fn: () => Promise<T>): Promise<T> {
    const wal = this.wal;
    if (wal === null) return fn();
    const due = wal.beforeWrite();
    if (due !== null) await due;
    try {
      return await fn();
    } finally {
      wal.wrote();
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Let a running transaction finish first; the checkpointer's connection closes before this
    // one, so the last to close checkpoints the log and removes it.
    await this.mutex.with(async () => {
      await this.wal?.close();
      await this.conn.close();
    });
    dropFileMutex(this.file);
  }
}

/** What a SQLite handle's checkpoint worker did; null for other databases or without one. */
export function walCheckpointStats(db: Db): WalCheckpointer['stats'] | null {
  return db instanceof SqliteDb ? db.walStats() : null;
}

/** Opens (creating when missing) the SQLite database at `file`. */
export function openSqliteDb(
  file: string,
  opts: { checkpoints?: WalCheckpointerOptions } = {},
): Db {
  const resolved = path.resolve(file);
  let raw: Database.Database;
  let wal = false;
  try {
    raw = new Database(resolved, { timeout: SQLITE_BUSY_TIMEOUT_MS });
    wal = raw.pragma('journal_mode = WAL', { simple: true }) === 'wal';
    // WAL with NORMAL is durable against application crashes and keeps the database
    // consistent across power loss (the last commits may be lost then).
    raw.pragma('synchronous = NORMAL');
    raw.pragma('foreign_keys = ON');
    if (wal) {
      // Checkpoints are the worker's (wal-checkpointer.ts); a log that grew large under load
      // is cut back to this size when it starts over.
      raw.pragma('wal_autocheckpoint = 0');
      raw.pragma(`journal_size_limit = ${WAL_SIZE_LIMIT_BYTES}`);
    }
  } catch (err) {
    throw new IsolaError('E_DB', `cannot open SQLite database ${resolved}: ${messageOf(err)}`, {
      cause: err,
    });
  }
  const opened = raw;
  const checkpointer = wal
    ? new WalCheckpointer(
        resolved,
        () => {
          try {
            opened.pragma(`wal_autocheckpoint = ${SQLITE_AUTOCHECKPOINT_PAGES}`);
          } catch {
            // closed meanwhile: nothing left to checkpoint for
          }
        },
        opts.checkpoints ?? DEFAULT_WAL_CHECKPOINTER,
      )
    : null;
  return new SqliteDb(new SqliteConn(raw), takeFileMutex(resolved), resolved, checkpointer);
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

const PG_INT8_OID = 20;
const PG_NUMERIC_OID = 1700;

// Counts and sums come back as int8/numeric, which pg returns as strings to keep precision.
// Everything isola stores (ms timestamps, counters, GB-seconds) fits a double, so parse them as
// numbers. This is set per pool rather than on pg's global type table, which other code shares.
const pgTypes: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: string) => {
    if (oid === PG_INT8_OID || oid === PG_NUMERIC_OID) return (v: string) => Number(v);
    return pg.types.getTypeParser(oid, format as 'text');
  }) as pg.CustomTypesConfig['getTypeParser'],
};

// Node's socket errors and PostgreSQL's classes 08 (connection exception), 28 (invalid
// authorization), 3D000 (no such database) and 57P0x (server shutting down or starting up).
const NET_ERRORS = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
]);

function isConnectionError(err: unknown): boolean {
  const code = driverCode(err);
  if (code !== undefined) {
    if (NET_ERRORS.has(code)) return true;
    if (/^(08|28)/.test(code) || code === '3D000' || /^57P0[1-3]$/.test(code)) return true;
  }
  // pg's own connect timeout and dropped connections carry no code.
  return /timeout expired|Connection terminated|connection timeout/i.test(messageOf(err));
}

export interface PgTarget {
  /** host:port, for messages. */
  where: string;
  database: string;
  user: string;
  password: string;
}

/** What a DATABASE_URL points at, for messages (never includes the password). */
export function describePgUrl(url: string): PgTarget {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new IsolaError('E_INVALID_ARGUMENT', 'DATABASE_URL is not a valid URL');
  }
  const host = u.hostname || u.searchParams.get('host') || 'localhost';
  return {
    where: `${host}:${u.port || '5432'}`,
    database: decodeURIComponent(u.pathname.replace(/^\//, '')) || '(default)',
    user: decodeURIComponent(u.username) || '(default)',
    password: decodeURIComponent(u.password),
  };
}

/** The shortest password we scrub from messages: shorter ones would mangle ordinary words. */
const MIN_REDACTED_PASSWORD = 4;

function redactor(url: string, target: PgTarget): (s: string) => string {
  const secrets = [url, target.password, encodeURIComponent(target.password)].filter(
    (s) => s.length >= MIN_REDACTED_PASSWORD,
  );
  return (s) => secrets.reduce((acc, secret) => acc.split(secret).join('***'), s);
}

type Queryable = pg.Pool | pg.PoolClient;

class PgConn implements Db {
  readonly dialect = 'postgres' as const;

  constructor(
    protected readonly q: Queryable,
    protected readonly fail: (err: unknown) => IsolaError,
  ) {}

  protected async query<T>(sql: string, params: readonly SqlValue[]): Promise<pg.QueryResult> {
    try {
      return await this.q.query<T & pg.QueryResultRow>(toPgPlaceholders(sql), [...params]);
    } catch (err) {
      throw this.fail(err);
    }
  }

  async all<T>(sql: string, params: readonly SqlValue[] = []): Promise<T[]> {
    return (await this.query<T>(sql, params)).rows as T[];
  }

  async get<T>(sql: string, params: readonly SqlValue[] = []): Promise<T | undefined> {
    return (await this.query<T>(sql, params)).rows[0] as T | undefined;
  }

  async run(sql: string, params: readonly SqlValue[] = []): Promise<{ changes: number }> {
    return { changes: (await this.query(sql, params)).rowCount ?? 0 };
  }

  /** Already inside the transaction (this handle is its client): join it. */
  tx<T>(fn: (db: Db) => Promise<T>): Promise<T> {
    return fn(this);
  }

  async close(): Promise<void> {}
}

class PgDb extends PgConn {
  private ended = false;

  constructor(
    private readonly pool: pg.Pool,
    fail: (err: unknown) => IsolaError,
  ) {
    super(pool, fail);
  }

  override async tx<T>(fn: (db: Db) => Promise<T>): Promise<T> {
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (err) {
      throw this.fail(err);
    }
    const conn = new PgConn(client, this.fail);
    let broken = false;
    try {
      await conn.run('BEGIN');
      const result = await fn(conn);
      await conn.run('COMMIT');
      return result;
    } catch (err) {
      try {
        await client.query('ROLLBACK');
      } catch {
        // The connection is gone or unusable: drop it from the pool instead of reusing it.
        broken = true;
      }
      throw this.fail(err);
    } finally {
      client.release(broken);
    }
  }

  override async close(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    await this.pool.end();
  }
}

/** Connects to PostgreSQL (checking the server answers) and returns a pooled handle. */
export async function openPostgresDb(url: string): Promise<Db> {
  const target = describePgUrl(url);
  const redact = redactor(url, target);
  const fail = (err: unknown): IsolaError => {
    if (err instanceof IsolaError) return err;
    if (!isConnectionError(err)) return toDbError(err, redact);
    return new IsolaError(
      'E_DB',
      `cannot connect to PostgreSQL at ${target.where} (database ${target.database}, user ${target.user}): ${redact(messageOf(err)) || driverCode(err) || 'connection failed'}`,
      { cause: err, details: { where: target.where } },
    );
  };
  const pool = new pg.Pool({
    connectionString: url,
    max: PG_POOL_SIZE,
    connectionTimeoutMillis: PG_CONNECT_TIMEOUT_MS,
    application_name: 'isola',
    types: pgTypes,
  });
  // An idle pooled connection that breaks (server restart) emits 'error' on the pool; without a
  // listener that would crash the process. The next query reports the failure instead.
  pool.on('error', () => {});
  const db = new PgDb(pool, fail);
  try {
    await db.get('SELECT 1 AS ok');
  } catch (err) {
    await db.close().catch(() => {});
    throw err;
  }
  return db;
}

// ---------------------------------------------------------------------------------------------
// Helpers over both

/**
 * Inside a transaction: waits until no other transaction holding the lock `key` is open, and
 * holds it until this one ends. On PostgreSQL this is an advisory transaction lock; on SQLite
 * writers are serialized anyway, so there is nothing to do.
 */
export async function lockTx(tx: Db, key: number): Promise<void> {
  if (tx.dialect === 'postgres') await tx.get('SELECT pg_advisory_xact_lock(?) AS locked', [key]);
}
