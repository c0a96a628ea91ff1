// Opens the control plane store: PostgreSQL when a DATABASE_URL is given, else an embedded
// SQLite database in the data directory. Either way the schema is brought up to date first.

import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { IsolaError } from '../../errors.js';
import { type Db, openPostgresDb, openSqliteDb } from './db.js';
import { migrate } from './migrations.js';
import { SqlPlatformStore } from './sql-store.js';
import type { PlatformStore } from './types.js';

/** The SQLite file inside the data directory. */
export const SQLITE_FILE = 'isola.db';
/** The data directory holds key hashes and secret ciphertexts: owner only. */
const DATA_DIR_MODE = 0o700;

export interface OpenStoreOptions {
  dataDir: string;
  /** postgres:// or postgresql:// URL; empty or absent means SQLite in dataDir. */
  databaseUrl?: string;
}

function isPostgresUrl(url: string): boolean {
  return /^postgres(ql)?:\/\//i.test(url);
}

function openSqliteIn(dataDir: string): Db {
  try {
    mkdirSync(dataDir, { recursive: true, mode: DATA_DIR_MODE });
  } catch (err) {
    throw new IsolaError(
      'E_DB',
      `cannot create the data directory ${dataDir}: ${(err as Error).message}`,
      { cause: err },
    );
  }
  return openSqliteDb(path.join(dataDir, SQLITE_FILE));
}

export async function openPlatformStore(opts: OpenStoreOptions): Promise<PlatformStore> {
  const url = opts.databaseUrl ?? '';
  if (url !== '' && !isPostgresUrl(url))
    throw new IsolaError(
      'E_INVALID_ARGUMENT',
      'DATABASE_URL must start with postgres:// or postgresql://',
    );
  const db = url !== '' ? await openPostgresDb(url) : openSqliteIn(path.resolve(opts.dataDir));
  try {
    await migrate(db);
  } catch (err) {
    await db.close().catch(() => {});
    throw err;
  }
  return new SqlPlatformStore(db);
}
